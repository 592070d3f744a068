"""The upsampler family's trainer (model.family: upsampler), run by the one loop (engine.py):

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
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..config import Config, ConfigError
from ..data import FashionDataset
from ..data.transforms import to_uint8
from ..evaluation.restoration import psnr
from ..grid import captioned_grid, save_image
from ..plots import upsampler_curves
from ..runs import MetricsLog, hardware_name
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
from .adversarial import export_adversarial, start_model
from .checkpoint import save_checkpoint
from .data import DiffusionExamples, example_seed
from .device import fused
from .ema import EMA
from .engine import Trainer
from .loader import make_loader
from .setup import announce, open_data, open_run, parameters_m, restore

logger = logging.getLogger("fashiongen.train")


def degradation_of(config: Config) -> Degradation:
    """upsampler.*'s degradations of the training inputs."""
    upsampler = config.upsampler
    return Degradation(scale=get_upsampler_spec(config.model.name).scale, blur_prob=upsampler.blur_prob,
                       blur_sigma=(upsampler.blur_sigma[0], upsampler.blur_sigma[1]), kernels=tuple(upsampler.kernels),
                       noise_prob=upsampler.noise_prob, noise_sigma=(upsampler.noise_sigma[0], upsampler.noise_sigma[1]),
                       jpeg_prob=upsampler.jpeg_prob, jpeg_quality=(upsampler.jpeg_quality[0], upsampler.jpeg_quality[1]))


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
class UpsamplerRun(Trainer):
    """Everything the upsampler's steps share; built by `UpsamplerRun.build` (`prepare`)."""

    name: ClassVar[str] = "upsampler"
    hint: ClassVar[str] = "Lower upsampler.generator_lr and upsampler.discriminator_lr, or upsampler.adversarial_weight"
    postfix: ClassVar[tuple[str, ...]] = ("l1", "d_loss")
    logged: ClassVar[tuple[str, ...]] = ("l1", "psnr", "d_loss", "g_adv", "feature_matching", "d_real_acc", "d_fake_acc")

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

    @classmethod
    def build(cls, config: Config, resume: Path | None = None, show_progress: bool = True) -> UpsamplerRun:
        return prepare_upsampler(config, resume, show_progress)

    def averaged(self) -> tuple[EMA, nn.Module]:
        return self.ema, self.generator

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        return train_step(self, batch)

    def validate(self) -> dict[str, Any]:
        return validate_upsampler(self)

    def curves(self, records: list[dict[str, Any]], path: Path, title: str) -> Any:
        return upsampler_curves(records, path, title)

    def save(self) -> Path:
        return save_upsampler(self)

    def export(self) -> Path:
        return export_upsampler(self)


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
    check_upsampler_config(config)
    train, upsampler, spec = config.train, config.upsampler, get_upsampler_spec(config.model.name)
    data = open_data(config, resume)
    run_dir, accelerator, encoder = open_run(config, resume, data, [data.train_set], show_progress)
    initialised_from = data.saved.get("initialised_from")
    generator, discriminator = Upsampler(spec, encoder.dim), PatchDiscriminator(spec)
    if train.init_from and resume is None:
        start = start_model(config, encoder, UpsamplerGenerator, spec, "an upsampler")
        generator.load_state_dict(start.model.model.state_dict())
        if start.discriminator is not None:  # else the discriminator starts afresh
            discriminator.load_state_dict(start.discriminator)
        initialised_from = start.facts
    ema = EMA(generator, train.ema_decay, train.ema_power)
    ema.module.to(accelerator.device)
    betas, fuse = (upsampler.adam_beta1, upsampler.adam_beta2), fused(accelerator.device, train.fused_adam)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=upsampler.generator_lr, betas=betas, fused=fuse)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=upsampler.discriminator_lr, betas=betas, fused=fuse)
    base = DiffusionExamples(data.train_set, encoder.cache, {}, seed=config.seed, num_train_timesteps=1,
                             caption_dropout_prob=train.caption_dropout_prob)
    examples = PatchExamples(base, upsampler.patch_size, degradation_of(config), config.seed)
    loader = make_loader(examples, train.batch_size, train, data.sampler)
    generator, discriminator, g_optimizer, d_optimizer, loader = accelerator.prepare(
        generator, discriminator, g_optimizer, d_optimizer, loader)
    run = UpsamplerRun(config=config, accelerator=accelerator, run_dir=run_dir, generator=generator,
                       discriminator=discriminator, ema=ema, g_optimizer=g_optimizer, d_optimizer=d_optimizer,
                       train_examples=examples, train_loader=loader, encoder=encoder,
                       validation=_validation_set(config, encoder, accelerator.device),
                       metrics=MetricsLog(run_dir / "metrics.jsonl"), steps_per_epoch=data.steps_per_epoch,
                       initialised_from=initialised_from)
    restore(run, resume, ema)
    announce(run, resume, f"{config.model.name} (upsampler {parameters_m(ema.module):.2f}M, discriminator "
                          f"{parameters_m(discriminator):.2f}M parameters), {len(examples)} examples")
    return run


def mean_psnr(output: Tensor, target: Tensor) -> Tensor:
    """The images' mean PSNR in dB ([], on their device)."""
    return psnr(output.float(), target.float()).mean()


def train_step(run: UpsamplerRun, batch: dict[str, Any]) -> dict[str, Tensor]:
    """L1 alone until upsampler.adversarial_start; then a discriminator step (hinge), then a generator step. Its
    numbers stay on the device (the loop reads them at each log line)."""
    upsampler = run.config.upsampler
    high, low, pooled = batch["pixel_values"], batch["low_res"], batch["text_pooled"]
    output = run.generator(low, pooled)
    l1 = reconstruction(output, high).mean()
    record = {"l1": l1.detach(), "psnr": mean_psnr(output.detach().clamp(-1, 1), high)}
    loss = upsampler.l1_weight * l1
    if run.step >= upsampler.adversarial_start:
        d_real, real_features = run.discriminator(high, low)
        d_fake, _ = run.discriminator(output.detach(), low)
        loss_d = patch_hinge(d_real, d_fake)
        run.d_optimizer.zero_grad(set_to_none=True)
        run.accelerator.backward(loss_d)
        run.d_optimizer.step()
        d_on_fake, fake_features = run.discriminator(output, low)  # the photo's features: from before D's step (constants)
        adversarial, matching = patch_generator(d_on_fake), feature_matching(fake_features, real_features)
        loss = loss + upsampler.adversarial_weight * adversarial + upsampler.feature_weight * matching
        record.update(d_loss=loss_d.detach(), g_adv=adversarial.detach(), feature_matching=matching.detach(),
                      d_real_acc=(d_real > 0).float().mean(), d_fake_acc=(d_fake < 0).float().mean())
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
    return {"val_psnr": float(mean_psnr(output, v["high"])), "val_psnr_bicubic": float(mean_psnr(bicubic, v["high"])),
            "val_l1": float(reconstruction(output, v["high"]).mean())}


def export_upsampler(run: UpsamplerRun, dtype: str = "float32") -> Path:
    """The EMA upsampler (and its discriminator, so init_from can continue it) as model files under run_dir/export."""
    return export_adversarial(run, "l1", "upsampler", lambda training: upsampler_description(
        run.ema.module, run.config, run.encoder.identity, run.config.model.low_res_resolution, training), dtype)


__all__ = ["PatchExamples", "UpsamplerRun", "check_upsampler_config", "export_upsampler", "prepare_upsampler",
           "save_upsampler", "train_step", "validate_upsampler"]
