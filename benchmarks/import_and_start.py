"""Import time of fashiongen.pipeline and start time of the app, for one or more source trees, each in fresh processes.

    python benchmarks/import_and_start.py --tree before=../legacy-wt --tree after=.      # 5 rounds, alternating order
    python benchmarks/import_and_start.py --tree before=../legacy-wt --repeats 3 --out /tmp/import_and_start.json

For every tree (NAME=PATH: a checkout holding fashiongen/ and app.py), each round measures:

* import: a fresh `python -c "import fashiongen.pipeline"` with PYTHONPATH=PATH, run in PATH. Reported: seconds of
  the import statement inside the process (`import_s`), seconds from starting the process until it exited
  (`process_s`: interpreter start + import + exit), the number of modules in sys.modules afterwards, and whether
  accelerate, matplotlib, faiss or fashiongen.train got loaded. The child checks that fashiongen.__file__ lies in
  PATH, so a tree never measures the installed package by mistake.
* app start: `python PATH/app.py --no-products --host 127.0.0.1 --port FREE` (the shipped default model, no product
  index), timed from starting the process until its HTTP server answers GET / (app.py loads the model before it
  launches the server, so an answer means both are done); then the process is stopped.

Fairness on a small, shared machine: the trees take turns, in reversed order every other round, and the
median and min of --repeats rounds are reported. Every tree first runs both once untimed. Compiled
bytecode goes to one temporary PYTHONPYCACHEPREFIX shared by the trees, so each tree gets warm .pyc files,
none is written into a tree, and neither tree depends on a stale __pycache__. One more untimed
`-X importtime` run per tree records which top-level packages take the import's time.

A table goes to stdout; everything, each run included, to --out (default benchmarks/results/import_and_start.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
WATCHED = ("accelerate", "matplotlib", "faiss")

# Runs in the child: times the import, then says what it loaded and where fashiongen came from.
IMPORT_PROBE = r"""
import json, sys, time
started = time.perf_counter()
import fashiongen.pipeline
seconds = time.perf_counter() - started
import fashiongen
tops = {name.split(".")[0] for name in sys.modules}
print(json.dumps({"import_s": seconds, "modules": len(sys.modules), "fashiongen_file": fashiongen.__file__,
                  "fashiongen_modules": sum(name.split(".")[0] == "fashiongen" for name in sys.modules),
                  "loaded": {name: name in tops for name in WATCHED},
                  "train_loaded": any(name.split(".")[:2] == ["fashiongen", "train"] for name in sys.modules)}))
""".replace("WATCHED", repr(WATCHED))


def child_env(tree: Path, pycache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(pycache), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the prefix must fill up, or every run recompiles everything
    return env


def measure_import(tree: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=tree, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    process_s = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"import fashiongen.pipeline failed in {tree}:\n{result.stderr[-3000:]}")
    run = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(run["fashiongen_file"]).resolve().is_relative_to(tree):
        raise RuntimeError(f"measured {run['fashiongen_file']}, not the tree {tree}")
    return {"process_s": round(process_s, 3), **run, "import_s": round(run["import_s"], 3)}


def import_profile(tree: Path, env: dict[str, str], top: int = 10) -> dict[str, float]:
    """Seconds of `-X importtime` self time per top-level package, the largest `top`."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import fashiongen.pipeline"], cwd=tree, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    seconds: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, _, name = (part.strip() for part in line[len("import time:"):].split("|"))
            seconds[name.split(".")[0]] += int(self_us) / 1e6
    return {name: round(value, 3) for name, value in sorted(seconds.items(), key=lambda item: -item[1])[:top]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an error page is still an answer: the server is listening
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def measure_app_start(tree: Path, env: dict[str, str], log_dir: Path, timeout: float) -> dict[str, Any]:
    """Seconds from starting app.py until its server answers on a free port; the app is stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = log_dir / f"app-{tree.name}-{port}.log"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        # app.py's own folder comes first on sys.path, so it imports the tree's fashiongen.
        process = subprocess.Popen([sys.executable, str(tree / "app.py"), "--no-products", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            while not answers(url):
                if process.poll() is not None:
                    raise RuntimeError(f"app.py in {tree} exited with {process.returncode} before serving:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"app.py in {tree} did not answer on {url} within {timeout:.0f} s:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            stop(process)
    return {"start_s": round(seconds, 3)}


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the app's own process group (started with start_new_session), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def parse_tree(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    tree = Path(path if sep else name).expanduser().resolve()
    name = name if sep else tree.name
    for needed in ("fashiongen/__init__.py", "app.py"):
        if not (tree / needed).is_file():
            raise argparse.ArgumentTypeError(f"{tree} has no {needed}: --tree takes NAME=PATH of a FashionGen checkout")
    return name, tree


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=parse_tree, action="append",
                        help="NAME=PATH of a source tree (repeatable; default: this checkout as 'current')")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per tree (default 5)")
    parser.add_argument("--no-app", action="store_true", help="time only the import")
    parser.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for the app to answer")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "import_and_start.json")
    args = parser.parse_args()
    trees = args.tree or [parse_tree(f"current={REPO}")]
    if len({name for name, _ in trees}) != len(trees):
        parser.error("tree names must differ")

    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"import": [], "app": []} for name, _ in trees}
    profiles: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="import-and-start-") as scratch:
        scratch_dir = Path(scratch)
        envs = {name: child_env(tree, scratch_dir / "pycache") for name, tree in trees}
        for name, tree in trees:  # untimed: fills the bytecode cache and the page cache
            print(f"warm-up: {name} ({tree})", flush=True)
            measure_import(tree, envs[name])
            profiles[name] = import_profile(tree, envs[name])
            if not args.no_app:
                measure_app_start(tree, envs[name], scratch_dir, args.start_timeout)
        for round_number in range(args.repeats):
            order = trees if round_number % 2 == 0 else trees[::-1]
            for name, tree in order:
                runs[name]["import"].append(measure_import(tree, envs[name]))
            if not args.no_app:
                for name, tree in order:
                    runs[name]["app"].append(measure_app_start(tree, envs[name], scratch_dir, args.start_timeout))
            print(f"round {round_number + 1}/{args.repeats}: " + ", ".join(
                f"{name} import {runs[name]['import'][-1]['import_s']:.2f} s"
                + (f", app {runs[name]['app'][-1]['start_s']:.2f} s" if not args.no_app else "") for name, _ in order),
                flush=True)

    results = {}
    for name, tree in trees:
        imports, apps = runs[name]["import"], runs[name]["app"]
        last = imports[-1]
        results[name] = {
            "tree": str(tree),
            "import_s": summary([run["import_s"] for run in imports]),
            "import_process_s": summary([run["process_s"] for run in imports]),
            "app_start_s": summary([run["start_s"] for run in apps]) if apps else None,
            "modules": last["modules"], "fashiongen_modules": last["fashiongen_modules"],
            "loaded": last["loaded"], "train_loaded": last["train_loaded"],
            "import_self_s_by_package": profiles[name],
        }

    header = ["tree", "import s (median / min)", "process s (median / min)", "app start s (median / min)", "modules",
              *WATCHED, "fashiongen.train"]
    rows = [[name, f"{r['import_s']['median']:.2f} / {r['import_s']['min']:.2f}",
             f"{r['import_process_s']['median']:.2f} / {r['import_process_s']['min']:.2f}",
             f"{r['app_start_s']['median']:.2f} / {r['app_start_s']['min']:.2f}" if r["app_start_s"] else "-",
             str(r["modules"]), *("yes" if r["loaded"][watched] else "no" for watched in WATCHED),
             "yes" if r["train_loaded"] else "no"] for name, r in results.items()]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    for name, r in results.items():
        largest = list(r["import_self_s_by_package"].items())[:6]
        print(f"{name}: import self time by package: "
              + ", ".join(f"{package} {seconds:.2f}" for package, seconds in largest))

    import torch  # only for the machine facts, after every timed run

    from benchmarks.common import machine

    load_after = os.getloadavg()
    report = {"benchmark": "import_and_start", "repeats": args.repeats, "machine": machine(torch.device("cpu")),
              "load_average_before_after": [[round(value, 2) for value in load] for load in (load_before, load_after)],
              "results": results, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({name: {key: r[key] for key in ("import_s", "app_start_s", "modules", "loaded")}
                      for name, r in results.items()}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
