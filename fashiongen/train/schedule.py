"""When things happen in the training loop (engine.py), for every family's trainer: the learning rate of each
step, epochs that resume mid-way, which steps log, validate and checkpoint, images/s over training time only, and a
stop signal turned into a checkpoint at a step boundary.

    clock = Throughput()
    with StopSignals() as stop:
        for epoch, batch in epoch_batches(run, schedule.max_steps):   # from run.step, mid-epoch after a resume
            ...                                                       # one optimizer step at lr_at(run.step, schedule)
            run.step += 1
            clock.count_step()
            if check_due(run.step, schedule):                          # not every step: reading waits for the GPU
                first_bad_step, signum = across_processes(run.accelerator, first_nonfinite, stop.received)
            if log_due(run.step, schedule):
                write_metrics(run, {"loss": ..., "images_per_s": clock.images_per_s(run.images_per_step)})
                clock.restart()
            if signum:
                raise TrainingStopped(int(signum), save())
            validate_and_checkpoint(run.step, schedule, clock, validate, save)
        save_last_checkpoint(run_dir, run.step, save)

`schedule` is the loop's config section (train.* or critic.*).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from accelerate import Accelerator
from torch import Tensor

from ..runs import MetricsLog, checkpoint_dirs
from ..errors import CommandStopped


class Schedule(Protocol):
    """The settings of a loop's config section (TrainConfig, CriticConfig) that this module reads."""

    learning_rate: float
    lr_schedule: str  # cosine | constant
    warmup_steps: int
    min_lr_ratio: float
    max_steps: int
    log_every: int
    validate_every: int  # 0: only at the end
    checkpoint_every: int


class LoopRun(Protocol):
    """What a loop's run object (TrainingRun, CriticRun) offers this module."""

    accelerator: Accelerator
    metrics: MetricsLog
    train_loader: Any  # prepared DataLoader over an EpochSampler
    train_examples: Any  # its dataset, with set_epoch
    steps_per_epoch: int
    step: int  # optimizer steps done


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingStopped(CommandStopped):
    """SIGTERM or SIGINT arrived; a checkpoint was saved. `exit_code` follows the shell convention 128 + signal."""

    def __init__(self, signum: int, checkpoint: Path, how_to_continue: str = "") -> None:
        how_to_continue = how_to_continue or f"--resume {checkpoint.parent.parent}"
        super().__init__(f"stopped by {signal.Signals(signum).name} at {checkpoint}; continue with {how_to_continue}")
        self.exit_code = 128 + signum
        self.checkpoint = checkpoint


def lr_at(step: int, config: Schedule) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine or constant."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    span = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.learning_rate * config.min_lr_ratio
    return floor + (config.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_batches(run: LoopRun, max_steps: int, batches_per_step: int = 1) -> Iterator[tuple[int, Any]]:
    """(epoch, batch) from run.step on, until the loop has counted run.step up to max_steps. Each epoch is reshuffled by
    its number; a resumed run skips the batches its done steps used (`batches_per_step`: gradient accumulation)."""
    while run.step < max_steps:
        epoch, offset = divmod(run.step, run.steps_per_epoch)
        run.train_loader.set_epoch(epoch)
        run.train_examples.set_epoch(epoch)
        loader = run.train_loader
        if offset:
            loader = run.accelerator.skip_first_batches(run.train_loader, offset * batches_per_step)
        for batch in loader:
            yield epoch, batch
            if run.step >= max_steps:
                return


class StopSignals:
    """Remember SIGTERM/SIGINT instead of dying, so the loop can save first; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def across_processes(accelerator: Accelerator, first_nonfinite: Tensor | int, signum: int) -> tuple[int, int]:
    """Over all processes, in one collective (and one read from the device): the first step at which a number became
    NaN/inf on any process (0: none) and the stop signal any received (0: none), so that every process stops at the
    same step."""
    local = torch.stack([torch.as_tensor(first_nonfinite, dtype=torch.int64, device=accelerator.device),
                         torch.full((), signum, dtype=torch.int64, device=accelerator.device)])  # [2]
    rows = accelerator.gather(local).view(-1, 2).tolist()  # [processes, 2]
    return min((row[0] for row in rows if row[0] > 0), default=0), max(row[1] for row in rows)


class Throughput:
    """Steps since the last log line and the training time they took: validation and checkpoints are off the clock."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def count_step(self) -> None:
        self.steps += 1

    def images_per_s(self, images_per_step: int) -> float:
        return self.steps * images_per_step / max(time.perf_counter() - self.start, 1e-9)

    @contextmanager
    def paused(self) -> Iterator[None]:
        paused = time.perf_counter()
        yield
        self.start += time.perf_counter() - paused


def log_due(step: int, schedule: Schedule) -> bool:
    return step % schedule.log_every == 0 or step == schedule.max_steps


def check_due(step: int, schedule: Schedule) -> bool:
    """The steps at which the loop reads its checks from the device (a NaN, a stop signal, alerts): a log line, and
    before a validation or a checkpoint, which must not start from (or save) a diverged model."""
    return (log_due(step, schedule) or step % schedule.checkpoint_every == 0
            or bool(schedule.validate_every and step % schedule.validate_every == 0))


def write_metrics(run: LoopRun, record: dict[str, Any]) -> None:
    """One metrics.jsonl line for the current step, {"step", **record, "time"}, from rank 0; nothing for an empty record."""
    if run.accelerator.is_main_process and record:
        run.metrics.write({"step": run.step, **record, "time": time.time()})


def validate_and_checkpoint(step: int, schedule: Schedule, clock: Throughput, validate: Callable[[], Any],
                            save: Callable[[], Any]) -> None:
    """After an optimizer step: validate, then checkpoint, when their step has come, off the clock. The last step does
    neither here: the loop's end saves (save_last_checkpoint) and validates once."""
    with clock.paused():
        if schedule.validate_every and step % schedule.validate_every == 0 and step < schedule.max_steps:
            validate()
        if step % schedule.checkpoint_every == 0 and step < schedule.max_steps:
            save()


def save_last_checkpoint(run_dir: Path, step: int, save: Callable[[], Any]) -> None:
    """The loop's end: checkpoint the final step, unless the newest checkpoint is that step already (a finished run resumed)."""
    checkpoints = checkpoint_dirs(run_dir)
    if not checkpoints or checkpoints[-1].name != f"step_{step:06d}":
        save()


__all__ = ["LoopRun", "Schedule", "StopSignals", "Throughput", "TrainingDiverged", "TrainingStopped", "across_processes",
           "check_due", "epoch_batches", "log_due", "lr_at", "save_last_checkpoint", "validate_and_checkpoint", "write_metrics"]
