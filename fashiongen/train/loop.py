"""The training loop in named steps: prepare -> train_step (repeated) -> validate -> save -> export.

    run = prepare(config, resume=None)   # or resume="latest" / a run or checkpoint directory
    train(run)                           # returns the run directory

One command for one CPU, one GPU or many GPUs (`accelerate launch --multi_gpu ...`): every process
runs this loop on its share of each global batch; rank 0 logs, samples and writes files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..config import Config, ConfigError, config_to_dict, load_config, save_config
from ..data import FashionDataset
from ..diffusion import SAMPLERS, add_noise, alphas_cumprod_of, diffusion_loss, diffusion_settings, snr, training_target
from ..plots import training_curves
from ..models import FashionUNet, build_model, check_model_config, count_parameters
from ..text import CaptionEncoder
from .checkpoint import checkpoint_dirs, load_checkpoint, read_state, resolve_resume, run_dir_of, save_checkpoint
from .data import DiffusionExamples, EpochSampler, attribute_vocabulary, collate_examples, precompute_captions
from .ema import EMA
from ..families import load_generator
from ..models.files import ModelFileError
from .export import export_model
from ..runs import MetricsLog, check_output_dir, hardware_name, hold_run, release_run, run_facts
from .schedule import (
    StopSignals,
    Throughput,
    TrainingDiverged,
    TrainingStopped,
    across_processes,
    epoch_batches,
    log_due,
    lr_at,
    save_last_checkpoint,
    validate_and_checkpoint,
    write_metrics,
)
from .rundir import open_run_dir
from .validation import sample_grid

logger = logging.getLogger("fashiongen.train")

# Settings a resumed run must share with its checkpoint to continue the same training.
_FROZEN_KEYS = ("seed", "model", "text", "data.source", "data.resolution", "data.caption_mode", "data.caption_template",
                "train.init_from")


class TrainingOutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message names the settings that reduce memory."""


@dataclass
class TrainingRun:
    """Everything the steps share; built by `prepare`."""

    config: Config
    accelerator: Accelerator
    run_dir: Path
    model: nn.Module  # prepared (DDP-wrapped when distributed)
    ema: EMA
    optimizer: torch.optim.Optimizer
    train_examples: DiffusionExamples
    train_loader: DataLoader
    val_loader: DataLoader | None
    encoder: CaptionEncoder
    vocab: dict[str, list[str]]
    alphas_cumprod: Tensor  # [T] on the training device
    metrics: MetricsLog
    steps_per_epoch: int
    step: int = 0
    resumed_from: Path | None = None
    initialised_from: dict[str, Any] | None = None  # train.init_from: the start model's path, checksum and facts
    validation_examples: list[dict[str, Any]] = field(default_factory=list)  # super-resolution: low-res inputs

    @property
    def images_per_step(self) -> int:
        t = self.config.train
        return t.batch_size * t.gradient_accumulation_steps * self.accelerator.num_processes


def _get(config: Config, dotted: str) -> Any:
    value: Any = config_to_dict(config)
    for part in dotted.split("."):
        value = value[part]
    return value


def _differences(old: Any, new: Any, prefix: str, source: str = "checkpoint") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in old.keys() | new.keys() for d in _differences(old.get(key), new.get(key), f"{prefix}.{key}", source)]
    return [] if old == new else [f"{prefix}: {source} has {old!r}, now {new!r}"]


# What a model that starts a run (train.init_from) tells the new run's exports about how it was made.
_INHERITED_FACTS = ("steps", "images_seen", "hardware", "wall_time_s", "wall_time", "final_loss", "initialised_from")


def _initial_model(config: Config) -> tuple[FashionUNet, dict[str, Any]]:
    """train.init_from: the model whose weights start a new run, and what the run records about it.

    Fine-tuning, or continuing a published model whose optimizer state is gone. The architecture (from
    `config.model`, with the start model's attribute vocabulary) and the diffusion settings must match.
    """
    path = config.train.init_from
    try:
        generator = load_generator(path)
    except ModelFileError as error:
        raise ConfigError(f"train.init_from: {error}") from None
    start, info = generator.model, generator.info
    built = build_model(config.model, config.data.resolution, start.description()["text_dim"], start.attribute_vocab)
    problems = (_differences(start.description(), built.description(), "model", "init_from")
                + _differences(info.section("diffusion"), diffusion_settings(config.model), "diffusion", "init_from"))
    if sorted(start.attribute_vocab) != sorted(config.model.attributes):
        problems.append(f"model.attributes: init_from has {sorted(start.attribute_vocab)}, now {sorted(config.model.attributes)}")
    if problems:
        raise ConfigError(f"train.init_from {path}: the model does not match this config: " + "; ".join(sorted(problems)))
    training = info.training
    facts = {"path": generator.source, "sha256": info.sha256, "text_identity": info.text.identity,
             **{key: training[key] for key in _INHERITED_FACTS if training.get(key) is not None}}
    return start, facts


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
    if PartialState(cpu=_distributed_cpu()).is_main_process:
        hold_run(run_dir_of(checkpoint))  # one writer per run, before its checkpoint is read (another may rotate it)
    saved = load_config([checkpoint / "config.yaml"])
    config = load_config(paths, overrides, base=saved)
    problems = [d for key in _FROZEN_KEYS for d in _differences(_get(saved, key), _get(config, key), key)]
    if problems:
        raise ConfigError(f"--resume {checkpoint}: these settings must match the checkpoint: " + "; ".join(sorted(problems)))
    return config, checkpoint


def check_config(config: Config) -> None:
    """Fail before any work on settings that cannot train, naming the key."""
    check_model_config(config.model, config.data.resolution)
    if config.train.validation_sampler not in SAMPLERS:
        raise ConfigError(f"train.validation_sampler: '{config.train.validation_sampler}' is not one of {', '.join(SAMPLERS)}")
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: TensorBoard is not installed; `pip install tensorboard` or set train.tensorboard=false")
    if config.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision: fp16 needs a CUDA GPU; use bf16 or no on CPU")
    if not config.train.validation_prompts and config.train.validate_every:
        logger.warning("train.validation_prompts is empty: validation writes no sample grids")


def _distributed_cpu() -> bool:
    """Several processes but no CUDA (e.g. `accelerate launch --multi_gpu` on a CPU machine): use gloo on CPU."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _make_accelerator(config: Config, run_dir: Path) -> Accelerator:
    # accelerate keeps one process-wide state; drop its mixed-precision part (not the process group)
    # so a second run in the same process (a notebook, a benchmark) may choose another precision.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=_distributed_cpu(),
        mixed_precision=config.train.mixed_precision,
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        log_with="tensorboard" if config.train.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir)),  # trackers add "tensorboard/"
    )


def _optimizer(model: nn.Module, config: Any, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and kernels only (not on norms, biases or embeddings' bias)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = config.fused_adam and device.type == "cuda"
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_epsilon, fused=fused or None)


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM/SIGINT: a scheduler (or Ctrl-C) signals the whole process group, and a
    worker dying of it would kill the run before the main process saves its checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _loader(dataset: Any, batch_size: int, config: Any, sampler: Any = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=sampler is not None,
                      num_workers=config.num_workers, collate_fn=collate_examples, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False,
                      worker_init_fn=_leave_stop_signals_to_the_main_process if config.num_workers else None)


def open_encoder(config: Config, run_dir: Path, accelerator: Accelerator, datasets: list[FashionDataset],
                 show_progress: bool) -> CaptionEncoder:
    """The caption encoder with every caption of `datasets` in its cache (training reads embeddings only from it;
    without text.cache_dir the cache lives inside the run)."""
    text_config = config.text
    if not text_config.cache_dir:
        text_config = dataclasses.replace(text_config, cache_dir=str(run_dir / "text-cache"))
    with accelerator.main_process_first():
        encoder = CaptionEncoder(text_config)
        precompute_captions(encoder, datasets, show_progress=show_progress and accelerator.is_main_process)
    return encoder


def prepare(config: Config, resume: Path | None = None, show_progress: bool = True) -> TrainingRun:
    """Check the config, open data, build model/optimizer/EMA, restore a checkpoint, make the run directory.
    A GAN (model.family: gan), upsampler or student config is prepared by train/gan.py, train/upsampler.py or
    train/distill.py, whose run
    `train` then runs."""
    if config.model.family == "gan":
        from .gan import prepare_gan

        return prepare_gan(config, resume, show_progress)  # type: ignore[return-value]
    if config.model.family == "upsampler":
        from .upsampler import prepare_upsampler

        return prepare_upsampler(config, resume, show_progress)  # type: ignore[return-value]
    if config.model.family == "student":
        from .distill import prepare_distill

        return prepare_distill(config, resume, show_progress)  # type: ignore[return-value]
    check_config(config)
    t = config.train
    state = PartialState(cpu=_distributed_cpu())
    train_set = FashionDataset.from_config(config.data, seed=config.seed)
    val_set = None
    if config.data.split == "train" and config.data.val_fraction > 0:
        val_set = FashionDataset.from_config(config.data, seed=config.seed, split="validation")
        val_set = val_set if len(val_set) else None
    global_batch = t.batch_size * state.num_processes * t.gradient_accumulation_steps
    sampler = EpochSampler(len(train_set), config.seed, global_batch)  # fails here if the batch is too big
    saved = read_state(resume) if resume is not None else {}
    start, initialised_from = (None, saved.get("initialised_from"))
    if resume is None and t.init_from:
        start, initialised_from = _initial_model(config)
    vocab = (saved.get("attribute_vocab") or (start.attribute_vocab if start is not None else None)
             or attribute_vocabulary(train_set.source, config.model.attributes))
    run_dir = open_run_dir(config, resume, state)
    accelerator = _make_accelerator(config, run_dir)
    set_seed(config.seed)
    encoder = open_encoder(config, run_dir, accelerator, [d for d in (train_set, val_set) if d is not None], show_progress)

    if initialised_from and initialised_from["text_identity"] != encoder.identity:
        raise ConfigError(f"train.init_from {initialised_from['path']}: trained with caption encoder "
                          f"{initialised_from['text_identity']}, this run uses {encoder.identity}")
    model = build_model(config.model, config.data.resolution, encoder.dim, vocab)
    if start is not None:
        model.load_state_dict(start.state_dict(), strict=True)
    if t.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    channels_last = t.channels_last and accelerator.device.type == "cuda"  # on CPU it costs ~10% (benchmarks/README.md)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, t.ema_decay, t.ema_power)
    ema.module.to(accelerator.device)
    optimizer = _optimizer(model, t, accelerator.device)
    if t.compile:
        model.unet.compile(dynamic=False)  # caption lengths vary: one graph per padded length (collate pads to 8)

    common = dict(text_cache=encoder.cache, vocab=vocab, seed=config.seed, num_train_timesteps=config.model.num_train_timesteps,
                  low_res_resolution=config.model.low_res_resolution, low_res_noise_max=config.model.low_res_noise_max)
    train_examples = DiffusionExamples(train_set, caption_dropout_prob=t.caption_dropout_prob,
                                       attribute_dropout_prob=t.attribute_dropout_prob, **common)
    train_loader = _loader(train_examples, t.batch_size, t, sampler)
    val_loader = None
    if val_set is not None and t.validation_batches:
        val_examples = DiffusionExamples(val_set, **common)  # no dropout: the loss of the conditional model
        count = min(len(val_examples), t.validation_batches * t.batch_size * accelerator.num_processes)
        indices = torch.linspace(0, len(val_examples) - 1, count).round().long().unique().tolist()
        val_loader = _loader(Subset(val_examples, indices), t.batch_size, t)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)

    run = TrainingRun(
        config=config, accelerator=accelerator, run_dir=run_dir, model=model, ema=ema, optimizer=optimizer,
        train_examples=train_examples, train_loader=train_loader, val_loader=val_loader, encoder=encoder, vocab=vocab,
        alphas_cumprod=alphas_cumprod_of(diffusion_settings(config.model)).to(accelerator.device), metrics=MetricsLog(run_dir / "metrics.jsonl"),
        steps_per_epoch=len(sampler) // global_batch, resumed_from=resume, initialised_from=initialised_from,
    )
    if config.model.low_res_resolution:
        source = val_set or train_set
        picks = torch.linspace(0, len(source) - 1, min(len(source), len(t.validation_prompts) or 8)).round().long().tolist()
        run.validation_examples = [DiffusionExamples(source, **common)[i] for i in picks]
    if resume is not None:
        restored = load_checkpoint(accelerator, resume, ema)
        run.step = int(restored["step"])
        if restored.get("num_processes") != accelerator.num_processes or restored.get("images_per_step") != run.images_per_step:
            logger.warning("resuming with a different batch layout (%s processes, %s images/step; checkpoint: %s, %s): "
                           "the data order will not continue exactly", accelerator.num_processes, run.images_per_step,
                           restored.get("num_processes"), restored.get("images_per_step"))
    if accelerator.is_main_process:
        save_config(config, run_dir / "config.yaml")
        run.metrics.truncate_after(run.step)  # a resumed run repeats the steps after its checkpoint
        logger.info("run %s: %s (%.1fM parameters), %d training examples, %d steps per epoch%s", run_dir,
                    config.model.name, count_parameters(ema.module) / 1e6, len(train_examples), run.steps_per_epoch,
                    f", resumed at step {run.step}" if resume is not None else "")
    if config.train.tensorboard:
        accelerator.init_trackers("tensorboard", config=_flat_hparams(config))
    return run


def _flat_hparams(config: Config) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(config_to_dict(config), "")
    return flat


def compute_loss(model: nn.Module, batch: dict[str, Any], alphas_cumprod: Tensor, prediction_type: str,
                 snr_gamma: float, channels_last: bool = False) -> Tensor:
    """Noise the clean images with the batch's own noise and timesteps, predict, and return the loss per sample [B]."""
    clean, noise, timesteps = batch["pixel_values"], batch["noise"], batch["timestep"]  # [B, 3, H, W], [B, 3, H, W], [B]
    noisy = add_noise(alphas_cumprod, clean, noise, timesteps)  # [B, 3, H, W]
    target = training_target(prediction_type, alphas_cumprod, clean, noise, timesteps)
    low_res = batch.get("low_res")
    if channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
        low_res = low_res.contiguous(memory_format=torch.channels_last) if low_res is not None else None
    prediction = model(noisy, timesteps, batch["text_states"], batch["text_mask"], batch["text_pooled"],
                       batch["attribute_ids"] if batch["attribute_ids"].shape[1] else None, low_res)
    return diffusion_loss(prediction, target, snr(alphas_cumprod, timesteps), prediction_type, snr_gamma)


def train_step(run: TrainingRun, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
    """One micro-batch: forward, backward and (at the end of an accumulation) clip, step and zero.

    Returns the per-sample loss [B] (detached) and, when the optimizer stepped, the gradient norm.
    """
    t, accelerator = run.config.train, run.accelerator
    grad_norm = None
    with accelerator.accumulate(run.model):
        loss = compute_loss(run.model, batch, run.alphas_cumprod, run.config.model.prediction_type, t.snr_gamma,
                            t.channels_last and accelerator.device.type == "cuda")
        accelerator.backward(loss.mean())
        if accelerator.sync_gradients:
            grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), t.max_grad_norm or float("inf"))
            for group in run.optimizer.param_groups:
                group["lr"] = lr_at(run.step, t)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss.detach(), grad_norm


@torch.no_grad()
def validate(run: TrainingRun) -> dict[str, float]:
    """EMA model: loss on fixed held-out examples (all processes) and a sample grid (rank 0)."""
    results: dict[str, float] = {}
    accelerator, config = run.accelerator, run.config
    if run.val_loader is not None:
        losses = []
        for batch in run.val_loader:
            loss = compute_loss(run.ema.module, batch, run.alphas_cumprod, config.model.prediction_type, config.train.snr_gamma)
            losses.append(accelerator.gather_for_metrics(loss))
        results["val_loss"] = float(torch.cat(losses).mean())
    if accelerator.is_main_process and config.train.validation_prompts:
        path = run.run_dir / "samples" / f"step_{run.step:06d}.png"
        sample_grid(run.ema.module, run.encoder, config, path, run.validation_examples)
    accelerator.wait_for_everyone()
    return results


def save(run: TrainingRun) -> Path:
    """Checkpoint the current step (collective)."""
    state = {"attribute_vocab": run.vocab, "num_processes": run.accelerator.num_processes,
             "images_per_step": run.images_per_step, "epoch": run.step // run.steps_per_epoch,
             "images_seen": run.step * run.images_per_step, "time": time.time(), "text_identity": run.encoder.identity,
             "text_dim": run.encoder.dim, "hardware": hardware_name(run.accelerator.device),
             "initialised_from": run.initialised_from}
    return save_checkpoint(run.accelerator, run.run_dir, run.step, run.ema, run.config, state, run.config.train.keep_checkpoints)


def export(run: TrainingRun, dtype: str = "float32") -> Path:
    """The EMA model in safetensors + JSON under run_dir/export (rank 0)."""
    path = run.run_dir / "export"
    if run.accelerator.is_main_process:
        training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "run": run.run_dir.name,
                    "num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
                    "mixed_precision": run.config.train.mixed_precision, "device": str(run.accelerator.device),
                    "hardware": hardware_name(run.accelerator.device), **run_facts(run.metrics.read(), run.step),
                    "initialised_from": run.initialised_from}
        export_model(run.ema.module, run.config, run.encoder.identity, path, dtype=dtype, training=training,
                     overwrite=True)  # the run's own export folder
    run.accelerator.wait_for_everyone()
    return path


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS (Linux reports KiB)


def train(run: TrainingRun, show_progress: bool = True) -> Path:
    """Train until train.max_steps; checkpoint, validate and log on schedule (schedule.py); export at the end. Then
    (or on failure) the run directory is free for another process to resume."""
    try:
        return _train(run, show_progress)
    finally:
        release_run(run.run_dir)


def _train(run: TrainingRun, show_progress: bool = True) -> Path:
    if not isinstance(run, TrainingRun):
        from .distill import DistillRun, train_distill
        from .gan import GANRun, train_gan
        from .upsampler import train_upsampler

        if isinstance(run, DistillRun):
            return train_distill(run, show_progress)
        return train_gan(run, show_progress) if isinstance(run, GANRun) else train_upsampler(run, show_progress)
    accelerator, t = run.accelerator, run.config.train
    is_main = accelerator.is_main_process
    progress = tqdm(total=t.max_steps, initial=run.step, desc=run.run_dir.name, unit="step", dynamic_ncols=True,
                    disable=not (show_progress and is_main))
    loss_sum = torch.zeros((), device=accelerator.device)
    loss_count = torch.zeros((), device=accelerator.device)
    nonfinite = torch.zeros((), device=accelerator.device)
    clock, grad_norm = Throughput(), None
    try:
        with StopSignals() as stop:
            for epoch, batch in epoch_batches(run, t.max_steps, t.gradient_accumulation_steps):
                loss, norm = train_step(run, batch)
                loss_sum += loss.sum()
                loss_count += loss.numel()
                nonfinite = torch.maximum(nonfinite, (~torch.isfinite(loss)).any().float())
                if not accelerator.sync_gradients:
                    continue
                grad_norm = norm
                run.step += 1
                clock.count_step()
                run.ema.update(accelerator.unwrap_model(run.model), run.step)
                diverged, signum = across_processes(accelerator, nonfinite, stop.received)
                if diverged:
                    checkpoints = checkpoint_dirs(run.run_dir)
                    kept = f"the last checkpoint before it is {checkpoints[-1]}" if checkpoints else "no checkpoint was written before it"
                    raise TrainingDiverged(f"loss became NaN/inf at step {run.step}; {kept}. Lower train.learning_rate, "
                                           "keep train.max_grad_norm > 0, or use bf16 instead of fp16")
                progress.update(1)
                if log_due(run.step, t):
                    totals = accelerator.gather(torch.stack([loss_sum, loss_count])).view(-1, 2).sum(dim=0)
                    record = {"epoch": epoch, "loss": float(totals[0] / totals[1]), "lr": lr_at(run.step - 1, t),
                              "grad_norm": float(grad_norm) if grad_norm is not None else None,
                              "images_per_s": clock.images_per_s(run.images_per_step), "memory_mb": _memory_mb(accelerator.device)}
                    write_metrics(run, record)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.1f}")
                    accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=run.step)
                    loss_sum.zero_(), loss_count.zero_()
                    clock.restart()
                if signum:
                    raise TrainingStopped(int(signum), save(run))
                validate_and_checkpoint(run.step, t, clock, validate=lambda: _log_validation(run, validate(run)),
                                        save=lambda: save(run))
            save_last_checkpoint(run.run_dir, run.step, lambda: save(run))
            _log_validation(run, validate(run))
            export(run)
    except torch.OutOfMemoryError as error:
        raise TrainingOutOfMemory(
            f"out of GPU memory at step {run.step} with train.batch_size={t.batch_size}: lower train.batch_size and raise "
            "train.gradient_accumulation_steps to keep the effective batch, set train.gradient_checkpointing=true, "
            "or use train.mixed_precision=bf16") from error
    finally:
        progress.close()
        accelerator.end_training()
    return run.run_dir


def _log_validation(run: TrainingRun, results: dict[str, float]) -> None:
    """Log validation results and redraw run_dir/curves.png."""
    write_metrics(run, results)
    if run.accelerator.is_main_process:
        if results:
            logger.info("step %d: %s", run.step, json.dumps(results))
        training_curves(run.metrics.read(), run.run_dir / "curves.png", title=f"{run.run_dir.name} ({run.config.model.name})")
    if results:
        run.accelerator.log(results, step=run.step)


__all__ = ["TrainingDiverged", "TrainingOutOfMemory", "TrainingRun", "TrainingStopped", "compute_loss", "export", "lr_at", "prepare",
           "resolve_training_config", "save", "train", "train_step", "validate"]
