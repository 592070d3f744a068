"""Hostile uploads and requests against a running challenge server (real HTTP on 127.0.0.1, SQLite and PostgreSQL):
each is refused with a message, nothing is accepted, and nothing is written outside the challenge folder."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import tarfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from challenge_helpers import ThreadServer, clone_challenge, source_photos, write_submission
from hostile_files import write_png_bomb
from test_hostile_files import small_tmpfs

EVIL = f"/tmp/fashiongen-evil-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def running(challenge_template, tmp_path_factory: pytest.TempPathFactory, challenge_source: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp(f"hostile-{challenge_template.backend}")
    folder = root / "challenge"
    challenge = clone_challenge(challenge_template, folder, max_upload_mb=1, max_refusals_per_hour=10_000)
    tokens = {"a": challenge.add_team("a"), "b": challenge.add_team("b"), "off": challenge.add_team("off")}
    challenge.set_disabled("team", "off", True)
    juror = challenge.add_juror("j")
    with ThreadServer(challenge, folder) as server:
        captions = [json.loads(line) for line in httpx.get(f"{server.url}/api/captions").text.splitlines()]
        valid = write_submission(root / "valid", captions, source_photos(challenge_source), 8.0)
        yield {"url": server.url, "challenge": challenge, "folder": folder, "root": root, "tokens": tokens, "juror": juror,
               "valid": valid, "captions": captions}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def zipped(files: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def tarred(files: dict[str, bytes], special: tarfile.TarInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        if special is not None:
            bundle.addfile(special)
    return buffer.getvalue()


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def png(size: tuple[int, int], mode: str = "RGB", kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (128,) * len(mode)).save(buffer, kind)
    return buffer.getvalue()


def with_image(files: dict[str, bytes], data: bytes) -> dict[str, bytes]:
    """The valid set with its first image replaced by `data`."""
    first = sorted(name for name in files if name.startswith("images/"))[0]
    return {**files, first: data}


def png_bomb(tmp: Path) -> bytes:
    return write_png_bomb(tmp / f"bomb-{uuid.uuid4().hex}.png", 20000, 20000).read_bytes()


def rewritten_lines(files: dict[str, bytes], change: Callable[[list[dict]], list[dict]]) -> dict[str, bytes]:
    rows = [json.loads(line) for line in files["submission.jsonl"].decode().splitlines()]
    return {**files, "submission.jsonl": "".join(json.dumps(row) + "\n" for row in change(rows)).encode()}


def header_with(files: dict[str, bytes], **changes) -> dict[str, bytes]:
    return {**files, "submission.json": json.dumps({**json.loads(files["submission.json"]), **changes}).encode()}


# (name, archive body from the valid set's files and a scratch folder, status, message fragment)
ARCHIVES: list[tuple[str, Callable[[dict[str, bytes], Path], bytes], int, str]] = [
    ("zip-slip", lambda f, t: zipped({**f, "../evil.png": b"x"}), 400, "climbs out"),
    ("absolute path", lambda f, t: zipped({**f, EVIL: b"x"}), 400, "absolute"),
    ("windows path", lambda f, t: zipped({**f, "..\\evil.png": b"x"}), 400, "climbs out"),
    ("symlink", lambda f, t: tarred(f, special("images/link.png", tarfile.SYMTYPE, "/etc/passwd")), 400, "symlink"),
    ("hardlink", lambda f, t: tarred(f, special("images/hard.png", tarfile.LNKTYPE, "/etc/passwd")), 400, "hardlink"),
    ("device", lambda f, t: tarred(f, special("images/dev.png", tarfile.CHRTYPE)), 400, "device"),
    ("fifo", lambda f, t: tarred(f, special("images/fifo.png", tarfile.FIFOTYPE)), 400, "FIFO"),
    ("zip bomb", lambda f, t: zipped({**f, "images/zeros.bin": bytes(16 * 2**20)}, zipfile.ZIP_DEFLATED), 400, "compression bomb"),
    ("too many members", lambda f, t: zipped({**f, **{f"extra/{i}.txt": b"" for i in range(200)}}), 400, "members"),
    ("random bytes", lambda f, t: np.random.default_rng(0).bytes(5000), 400, "neither a zip nor a tar"),
    ("truncated zip", lambda f, t: zipped(f)[: len(zipped(f)) // 2], 400, "zip|damaged|truncated"),
    ("empty body", lambda f, t: b"", 400, "empty|neither"),
    ("no submission.json", lambda f, t: zipped({k: v for k, v in f.items() if k != "submission.json"}), 400, "submission.json"),
    ("png bomb", lambda f, t: zipped(with_image(f, png_bomb(t))), 400, "decompression bomb"),
    ("wrong resolution", lambda f, t: zipped(with_image(f, png((64, 64)))), 400, "64x64 px, expected 32x32"),
    ("jpeg named png", lambda f, t: zipped(with_image(f, png((32, 32), kind="JPEG"))), 400, "not a PNG"),
    ("grey png", lambda f, t: zipped(with_image(f, png((32, 32), mode="L"))), 400, "colour mode L"),
    ("truncated png", lambda f, t: zipped(with_image(f, png((32, 32))[:60])), 400, "not a decodable PNG"),
    ("missing caption", lambda f, t: zipped(rewritten_lines({k: v for k, v in f.items() if k != sorted(f)[0]}, lambda r: r[1:])),
     400, "no images|missing"),
    ("unlisted file", lambda f, t: zipped({**f, "images/stray.png": png((32, 32))}), 400, "extra file"),
    ("listed path escapes", lambda f, t: zipped(rewritten_lines(f, lambda r: [{**r[0], "file": "../../etc/passwd"}, *r[1:]])),
     400, "climbs out"),
    ("per_caption mismatch", lambda f, t: zipped(header_with(f, per_caption=2)), 400, "per_caption"),
    ("resolution mismatch", lambda f, t: zipped(header_with(f, resolution=64)), 400, "resolution"),
    ("header not json", lambda f, t: zipped({**f, "submission.json": b"\xff\xfe{"}), 400, "header|submission.json"),
]


def outside_snapshot(running: dict) -> set[str]:
    root: Path = running["root"]
    return {str(p) for p in root.rglob("*") if running["folder"] not in p.parents and p != running["folder"]}


@pytest.mark.parametrize("name, build, status, message", ARCHIVES, ids=[case[0] for case in ARCHIVES])
def test_hostile_archives_are_refused(running: dict, tmp_path: Path, name: str, build, status: int, message: str) -> None:
    files = files_of(running["valid"])
    before = outside_snapshot(running)
    response = httpx.post(f"{running['url']}/api/submissions", params={"name": f"{name}.zip"}, content=build(files, tmp_path),
                          headers={"Authorization": f"Bearer {running['tokens']['a']}"}, timeout=60)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert re.search(message, detail, flags=re.IGNORECASE), detail
    assert outside_snapshot(running) == before
    assert not Path(EVIL).exists() and not (running["root"].parent / "evil.png").exists()
    assert not [p for p in (running["folder"] / "uploads").rglob("*") if p.is_file()]
    assert running["challenge"].queue_counts() == {}


def test_the_valid_archive_itself_is_accepted_as_zip_and_tar(running: dict) -> None:
    """The control: the set every hostile case starts from is accepted (then removed again for the other tests)."""
    files = files_of(running["valid"])
    challenge = running["challenge"]
    for body in (zipped(files), tarred(files)):
        response = httpx.post(f"{running['url']}/api/submissions", content=body,
                              headers={"Authorization": f"Bearer {running['tokens']['b']}"}, timeout=60)
        assert response.status_code == 202, response.text
    with challenge.db.transaction() as tx:  # leave the queue empty for the cases above, whatever their order
        tx.execute("DELETE FROM archive_chunks")
        tx.execute("DELETE FROM submissions")


def test_uploads_over_the_cap_are_cut_off_while_streaming(running: dict) -> None:
    auth = {"Authorization": f"Bearer {running['tokens']['a']}"}
    sent = []

    def stream() -> Iterator[bytes]:
        for _ in range(64):  # 4 MB in 64 KB chunks, no Content-Length: the cap (1 MB) must stop it on the way
            sent.append(1)
            yield bytes(2**16)

    response = httpx.post(f"{running['url']}/api/submissions", content=stream(), headers=auth, timeout=60)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    # a Content-Length over the cap is refused before the body is read
    host, port = running["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"POST /api/submissions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {running['tokens']['a']}\r\n"
                    f"Content-Length: {5 * 2**20}\r\n\r\n".encode() + b"PK")
        answer = b""
        while b"limit" not in answer and (chunk := raw.recv(65536)):
            answer += chunk
        answer = answer.decode("latin-1")
    assert answer.startswith("HTTP/1.1 413") and "limit" in answer
    assert not [p for p in (running["folder"] / "uploads").rglob("*") if p.is_file()]


@pytest.mark.parametrize("case", ["no token", "bad token", "juror token", "disabled team", "long name", "other team's submission",
                                  "delete another's", "private before close", "jury image without login",
                                  "jury image traversal", "vote without session", "login with huge token"])
def test_hostile_requests_are_refused(running: dict, case: str) -> None:
    url, tokens = running["url"], running["tokens"]
    challenge = running["challenge"]
    body = zipped(files_of(running["valid"]))
    if case in ("other team's submission", "delete another's"):
        theirs = httpx.post(f"{url}/api/submissions", content=body, headers={"Authorization": f"Bearer {tokens['b']}"}, timeout=60)
        assert theirs.status_code == 202
        method = httpx.get if case == "other team's submission" else httpx.delete
        response = method(f"{url}/api/submissions/{theirs.json()['id']}", headers={"Authorization": f"Bearer {tokens['a']}"})
        with challenge.db.transaction() as tx:
            deleted = tx.value("SELECT deleted FROM submissions WHERE id = ?", (theirs.json()["id"],))
            tx.execute("DELETE FROM archive_chunks")
            tx.execute("DELETE FROM submissions")
        assert response.status_code == 404 and "no submission" in response.json()["detail"] and deleted == 0
        return
    requests = {
        "no token": lambda: httpx.post(f"{url}/api/submissions", content=body),
        "bad token": lambda: httpx.post(f"{url}/api/submissions", content=body, headers={"Authorization": "Bearer fgt_1_guess"}),
        "juror token": lambda: httpx.post(f"{url}/api/submissions", content=body,
                                          headers={"Authorization": f"Bearer {running['juror']}"}),
        "disabled team": lambda: httpx.post(f"{url}/api/submissions", content=body,
                                            headers={"Authorization": f"Bearer {tokens['off']}"}),
        "long name": lambda: httpx.post(f"{url}/api/submissions", params={"name": "x" * 500}, content=body,
                                        headers={"Authorization": f"Bearer {tokens['a']}"}),
        "private before close": lambda: httpx.get(f"{url}/api/leaderboard/private"),
        "jury image without login": lambda: httpx.get(f"{url}/jury/image/1/left"),
        "jury image traversal": lambda: httpx.get(f"{url}/jury/image/1/..%2F..%2Fdatabase.json"),
        "vote without session": lambda: httpx.post(f"{url}/jury/vote", data={"ballot": "1", "choice": "left", "csrf": "x"}),
        "login with huge token": lambda: httpx.post(f"{url}/team/login", data={"token": "x" * 10_000}),
    }
    expected = {"no token": (401, "team token"), "bad token": (401, "team token"), "juror token": (401, "team token"),
                "disabled team": (401, "team token"), "long name": (422, "name"), "private before close": (403, "opens when"),
                "jury image without login": (404, "not found"), "jury image traversal": (404, "not found"),
                "vote without session": (401, "Log in"), "login with huge token": (422, "token")}
    response = requests[case]()
    status, fragment = expected[case]
    assert response.status_code == status, response.text
    assert fragment.lower() in response.text.lower()
    assert challenge.queue_counts() == {}


def test_a_full_disk_is_the_servers_problem_not_the_teams(running: dict) -> None:
    """Uploads land in the server's own folder; when its disk is full the upload gets 507 and one line, is not
    counted against the team, and the next upload after space returns is accepted."""
    own = running["folder"] / "uploads" / f"{socket.gethostname()}-{os.getpid()}"  # the server runs in this process
    auth = {"Authorization": f"Bearer {running['tokens']['a']}"}
    body = zipped(files_of(running["valid"]))
    assert len(body) > 16 * 1024
    with small_tmpfs(own, "16k"):
        response = httpx.post(f"{running['url']}/api/submissions", content=body, headers=auth, timeout=60)
        assert response.status_code == 507 and "no space left on device" in response.json()["detail"]
        assert not [p for p in own.rglob("*") if p.is_file()]
    with running["challenge"].db.transaction(write=False) as tx:
        assert tx.value("SELECT COUNT(*) FROM refusals WHERE reason LIKE ?", ("%space%",)) == 0
    assert running["challenge"].queue_counts() == {}
    assert any(row["action"] == "upload.storage_error" for row in running["challenge"].audit_log())
