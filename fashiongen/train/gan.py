"""The GAN family's trainer (model.family: gan), run by the one loop (engine.py): build -> train_step (a discriminator
step, then a generator step) -> validate -> save -> export.

    python train.py configs/gan64.yaml [key=value ...] [--resume latest]

Two optimisers with their own learning rates (TTUR, gan.*), hinge loss with mismatched-caption negatives and MA-GP,
DiffAugment on everything the discriminator sees, an EMA of the generator for sampling and export. Every random draw
of a step (z, augmentation, mismatched rows) comes from a generator seeded by (seed, step, process), so a resumed run
continues bit for bit. A pinned discriminator or a collapsing batch diversity is reported in the log and in
metrics.jsonl, naming the step and the last checkpoint before it; a NaN stops the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from ..config import Config, ConfigError
from ..data.transforms import to_uint8
from ..gan import Discriminator, TextGenerator, diff_augment, discriminator_hinge, generator_hinge, get_gan_spec
from ..gan import matching_aware_penalty, mismatched_rows
from ..gan.generator import GANGenerator, gan_description, truncated_normal
from ..grid import captioned_grid, save_image
from ..plots import gan_curves
from ..runs import MetricsLog, checkpoint_dirs, hardware_name
from ..text import CaptionEncoder
from .adversarial import StartModel, export_adversarial, start_model
from .checkpoint import save_checkpoint
from .data import DiffusionExamples, attribute_vocabulary
from .device import fused, to_device
from .ema import EMA
from .engine import Trainer
from .loader import make_loader
from .setup import announce, open_data, open_run, parameters_m, restore

logger = logging.getLogger("fashiongen.train")


@dataclass
class GANRun(Trainer):
    """Everything the GAN steps share; built by `GANRun.build` (`prepare`)."""

    name: ClassVar[str] = "GAN"
    hint: ClassVar[str] = "Lower gan.generator_lr and gan.discriminator_lr, or raise gan.ma_gp_weight"
    postfix: ClassVar[tuple[str, ...]] = ("d_loss", "g_loss")
    logged: ClassVar[tuple[str, ...]] = ("d_loss", "g_loss", "ma_gp", "d_real_acc", "d_fake_acc", "diversity",
                                         "d_mismatched_acc")

    config: Config
    accelerator: Accelerator
    run_dir: Path
    generator: nn.Module  # prepared
    discriminator: nn.Module  # prepared
    ema: EMA  # of the generator
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    train_examples: DiffusionExamples
    train_loader: Any
    encoder: CaptionEncoder
    vocab: dict[str, list[str]]
    metrics: MetricsLog
    steps_per_epoch: int
    step: int = 0
    resumed_from: Path | None = None
    initialised_from: dict[str, Any] | None = None
    watch: dict[str, list[float]] = field(default_factory=lambda: {"pinned": [], "diversity": []})
    first_diversity: float | None = None
    watched: list[tuple[int, Tensor]] = field(default_factory=list)  # (step, [d_real_acc, d_fake_acc, diversity]) unread

    @property
    def images_per_step(self) -> int:
        return self.config.train.batch_size * self.accelerator.num_processes

    @classmethod
    def build(cls, config: Config, resume: Path | None = None, show_progress: bool = True) -> GANRun:
        return prepare_gan(config, resume, show_progress)

    def averaged(self) -> tuple[EMA, nn.Module]:
        return self.ema, self.generator

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        return train_step(self, batch)

    def alerts(self) -> list[str]:
        """The watch over the steps since the last check point, their numbers read from the device at once."""
        steps, self.watched = self.watched, []
        found = []
        values = torch.stack([numbers for _, numbers in steps]).tolist() if steps else []
        for (step, _), (real_acc, fake_acc, diversity) in zip(steps, values):
            alert = _watch(self, {"d_real_acc": real_acc, "d_fake_acc": fake_acc, "diversity": diversity}, step)
            if alert is not None:
                logger.warning(alert)
                self.watch = {"pinned": [], "diversity": []}  # once a window, not every step
                found.append(alert)
        return found

    def validate(self) -> dict[str, Any]:
        return validate_gan(self)

    def curves(self, records: list[dict[str, Any]], path: Path, title: str) -> Any:
        return gan_curves(records, path, title=title)

    def save(self) -> Path:
        return save_gan(self)

    def export(self) -> Path:
        return export_gan(self)


def _initial_gan(config: Config, encoder: CaptionEncoder) -> StartModel:
    """train.init_from for a GAN: the generator (its EMA weights), its discriminator and the facts the run records.
    Architecture, caption encoder and attribute names must match the config, and the folder must hold a discriminator."""

    def more(start: GANGenerator, discriminator: dict[str, Tensor] | None) -> list[str]:
        problems = []
        if sorted(start.attribute_vocab) != sorted(config.model.attributes):
            problems.append(f"model.attributes: init_from has {sorted(start.attribute_vocab)}, now {sorted(config.model.attributes)}")
        if discriminator is None:
            problems.append("its folder has no discriminator weights (gan.discriminator in model.json); a GAN continues with both")
        return problems

    return start_model(config, encoder, GANGenerator, get_gan_spec(config.model.name), "a GAN (model.family: gan)", more)


def _adam(module: nn.Module, lr: float, config: Config, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(config.gan.adam_beta1, config.gan.adam_beta2),
                            fused=fused(device, config.train.fused_adam))


def prepare_gan(config: Config, resume: Path | None = None, show_progress: bool = True) -> GANRun:
    """Open data, build generator, discriminator, EMA and optimisers, restore a checkpoint, make the run directory."""
    train, spec = config.train, get_gan_spec(config.model.name)
    if spec.resolution != config.data.resolution:
        raise ConfigError(f"data.resolution: {config.model.name} makes {spec.resolution} px images, not {config.data.resolution}")
    data = open_data(config, resume)
    vocab = data.saved.get("attribute_vocab") or attribute_vocabulary(data.train_set.source, config.model.attributes)
    run_dir, accelerator, encoder = open_run(config, resume, data, [data.train_set], show_progress)
    initialised_from = data.saved.get("initialised_from")
    start = _initial_gan(config, encoder) if train.init_from and resume is None else None
    if start is not None:
        vocab = start.model.attribute_vocab
    generator = TextGenerator(spec, encoder.dim, vocab)
    discriminator = Discriminator(spec, encoder.dim, vocab)
    if start is not None:  # a published GAN continues: both networks' weights; the optimisers start afresh
        generator.load_state_dict(start.model.model.state_dict())
        discriminator.load_state_dict(start.discriminator)
        initialised_from = start.facts
    ema = EMA(generator, train.ema_decay, train.ema_power)
    ema.module.to(accelerator.device)
    g_optimizer = _adam(generator, config.gan.generator_lr, config, accelerator.device)
    d_optimizer = _adam(discriminator, config.gan.discriminator_lr, config, accelerator.device)
    examples = DiffusionExamples(data.train_set, encoder.cache, vocab, seed=config.seed, num_train_timesteps=1,
                                 attribute_dropout_prob=train.attribute_dropout_prob)
    loader = make_loader(examples, train.batch_size, train, data.sampler)
    generator, discriminator, g_optimizer, d_optimizer, loader = accelerator.prepare(
        generator, discriminator, g_optimizer, d_optimizer, loader)
    run = GANRun(config=config, accelerator=accelerator, run_dir=run_dir, generator=generator, discriminator=discriminator,
                 ema=ema, g_optimizer=g_optimizer, d_optimizer=d_optimizer, train_examples=examples, train_loader=loader,
                 encoder=encoder, vocab=vocab, metrics=MetricsLog(run_dir / "metrics.jsonl"),
                 steps_per_epoch=data.steps_per_epoch, resumed_from=resume, initialised_from=initialised_from)
    run.first_diversity = restore(run, resume, ema).get("first_diversity")
    announce(run, resume, f"{config.model.name} (generator {parameters_m(ema.module):.1f}M, discriminator "
                          f"{parameters_m(discriminator):.1f}M parameters), {len(examples)} examples")
    return run


def _step_generator(run: GANRun) -> torch.Generator:
    """The draws of one step on one process: a function of (seed, step, process) only, so resume is exact."""
    return torch.Generator().manual_seed((run.config.seed * 1_000_003 + run.step) * 64 + run.accelerator.process_index)


def batch_diversity(images: Tensor) -> Tensor:
    """Mean absolute difference between each generated image and the next in the batch ([], on the images' device):
    near 0 when G collapses."""
    if images.shape[0] < 2:
        return images.new_zeros((), dtype=torch.float32)
    return (images - images.roll(1, dims=0)).abs().mean().float()


def train_step(run: GANRun, batch: dict[str, Any]) -> dict[str, Tensor]:
    """One discriminator step (hinge with mismatched captions, MA-GP), then one generator step; per-step metrics as
    device tensors (nothing here waits for the GPU; the watch reads them at the loop's next check point)."""
    g, device, config = _step_generator(run), run.accelerator.device, run.config.gan
    real, pooled, ids = batch["pixel_values"], batch["text_pooled"], batch["attribute_ids"]
    ids = ids if ids.shape[1] else None
    spec = run.ema.module.spec
    z = to_device(torch.randn(real.shape[0], spec.z_dim, generator=g), device)

    def augment(images: Tensor) -> Tensor:
        return diff_augment(images, config.augment, g)

    fake = run.generator(z, pooled, ids)
    real_aug = augment(real)
    d_real = run.discriminator(real_aug, pooled, ids)
    d_fake = run.discriminator(augment(fake.detach()), pooled, ids)
    d_mismatched, mismatch_rows = None, torch.zeros(0, dtype=torch.long)
    if config.mismatched_captions:
        rows, valid = mismatched_rows(batch["caption"], g)
        mismatch_rows = valid.nonzero().flatten()
        if len(mismatch_rows):
            other = to_device(rows[mismatch_rows], device)
            d_mismatched = run.discriminator(real_aug[to_device(mismatch_rows, device)], pooled[other],
                                             None if ids is None else ids[other])
    loss_d = discriminator_hinge(d_real, d_fake).mean() if d_mismatched is None else (
        torch.relu(1 - d_real).mean() + 0.5 * torch.relu(1 + d_fake).mean() + 0.5 * torch.relu(1 + d_mismatched).mean())
    penalty = torch.zeros((), device=device)
    if config.ma_gp_weight and run.step % config.ma_gp_every == 0:  # lazy: every k-th step, k times the weight
        penalty = matching_aware_penalty(run.accelerator.unwrap_model(run.discriminator), real_aug, pooled, ids,
                                         config.ma_gp_weight * config.ma_gp_every, config.ma_gp_power).mean()
    run.d_optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(loss_d + penalty)
    run.d_optimizer.step()

    d_on_fake = run.discriminator(augment(fake), pooled, ids)
    loss_g = generator_hinge(d_on_fake).mean()
    run.g_optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(loss_g)
    run.g_optimizer.step()
    record = {"d_loss": loss_d.detach(), "g_loss": loss_g.detach(), "ma_gp": penalty.detach(),
              "d_real_acc": (d_real > 0).float().mean(), "d_fake_acc": (d_fake < 0).float().mean(),
              "diversity": batch_diversity(fake.detach())}
    if d_mismatched is not None:
        record["d_mismatched_acc"] = (d_mismatched < 0).float().mean()
    run.watched.append((run.step + 1, torch.stack([record["d_real_acc"], record["d_fake_acc"], record["diversity"]])))
    return record


def _watch(run: GANRun, record: dict[str, float], step: int | None = None) -> str | None:
    """A warning when, over gan.collapse_window steps, the discriminator wins every time (its loss pinned: the generator
    gets no signal) or the batch diversity has fallen under a tenth of where it started (mode collapse). `record`:
    one step's numbers; `step`: that step (default: the run's)."""
    step = run.step if step is None else step
    window = run.config.gan.collapse_window
    run.watch["pinned"].append(min(record["d_real_acc"], record["d_fake_acc"]))
    run.watch["diversity"].append(record["diversity"])
    for values in run.watch.values():
        del values[:-window]
    if run.first_diversity is None and len(run.watch["diversity"]) == window:
        run.first_diversity = sum(run.watch["diversity"]) / window
    if len(run.watch["pinned"]) < window:
        return None
    checkpoints = checkpoint_dirs(run.run_dir)
    last = f"the last checkpoint before it is {checkpoints[-1]}" if checkpoints else "no checkpoint yet"
    if min(run.watch["pinned"]) >= 0.999:
        return (f"step {step}: the discriminator has classified every real and generated image right for {window} steps "
                f"(D loss pinned; the generator learns nothing); {last}. Lower gan.discriminator_lr or raise gan.ma_gp_weight")
    diversity = sum(run.watch["diversity"]) / window
    if run.first_diversity and diversity < 0.1 * run.first_diversity:
        return (f"step {step}: batch diversity {diversity:.4f} is under a tenth of its start ({run.first_diversity:.4f}): "
                f"mode collapse; {last}")
    return None


def save_gan(run: GANRun) -> Path:
    state = {"attribute_vocab": run.vocab, "num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
             "images_seen": run.step * run.images_per_step, "text_identity": run.encoder.identity, "text_dim": run.encoder.dim,
             "hardware": hardware_name(run.accelerator.device), "initialised_from": run.initialised_from,
             "first_diversity": run.first_diversity}
    return save_checkpoint(run.accelerator, run.run_dir, run.step, run.ema, run.config, state, run.config.train.keep_checkpoints)


@torch.no_grad()
def validate_gan(run: GANRun) -> dict[str, float]:
    """A grid of the validation prompts (rows: validation seeds) from the EMA generator at the default truncation."""
    if not run.accelerator.is_main_process or not run.config.train.validation_prompts:
        return {}
    model, prompts = run.ema.module, list(run.config.train.validation_prompts)
    pooled = run.encoder.encode(prompts).pooled.to(run.accelerator.device)
    images, captions = [], []
    for seed in run.config.train.validation_seeds:
        z = truncated_normal([torch.Generator().manual_seed(seed * 10_000 + i) for i in range(len(prompts))],
                             (model.spec.z_dim,), run.config.gan.truncation).to(run.accelerator.device)
        images += list(to_uint8(model.sample(z, pooled, None).cpu()))
        captions += [f"{prompt} (seed {seed})" for prompt in prompts]
    path = run.run_dir / "samples" / f"step_{run.step:06d}.png"
    save_image(captioned_grid(images, captions, columns=len(prompts), tile=max(96, model.resolution), caption_lines=3), path)
    return {"diversity_ema": float(batch_diversity(torch.stack([torch.from_numpy(i).float() for i in images])))}


def export_gan(run: GANRun, dtype: str = "float32") -> Path:
    """The EMA generator as model files under run_dir/export (rank 0)."""
    return export_adversarial(run, "g_loss", "gan", lambda training: gan_description(
        run.ema.module, run.config, run.encoder.identity, training), dtype)


__all__ = ["GANRun", "batch_diversity", "export_gan", "prepare_gan", "save_gan", "train_step", "validate_gan"]
