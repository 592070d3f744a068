"""The one training loop every family runs (diffusion, GAN, upsampler, student, critic): progress, stop signals, the
NaN check across processes, metric sums, validation and checkpoints on the shared schedule (schedule.py), the export
and the curves at the end. A family supplies a `Trainer`: its run's state and its step, validation, save and export.

    trainer = TRAINERS[config.model.family].build(config, resume)   # trainers.py
    run_dir = run_training(trainer)

One command for one CPU, one GPU or many GPUs (`accelerate launch --multi_gpu ...`): every process runs this loop on
its share of each global batch; rank 0 logs, samples and writes files.

On a GPU the loop never waits for it between checks: a step's numbers are summed on the device (`DeviceSums`) and read
at each log line; whether one became NaN/inf (anywhere), a stop signal and the family's alerts are read together, in
one collective, at "check points" only (a log line, a validation, a checkpoint, the last step; with one process also
at once on a signal). A NaN still stops the run naming the first step it appeared at, before any checkpoint holds it.
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
from .device import enable_tf32
from .ema import EMA
from .loader import shut_down_workers
from .schedule import (
    LoopRun,
    Schedule,
    StopSignals,
    Throughput,
    TrainingDiverged,
    TrainingStopped,
    across_processes,
    check_due,
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


class DeviceSums:
    """A log interval's per-step numbers, summed where they are: tensors on the device (adding one never waits for
    the GPU), plain floats on the host; read at each log line, every process's at once (one gather, one copy to the
    host). A tensor of per-sample values ([B]) counts each sample, a scalar one step; a number some steps do not give
    (a loss that starts later) is averaged over the steps that gave it. The first step at which a `checked` number
    (None: every one) was NaN/inf is kept on the device too, for the loop's checks (`first_nonfinite`).

    `names`: every number the trainer's steps may give, in log order: the same slots on every process."""

    def __init__(self, device: torch.device, names: tuple[str, ...], checked: tuple[str, ...] | None = None) -> None:
        self.device, self.names = device, tuple(names)
        self.checked = set(self.names if checked is None else checked)
        dtype = torch.float32 if device.type == "mps" else torch.float64  # float64: the host's sums, exactly
        self.totals = torch.zeros(len(self.names), dtype=dtype, device=device)  # [K]
        self.counts = [0] * len(self.names)  # host: a tensor's numel is known without the device
        self.host: dict[str, list[float]] = {}  # name -> [sum, count] of plain floats
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet
        self.first_bad_host = 0
        self._slots: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}  # a key set's slots and checked positions

    def _slot(self, key: str) -> int:
        if key not in self.names:
            raise KeyError(f"{key!r} is not one of the trainer's logged numbers {self.names}")
        return self.names.index(key)

    def add(self, numbers: dict[str, Any], step: int) -> None:
        """One micro-batch's numbers (`step`: the optimizer step it belongs to, 1-based)."""
        tensors = {key: value for key, value in numbers.items() if isinstance(value, Tensor)}
        for key, value in numbers.items():
            if key not in tensors and value is not None:
                self._slot(key)
                total = self.host.setdefault(key, [0.0, 0])
                total[0] += value
                total[1] += 1
                if key in self.checked and not math.isfinite(value) and not self.first_bad_host:
                    self.first_bad_host = step
        if not tensors:
            return
        slots = tuple(self._slot(key) for key in tensors)
        if slots not in self._slots:  # index tensors copied once per key set, not per step (a copy waits)
            checked = [i for i, key in enumerate(tensors) if key in self.checked]
            self._slots[slots] = (torch.tensor(slots, device=self.device),
                                  torch.tensor(checked, dtype=torch.long, device=self.device))
        where, checked = self._slots[slots]
        values = torch.stack([v.detach().float() if v.dim() == 0 else v.detach().float().sum() for v in tensors.values()])
        self.totals.index_add_(0, where, values.to(self.totals.dtype))
        for slot, value in zip(slots, tensors.values()):
            self.counts[slot] += value.numel()
        if len(checked):  # a NaN/inf sample makes its sum NaN/inf
            bad = ~torch.isfinite(values.index_select(0, checked)).all()
            self.first_bad.masked_fill_(bad & (self.first_bad == 0), step)

    def first_nonfinite(self) -> Tensor:
        """The first step whose checked numbers were not all finite ([] int64 on the device; 0: none)."""
        if not self.first_bad_host:
            return self.first_bad
        host = torch.full((), self.first_bad_host, dtype=torch.int64, device=self.device)
        return torch.where((self.first_bad > 0) & (self.first_bad < host), self.first_bad, host)

    def means(self, accelerator: Accelerator) -> dict[str, float]:
        """The interval's means over every process's samples (a collective), in `names` order; starts the next interval."""
        counts = torch.tensor(self.counts, dtype=self.totals.dtype).to(self.device)
        both = accelerator.gather(torch.cat([self.totals, counts])).view(-1, 2, len(self.names)).sum(dim=0)
        totals, counts_all = both.tolist()
        means = {key: total / count for key, total, count in zip(self.names, totals, counts_all) if count}
        means.update({key: total / count for key, (total, count) in self.host.items()})  # the same on every process
        self.totals.zero_()
        self.counts, self.host = [0] * len(self.names), {}
        return {key: means[key] for key in self.names if key in means}


class Trainer(LoopRun, Protocol):
    """One family's training as the engine drives it (beyond the run state schedule.LoopRun names); built by the
    family's `build(config, resume, show_progress)` (trainers.py registers one per family). Classes that subclass it
    get the defaults below."""

    name: ClassVar[str]  # the family, as messages name it ("GAN")
    hint: ClassVar[str]  # what to change when a loss becomes NaN
    postfix: ClassVar[tuple[str, ...]] = ("loss",)  # the progress bar's numbers
    logged: ClassVar[tuple[str, ...]] = ("loss",)  # every number train_step may give, in log order (DeviceSums)
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

    def new_sums(self) -> DeviceSums:  # NaN/inf in any logged number stops the run
        return DeviceSums(self.accelerator.device, self.logged)

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]: ...  # one micro-batch; its numbers (device tensors)

    def optimizer_stepped(self) -> bool:  # whether that micro-batch ended an optimizer step
        return True

    def log_extras(self) -> dict[str, Any]:  # numbers of the log line beside the interval's means
        return {}

    def alerts(self) -> list[str]:  # at a check point: warnings for metrics.jsonl about the steps since the last
        return []

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
    enable_tf32(accelerator.device)
    try:
        with StopSignals() as stop:
            for epoch, batch in epoch_batches(trainer, schedule.max_steps, trainer.batches_per_step):
                sums.add(trainer.train_step(batch), trainer.step + 1)
                if not trainer.optimizer_stepped():
                    continue
                _count_step(trainer, clock)
                progress.update(1)
                signum = 0
                if check_due(trainer.step, schedule) or (stop.received and accelerator.num_processes == 1):
                    signum = _check(trainer, sums, stop)
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
        shut_down_workers(trainer.train_loader)
        accelerator.end_training()
    return trainer.run_dir


def _count_step(trainer: Trainer, clock: Throughput) -> None:
    """After an optimizer step: count it and update the EMA (on the device: nothing here waits for the GPU)."""
    trainer.step += 1
    clock.count_step()
    if (averaged := trainer.averaged()) is not None:
        ema, network = averaged
        ema.update(trainer.accelerator.unwrap_model(network), trainer.step)


def _check(trainer: Trainer, sums: DeviceSums, stop: StopSignals) -> int:
    """At a check point, over every process in one collective: stop the run if a checked number became NaN/inf
    anywhere since the start (naming the first such step; every checkpoint so far precedes it, as checkpoints
    follow checks), then write the family's alerts. Returns the stop signal any process received (0: none)."""
    first_bad, signum = across_processes(trainer.accelerator, sums.first_nonfinite(), stop.received)
    if first_bad:
        checkpoints = checkpoint_dirs(trainer.run_dir)
        kept = f"the last checkpoint before it is {checkpoints[-1]}" if checkpoints else "no checkpoint was written before it"
        raise TrainingDiverged(f"a {trainer.name} loss became NaN/inf at step {first_bad}; {kept}. {trainer.hint}")
    for alert in trainer.alerts():
        write_metrics(trainer, {"alert": alert})
    return signum


def _log(trainer: Trainer, epoch: int, sums: DeviceSums, clock: Throughput, progress: tqdm) -> None:
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


__all__ = ["DeviceSums", "Trainer", "TrainingOutOfMemory", "memory_mb", "run_training"]
