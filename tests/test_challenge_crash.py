"""`kill -9` of the challenge server mid-upload and of a worker mid-scoring, then restarts: every accepted submission
is scored exactly once, nothing accepted is lost, and a half-received upload is never accepted. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from challenge_helpers import (
    clone_challenge,
    free_port,
    source_photos,
    start_process,
    wait_for,
    write_submission,
    zip_bytes,
)

pytestmark = pytest.mark.slow  # kill -9 of server and worker processes (the full run only)


def kill9(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def wait_until(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen in {timeout} s")


def test_kill_9_of_the_server_and_a_worker_loses_nothing_and_scores_once(challenge_template, tmp_path: Path, challenge_source: Path) -> None:
    folder = tmp_path / "challenge"
    challenge = clone_challenge(challenge_template, folder, lease_seconds=5)
    token = challenge.add_team("t")
    auth = {"Authorization": f"Bearer {token}"}
    processes: list[subprocess.Popen] = []

    def serve() -> str:
        port = free_port()
        processes.append(start_process("serve", str(folder), "--port", str(port)))
        wait_for(f"http://127.0.0.1:{port}", process=processes[-1])
        return f"http://127.0.0.1:{port}"

    try:
        url = serve()
        captions = [json.loads(line) for line in httpx.get(f"{url}/api/captions").text.splitlines()]
        body = zip_bytes(write_submission(tmp_path / "set", captions, source_photos(challenge_source), 8.0))
        accepted = [httpx.post(f"{url}/api/submissions", content=body, headers=auth, timeout=60).json()["id"] for _ in range(3)]

        # a worker claims the first job and is killed while scoring it (it is still loading its networks)
        worker = start_process("worker", str(folder), "--name", "doomed", "--poll", "0.1")
        processes.append(worker)

        def claimed() -> bool:
            with challenge.db.transaction(write=False) as tx:
                return tx.value("SELECT COUNT(*) FROM submissions WHERE status = 'scoring' AND lease_owner = 'doomed'") == 1
        wait_until(claimed, 60, "the worker's claim")
        kill9(worker)
        with challenge.db.transaction(write=False) as tx:
            assert tx.execute("SELECT id, status FROM submissions WHERE lease_owner = 'doomed'").all() == [(accepted[0], "scoring")]

        # the server is killed while an upload is half received
        server_killed = threading.Event()

        def slow_body() -> Iterator[bytes]:
            yield body[: len(body) // 2]
            server_killed.wait(30)
            yield body[len(body) // 2 :]

        failed: list[Exception] = []

        def slow_upload() -> None:
            try:
                httpx.post(f"{url}/api/submissions", content=slow_body(), headers=auth, timeout=60)
            except httpx.HTTPError as error:
                failed.append(error)

        uploader = threading.Thread(target=slow_upload, daemon=True)
        uploader.start()
        wait_until(lambda: any(p.is_file() and p.stat().st_size > 0 for p in (folder / "uploads").rglob("*")), 30,
                   "the half upload on disk")
        kill9(processes[0])
        server_killed.set()
        uploader.join(30)
        assert failed, "the half upload should have broken off with the server"

        killed_uploads = folder / "uploads" / f"{socket.gethostname()}-{processes[0].pid}"
        url = serve()  # restart: the half upload is cleared, never accepted
        assert not killed_uploads.exists()
        assert not [p for p in (folder / "uploads").rglob("*") if p.is_file()]
        mine = httpx.get(f"{url}/api/submissions", headers=auth).json()["submissions"]
        assert sorted(s["id"] for s in mine) == accepted

        # a new worker drains the queue; it takes the killed worker's job once its lease runs out;
        # on PostgreSQL the worker gets the database URL alone, as one on another machine would
        target = json.loads((folder / "database.json").read_text())["database"] if challenge.db.kind == "postgresql" else str(folder)
        survivor = start_process("worker", target, "--name", "survivor", "--poll", "0.2", "--drain")
        processes.append(survivor)
        out, err = survivor.communicate(timeout=240)
        assert survivor.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["finished"] == 3
    finally:
        for process in processes:
            kill9(process)

    rows = {s["id"]: s for s in challenge.submissions()}
    assert sorted(rows) == accepted and all(rows[i]["status"] == "scored" for i in accepted)
    assert rows[accepted[0]]["attempts"] == 2 and rows[accepted[1]]["attempts"] == 1
    with challenge.db.transaction(write=False) as tx:
        assert tx.execute("SELECT id, times_scored FROM submissions ORDER BY id").all() == [(i, 1) for i in accepted]
        assert tx.value("SELECT COUNT(*) FROM scores") == 2 * len(accepted)
    log = challenge.audit_log()
    assert any(row["action"] == "score.lease_expired" and row["detail"]["worker"] == "doomed" for row in log)
    assert sorted(row["detail"]["submission"] for row in log if row["action"] == "score.done") == accepted
