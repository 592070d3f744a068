"""The low-res input of a super-resolution stage: downsample, optionally noise, upsample back.

Training degrades real images this way; sampling upsamples the base stage's output the same way,
so both see the same kind of input (noise augmentation of the low-res image, as in cascaded
diffusion models, makes the stage robust to the base stage's artefacts).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def upsample(images: Tensor, size: int) -> Tensor:
    """[B, 3, h, w] -> [B, 3, size, size], bicubic, clamped to [-1, 1]."""
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


def low_res_condition(pixels: Tensor, low_resolution: int, noise: Tensor | None = None, noise_level: float = 0.0) -> Tensor:
    """pixels [B, 3, H, W] in [-1, 1] -> the upsampled low-res version [B, 3, H, W].

    `noise` [B, 3, low, low] scaled by `noise_level` is added at low resolution (augmentation).
    """
    size = pixels.shape[-1]
    low = F.interpolate(pixels, size=(low_resolution, low_resolution), mode="bilinear", antialias=True, align_corners=False)
    if noise is not None and noise_level > 0:
        low = low + noise_level * noise
    return upsample(low.clamp(-1.0, 1.0), size)
