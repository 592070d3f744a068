"""The set-up every family's trainer starts from: the config of a new or resumed run, the training data and its
sampler, the run directory, the accelerator, the caption encoder with its cache, the data loader, and the checks and
restore of a resume.

    start = open_data(config, resume)                          # before any folder is made: bad settings fail first
    run_dir, accelerator, encoder = open_run(config, resume, start, [start.train_set], show_progress)
    ...                                                        # the family builds its networks and its run
    restore(run, resume, ema); announce(run, resume, "gan-tiny (...)")
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from ..config import Config, ConfigError, config_to_dict, load_config, save_config
from ..data import FashionDataset
from ..runs import check_output_dir, hold_run, read_state
from ..text import CaptionEncoder
from .checkpoint import load_checkpoint, resolve_resume, run_dir_of
from .data import EpochSampler, precompute_captions
from .device import resolve_precision
from .ema import EMA
from .loader import make_loader
from .rundir import open_run_dir

logger = logging.getLogger("fashiongen.train")

# Settings a resumed run must share with its checkpoint to continue the same training.
FROZEN_KEYS = ("seed", "model", "text", "data.source", "data.resolution", "data.caption_mode", "data.caption_template",
               "train.init_from")
# What a model that starts a run (train.init_from) tells the new run's exports about how it was made.
INHERITED_FACTS = ("steps", "images_seen", "hardware", "wall_time_s", "wall_time", "final_loss", "initialised_from")


def setting(config: Config, dotted: str) -> Any:
    """The value of a dotted key ("data.source") of a config."""
    value: Any = config_to_dict(config)
    for part in dotted.split("."):
        value = value[part]
    return value


def differences(old: Any, new: Any, prefix: str, source: str = "checkpoint") -> list[str]:
    """Every leaf where two nested settings differ, as "key: SOURCE has OLD, now NEW"."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in old.keys() | new.keys() for d in differences(old.get(key), new.get(key), f"{prefix}.{key}", source)]
    return [] if old == new else [f"{prefix}: {source} has {old!r}, now {new!r}"]


def resolve_training_config(paths: list[str], overrides: list[str], resume: str | None) -> tuple[Config, Path | None]:
    """The config of a new run, or of a resumed one (its checkpoint's config, then `paths` and `overrides`).

    A resumed run may change how long it trains and how it logs, not what it trains.
    """
    if resume is None:
        config = load_config(paths, overrides)
        check_output_dir(config.train.output_dir)  # a file or a read-only folder, refused before any work
        return config, None
    if resume == "latest":
        config = load_config(paths, overrides)
        checkpoint = resolve_resume("latest", config.train.output_dir, config.name)
    else:
        checkpoint = resolve_resume(resume, "", "")
    if PartialState(cpu=distributed_cpu()).is_main_process:
        hold_run(run_dir_of(checkpoint))  # one writer per run, before its checkpoint is read (another may rotate it)
    saved = load_config([checkpoint / "config.yaml"])
    config = load_config(paths, overrides, base=saved)
    problems = [d for key in FROZEN_KEYS for d in differences(setting(saved, key), setting(config, key), key)]
    if problems:
        raise ConfigError(f"--resume {checkpoint}: these settings must match the checkpoint: " + "; ".join(sorted(problems)))
    return config, checkpoint


def distributed_cpu() -> bool:
    """Several processes but no CUDA (e.g. `accelerate launch --multi_gpu` on a CPU machine): use gloo on CPU."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(config: Config, run_dir: Path) -> Accelerator:
    """The run's accelerator: train.mixed_precision ("auto" resolved, when `prepare` has not already), gradient
    accumulation, TensorBoard in the run directory; on CUDA its loader copies pinned batches without blocking."""
    # accelerate keeps one process-wide state; drop its mixed-precision part (not the process group)
    # so a second run in the same process (a notebook, a benchmark) may choose another precision.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=distributed_cpu(),
        mixed_precision=resolve_precision(config.train.mixed_precision, family=config.model.family),
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
        log_with="tensorboard" if config.train.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir)),  # trackers add "tensorboard/"
    )


def open_encoder(config: Config, run_dir: Path, accelerator: Accelerator, datasets: list[FashionDataset],
                 show_progress: bool) -> CaptionEncoder:
    """The caption encoder with every caption of `datasets` in its cache (training reads embeddings only from it;
    without text.cache_dir the cache lives inside the run)."""
    text_config = config.text
    if not text_config.cache_dir:
        text_config = dataclasses.replace(text_config, cache_dir=str(run_dir / "text-cache"))
    with accelerator.main_process_first():  # the first process creates the cache file
        encoder = CaptionEncoder(text_config)
    precompute_captions(encoder, datasets, show_progress=show_progress and accelerator.is_main_process,  # every rank a share
                        rank=accelerator.process_index, world_size=accelerator.num_processes, device=accelerator.device)
    return encoder


@dataclass
class DataStart:
    """A run's data, opened before anything is written: the training set, its sampler and a resumed run's state."""

    state: PartialState  # this process in the launch
    train_set: FashionDataset
    sampler: EpochSampler
    global_batch: int  # examples per optimizer step over all processes
    saved: dict[str, Any]  # the checkpoint's state.json; {} for a new run

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler) // self.global_batch


def open_data(config: Config, resume: Path | None, batches_per_step: int = 1) -> DataStart:
    """The training split and an epoch sampler of whole global batches (it fails here when the batch is too big)."""
    state = PartialState(cpu=distributed_cpu())
    train_set = FashionDataset.from_config(config.data, seed=config.seed)
    global_batch = config.train.batch_size * state.num_processes * batches_per_step
    sampler = EpochSampler(len(train_set), config.seed, global_batch)
    saved = read_state(resume) if resume is not None else {}
    return DataStart(state, train_set, sampler, global_batch, saved)


def open_run(config: Config, resume: Path | None, start: DataStart, datasets: list[FashionDataset],
             show_progress: bool) -> tuple[Path, Accelerator, CaptionEncoder]:
    """The run directory (new or resumed, held by this process), the accelerator, the seeded RNGs and the encoder."""
    run_dir = open_run_dir(config, resume, start.state)
    accelerator = make_accelerator(config, run_dir)
    set_seed(config.seed)
    return run_dir, accelerator, open_encoder(config, run_dir, accelerator, datasets, show_progress)


def restore(run: Any, resume: Path | None, ema: EMA) -> dict[str, Any]:
    """A resumed run's checkpoint into `run` (its step, networks, optimisers, RNGs and EMA); returns its state.json
    ({} for a new run). A different batch layout is allowed, with a warning."""
    if resume is None:
        return {}
    restored = load_checkpoint(run.accelerator, resume, ema)
    run.step = int(restored["step"])
    if restored.get("num_processes") != run.accelerator.num_processes or restored.get("images_per_step") != run.images_per_step:
        logger.warning("resuming with a different batch layout (%s processes, %s images/step; checkpoint: %s, %s): "
                       "the data order will not continue exactly", run.accelerator.num_processes, run.images_per_step,
                       restored.get("num_processes"), restored.get("images_per_step"))
    return restored


def announce(run: Any, resume: Path | None, summary: str) -> None:
    """Rank 0: the resolved config.yaml in the run, metrics.jsonl cut to the run's step, and one log line."""
    if run.accelerator.is_main_process:
        save_config(run.config, run.run_dir / "config.yaml")
        run.metrics.truncate_after(run.step)  # a resumed run repeats the steps after its checkpoint
        logger.info("run %s: %s, %d steps per epoch%s", run.run_dir, summary, run.steps_per_epoch,
                    f", resumed at step {run.step}" if resume is not None else "")


def parameters_m(module: torch.nn.Module) -> float:
    """A module's parameter count in millions (for the log)."""
    return sum(p.numel() for p in module.parameters()) / 1e6


__all__ = ["DataStart", "FROZEN_KEYS", "INHERITED_FACTS", "announce", "differences", "distributed_cpu", "make_accelerator",
           "make_loader", "open_data", "open_encoder", "open_run", "parameters_m", "resolve_training_config", "restore",
           "setting"]
