"""The app's cold start on a new machine: seconds from `python app.py` until the page answers, and until the Nearest
products tab searches (its index built in the background, app/indexing.py), with an empty --cache-dir and again
with the cache the first start wrote.

    python benchmarks/app_cold_start.py                     # the shipped models and their training data's products
    python benchmarks/app_cold_start.py --out /tmp/cold.json --timeout 600

Each start is a fresh process (`app.py --host 127.0.0.1 --port FREE --cache-dir DIR`), stopped once measured.
`page_s`: until GET / answers 200; `nearest_s`: until the /nearest endpoint returns products for a product photo
(before that it answers with the tab's progress sentence, which is recorded). JSON to --out
(default benchmarks/results/app_cold_start.json).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(cache_dir: Path, photo: Path, timeout: float) -> dict[str, Any]:
    """One start: when the page answers, when a search first succeeds, and what the tab said meanwhile."""
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--cache-dir",
                                str(cache_dir)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    result: dict[str, Any] = {"page_s": None, "nearest_s": None, "said_while_indexing": []}
    try:
        while time.perf_counter() - began < timeout and result["page_s"] is None:
            if process.poll() is not None:
                raise SystemExit(f"app.py exited with {process.returncode} before answering")
            if answers(url):
                result["page_s"] = round(time.perf_counter() - began, 2)
            else:
                time.sleep(0.2)
        client = Client(url, verbose=False)
        while time.perf_counter() - began < timeout:
            try:
                gallery, verdict = client.predict(handle_file(str(photo)), 3, api_name="/nearest")
                result["nearest_s"] = round(time.perf_counter() - began, 2)
                result["verdict"] = verdict
                break
            except Exception as error:  # the tab's sentence while the index is built
                said = str(error).splitlines()[0][:200]
                if not result["said_while_indexing"] or result["said_while_indexing"][-1] != said:
                    result["said_while_indexing"].append(said)
                time.sleep(1.0)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", default=str(REPO.parent / "shared/data/fashion-products/images/10000.jpg"),
                        help="a product photo to search for")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/app_cold_start.json"))
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="fashiongen-cold-") as cache:
        cold = start(Path(cache), Path(args.photo), args.timeout)
        print(f"cold start: page {cold['page_s']} s, nearest products {cold['nearest_s']} s", flush=True)
        warm = start(Path(cache), Path(args.photo), args.timeout)
        print(f"warm cache: page {warm['page_s']} s, nearest products {warm['nearest_s']} s", flush=True)
    report = {"machine": machine(torch.device("cpu")), "cold": cold, "warm_cache": warm}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
