"""The app under hostile load: the real server (python app.py on 127.0.0.1) while 8 clients send hostile edits and
8 others generate, measuring that every good request succeeds, every hostile one is refused with a message, the
server's peak memory, and that it still serves afterwards.

    python benchmarks/app_hostile_load.py                           # the shipped default model, 10-step requests
    python benchmarks/app_hostile_load.py --model runs/001-small64/export --rounds 2 --generate-requests 2

Hostile requests, each client cycling through them --rounds times:
- a decompression bomb: a 49 KB PNG that decodes to 20000x20000 (400 MP, 1.2 GB as RGB);
- a large-but-legal image: a 140 KB PNG of 12000x12000 (144 MP), what took the server to 6.1 GB before;
- random bytes named .png;
- a 100 MB upload, straight to the upload route (gradio_client and the page refuse it before sending).
Peak memory is the server's VmHWM (the kernel's high-water mark of its resident memory) plus the largest sampled
RSS of any child processes. Writes benchmarks/results/app_hostile_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from fashiongen.settings import DEFAULT_SAMPLER  # noqa: E402

RSS_LIMIT = 2 * 2**30
UPLOAD_MB = 100


def write_png_bomb(path: Path, width: int, height: int, bit_depth: int = 1) -> Path:
    """A valid all-black grey PNG of width x height written row by row (never held in memory at full size)."""
    row = b"\x00" + bytes(-(-width * bit_depth // 8))
    packer = zlib.compressobj(9)
    compressed = [packer.compress(row * min(64, height - start)) for start in range(0, height, 64)] + [packer.flush()]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(compressed)) + chunk(b"IEND", b""))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MemoryWatch:
    """Samples the RSS of the server and its children every 50 ms; the server's own peak comes from VmHWM."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_tree = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                children = sum(child.memory_info().rss for child in self.process.children(recursive=True))
                self.peak_children = max(self.peak_children, children)
                self.peak_tree = max(self.peak_tree, self.process.memory_info().rss + children)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def high_water_mark(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024

    def __enter__(self) -> "MemoryWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--no-products"]
    if args.model:
        command += ["--model", args.model]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))}
    server = subprocess.Popen(command, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + args.start_timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"app.py exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit(f"app.py did not answer within {args.start_timeout} s: {log.read_text()[-2000:]}")


def hostile_files(folder: Path) -> dict[str, Path]:
    files = {"bomb": write_png_bomb(folder / "bomb.png", 20000, 20000),
             "huge": write_png_bomb(folder / "huge.png", 12000, 12000, bit_depth=8),
             "noise": folder / "noise.png"}
    files["noise"].write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    return files


EXPECTED = {"bomb": "over the limit of 16 megapixels", "huge": "12000x12000 = 144 megapixels", "noise": "not an image file",
            "upload": "maximum allowed size"}


def hostile_request(url: str, kind: str, files: dict[str, Path]) -> dict[str, Any]:
    started = time.perf_counter()
    if kind == "upload":
        def body():
            yield b'--XX\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
            for _ in range(UPLOAD_MB):
                yield bytes(1 << 20)
            yield b"\r\n--XX--\r\n"

        try:
            response = httpx.post(f"{url}gradio_api/upload", content=body(), timeout=120,
                                  headers={"Content-Type": "multipart/form-data; boundary=XX"})
            answer, refused = f"{response.status_code} {response.text}", response.status_code == 413
        except httpx.HTTPError as error:  # the server may close the connection while the body is still arriving
            answer, refused = f"{type(error).__name__}: {error}", True
    else:
        editor = {"background": handle_file(str(files[kind])), "layers": [], "composite": None}
        try:
            Client(url, verbose=False).predict(editor, "a navy blue shirt", 0.6, 1, 10, 3.0, DEFAULT_SAMPLER, 0, api_name="/edit")
            answer, refused = "accepted", False
        except AppError as error:
            answer, refused = str(error), True
    seconds = time.perf_counter() - started
    return {"kind": kind, "refused": refused, "message_ok": EXPECTED[kind] in answer, "seconds": round(seconds, 3),
            "answer": answer[:300]}


def generate_request(url: str, client_number: int, request_number: int, steps: int) -> dict[str, Any]:
    started = time.perf_counter()
    seed = 1000 * client_number + request_number
    # description, negative, category, gender, colour, season, num_images, steps, guidance, sampler, seed, random_seed
    inputs = ["red floral summer dress", "", "any", "any", "any", "any", 1, steps, 3.0, DEFAULT_SAMPLER, seed, False]
    try:
        gallery, status, _, _ = Client(url, verbose=False).predict(*inputs, api_name="/generate")
        ok, answer = len(gallery) == 1, status
    except Exception as error:  # noqa: BLE001 -- counted as a failed good request
        ok, answer = False, f"{type(error).__name__}: {error}"
    return {"ok": ok, "seconds": round(time.perf_counter() - started, 3), "answer": answer[:200]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model for app.py (default: the shipped model)")
    parser.add_argument("--hostile-clients", type=int, default=8)
    parser.add_argument("--generate-clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="times each hostile client sends each kind of file")
    parser.add_argument("--generate-requests", type=int, default=3, help="1-image requests per generating client")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--start-timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "app_hostile_load.json")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="fashiongen-hostile-"))
    files = hostile_files(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = folder / "server.log"
    server = start_server(args, port, log)
    try:
        idle_rss = psutil.Process(server.pid).memory_info().rss
        kinds = ["bomb", "huge", "noise", "upload"]
        started = time.perf_counter()
        with MemoryWatch(server.pid) as watch, ThreadPoolExecutor(args.hostile_clients + args.generate_clients) as pool:
            hostile = [pool.submit(hostile_request, url, kinds[(client + turn) % len(kinds)], files)
                       for turn in range(args.rounds * len(kinds)) for client in range(args.hostile_clients)]
            good = [pool.submit(generate_request, url, client, number, args.steps)
                    for number in range(args.generate_requests) for client in range(args.generate_clients)]
            hostile_results = [future.result() for future in hostile]
            good_results = [future.result() for future in good]
        wall = time.perf_counter() - started
        after = generate_request(url, 99, 0, args.steps)
        photo = folder / "photo.jpg"
        Image.new("RGB", (800, 1000), (30, 40, 120)).save(photo)
        editor = {"background": handle_file(str(photo)), "layers": [], "composite": None}
        edit_after = Client(url, verbose=False).predict(editor, "a red shirt", 0.6, 1, args.steps, 3.0, DEFAULT_SAMPLER, 0,
                                                        api_name="/edit")
        peak_server = watch.high_water_mark()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    peak = max(peak_server + watch.peak_children, watch.peak_tree)
    by_kind = {kind: {"sent": sum(r["kind"] == kind for r in hostile_results),
                      "refused_with_message": sum(r["kind"] == kind and r["refused"] and r["message_ok"] for r in hostile_results),
                      "max_seconds": max((r["seconds"] for r in hostile_results if r["kind"] == kind), default=None)}
               for kind in kinds}
    good_seconds = sorted(r["seconds"] for r in good_results)
    result = {
        "machine": machine(torch.device("cpu")),
        "model": args.model or "fashiongen/pretrained (shipped)",
        "settings": {"hostile_clients": args.hostile_clients, "generate_clients": args.generate_clients, "rounds": args.rounds,
                     "generate_requests_per_client": args.generate_requests, "steps": args.steps, "upload_mb": UPLOAD_MB},
        "wall_s": round(wall, 1),
        "good_requests": {"sent": len(good_results), "succeeded": sum(r["ok"] for r in good_results),
                          "median_s": good_seconds[len(good_seconds) // 2], "max_s": good_seconds[-1]},
        "hostile_requests": by_kind,
        "memory": {"server_idle_rss_mib": round(idle_rss / 2**20), "server_peak_vmhwm_mib": round(peak_server / 2**20),
                   "children_peak_rss_mib": round(watch.peak_children / 2**20), "peak_mib": round(peak / 2**20),
                   "limit_mib": RSS_LIMIT // 2**20, "within_limit": peak < RSS_LIMIT},
        "serves_after": {"generate": after["ok"], "edit_of_a_good_photo": len(edit_after[0]) == 1},
        "failures": [r for r in hostile_results if not (r["refused"] and r["message_ok"])][:5]
                    + [r for r in good_results if not r["ok"]][:5],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{len(good_results)} generate requests: {result['good_requests']['succeeded']} succeeded "
          f"(median {result['good_requests']['median_s']} s, max {result['good_requests']['max_s']} s)")
    for kind, counts in by_kind.items():
        print(f"{kind}: {counts['refused_with_message']}/{counts['sent']} refused with a message (slowest {counts['max_seconds']} s)")
    print(f"server memory: idle {result['memory']['server_idle_rss_mib']} MiB, peak {result['memory']['peak_mib']} MiB "
          f"(limit {RSS_LIMIT // 2**20} MiB); serves after: {result['serves_after']}; {wall:.0f} s; written to {args.out}")
    ok = (result["good_requests"]["succeeded"] == len(good_results) and not result["failures"] and peak < RSS_LIMIT
          and all(result["serves_after"].values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
