"""The challenge server on this machine: uploads accepted per second, submissions scored per minute, and leaderboard
latency under 50 concurrent readers, each against the real processes (`python -m fashiongen.challenge ...`).

    python benchmarks/challenge.py                                   # 256 px, every validation caption (467), ~8 min
    python benchmarks/challenge.py --limit 24 --resolution 64 --uploads 8 --score 2 --reads 5 \
        --out challenge-quick.json                                    # a quick check, ~1 min
    python benchmarks/challenge.py --keep                             # keep the scratch folder; it prints the path of
    python benchmarks/challenge.py --challenge SCRATCH/challenge-init # its initialised challenge, reused here (no init)

What it does, in a scratch folder (under /work/scratch when it exists, else the system's temp folder; never the repo):
1. `init` (a subprocess): the challenge at --resolution from --captions' --split (all its captions, or --limit),
   per_caption 1, daily_limit 1000; timed (the hidden photos' Inception features, the critic's scores and FID's
   real-vs-real floor from the train split). --challenge DIR skips it: DIR is copied, never changed (when this
   benchmark made DIR, the init time it measured then is reported as init_of_reused_challenge).
2. `serve` (a subprocess on 127.0.0.1) and --teams teams. One submission archive, as an entrant's `submit` makes it
   (zip, stored: submission.json, submission.jsonl, images/ID_0.png), from the hidden photos resized to the
   resolution (plus Gaussian noise of std --noise, 0 by default), is POSTed --uploads times by --clients concurrent
   httpx clients (client i uploads as team i mod --teams). Reported: uploads accepted per second (wall clock of the
   whole burst), seconds per upload (mean, p50, p99), archive MB.
3. `worker DIR --drain` (a subprocess) scores --score of the accepted submissions, one per team first (the others are
   held out of the queue meanwhile and queued again afterwards). Reported: the drain's wall clock (process start,
   imports and network loading included), submissions per minute over it, the DB's scoring_seconds of each
   submission (the first includes loading Inception, the critic and MiniLM: the Worker loads them at its first job),
   and the steady rate from the later jobs. Before the drain, a probe process times a worker's fixed costs apart:
   importing it, then loading its networks and the reference statistics (Worker.scorer).
4. --readers (50) threads, each with its own httpx.Client, send --reads requests back to back to GET /api/leaderboard,
   then (a second burst) to GET / (the HTML leaderboard). Reported per endpoint: p50 and p99 seconds, requests/s.

The client threads share the machine's cores with the server and the worker, and other jobs on a shared machine
slow every figure: the 1-minute load average is recorded before each step. Writes benchmarks/results/challenge.json
(machine, commit, command line, settings, every figure, init time) and prints a table. Exit status 1 when an upload
was refused, a scoring failed or a read failed.

Measured (benchmarks/results/challenge.json): AMD EPYC, 2 cores, commit eec0882, 2026-12-04, other jobs on the
machine at times (1-minute load 0.3-4 at the step starts): init 215 s; 20.4 MB archives of 467 PNGs accepted at
0.97/s by 4 clients (4.0 s each, p99 4.8 s; profiled alone, 0.9 s of server work each, 60% of it decoding every
PNG to check it); one worker scores 1.0 submission/min (58-65 s each, about 3 s of it loading the networks at the
first job);
50 readers: GET /api/leaderboard p50 0.087 s, p99 0.23 s, 512 requests/s; GET / p50 0.115 s, p99 0.41 s, 377/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from fashiongen.challenge.organiser import open_challenge  # noqa: E402
from fashiongen.submission import (  # noqa: E402
    HEADER_FILE,
    LINES_FILE,
    SUBMISSION_FORMAT,
    SUBMISSION_VERSION,
    CaptionItem,
    captions_sha256,
    image_name,
)

CHALLENGE = [sys.executable, "-m", "fashiongen.challenge"]
DAILY_LIMIT = 1000  # the most ChallengeConfig allows


def code_version() -> dict[str, Any]:
    """The commit measured, and whether fashiongen/ differed from it when the run started."""
    def git(*words: str) -> str:
        try:
            return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None, "fashiongen_modified": bool(git("status", "--porcelain", "fashiongen"))}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seconds_summary(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=np.float64)
    if not len(array):
        return {"count": 0}
    return {"count": len(array), "mean_s": round(float(array.mean()), 4), "p50_s": round(float(np.percentile(array, 50)), 4),
            "p99_s": round(float(np.percentile(array, 99)), 4), "max_s": round(float(array.max()), 4)}


# ---------------------------------------------------------------- the challenge


def init(folder: Path, args: argparse.Namespace, log: Path) -> float:
    """`python -m fashiongen.challenge init` into `folder`; its wall-clock seconds."""
    command = [*CHALLENGE, "init", str(folder), "--captions", args.captions, "--split", args.split,
               "--resolution", str(args.resolution), "--per-caption", "1", "--daily-limit", str(DAILY_LIMIT),
               "--title", "Benchmark challenge"]
    if args.limit:
        command += ["--limit", str(args.limit)]
    print(f"init: {shlex.join(command[1:])} (log: {log})", flush=True)
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"init exited with {result.returncode}: {log.read_text()[-3000:]}")
    print(f"init: {seconds:.1f} s", flush=True)
    return seconds


def copy_challenge(source: Path, target: Path, resolution: int) -> None:
    """A copy of an initialised challenge folder (its database and settings, not a server's scratch space), with
    the daily limit raised for the burst of uploads."""
    if not (source / "database.json").is_file():
        raise SystemExit(f"--challenge {source}: not a challenge folder (no database.json)")
    where = json.loads((source / "database.json").read_text())["database"]
    if where.startswith(("postgresql://", "postgres://")):
        raise SystemExit("--challenge: this benchmark copies SQLite challenge folders only")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("uploads", "work", "jury"))
    challenge, _ = open_challenge(target)
    if challenge.config.resolution != resolution:
        raise SystemExit(f"--challenge {source} is at {challenge.config.resolution} px; pass --resolution "
                         f"{challenge.config.resolution} or init another")
    if challenge.config.daily_limit < DAILY_LIMIT or challenge.config.per_caption != 1:
        with challenge.db.transaction() as tx:
            challenge.write_config(replace(challenge.config, daily_limit=DAILY_LIMIT, per_caption=1), tx)
    challenge.db.close()


# ---------------------------------------------------------------- the submission


def write_archive(folder: Path, captions: list[dict[str, Any]], args: argparse.Namespace) -> Path:
    """A valid submission folder from the hidden photos (resized like init resizes them, plus noise) and its zip."""
    # the photos exactly as init read and resized them
    from fashiongen.challenge.scoring import read_photos

    wanted = {c["id"] for c in captions}
    items, photos = read_photos(args.captions, args.split, args.resolution, None)
    by_id = {item.id: photo for item, photo in zip(items, photos) if item.id in wanted}
    missing = wanted - set(by_id)
    if missing:
        raise SystemExit(f"{len(missing)} of the challenge's captions are not in {args.captions} (split {args.split})")
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    lines = []
    for caption in captions:
        pixels = by_id[caption["id"]]
        if args.noise > 0:
            pixels = np.clip(pixels.astype(np.float32) + rng.normal(0, args.noise, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / image_name(caption["id"], 0))
        lines.append({"file": image_name(caption["id"], 0), "caption_id": caption["id"], "caption": caption["caption"],
                      "k": 0, "seed": 0})
    items = [CaptionItem(c["id"], c["caption"], c.get("attributes", {})) for c in captions]
    header = {"format": SUBMISSION_FORMAT, "version": SUBMISSION_VERSION, "fingerprint": "benchmark",
              "model": {"device": "cpu", "dtype": "float32"}, "settings": {"noise": args.noise},
              "resolution": args.resolution, "per_caption": 1, "base_seed": 0, "use_attributes": False,
              "num_captions": len(items), "captions_sha256": captions_sha256(items),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / HEADER_FILE).write_text(json.dumps(header), encoding="utf-8")
    (folder / LINES_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # as `submit` zips: PNGs are compressed already
        for name in (HEADER_FILE, LINES_FILE, *(line["file"] for line in lines)):
            bundle.write(folder / name, name)
    return archive


# ---------------------------------------------------------------- the server


def start_server(folder: Path, port: int, log: Path, timeout: float = 120) -> tuple[subprocess.Popen, float]:
    """`serve` on 127.0.0.1; (the process, seconds until /api/challenge answered)."""
    started = time.perf_counter()
    server = subprocess.Popen([*CHALLENGE, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port)], cwd=REPO,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < timeout:
        if server.poll() is not None:
            raise SystemExit(f"serve exited with {server.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/api/challenge", timeout=2).status_code == 200:
                return server, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit(f"serve did not answer within {timeout} s: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- 1. uploads


def upload_burst(url: str, tokens: list[str], body: bytes, uploads: int, clients: int) -> dict[str, Any]:
    """`uploads` POSTs of the same archive by `clients` threads (client i as team i mod len(tokens))."""
    lock = threading.Lock()
    queue = list(range(uploads))
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(clients)

    def client(number: int) -> None:
        token = tokens[number % len(tokens)]
        with httpx.Client(timeout=600) as http:
            barrier.wait()
            while True:
                with lock:
                    if not queue:
                        return
                    index = queue.pop(0)
                started = time.perf_counter()
                try:
                    response = http.post(f"{url}/api/submissions", params={"name": f"bench-{index}.zip"}, content=body,
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/zip"})
                    status, answer = response.status_code, response.json()
                except httpx.HTTPError as error:
                    status, answer = None, {"detail": f"{type(error).__name__}: {error}"}
                seconds = time.perf_counter() - started
                with lock:
                    results.append({"index": index, "client": number, "team": number % len(tokens), "status": status,
                                    "seconds": seconds, "id": answer.get("id"), "detail": answer.get("detail")})
                sys.stdout.write(f"  upload {index} (team {number % len(tokens)}): {status} in {seconds:.2f} s\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    accepted = [r for r in results if r["status"] == 202]
    return {"uploads": uploads, "clients": clients, "accepted": len(accepted), "wall_s": round(wall, 2),
            "accepted_per_s": round(len(accepted) / wall, 3), "seconds_per_upload": seconds_summary([r["seconds"] for r in results]),
            "refused": [{k: r[k] for k in ("index", "status", "detail")} for r in results if r["status"] != 202][:5],
            "_results": results}


# ---------------------------------------------------------------- 2. scoring


def pick_to_score(results: list[dict[str, Any]], count: int) -> list[int]:
    """`count` accepted submission ids, one per team first, in upload order."""
    accepted = sorted((r for r in results if r["status"] == 202), key=lambda r: r["id"])
    picked: list[int] = []
    teams: set[int] = set()
    for r in accepted:
        if len(picked) < count and r["team"] not in teams:
            picked.append(r["id"])
            teams.add(r["team"])
    for r in accepted:
        if len(picked) < count and r["id"] not in picked:
            picked.append(r["id"])
    return sorted(picked)


def set_status(folder: Path, ids: list[int], old: str, new: str) -> None:
    challenge, _ = open_challenge(folder)
    with challenge.db.transaction() as tx:
        for sid in ids:
            tx.execute("UPDATE submissions SET status = ? WHERE id = ? AND status = ?", (new, sid, old))
    challenge.db.close()


PROBE = """
import json, sys, time
started = time.perf_counter()
from fashiongen.challenge.organiser import open_challenge
from fashiongen.challenge.worker import Worker
imported = time.perf_counter()
challenge, folder = open_challenge(sys.argv[1])
worker = Worker(challenge, folder / "work")
worker.scorer  # what a worker loads at its first job: Inception, the critic, MiniLM, the reference statistics
print(json.dumps({"import_s": imported - started, "networks_and_reference_s": time.perf_counter() - imported}))
"""


def worker_start(folder: Path) -> dict[str, float]:
    """A worker's fixed costs, timed in a process of their own: importing it, then loading what it scores with."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE, str(folder)], cwd=REPO, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"the worker start probe failed: {result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["process_s"] = time.perf_counter() - started
    return {name: round(value, 2) for name, value in found.items()}


def score(folder: Path, to_score: list[int], hold: list[int], log: Path) -> dict[str, Any]:
    """`worker DIR --drain` over the queue holding just `to_score`; its wall clock and the DB's scoring seconds."""
    start_costs = worker_start(folder)
    print(f"worker start: import {start_costs['import_s']} s, networks and reference statistics "
          f"{start_costs['networks_and_reference_s']} s", flush=True)
    set_status(folder, hold, "queued", "held")  # not a status the server knows: out of the queue until restored
    command = [*CHALLENGE, "worker", str(folder), "--drain", "--name", "bench-worker"]
    print(f"worker: {shlex.join(command[1:])} scoring {len(to_score)} submission(s) (log: {log})", flush=True)
    started = time.perf_counter()
    try:
        with log.open("w") as out:
            worker = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
            peak = None
            while worker.poll() is None:
                peak = rss_mib(worker.pid) or peak
                time.sleep(0.5)
        wall = time.perf_counter() - started
    finally:
        set_status(folder, hold, "held", "queued")
    if worker.returncode != 0:
        raise SystemExit(f"worker exited with {worker.returncode}: {log.read_text()[-3000:]}")
    challenge, _ = open_challenge(folder)
    marks = ", ".join("?" * len(to_score))
    with challenge.db.transaction(write=False) as tx:
        rows = tx.execute(f"SELECT id, status, scoring_seconds, message FROM submissions WHERE id IN ({marks}) ORDER BY scored_at",
                          to_score).all()
        values = dict(tx.execute(f"SELECT submission_id, value FROM scores WHERE half = 'public' AND submission_id IN ({marks})",
                                 to_score).all())
    challenge.db.close()
    jobs = [{"id": sid, "status": status, "scoring_s": round(seconds, 2) if seconds else None, "public_fid": values.get(sid),
             "message": message or None} for sid, status, seconds, message in rows]
    scored = [j for j in jobs if j["status"] == "scored"]
    seconds = [j["scoring_s"] for j in scored]
    rest = seconds[1:]
    result = {"submissions": len(to_score), "scored": len(scored), "drain_wall_s": round(wall, 2),
              "submissions_per_min": round(60 * len(scored) / wall, 3),
              "seconds_per_submission_wall": round(wall / max(1, len(scored)), 2),
              "first_job_s": seconds[0] if seconds else None,
              "later_jobs_mean_s": round(float(np.mean(rest)), 2) if rest else None,
              "steady_submissions_per_min": round(60 / float(np.mean(rest)), 3) if rest else None,
              "first_minus_later_s": round(seconds[0] - float(np.mean(rest)), 2) if rest else None,
              "outside_jobs_s": round(wall - sum(seconds), 2),
              "worker_start_probe": start_costs,
              "worker_peak_rss_mib": peak, "jobs": jobs}
    return result


# ---------------------------------------------------------------- 3. leaderboard readers


def read_burst(url: str, path: str, readers: int, reads: int) -> dict[str, Any]:
    """`readers` threads, each its own httpx.Client (one connection), sending `reads` GETs back to back."""
    seconds: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(readers + 1)

    def reader() -> None:
        mine, bad = [], []
        with httpx.Client(timeout=120) as http:
            barrier.wait()
            for _ in range(reads):
                started = time.perf_counter()
                try:
                    response = http.get(url + path)
                    ok = response.status_code == 200 and len(response.content) > 0
                    if not ok:
                        bad.append(f"{response.status_code}")
                except httpx.HTTPError as error:
                    bad.append(f"{type(error).__name__}: {error}")
                mine.append(time.perf_counter() - started)
        with lock:
            seconds.extend(mine)
            failures.extend(bad)

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"path": path, "readers": readers, "reads_each": reads, "requests": len(seconds), "failed": len(failures),
            "wall_s": round(wall, 2), "requests_per_s": round(len(seconds) / wall, 1), **seconds_summary(seconds),
            "failures": failures[:5]}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", default=str(REPO.parent / "shared" / "data" / "fashion-products"),
                        help="the caption source with the hidden photos (default ../shared/data/fashion-products)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=int, help="take the first N captions of the split (default: all)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to the photos (0: the photos)")
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4, help="concurrent uploaders")
    parser.add_argument("--score", type=int, default=3, help="accepted submissions the worker scores")
    parser.add_argument("--readers", type=int, default=50, help="concurrent leaderboard readers")
    parser.add_argument("--reads", type=int, default=20, help="requests each reader sends to each endpoint")
    parser.add_argument("--challenge", type=Path, help="an initialised challenge folder to copy instead of running init")
    parser.add_argument("--scratch", type=Path, help="the scratch folder (default: a new one under /work/scratch or $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its challenge-init can be reused)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "challenge.json")
    args = parser.parse_args(argv)
    if args.score > args.uploads or args.clients < 1 or args.teams < 1:
        parser.error("--score must not exceed --uploads; --clients and --teams at least 1")

    base = Path("/work/scratch") if Path("/work/scratch").is_dir() else Path(tempfile.gettempdir())
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fashiongen-challenge-bench-", dir=base))
    scratch.mkdir(parents=True, exist_ok=True)
    load: dict[str, list[float]] = {"start": [round(x, 2) for x in os.getloadavg()]}
    version = code_version()
    if REPO in scratch.resolve().parents or scratch.resolve() == REPO:
        raise SystemExit(f"--scratch {scratch} is inside the repository; use a folder outside it")
    print(f"scratch: {scratch}", flush=True)
    run = scratch / f"challenge-run-{uuid.uuid4().hex[:6]}"
    init_seconds, init_earlier = None, None
    try:
        if args.challenge:
            template = args.challenge
            earlier = template.parent / "init.json"  # written beside it when this benchmark made it
            if earlier.is_file() and json.loads(earlier.read_text())["folder"] == str(template):
                init_earlier = json.loads(earlier.read_text())
        else:
            template = scratch / "challenge-init"
            init_seconds = init(template, args, scratch / "init.log")
            (scratch / "init.json").write_text(json.dumps({"folder": str(template), "init_s": init_seconds,
                                                           "load_average_1_5_15": list(os.getloadavg())}) + "\n")
        copy_challenge(template, run, args.resolution)

        challenge, _ = open_challenge(run)
        tag = uuid.uuid4().hex[:6]
        tokens = [challenge.add_team(f"bench-{tag}-{n}") for n in range(args.teams)]
        challenge.db.close()

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server, server_start = start_server(run, port, scratch / "server.log")
        print(f"serve: answering after {server_start:.1f} s at {url}", flush=True)
        try:
            info = httpx.get(url + "/api/challenge").json()
            captions = [json.loads(line) for line in httpx.get(url + "/api/captions").text.splitlines() if line.strip()]
            made = time.perf_counter()
            archive = write_archive(scratch / f"submission-{tag}", captions, args)
            archive_seconds = time.perf_counter() - made
            body = archive.read_bytes()
            print(f"archive: {len(captions)} images at {info['resolution']} px, {len(body) / 2**20:.1f} MB "
                  f"(made in {archive_seconds:.1f} s)", flush=True)

            print(f"uploads: {args.uploads} by {args.clients} clients as {args.teams} teams", flush=True)
            load["before_uploads"] = [round(x, 2) for x in os.getloadavg()]
            uploads = upload_burst(url, tokens, body, args.uploads, args.clients)
            results = uploads.pop("_results")
            server_rss_after_uploads = rss_mib(server.pid)

            to_score = pick_to_score(results, args.score)
            hold = [r["id"] for r in results if r["status"] == 202 and r["id"] not in to_score]
            load["before_scoring"] = [round(x, 2) for x in os.getloadavg()]
            scoring = score(run, to_score, hold, scratch / "worker.log") if to_score else {"scored": 0, "submissions": 0}

            board = httpx.get(url + "/api/leaderboard").json()["rows"]
            print(f"readers: {args.readers} x {args.reads} GET /api/leaderboard, then GET / ({len(board)} leaderboard rows)",
                  flush=True)
            load["before_readers"] = [round(x, 2) for x in os.getloadavg()]
            leaderboard = {"api": read_burst(url, "/api/leaderboard", args.readers, args.reads),
                           "page": read_burst(url, "/", args.readers, args.reads)}
            server_peak = rss_mib(server.pid)
        finally:
            stop(server)
        db_mib = sum(p.stat().st_size for p in run.glob("challenge.sqlite3*")) / 2**20
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    report = {
        "benchmark": "challenge", "machine": machine(torch.device("cpu")),
        "code": version,
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "settings": {"captions": args.captions, "split": args.split, "limit": args.limit, "num_captions": len(captions),
                     "resolution": args.resolution, "per_caption": 1, "noise": args.noise, "teams": args.teams,
                     "uploads": args.uploads, "clients": args.clients, "score": args.score, "readers": args.readers,
                     "reads": args.reads, "database": "sqlite", "reused_challenge": str(args.challenge) if args.challenge else None},
        "init_s": round(init_seconds, 1) if init_seconds is not None else None,
        "init_of_reused_challenge": init_earlier,
        "server_start_s": round(server_start, 2),
        "archive": {"images": len(captions), "mb": round(len(body) / 2**20, 2), "made_s": round(archive_seconds, 1)},
        "uploads": uploads, "scoring": scoring, "leaderboard_rows": len(board), "leaderboard": leaderboard,
        "server_peak_rss_mib": {"after_uploads": server_rss_after_uploads, "at_end": server_peak},
        "database_mib_at_end": round(db_mib, 1),
        "load_average_1_5_15": {**load, "end": [round(x, 2) for x in os.getloadavg()]},
        "kept": str(scratch) if args.keep else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    u, s = uploads, scoring
    per = u["seconds_per_upload"]
    print()
    print(f"{'what':<46} figure")
    print(f"{'init (' + str(len(captions)) + ' captions, ' + str(args.resolution) + ' px)':<46} "
          + (f"{init_seconds:.1f} s" if init_seconds is not None
             else f"reused (its init: {init_earlier['init_s']:.1f} s)" if init_earlier else "reused"))
    print(f"{'uploads accepted / s (' + str(u['clients']) + ' clients)':<46} {u['accepted_per_s']} "
          f"({u['accepted']}/{u['uploads']} in {u['wall_s']} s, {report['archive']['mb']} MB each)")
    print(f"{'seconds per upload mean / p50 / p99':<46} {per.get('mean_s')} / {per.get('p50_s')} / {per.get('p99_s')}")
    if s.get("scored"):
        print(f"{'submissions scored / min (drain, 1 worker)':<46} {s['submissions_per_min']} "
              f"({s['scored']} in {s['drain_wall_s']} s)")
        print(f"{'scoring s: first job / later mean':<46} {s['first_job_s']} / {s['later_jobs_mean_s']} "
              f"(outside jobs {s['outside_jobs_s']} s)")
        probe = s["worker_start_probe"]
        print(f"{'worker start: import / networks+reference s':<46} {probe['import_s']} / {probe['networks_and_reference_s']}")
    for burst in leaderboard.values():
        print(f"{'GET ' + burst['path'] + ' p50 / p99 s, req/s':<46} {burst['p50_s']} / {burst['p99_s']}, "
              f"{burst['requests_per_s']} ({burst['failed']} failed)")
    print(f"written to {args.out}" + (f"; scratch kept: {scratch} (reuse: --challenge {template})" if args.keep else ""))
    ok = u["accepted"] == u["uploads"] and s.get("scored") == s.get("submissions") and not any(
        b["failed"] for b in leaderboard.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
