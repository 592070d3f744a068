"""Checkpoints that survive kills: written to a hidden temporary directory, then renamed into place.

runs/NNN-NAME/checkpoints/step_000500/ holds accelerate's state (model, optimizer, grad scaler,
every process's RNG states), ema.safetensors, the resolved config.yaml and state.json (step, epoch,
attribute vocabulary, ...). state.json is written last and the directory appears under its final
name only by one rename, so a directory named step_* with a state.json is always complete; a kill
mid-save leaves a .tmp-* directory that resume ignores and the next save clears.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..config import Config, ConfigError, save_config
from ..utils import atomic_write_text
from .ema import EMA
from .runs import run_dirs

logger = logging.getLogger("fashiongen.train")

_STEP = re.compile(r"^step_(\d+)$")
STATE_FILE = "state.json"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, ema: EMA | None, config: Config,
                    state: dict[str, Any], keep: int) -> Path:
    """Collective: every process calls it. Returns the checkpoint directory. (`ema` None: a model without one, the critic.)"""
    root = run_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    temporary = root / f".tmp-step_{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    if accelerator.is_main_process:
        if ema is not None:
            save_file(ema.state_dict(), temporary / "ema.safetensors")
        save_config(config, temporary / "config.yaml")
        atomic_write_text(temporary / STATE_FILE, json.dumps({**state, "step": step}, indent=2) + "\n")
        if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        temporary.rename(final)
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, ema: EMA) -> dict[str, Any]:
    """Restore model, optimizer, RNG states (accelerate) and the EMA; returns state.json."""
    accelerator.load_state(str(checkpoint))
    ema.load_state_dict(load_file(checkpoint / "ema.safetensors", device=str(next(ema.module.parameters()).device)))
    return read_state(checkpoint)


def resolve_resume(resume: str, output_dir: str | Path, name: str) -> Path:
    """'latest' (newest complete checkpoint of the newest run named NAME), a run directory, or a checkpoint."""
    if resume == "latest":
        for run in reversed(run_dirs(output_dir, name)):
            if checkpoints := checkpoint_dirs(run):
                return checkpoints[-1]
        raise ConfigError(f"--resume latest: no complete checkpoint in any run named '{name}' under {output_dir}/")
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_dir() and (checkpoints := checkpoint_dirs(path)):
        return checkpoints[-1]
    raise ConfigError(f"--resume {resume}: not a checkpoint directory (with {STATE_FILE}) nor a run directory with complete checkpoints")


def run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent
