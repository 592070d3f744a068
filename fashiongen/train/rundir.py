"""The run directory a training process writes: a new numbered one or a resumed one, held by this process alone.

Rank 0 makes or opens it and holds its lock (runs.hold_run) before anything is written there; the other processes of
an Accelerate launch learn its path, or rank 0's refusal, by one broadcast, so every process fails alike.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from ..config import Config, ConfigError
from ..runs import create_run_dir, hold_run
from ..utils import remove_stale_temporaries
from .checkpoint import clear_partial_checkpoints, run_dir_of


def _open_on_main(config: Config, resume: Path | None) -> Path:
    if resume is None:
        run_dir = create_run_dir(config.train.output_dir, config.name)
        hold_run(run_dir)
        return run_dir
    run_dir = run_dir_of(resume)
    hold_run(run_dir)
    clear_partial_checkpoints(run_dir)  # a killed run's partial checkpoint may fill most of a disk
    for folder in (run_dir, run_dir / "samples"):
        remove_stale_temporaries(folder)
    return run_dir


def open_run_dir(config: Config, resume: Path | None, state: PartialState) -> Path:
    """A resumed run's directory, its killed run's leftovers cleared, or the next numbered one under
    train.output_dir: the same on every process, locked by rank 0 (RunDirError on every process when another
    process trains it)."""
    outcome: list[str | ConfigError | None] = [None]
    if state.is_main_process:
        try:
            outcome = [str(_open_on_main(config, resume))]
        except ConfigError as error:
            outcome = [error]
    broadcast_object_list(outcome)
    if isinstance(outcome[0], ConfigError):
        raise outcome[0]
    return Path(str(outcome[0]))
