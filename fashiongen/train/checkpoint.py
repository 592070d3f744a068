"""Checkpoints that survive kills: written to a hidden temporary directory, then renamed into place.

runs/NNN-NAME/checkpoints/step_000500/ holds accelerate's state (model, optimizer, grad scaler,
every process's RNG states), ema.safetensors, the resolved config.yaml and state.json (step, epoch,
attribute vocabulary, ...). state.json is written last and the directory appears under its final
name only by one rename, so a directory named step_* with a state.json is always complete; a kill
mid-save leaves a .tmp-* directory that resume ignores and clears (`clear_partial_checkpoints`). A save
that fails for want of disk space (or a read-only or forbidden folder) removes its partial directory and
raises CheckpointWriteError, which says so and names the path.
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
from ..utils import atomic_write_text, disk_problem, first_line
from .ema import EMA
from ..runs import EMA_FILE, STATE_FILE, CheckpointError, checkpoint_dirs, read_state, run_dirs
from ..errors import UserError

logger = logging.getLogger("fashiongen.train")

_PARTIAL = re.compile(r"^\.tmp-step_\d+$")
class CheckpointWriteError(UserError, RuntimeError):
    """A checkpoint could not be written: disk full, quota, read-only folder or no permission."""


def clear_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Remove .tmp-step_* directories that a killed or failed save left (they may hold most of a disk)."""
    root = Path(run_dir) / "checkpoints"
    partial = [p for p in root.iterdir() if _PARTIAL.match(p.name)] if root.is_dir() else []
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed the partial checkpoint %s", path)
    return partial


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, ema: EMA | None, config: Config,
                    state: dict[str, Any], keep: int) -> Path:
    """Collective: every process calls it. Returns the checkpoint directory. (`ema` None: a model without one, the critic.)"""
    root = run_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    temporary = root / f".tmp-step_{step:06d}"
    try:
        if accelerator.is_main_process:
            clear_partial_checkpoints(run_dir)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary), safe_serialization=True)
        if accelerator.is_main_process:
            if ema is not None:
                save_file(ema.state_dict(), temporary / EMA_FILE)
            save_config(config, temporary / "config.yaml")
            atomic_write_text(temporary / STATE_FILE, json.dumps({**state, "step": step}, indent=2) + "\n")
    except Exception as error:
        problem = disk_problem(error, temporary)  # before the partial folder's space is freed
        shutil.rmtree(temporary, ignore_errors=True)
        if problem is None:
            raise
        raise CheckpointWriteError(f"{temporary.parent}: {problem}: checkpoint step {step} not saved "
                                   "(free space there, then --resume)") from None
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        temporary.rename(final)
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, ema: EMA) -> dict[str, Any]:
    """Restore model, optimizer, RNG states (accelerate) and the EMA; returns state.json. A damaged file raises
    CheckpointError naming the checkpoint."""
    state = read_state(checkpoint)
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as error:  # torch, safetensors and accelerate each raise their own on a damaged file
        reason = first_line(error)
        raise CheckpointError(f"{checkpoint}: training state cannot be restored ({reason}); resume from an older "
                              "checkpoint of the run") from None
    weights = checkpoint / EMA_FILE
    try:
        ema.load_state_dict(load_file(weights, device=str(next(ema.module.parameters()).device)))
    except Exception as error:
        reason = first_line(error)
        raise CheckpointError(f"{weights}: EMA weights cannot be restored ({reason}); resume from an older "
                              "checkpoint of the run") from None
    return state


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
