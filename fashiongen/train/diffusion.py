"""The diffusion family's trainer (model.family: diffusion) in named steps: build -> train_step (repeated) -> validate
-> save -> export, run by the one loop (engine.py).

    run = prepare(config, resume=None)   # or resume="latest" / a run or checkpoint directory (trainers.py)
    train(run)                           # returns the run directory

A micro-batch is noised with its examples' own noise and timesteps (data.py), the min-SNR-weighted loss is summed on
the device and averaged over every process at each log line; gradient accumulation through `accelerator.accumulate`.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from ..config import Config, ConfigError, config_to_dict
from ..data import FashionDataset
from ..diffusion import SAMPLERS, add_noise, alphas_cumprod_of, diffusion_loss, diffusion_settings, snr, training_target
from ..families import load_generator
from ..models import FashionUNet, build_model, check_model_config
from ..models.files import ModelFileError
from ..plots import training_curves
from ..runs import MetricsLog, hardware_name, run_facts
from ..text import CaptionEncoder
from .checkpoint import save_checkpoint
from .data import DiffusionExamples, attribute_vocabulary
from .ema import EMA
from .device import fused
from .engine import Trainer, memory_mb
from .export import export_model
from .schedule import lr_at
from .loader import compile_lengths, make_loader
from .setup import INHERITED_FACTS, announce, differences, open_data, open_run, parameters_m, restore
from .validation import sample_grid

logger = logging.getLogger("fashiongen.train")


@dataclass
class TrainingRun(Trainer):
    """Everything the diffusion steps share; built by `TrainingRun.build` (`prepare`)."""

    name: ClassVar[str] = "diffusion"
    hint: ClassVar[str] = "Lower train.learning_rate, keep train.max_grad_norm > 0, or use bf16 instead of fp16"

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
    grad_norm: Tensor | None = None  # of the last optimizer step

    @property
    def images_per_step(self) -> int:
        train = self.config.train
        return train.batch_size * train.gradient_accumulation_steps * self.accelerator.num_processes

    @property
    def batches_per_step(self) -> int:
        return int(self.config.train.gradient_accumulation_steps)

    @classmethod
    def build(cls, config: Config, resume: Path | None = None, show_progress: bool = True) -> TrainingRun:
        """Check the config, open data, build model/optimizer/EMA, restore a checkpoint, make the run directory."""
        return build(config, resume, show_progress)

    def averaged(self) -> tuple[EMA, nn.Module]:
        return self.ema, self.model

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        loss, grad_norm = train_step(self, batch)
        if grad_norm is not None:
            self.grad_norm = grad_norm
        return {"loss": loss}

    def optimizer_stepped(self) -> bool:
        return bool(self.accelerator.sync_gradients)

    def log_extras(self) -> dict[str, Any]:
        return {"lr": lr_at(self.step - 1, self.config.train),
                "grad_norm": float(self.grad_norm) if self.grad_norm is not None else None,
                "memory_mb": memory_mb(self.accelerator.device)}

    def validate(self) -> dict[str, Any]:
        return validate(self)

    def curves(self, records: list[dict[str, Any]], path: Path, title: str) -> Any:
        return training_curves(records, path, title=title)

    def save(self) -> Path:
        return save(self)

    def export(self) -> Path:
        return export(self)

    def out_of_memory(self) -> str:
        return (f"out of GPU memory at step {self.step} with train.batch_size={self.config.train.batch_size}: lower "
                "train.batch_size and raise train.gradient_accumulation_steps to keep the effective batch, set "
                "train.gradient_checkpointing=true, or use train.mixed_precision=bf16")


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
    problems = (differences(start.description(), built.description(), "model", "init_from")
                + differences(info.section("diffusion"), diffusion_settings(config.model), "diffusion", "init_from"))
    if sorted(start.attribute_vocab) != sorted(config.model.attributes):
        problems.append(f"model.attributes: init_from has {sorted(start.attribute_vocab)}, now {sorted(config.model.attributes)}")
    if problems:
        raise ConfigError(f"train.init_from {path}: the model does not match this config: " + "; ".join(sorted(problems)))
    training = info.training
    facts = {"path": generator.source, "sha256": info.sha256, "text_identity": info.text.identity,
             **{key: training[key] for key in INHERITED_FACTS if training.get(key) is not None}}
    return start, facts


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


def _optimizer(model: nn.Module, config: Any, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and kernels only (not on norms, biases or embeddings' bias)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_epsilon, fused=fused(device, config.fused_adam))


def _network(config: Config, encoder: CaptionEncoder, vocab: dict[str, list[str]], start: FashionUNet | None,
             device: torch.device) -> tuple[nn.Module, EMA, torch.optim.Optimizer]:
    """The model (from train.init_from's weights when given), its EMA and its optimizer."""
    train = config.train
    model = build_model(config.model, config.data.resolution, encoder.dim, vocab)
    if start is not None:
        model.load_state_dict(start.state_dict(), strict=True)
    if train.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    channels_last = train.channels_last and device.type == "cuda"  # on CPU it costs ~10% (benchmarks/README.md)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, train.ema_decay, train.ema_power)
    ema.module.to(device)
    optimizer = _optimizer(model, train, device)
    if train.compile:
        model.unet.compile(dynamic=False)  # one graph per caption length: the loader pads to compile_lengths (3-5)
    return model, ema, optimizer


def build(config: Config, resume: Path | None = None, show_progress: bool = True) -> TrainingRun:
    """Check the config, open data, build model/optimizer/EMA, restore a checkpoint, make the run directory."""
    check_config(config)
    train = config.train
    data = open_data(config, resume, train.gradient_accumulation_steps)
    val_set = None
    if config.data.split == "train" and config.data.val_fraction > 0:
        val_set = FashionDataset.from_config(config.data, seed=config.seed, split="validation")
        val_set = val_set if len(val_set) else None
    start, initialised_from = (None, data.saved.get("initialised_from"))
    if resume is None and train.init_from:
        start, initialised_from = _initial_model(config)
    vocab = (data.saved.get("attribute_vocab") or (start.attribute_vocab if start is not None else None)
             or attribute_vocabulary(data.train_set.source, config.model.attributes))
    datasets = [d for d in (data.train_set, val_set) if d is not None]
    run_dir, accelerator, encoder = open_run(config, resume, data, datasets, show_progress)
    if initialised_from and initialised_from["text_identity"] != encoder.identity:
        raise ConfigError(f"train.init_from {initialised_from['path']}: trained with caption encoder "
                          f"{initialised_from['text_identity']}, this run uses {encoder.identity}")
    model, ema, optimizer = _network(config, encoder, vocab, start, accelerator.device)

    common = dict(text_cache=encoder.cache, vocab=vocab, seed=config.seed, num_train_timesteps=config.model.num_train_timesteps,
                  low_res_resolution=config.model.low_res_resolution, low_res_noise_max=config.model.low_res_noise_max)
    train_examples = DiffusionExamples(data.train_set, caption_dropout_prob=train.caption_dropout_prob,
                                       attribute_dropout_prob=train.attribute_dropout_prob, **common)
    lengths = compile_lengths(config.text.max_length) if train.compile else ()
    train_loader = make_loader(train_examples, train.batch_size, train, data.sampler, lengths)
    val_loader = None
    if val_set is not None and train.validation_batches:
        val_examples = DiffusionExamples(val_set, **common)  # no dropout: the loss of the conditional model
        count = min(len(val_examples), train.validation_batches * train.batch_size * accelerator.num_processes)
        indices = torch.linspace(0, len(val_examples) - 1, count).round().long().unique().tolist()
        val_loader = make_loader(Subset(val_examples, indices), train.batch_size, train)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)

    run = TrainingRun(
        config=config, accelerator=accelerator, run_dir=run_dir, model=model, ema=ema, optimizer=optimizer,
        train_examples=train_examples, train_loader=train_loader, val_loader=val_loader, encoder=encoder, vocab=vocab,
        alphas_cumprod=alphas_cumprod_of(diffusion_settings(config.model)).to(accelerator.device),
        metrics=MetricsLog(run_dir / "metrics.jsonl"), steps_per_epoch=data.steps_per_epoch, resumed_from=resume,
        initialised_from=initialised_from,
    )
    if config.model.low_res_resolution:
        source = val_set or data.train_set
        picks = torch.linspace(0, len(source) - 1, min(len(source), len(train.validation_prompts) or 8)).round().long().tolist()
        run.validation_examples = [DiffusionExamples(source, **common)[i] for i in picks]
    restore(run, resume, ema)
    announce(run, resume, f"{config.model.name} ({parameters_m(ema.module):.1f}M parameters), "
                          f"{len(train_examples)} training examples")
    if train.tensorboard:
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
    train, accelerator = run.config.train, run.accelerator
    grad_norm = None
    with accelerator.accumulate(run.model):
        loss = compute_loss(run.model, batch, run.alphas_cumprod, run.config.model.prediction_type, train.snr_gamma,
                            train.channels_last and accelerator.device.type == "cuda")
        accelerator.backward(loss.mean())
        if accelerator.sync_gradients:
            grad_norm = accelerator.clip_grad_norm_(run.model.parameters(), train.max_grad_norm or float("inf"))
            for group in run.optimizer.param_groups:
                group["lr"] = lr_at(run.step, train)
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
                    "mixed_precision": run.accelerator.mixed_precision, "device": str(run.accelerator.device),
                    "hardware": hardware_name(run.accelerator.device), **run_facts(run.metrics.read(), run.step),
                    "initialised_from": run.initialised_from}
        export_model(run.ema.module, run.config, run.encoder.identity, path, dtype=dtype, training=training,
                     overwrite=True)  # the run's own export folder
    run.accelerator.wait_for_everyone()
    return path


__all__ = ["TrainingRun", "build", "check_config", "compute_loss", "export", "save", "train_step", "validate"]
