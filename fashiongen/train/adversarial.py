"""The loop every adversarial family trains in (the GAN, the upsampler): one `step` (a discriminator update, then a
generator update) per batch, the generator's EMA, NaN and collapse watching, metrics, validation and checkpoints on
the shared schedule (schedule.py), SIGTERM saves, and the export at the end.

    run_adversarial(run, LoopParts(name="GAN", step=train_step, watch=_watch, validate=..., save=..., export=..., hint="..."))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from tqdm import tqdm

from ..runs import MetricsLog, checkpoint_dirs
from .ema import EMA
from .schedule import (
    Throughput,
    StopSignals,
    TrainingDiverged,
    TrainingStopped,
    across_processes,
    epoch_batches,
    log_due,
    save_last_checkpoint,
    validate_and_checkpoint,
    write_metrics,
)


class AdversarialRun(Protocol):
    """What the loop reads of a family's run object (GANRun, UpsamplerRun)."""

    config: Any
    accelerator: Accelerator
    run_dir: Path
    generator: nn.Module  # prepared
    ema: EMA
    metrics: MetricsLog
    train_loader: Any
    train_examples: Any
    steps_per_epoch: int
    step: int

    @property
    def images_per_step(self) -> int: ...


@dataclass(frozen=True)
class LoopParts:
    """A family's pieces of the loop."""

    name: str  # the family, as messages name it ("GAN", "upsampler")
    step: Callable[[Any, dict[str, Any]], dict[str, float]]  # (run, batch) -> this step's numbers
    validate: Callable[[], dict[str, Any]]  # a picture (and numbers for metrics.jsonl), rank 0
    save: Callable[[], Path]  # a checkpoint
    export: Callable[[], Path]  # model files at the end
    hint: str  # what to change when a loss becomes NaN
    watch: Callable[[Any, dict[str, float]], str | None] = lambda run, record: None  # an alert to log, or None
    curves: Callable[[list[dict[str, Any]], Path, str], Any] | None = None  # the run's curves.png from metrics.jsonl
    postfix: tuple[str, ...] = ("d_loss", "g_loss")  # the progress bar's numbers


@dataclass(frozen=True)
class StartModel:
    """train.init_from for an adversarial family, loaded and checked (see `start_model`)."""

    model: Any  # the family's generator class (its EMA weights)
    discriminator: dict[str, Tensor] | None  # its discriminator's float32 weights; None when its folder has none
    facts: dict[str, Any]  # what the run records as training.initialised_from


def start_model(config: Any, encoder: Any, family: type, spec: Any, what: str,
                more_problems: Callable[[Any, dict[str, Tensor] | None], list[str]] = lambda start, d: []) -> StartModel:
    """The model train.init_from names, as the start of a `family` run making `what` ("a GAN (model.family: gan)"):
    its family, architecture (`spec`) and caption encoder must match the config's, and `more_problems` may name
    others; every mismatch is one ConfigError naming the keys."""
    from ..config import ConfigError
    from ..families import load_generator
    from ..models.files import ModelFileError
    from .loop import _INHERITED_FACTS

    path = config.train.init_from
    try:
        start = load_generator(path)
        discriminator = start.discriminator_state() if isinstance(start, family) else None
    except ModelFileError as error:
        raise ConfigError(f"train.init_from: {error}") from None
    if not isinstance(start, family):
        raise ConfigError(f"train.init_from {path}: a {start.family} model cannot start {what}")
    problems = []
    if start.model.spec != spec:
        problems.append(f"model.name: init_from is {start.model.spec.description!r}, not {config.model.name}")
    if start.info.text.identity != encoder.identity:
        problems.append(f"text: init_from was trained with caption encoder {start.info.text.identity}, now {encoder.identity}")
    problems += more_problems(start, discriminator)
    if problems:
        raise ConfigError(f"train.init_from {path}: " + "; ".join(problems))
    training = start.info.training
    facts = {"path": start.source, "sha256": start.info.sha256, "text_identity": start.info.text.identity,
             **{key: training[key] for key in _INHERITED_FACTS if training.get(key) is not None}}
    return StartModel(start, discriminator, facts)


def export_adversarial(run: Any, loss_key: str, section: str,
                       describe: Callable[[dict[str, Any]], dict[str, Any]], dtype: str = "float32") -> Path:
    """The EMA generator and the discriminator (so init_from can continue both) as model files under run_dir/export
    (rank 0): `describe(training facts)` gives model.json, whose `section` records the discriminator; `loss_key` is
    the metrics.jsonl loss the card reports."""
    from ..gan.generator import write_discriminator
    from ..models.files import replacing_directory, write_model_files
    from ..runs import hardware_name, run_facts

    path = run.run_dir / "export"
    if run.accelerator.is_main_process:
        training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "run": run.run_dir.name,
                    "num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
                    "device": str(run.accelerator.device), "hardware": hardware_name(run.accelerator.device),
                    **run_facts([{**r, "loss": r[loss_key]} for r in run.metrics.read() if loss_key in r], run.step),
                    "initialised_from": run.initialised_from}
        description = describe(training)
        with replacing_directory(path, overwrite=True) as temporary:
            discriminator = run.accelerator.unwrap_model(run.discriminator).state_dict()
            description[section]["discriminator"] = write_discriminator(discriminator, temporary, dtype)
            write_model_files(run.ema.module.state_dict(), description, temporary, dtype)
    run.accelerator.wait_for_everyone()
    return path


def run_adversarial(run: AdversarialRun, parts: LoopParts, show_progress: bool = True) -> Path:
    """Train until train.max_steps; checkpoint, validate and log on schedule; export at the end."""
    accelerator, t = run.accelerator, run.config.train
    progress = tqdm(total=t.max_steps, initial=run.step, desc=run.run_dir.name, unit="step", dynamic_ncols=True,
                    disable=not (show_progress and accelerator.is_main_process))
    clock, sums, count = Throughput(), {}, 0

    def validate() -> None:
        write_metrics(run, parts.validate())
        if accelerator.is_main_process and parts.curves is not None:
            parts.curves(run.metrics.read(), run.run_dir / "curves.png", f"{run.run_dir.name} ({run.config.model.name})")

    try:
        with StopSignals() as stop:
            for epoch, batch in epoch_batches(run, t.max_steps):
                record = parts.step(run, batch)
                run.step += 1
                clock.count_step()
                run.ema.update(accelerator.unwrap_model(run.generator), run.step)
                nonfinite = not all(torch.isfinite(torch.tensor(v)) for v in record.values())
                diverged, signum = across_processes(accelerator, float(nonfinite), stop.received)
                if diverged:
                    checkpoints = checkpoint_dirs(run.run_dir)
                    kept = f"the last checkpoint before it is {checkpoints[-1]}" if checkpoints else "no checkpoint was written before it"
                    raise TrainingDiverged(f"a {parts.name} loss became NaN/inf at step {run.step}; {kept}. {parts.hint}")
                if (alert := parts.watch(run, record)) is not None:
                    write_metrics(run, {"alert": alert})
                for key, value in record.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                progress.update(1)
                if log_due(run.step, t):
                    means = {key: value / count for key, value in sums.items()}
                    write_metrics(run, {"epoch": epoch, **means, "images_per_s": clock.images_per_s(run.images_per_step)})
                    progress.set_postfix({key.split("_")[0]: f"{means[key]:.3f}" for key in parts.postfix if key in means})
                    sums, count = {}, 0
                    clock.restart()
                if signum:
                    raise TrainingStopped(int(signum), parts.save())
                validate_and_checkpoint(run.step, t, clock, validate=validate, save=parts.save)
            save_last_checkpoint(run.run_dir, run.step, parts.save)
            validate()
            parts.export()
    finally:
        progress.close()
        accelerator.end_training()
    return run.run_dir


__all__ = ["AdversarialRun", "LoopParts", "StartModel", "export_adversarial", "run_adversarial", "start_model"]
