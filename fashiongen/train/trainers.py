"""The registry of trainers, one per family, and the two calls every training command makes: `prepare` builds the
trainer the config's family names, `train` runs it in the one loop (engine.py).

    run = prepare(config, resume=None)   # or resume="latest" / a run or checkpoint directory
    train(run)                           # returns the run directory

Adding a family: its folder, its trainer module (a `Trainer` with a `build`), one line here and one config section.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, ConfigError
from ..runs import release_run
from .critic import CriticRun
from .device import with_resolved_precision
from .diffusion import TrainingRun
from .distill import DistillRun
from .engine import Trainer, run_training
from .gan import GANRun
from .upsampler import UpsamplerRun

# model.family -> its trainer (the critic is trained by `python -m fashiongen.train critic`, from the critic.* section)
TRAINERS: dict[str, type[Trainer]] = {
    "diffusion": TrainingRun,
    "gan": GANRun,
    "upsampler": UpsamplerRun,
    "student": DistillRun,
    "critic": CriticRun,
}


def trainer_class(family: str) -> type[Trainer]:
    """The trainer registered for `family`; an unknown family is one ConfigError naming the known ones."""
    if family not in TRAINERS:
        raise ConfigError(f"model.family: '{family}' has no trainer; one of {', '.join(TRAINERS)}")
    return TRAINERS[family]


def prepare(config: Config, resume: Path | None = None, show_progress: bool = True) -> Trainer:
    """Check the config, open data, build the family's networks, optimisers and EMA, restore a checkpoint and make
    the run directory: the trainer that `train` runs. train.mixed_precision "auto" is resolved first (bf16 on a CUDA
    GPU or, for the families in device.BF16_ON_CPU, a CPU with bf16 kernels), so the run records what it trains in."""
    return trainer_class(config.model.family).build(with_resolved_precision(config), resume, show_progress)


def train(run: Trainer, show_progress: bool = True) -> Path:
    """Train until the schedule's max_steps; checkpoint, validate and log on schedule (schedule.py); export at the end.
    Then (or on failure) the run directory is free for another process to resume."""
    try:
        return run_training(run, show_progress)
    finally:
        release_run(run.run_dir)


__all__ = ["TRAINERS", "prepare", "train", "trainer_class"]
