"""The upsampler's training (model.family: upsampler) in the adversarial loop (adversarial.py):

    python train.py configs/upsampler256.yaml [key=value ...] [--resume latest]

Each example is a random patch of a photo at data.resolution and its low-res input, degraded as in
upsampler/degrade.py, drawn in the DataLoader workers from a generator seeded by (seed, epoch, index), so a resumed
run continues bit for bit and the batch layout does not matter. L1 alone for upsampler.adversarial_start steps, then a
patch-discriminator step (hinge) and a generator step (L1 + adversarial + feature matching) per batch; an EMA of the
generator is what validation, checkpoints' inference weights and the export use. Validation upsamples fixed
validation photos (area-downsampled) and logs PSNR beside bicubic's, with a picture: input | bicubic | upsampler | photo.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..config import Config, ConfigError, save_config
from ..data import FashionDataset
from ..data.transforms import to_uint8
from ..evaluation.restoration import psnr
from ..grid import captioned_grid, save_image
from ..runs import MetricsLog, hardware_name, read_state
from ..text import CaptionEncoder
from ..upsampler import (
    Degradation,
    PatchDiscriminator,
    Upsampler,
    degrade,
    downsample,
    feature_matching,
    get_upsampler_spec,
    patch_generator,
    patch_hinge,
    reconstruction,
)
from ..upsampler.generator import UpsamplerGenerator, upsampler_description
from .adversarial import LoopParts, export_adversarial, run_adversarial, start_model
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DiffusionExamples, EpochSampler, example_seed
from .ema import EMA

logger = logging.getLogger("fashiongen.train")


def degradation_of(config: Config) -> Degradation:
    u = config.upsampler
    return Degradation(scale=get_upsampler_spec(config.model.name).scale, blur_prob=u.blur_prob,
                       blur_sigma=(u.blur_sigma[0], u.blur_sigma[1]), kernels=tuple(u.kernels), noise_prob=u.noise_prob,
                       noise_sigma=(u.noise_sigma[0], u.noise_sigma[1]), jpeg_prob=u.jpeg_prob,
                       jpeg_quality=(u.jpeg_quality[0], u.jpeg_quality[1]))


class PatchExamples(Dataset):
    """Training examples (caption embedding and dropout as for the other families) with a random high-res patch and its
    degraded low-res input, both drawn from the example's own generator."""

    def __init__(self, examples: DiffusionExamples, patch_size: int, degradation: Degradation, seed: int) -> None:
        self.examples, self.patch_size, self.degradation, self.seed = examples, patch_size, degradation, seed

    def set_epoch(self, epoch: int) -> None:
        self.examples.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.examples[index]
        generator = torch.Generator().manual_seed(example_seed(self.seed + 1, self.examples.epoch, index))
        pixels, size, scale = item["pixel_values"], self.patch_size, self.degradation.scale
        cells_y, cells_x = (pixels.shape[1] - size) // scale + 1, (pixels.shape[2] - size) // scale + 1
        top = int(torch.randint(0, cells_y, (), generator=generator)) * scale  # on the low-res grid
        left = int(torch.randint(0, cells_x, (), generator=generator)) * scale
        patch = pixels[:, top : top + size, left : left + size]
        item = {key: value for key, value in item.items() if key not in ("noise", "timestep")}
        return {**item, "pixel_values": patch, "low_res": degrade(patch[None], self.degradation, generator)[0]}


@dataclass
class UpsamplerRun:
    """Everything the upsampler's steps share; built by `prepare_upsampler`."""

    config: Config
    accelerator: Accelerator
    run_dir: Path
    generator: nn.Module  # prepared Upsampler
    discriminator: nn.Module  # prepared PatchDiscriminator
    ema: EMA
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    train_examples: PatchExamples
    train_loader: Any
    encoder: CaptionEncoder
    validation: dict[str, Any]  # fixed photos [N, 3, R, R], their area-downsampled inputs, pooled captions, captions
    metrics: MetricsLog
    steps_per_epoch: int
    step: int = 0
    initialised_from: dict[str, Any] | None = None

    @property
    def images_per_step(self) -> int:
        return self.config.train.batch_size * self.accelerator.num_processes


def check_upsampler_config(config: Config) -> None:
    try:
        spec = get_upsampler_spec(config.model.name)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    low, high, patch = config.model.low_res_resolution, config.data.resolution, config.upsampler.patch_size
    if low * spec.scale != high:
        raise ConfigError(f"model.low_res_resolution: {config.model.name} makes {spec.scale}x its input, so "
                          f"data.resolution={high} needs model.low_res_resolution={high // spec.scale}, not {low}")
    if patch > high or patch % spec.scale:
        raise ConfigError(f"upsampler.patch_size: {patch} must be at most data.resolution ({high}) and divisible by "
                          f"the scale ({spec.scale})")


def _validation_set(config: Config, encoder: CaptionEncoder, device: torch.device) -> dict[str, Any]:
    """upsampler.validation_images validation photos spread evenly over the split (its first rows are often one
    category), unflipped and area-downsampled (the clean case), fixed for the run; {} when there is no validation split."""
    dataset = FashionDataset.from_config(dataclasses.replace(config.data, hflip=False), seed=config.seed, split="validation")
    if not len(dataset):
        return {}
    count = min(len(dataset), config.upsampler.validation_images)
    examples = [dataset[index * len(dataset) // count] for index in range(count)]  # a defective record: the next good one
    high, captions = torch.stack([e["pixel_values"] for e in examples]), [e["caption"] for e in examples]
    scale = get_upsampler_spec(config.model.name).scale
    return {"high": high.to(device), "low": downsample(high, scale, "area").to(device), "captions": captions,
            "pooled": encoder.encode(captions).pooled.to(device)}


def prepare_upsampler(config: Config, resume: Path | None = None, show_progress: bool = True) -> UpsamplerRun:
    """Open data, build the upsampler, its discriminator, EMA and optimisers, restore a checkpoint, make the run dir."""
    from .loop import _distributed_cpu, _loader, _make_accelerator, open_encoder, open_run_dir  # shared set-up

    check_upsampler_config(config)
    t, u, spec = config.train, config.upsampler, get_upsampler_spec(config.model.name)
    state = PartialState(cpu=_distributed_cpu())
    train_set = FashionDataset.from_config(config.data, seed=config.seed)
    global_batch = t.batch_size * state.num_processes
    sampler = EpochSampler(len(train_set), config.seed, global_batch)
    saved = read_state(resume) if resume is not None else {}
    run_dir = open_run_dir(config, resume, state)
    accelerator = _make_accelerator(config, run_dir)
    set_seed(config.seed)
    encoder = open_encoder(config, run_dir, accelerator, [train_set], show_progress)
    initialised_from = saved.get("initialised_from")
    generator, discriminator = Upsampler(spec, encoder.dim), PatchDiscriminator(spec)
    if config.train.init_from and resume is None:
        start = start_model(config, encoder, UpsamplerGenerator, spec, "an upsampler")
        generator.load_state_dict(start.model.model.state_dict())
        if start.discriminator is not None:  # else the discriminator starts afresh
            discriminator.load_state_dict(start.discriminator)
        initialised_from = start.facts
    ema = EMA(generator, t.ema_decay, t.ema_power)
    ema.module.to(accelerator.device)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=u.generator_lr, betas=(u.adam_beta1, u.adam_beta2))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=u.discriminator_lr, betas=(u.adam_beta1, u.adam_beta2))
    base = DiffusionExamples(train_set, encoder.cache, {}, seed=config.seed, num_train_timesteps=1,
                             caption_dropout_prob=t.caption_dropout_prob)
    examples = PatchExamples(base, u.patch_size, degradation_of(config), config.seed)
    loader = _loader(examples, t.batch_size, t, sampler)
    generator, discriminator, g_optimizer, d_optimizer, loader = accelerator.prepare(
        generator, discriminator, g_optimizer, d_optimizer, loader)
    run = UpsamplerRun(config=config, accelerator=accelerator, run_dir=run_dir, generator=generator,
                       discriminator=discriminator, ema=ema, g_optimizer=g_optimizer, d_optimizer=d_optimizer,
                       train_examples=examples, train_loader=loader, encoder=encoder,
                       validation=_validation_set(config, encoder, accelerator.device),
                       metrics=MetricsLog(run_dir / "metrics.jsonl"), steps_per_epoch=len(sampler) // global_batch,
                       initialised_from=initialised_from)
    if resume is not None:
        run.step = int(load_checkpoint(accelerator, resume, ema)["step"])
    if accelerator.is_main_process:
        save_config(config, run_dir / "config.yaml")
        run.metrics.truncate_after(run.step)
        logger.info("run %s: %s (upsampler %.2fM, discriminator %.2fM parameters), %d examples, %d steps per epoch%s",
                    run_dir, config.model.name, sum(p.numel() for p in ema.module.parameters()) / 1e6,
                    sum(p.numel() for p in discriminator.parameters()) / 1e6, len(examples), run.steps_per_epoch,
                    f", resumed at step {run.step}" if resume is not None else "")
    return run


def mean_psnr(output: Tensor, target: Tensor) -> float:
    return float(psnr(output.float(), target.float()).mean())


def train_step(run: UpsamplerRun, batch: dict[str, Any]) -> dict[str, float]:
    """L1 alone until upsampler.adversarial_start; then a discriminator step (hinge), then a generator step."""
    u = run.config.upsampler
    high, low, pooled = batch["pixel_values"], batch["low_res"], batch["text_pooled"]
    output = run.generator(low, pooled)
    l1 = reconstruction(output, high).mean()
    record = {"l1": l1.item(), "psnr": mean_psnr(output.detach().clamp(-1, 1), high)}
    loss = u.l1_weight * l1
    if run.step >= u.adversarial_start:
        d_real, real_features = run.discriminator(high, low)
        d_fake, _ = run.discriminator(output.detach(), low)
        loss_d = patch_hinge(d_real, d_fake)
        run.d_optimizer.zero_grad(set_to_none=True)
        run.accelerator.backward(loss_d)
        run.d_optimizer.step()
        d_on_fake, fake_features = run.discriminator(output, low)  # the photo's features: from before D's step (constants)
        adversarial, matching = patch_generator(d_on_fake), feature_matching(fake_features, real_features)
        loss = loss + u.adversarial_weight * adversarial + u.feature_weight * matching
        record.update(d_loss=loss_d.item(), g_adv=adversarial.item(), feature_matching=matching.item(),
                      d_real_acc=float((d_real > 0).float().mean()), d_fake_acc=float((d_fake < 0).float().mean()))
    run.g_optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(loss)
    run.g_optimizer.step()
    return record


def save_upsampler(run: UpsamplerRun) -> Path:
    state = {"num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
             "images_seen": run.step * run.images_per_step, "text_identity": run.encoder.identity, "text_dim": run.encoder.dim,
             "hardware": hardware_name(run.accelerator.device), "initialised_from": run.initialised_from}
    return save_checkpoint(run.accelerator, run.run_dir, run.step, run.ema, run.config, state, run.config.train.keep_checkpoints)


@torch.no_grad()
def validate_upsampler(run: UpsamplerRun) -> dict[str, float]:
    """PSNR of the EMA upsampler and of bicubic on the fixed validation photos, and samples/step_N.png (4 photos:
    input | bicubic | upsampler | photo, then the middle quarter of each at twice the size)."""
    if not run.accelerator.is_main_process or not run.validation:
        return {}
    v, model = run.validation, run.ema.module
    output = model.sample(v["low"], v["pooled"])
    bicubic = F.interpolate(v["low"], size=v["high"].shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
    nearest = F.interpolate(v["low"], size=v["high"].shape[-2:], mode="nearest")
    shown = min(4, len(output))
    size = v["high"].shape[-1]
    images, captions = [], []
    for row in range(shown):
        for name, picture in (("input", nearest), ("bicubic", bicubic), ("upsampler", output), ("photo", v["high"])):
            images.append(to_uint8(picture[row : row + 1].cpu())[0])
            captions.append(f"{name}: {v['captions'][row][:40]}" if name == "input" else name)
    for row in range(shown):  # zoomed: the middle quarter at 2x
        q = size // 4
        for name, picture in (("input", nearest), ("bicubic", bicubic), ("upsampler", output), ("photo", v["high"])):
            crop = picture[row : row + 1, :, q : 3 * q, q : 3 * q]
            images.append(to_uint8(F.interpolate(crop, size=(size, size), mode="nearest").cpu())[0])
            captions.append(f"{name}, zoomed")
    save_image(captioned_grid(images, captions, columns=4, tile=size, caption_lines=2),
               run.run_dir / "samples" / f"step_{run.step:06d}.png")
    return {"val_psnr": mean_psnr(output, v["high"]), "val_psnr_bicubic": mean_psnr(bicubic, v["high"]),
            "val_l1": float(reconstruction(output, v["high"]).mean())}


def export_upsampler(run: UpsamplerRun, dtype: str = "float32") -> Path:
    """The EMA upsampler (and its discriminator, so init_from can continue it) as model files under run_dir/export."""
    return export_adversarial(run, "l1", "upsampler", lambda training: upsampler_description(
        run.ema.module, run.config, run.encoder.identity, run.config.model.low_res_resolution, training), dtype)


def train_upsampler(run: UpsamplerRun, show_progress: bool = True) -> Path:
    """Train until train.max_steps in the adversarial loop; export at the end."""
    from ..plots import upsampler_curves

    parts = LoopParts(name="upsampler", step=train_step, validate=lambda: validate_upsampler(run), save=lambda: save_upsampler(run),
                      export=lambda: export_upsampler(run), curves=upsampler_curves, postfix=("l1", "d_loss"),
                      hint="Lower upsampler.generator_lr and upsampler.discriminator_lr, or upsampler.adversarial_weight")
    return run_adversarial(run, parts, show_progress)


__all__ = ["PatchExamples", "UpsamplerRun", "check_upsampler_config", "export_upsampler", "prepare_upsampler",
           "save_upsampler", "train_step", "train_upsampler", "validate_upsampler"]
