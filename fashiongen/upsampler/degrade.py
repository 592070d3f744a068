"""Training pairs for the upsampler: a high-resolution photo patch and a low-resolution version of it degraded the way a
base model's 64 px outputs differ from a clean downsampling (Real-ESRGAN style, kept mild: studio photos, not phone
pictures): an optional blur, one of several downsampling kernels, optional noise, 8-bit quantisation and optional JPEG.

    low = degrade(high, Degradation(), generator)     # [B, 3, H, W] in [-1, 1] -> [B, 3, H/4, W/4]

Every draw comes from `generator`, one image after another, so a batch's pairs depend on the seed only.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

KERNELS = ("area", "bilinear", "bicubic")  # antialiased; the base models' training images were Lanczos-downsampled


@dataclass(frozen=True)
class Degradation:
    """How a low-res training input is made from a photo patch (probabilities and ranges of each step)."""

    scale: int = 4
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # gaussian, in high-res pixels, before downsampling
    kernels: tuple[str, ...] = KERNELS
    noise_prob: float = 0.3
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # in 8-bit levels, after downsampling
    jpeg_prob: float = 0.2
    jpeg_quality: tuple[int, int] = (75, 95)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable gaussian blur of [B, C, H, W] with reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def downsample(images: Tensor, scale: int, kernel: str) -> Tensor:
    """[B, C, H, W] -> [B, C, H/scale, W/scale] with an antialiased kernel ('area' is the box filter)."""
    if kernel == "area":
        return F.avg_pool2d(images, scale)
    size = (images.shape[-2] // scale, images.shape[-1] // scale)
    return F.interpolate(images, size=size, mode=kernel, align_corners=False, antialias=True)


def jpeg(image: Tensor, quality: int) -> Tensor:
    """One [3, H, W] image in [-1, 1] through a JPEG encode/decode at `quality`."""
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 127.5 - 1


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


@torch.no_grad()
def degrade(high: Tensor, degradation: Degradation, generator: torch.Generator) -> Tensor:
    """[B, 3, H, W] in [-1, 1] (H, W divisible by the scale) -> [B, 3, H/s, W/s] in [-1, 1], on 8-bit levels."""
    d, rows = degradation, []
    for image in high.float().cpu():
        x = image[None]
        blur, kernel_pick, noise, compress = torch.rand(4, generator=generator).tolist()
        if blur < d.blur_prob:
            x = gaussian_blur(x, _uniform(generator, *d.blur_sigma))
        x = downsample(x, d.scale, d.kernels[min(int(kernel_pick * len(d.kernels)), len(d.kernels) - 1)])
        if noise < d.noise_prob:
            sigma = _uniform(generator, *d.noise_sigma) / 127.5
            x = x + sigma * torch.randn(x.shape, generator=generator)
        x = ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        if compress < d.jpeg_prob:
            x = jpeg(x[0], round(_uniform(generator, *d.jpeg_quality)))[None]
        rows.append(x)
    return torch.cat(rows).to(high.device, high.dtype)


__all__ = ["Degradation", "KERNELS", "degrade", "downsample", "gaussian_blur", "jpeg"]
