"""Slow and greedy clients against a real `serve` process (raw sockets on 127.0.0.1; limits set to 1 s and 4
connections so the tests are short): late headers and trickled bodies are cut off with a 408 and one sentence,
and one client's connections past the cap are refused while another client is still served."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from challenge_helpers import clone_challenge, free_port, start_process, wait_for

pytestmark = pytest.mark.slow  # a server process and clients that wait out its timeouts (the full run only)

HEADER_SECONDS, MIN_RATE, PER_CLIENT = 1, 4096, 4


@pytest.fixture(scope="module")
def serving(challenge_templates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("slow-clients") / "challenge"
    challenge = clone_challenge(challenge_templates("sqlite"), folder, header_timeout_seconds=HEADER_SECONDS,
                                min_upload_bytes_per_second=MIN_RATE, max_connections_per_client=PER_CLIENT)
    token = challenge.add_team("a")
    port = free_port()
    process = start_process("serve", str(folder), "--port", str(port))
    try:
        wait_for(f"http://127.0.0.1:{port}", process=process)
        yield {"port": port, "token": token, "challenge": challenge}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def answer_of(sock: socket.socket) -> tuple[str, float]:
    """What the server sent before it closed the connection, and when it closed (monotonic seconds)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data.decode("latin-1"), time.monotonic()


def assert_refused(answer: str, status: int, fragment: str) -> None:
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} "), answer
    assert "content-security-policy: default-src 'none'" in head.lower() and "x-frame-options: deny" in head.lower()
    detail = json.loads(body)["detail"]
    assert fragment in detail and "\n" not in detail, detail


def test_headers_sent_a_byte_a_second_are_cut_off(serving: dict) -> None:
    with connect(serving["port"]) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /api/challenge HTTP/1.1\r\n")
        sock.setblocking(True)
        for byte in b"Host: x\r\nX-Slow: " + b"a" * 100:
            sock.sendall(bytes([byte]))
            sock.settimeout(1.0)
            try:
                answer = sock.recv(65536).decode("latin-1")
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("the server kept a connection whose headers never ended")
        assert time.monotonic() - start < HEADER_SECONDS + 3
    assert_refused(answer, 408, f"headers did not arrive within {HEADER_SECONDS} s")


def test_a_connection_that_sends_nothing_is_closed(serving: dict) -> None:
    with connect(serving["port"]) as sock:
        start = time.monotonic()
        answer, closed = answer_of(sock)
    assert closed - start < HEADER_SECONDS + 3
    assert_refused(answer, 408, "headers did not arrive")


def test_a_trickled_upload_body_is_cut_off_and_refused(serving: dict) -> None:
    challenge = serving["challenge"]
    with connect(serving["port"]) as sock:
        sock.sendall(f"POST /api/submissions?name=slow.zip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {serving['token']}\r\n"
                     "Content-Length: 100000\r\n\r\nPK".encode())
        start, answer = time.monotonic(), b""
        sock.settimeout(0.5)
        for _ in range(40):  # 4 bytes/s for up to 20 s
            try:
                sock.sendall(b"\x03\x04")
                if not (chunk := sock.recv(65536)):
                    break
                answer += chunk
            except TimeoutError:
                continue
            except OSError:
                break
        else:
            pytest.fail("the server kept reading a body sent at 4 bytes/s")
    assert time.monotonic() - start < 2 * HEADER_SECONDS + 4
    assert_refused(answer.decode("latin-1"), 408, f"slower than the {MIN_RATE} bytes/s")
    for _ in range(50):  # the app hears of the cut-off as a disconnect, refuses and audits the upload
        refused = [row for row in challenge.audit_log(limit=5) if row["action"] == "upload.refused"]
        if refused:
            break
        time.sleep(0.1)
    assert refused and "stopped before its end" in refused[0]["detail"]["reason"]
    assert challenge.queue_counts() == {}


def test_connections_past_the_cap_are_refused_while_another_client_is_served(serving: dict) -> None:
    port = serving["port"]
    held = [connect(port) for _ in range(PER_CLIENT)]
    try:
        with connect(port) as extra:
            answer, _ = answer_of(extra)
        assert_refused(answer, 429, f"more than {PER_CLIENT} connections at once")
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5) as other:
            assert other.get(f"http://127.0.0.1:{port}/api/challenge").status_code == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"http://127.0.0.1:{port}/api/challenge", timeout=5).status_code == 200  # the first client's turn again
