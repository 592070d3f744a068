"""The one training loop every family runs (diffusion, GAN, upsampler, student, critic): progress, stop signals, the
NaN check across processes, metric sums, validation and checkpoints on the shared schedule (schedule.py), the export
and the curves at the end. A family supplies a `Trainer`: its run's state and its step, validation, save and export.

    trainer = TRAINERS[config.model.family].build(config, resume)   # trainers.py
    run_dir = run_training(trainer)

One command for one CPU, one GPU or many GPUs (`accelerate launch --multi_gpu ...`): every process runs this loop on
its share of each global batch; rank 0 logs, samples and writes files. How the loop reads its numbers (per step on
the host, or summed on the device and read at each log line) is the `MetricSums` a trainer picks.
"""

from __future__ import annotations

import json
import logging
import math
import resource
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import Ending, error_line
from ..runs import checkpoint_dirs
from .ema import EMA
from .schedule import (
    LoopRun,
    Schedule,
    StopSignals,
    Throughput,
    TrainingDiverged,
    TrainingStopped,
    across_processes,
    epoch_batches,
    log_due,
    save_last_checkpoint,
    validate_and_checkpoint,
    write_metrics,
)

logger = logging.getLogger("fashiongen.train")


class TrainingOutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message names the settings that reduce memory."""


def training_failed(error: Exception) -> Ending | None:
    """How a training command ends on a run that diverged, ran out of memory or lost a data-loader worker (killed
    for memory, usually): one `error:` line and exit code 1 (fashiongen.errors.command's handler)."""
    if isinstance(error, (TrainingDiverged, TrainingOutOfMemory)):
        return Ending(error_line(error), 1)
    if isinstance(error, RuntimeError) and "DataLoader worker" in str(error):
        # torch: "DataLoader worker (pid(s) N) exited unexpectedly" / "is killed by signal"
        reason = str(error).strip().splitlines()[0].rstrip(".")
        return Ending(f"error: {reason}; a worker killed for memory is the usual cause: lower train.num_workers or "
                      "train.batch_size, then resume with --resume latest", 1)
    return None


class MetricSums(Protocol):
    """A log interval's numbers: added per micro-batch, read (and reset) at each log line."""

    def add(self, numbers: dict[str, Any]) -> None: ...

    def nonfinite(self) -> Tensor | float: ...  # > 0 when a checked number became NaN/inf

    def means(self, accelerator: Accelerator) -> dict[str, float]: ...  # and start the next interval


class HostSums:
    """Per-step numbers (floats) summed on the host; the NaN check reads the latest step's `checked` keys (None: all)."""

    def __init__(self, checked: tuple[str, ...] | None = None) -> None:
        self.checked, self.count, self.bad = checked, 0, False
        self.sums: dict[str, float] = {}

    def add(self, numbers: dict[str, Any]) -> None:
        self.bad = not all(math.isfinite(numbers[key]) for key in (self.checked or numbers))
        for key, value in numbers.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def nonfinite(self) -> float:
        return float(self.bad)

    def means(self, accelerator: Accelerator) -> dict[str, float]:
        means = {key: value / self.count for key, value in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


class DeviceSums:
    """Per-sample losses ({"loss": [B]}) summed on the device, averaged over every process's samples at each log line
    (one gather); a NaN/inf anywhere since the start is remembered."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device)
        self.count = torch.zeros((), device=device)
        self.bad = torch.zeros((), device=device)

    def add(self, numbers: dict[str, Any]) -> None:
        loss = numbers["loss"]
        self.total += loss.sum()
        self.count += loss.numel()
        self.bad = torch.maximum(self.bad, (~torch.isfinite(loss)).any().float())

    def nonfinite(self) -> Tensor:
        return self.bad

    def means(self, accelerator: Accelerator) -> dict[str, float]:
        totals = accelerator.gather(torch.stack([self.total, self.count])).view(-1, 2).sum(dim=0)
        self.total.zero_(), self.count.zero_()
        return {"loss": float(totals[0] / totals[1])}


class Trainer(LoopRun, Protocol):
    """One family's training as the engine drives it (beyond the run state schedule.LoopRun names); built by the
    family's `build(config, resume, show_progress)` (trainers.py registers one per family). Classes that subclass it
    get the defaults below."""

    name: ClassVar[str]  # the family, as messages name it ("GAN")
    hint: ClassVar[str]  # what to change when a loss becomes NaN
    postfix: ClassVar[tuple[str, ...]] = ("loss",)  # the progress bar's numbers
    config: Any
    run_dir: Path

    @classmethod
    def build(cls, config: Any, resume: Path | None = None, show_progress: bool = True) -> Trainer: ...

    @property
    def images_per_step(self) -> int: ...

    @property
    def schedule(self) -> Schedule:  # the loop's config section
        return self.config.train

    @property
    def label(self) -> str:  # the progress bar's
        return self.run_dir.name

    @property
    def batches_per_step(self) -> int:  # micro-batches per optimizer step (gradient accumulation)
        return 1

    def averaged(self) -> tuple[EMA, nn.Module] | None:  # an EMA and the prepared network it follows, updated each step
        return None

    def new_sums(self) -> MetricSums:
        return HostSums()

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]: ...  # one micro-batch; its numbers

    def optimizer_stepped(self) -> bool:  # whether that micro-batch ended an optimizer step
        return True

    def log_extras(self) -> dict[str, Any]:  # numbers of the log line beside the interval's means
        return {}

    def alert(self, numbers: dict[str, Any]) -> str | None:  # a warning for metrics.jsonl, or None
        return None

    def validate(self) -> dict[str, Any]: ...  # collective: numbers for metrics.jsonl (and pictures, rank 0)

    def curves(self, records: list[dict[str, Any]], path: Path, title: str) -> Any:  # curves.png from metrics.jsonl
        return None

    def save(self) -> Path: ...  # collective: a checkpoint of this step

    def export(self) -> Path: ...  # collective: the model files at the end

    def stopped(self, signum: int, checkpoint: Path) -> TrainingStopped:
        return TrainingStopped(signum, checkpoint)

    def out_of_memory(self) -> str | None:  # advice when the GPU runs out of memory; None re-raises torch's error
        return None


def run_training(trainer: Trainer, show_progress: bool = True) -> Path:
    """Train until the schedule's max_steps; checkpoint, validate and log on schedule; export at the end."""
    accelerator, schedule = trainer.accelerator, trainer.schedule
    progress = tqdm(total=schedule.max_steps, initial=min(trainer.step, schedule.max_steps), desc=trainer.label,
                    unit="step", dynamic_ncols=True, disable=not (show_progress and accelerator.is_main_process))
    clock, sums = Throughput(), trainer.new_sums()
    try:
        with StopSignals() as stop:
            for epoch, batch in epoch_batches(trainer, schedule.max_steps, trainer.batches_per_step):
                numbers = trainer.train_step(batch)
                sums.add(numbers)
                if not trainer.optimizer_stepped():
                    continue
                signum = _count_step(trainer, numbers, sums, clock, stop)
                progress.update(1)
                if log_due(trainer.step, schedule):
                    _log(trainer, epoch, sums, clock, progress)
                if signum:
                    raise trainer.stopped(int(signum), trainer.save())
                validate_and_checkpoint(trainer.step, schedule, clock, validate=lambda: _validation(trainer),
                                        save=trainer.save)
            save_last_checkpoint(trainer.run_dir, trainer.step, trainer.save)
            _validation(trainer)
            trainer.export()
    except torch.OutOfMemoryError as error:
        if (advice := trainer.out_of_memory()) is None:
            raise
        raise TrainingOutOfMemory(advice) from error
    finally:
        progress.close()
        accelerator.end_training()
    return trainer.run_dir


def _count_step(trainer: Trainer, numbers: dict[str, Any], sums: MetricSums, clock: Throughput, stop: StopSignals) -> float:
    """After an optimizer step: count it, update the EMA, stop every process on a NaN anywhere, log the family's alerts.
    Returns the stop signal received on any process (0: none)."""
    trainer.step += 1
    clock.count_step()
    if (averaged := trainer.averaged()) is not None:
        ema, network = averaged
        ema.update(trainer.accelerator.unwrap_model(network), trainer.step)
    diverged, signum = across_processes(trainer.accelerator, sums.nonfinite(), stop.received)
    if diverged:
        checkpoints = checkpoint_dirs(trainer.run_dir)
        kept = f"the last checkpoint before it is {checkpoints[-1]}" if checkpoints else "no checkpoint was written before it"
        raise TrainingDiverged(f"a {trainer.name} loss became NaN/inf at step {trainer.step}; {kept}. {trainer.hint}")
    if (alert := trainer.alert(numbers)) is not None:
        write_metrics(trainer, {"alert": alert})
    return signum


def _log(trainer: Trainer, epoch: int, sums: MetricSums, clock: Throughput, progress: tqdm) -> None:
    """One metrics.jsonl line: the interval's means, the family's extras, images/s; the progress bar; TensorBoard."""
    record = {"epoch": epoch, **sums.means(trainer.accelerator), **trainer.log_extras(),
              "images_per_s": clock.images_per_s(trainer.images_per_step)}
    write_metrics(trainer, record)
    shown = {key.split("_")[0]: f"{record[key]:.4g}" for key in trainer.postfix if record.get(key) is not None}
    progress.set_postfix({**shown, "img_s": f"{record['images_per_s']:.1f}"})
    trainer.accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=trainer.step)
    clock.restart()


def _validation(trainer: Trainer) -> None:
    """Validate, log the results (metrics.jsonl, the log, TensorBoard) and redraw run_dir/curves.png."""
    results = trainer.validate()
    write_metrics(trainer, results)
    if trainer.accelerator.is_main_process:
        if results:
            logger.info("step %d: %s", trainer.step, json.dumps(results))
        trainer.curves(trainer.metrics.read(), trainer.run_dir / "curves.png",
                       f"{trainer.run_dir.name} ({trainer.config.model.name})")
    if results:
        trainer.accelerator.log(results, step=trainer.step)


def memory_mb(device: torch.device) -> float:
    """Peak memory so far: the GPU's allocations, or the process's resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS (Linux reports KiB)


__all__ = ["DeviceSums", "HostSums", "MetricSums", "Trainer", "TrainingOutOfMemory", "memory_mb", "run_training"]
