"""Run directories (runs/NNN-NAME/), the one process that writes each, their metrics log and the facts read back from
it (training time, final loss)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .config import ConfigError
from .utils import LOCK_FILE, LockHeld, atomic_write_text, lock_with_pid

_RUN = re.compile(r"^(\d{3,})-(.+)$")
_STEP = re.compile(r"^step_(\d+)$")
STATE_FILE = "state.json"  # a checkpoint's step, epoch, vocabulary...; written last, so its presence means complete
EMA_FILE = "ema.safetensors"  # a checkpoint's EMA weights: what inference loads


class CheckpointError(ConfigError):
    """A checkpoint's files cannot be read, or do not fit the run (a resume names the file)."""


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


class RunDirError(ConfigError):
    """train.output_dir or a run directory that cannot take a run: a file, read-only, or trained by another process."""


def check_output_dir(output_dir: str | Path) -> None:
    """Before any work: RunDirError naming train.output_dir when it, or a folder above it, is a file, or when the
    nearest existing folder cannot be written."""
    output_dir = Path(output_dir)
    existing = next(path for path in (output_dir, *output_dir.parents) if os.path.lexists(path))
    if not existing.is_dir():
        raise RunDirError(f"train.output_dir: {existing} is not a folder (a file or broken link); choose another train.output_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"train.output_dir: cannot write in {existing} (read-only or no permission); choose another train.output_dir")


def create_run_dir(output_dir: str | Path, name: str) -> Path:
    """Make the next numbered directory, e.g. runs/007-small64; safe against a parallel run taking a number (mkdir
    fails for all but one taker, the others try the next number)."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"train.output_dir: cannot create {output_dir} ({error.strerror})") from None
    while True:
        numbers = [int(m.group(1)) for p in output_dir.iterdir() if (m := _RUN.match(p.name))]
        path = output_dir / f"{max(numbers, default=0) + 1:03d}-{slug(name)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise RunDirError(f"train.output_dir: cannot create {path} ({error.strerror})") from None


# One writer per run: the process training a run holds an exclusive flock on run_dir/.lock (the file holds its pid).
# The kernel drops a flock when its process ends, even by kill -9, so a killed run is never left locked. flock belongs
# to an open file, so a process that locks the same run twice would refuse itself: this table makes it re-entrant.
_HELD: dict[str, int] = {}  # resolved run directory -> the descriptor holding its lock, in this process


def hold_run(run_dir: str | Path) -> None:
    """Lock `run_dir` for this process until `release_run` or the process ends; RunDirError naming the run and the
    holder's pid when another process trains it (or the lock file cannot be written)."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD:
        return
    try:
        _HELD[key] = lock_with_pid(run_dir / LOCK_FILE)
    except LockHeld as held:
        raise RunDirError(f"{run_dir} is being trained by another process (pid {held.pid}); wait for it to end "
                          "(or stop it) before resuming this run") from None
    except OSError as error:
        raise RunDirError(f"{run_dir}: cannot write in the run directory ({error.strerror})") from None


def release_run(run_dir: str | Path) -> None:
    """Let another process train `run_dir` (this process's training of it has ended); nothing if it does not hold it."""
    descriptor = _HELD.pop(str(Path(run_dir).resolve()), None)
    if descriptor is not None:
        os.close(descriptor)  # the lock file stays: unlinking it would let a waiter lock an orphaned inode


def run_dirs(output_dir: str | Path, name: str | None = None) -> list[Path]:
    """Numbered run directories, oldest first, optionally only those of one config name."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _RUN.match(p.name))
             and (name is None or m.group(2) == slug(name))]
    return [p for _, p in sorted(found)]


class MetricsLog:
    """Append-only JSON lines, flushed per line so a crash loses at most the line being written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (a resumed run repeats those steps)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hardware_name(device: Any) -> str:
    """What trained a model, for model cards: the GPU's name, or the CPU model and its cores."""
    import torch  # here, not at the top: run directories need no torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu} ({cores} cores)"


def run_facts(records: list[dict[str, Any]], up_to_step: int, max_gap_s: float = 900.0) -> dict[str, Any]:
    """Final training loss and training wall time from metrics.jsonl records up to a step. Gaps longer than
    `max_gap_s` between log lines (a stopped and later resumed run) are not counted. A GAN's loss is its G loss."""
    lines = [{**r, "loss": r.get("loss", r.get("g_loss"))} for r in records
             if ("loss" in r or "g_loss" in r) and "time" in r and r.get("step", 0) <= up_to_step]
    if not lines:
        return {}
    seconds = 0.0
    for before, after in zip(lines, lines[1:]):
        gap = after["time"] - before["time"]
        if 0 < gap <= max_gap_s and after["step"] > before["step"]:
            seconds += gap
    return {"final_loss": round(float(lines[-1]["loss"]), 5), "wall_time_s": round(seconds, 1),
            "wall_time": f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"}


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def read_state(checkpoint: Path) -> dict[str, Any]:
    """state.json of a checkpoint; CheckpointError naming the file when it is unreadable or not an object with a step."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint state ({error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool):
        raise CheckpointError(f"{path}: step: missing or not an integer")
    return state
