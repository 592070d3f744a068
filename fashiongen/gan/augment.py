"""Differentiable augmentation (DiffAugment, Zhao et al. 2020): the same random colour, translation and cutout applied
to real and generated images before the discriminator sees them, so a small set (9k photos) does not let it
memorise the reals. Every draw comes from the `generator` passed in: a resumed run augments exactly as before.

    images = diff_augment(images, "color,translation,cutout", generator)   # [B, 3, H, W], differentiable in images
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..devices import to_device

POLICIES = ("color", "translation", "cutout")


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return to_device(torch.rand(shape, generator=generator), device)


def color(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image, in [-1, 1] pixel units."""
    batch, device = images.shape[0], images.device
    images = images + (_uniform((batch, 1, 1, 1), generator, device) - 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * (_uniform((batch, 1, 1, 1), generator, device) * 2) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (_uniform((batch, 1, 1, 1), generator, device) + 0.5) + mean


def translation(images: Tensor, generator: torch.Generator, ratio: float = 0.125) -> Tensor:
    """Shift each image by up to `ratio` of its size in x and y, filling with zeros (grey)."""
    batch, _, height, width = images.shape
    shift_y, shift_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = to_device(torch.randint(-shift_y, shift_y + 1, (batch, 1, 1), generator=generator), images.device)
    dx = to_device(torch.randint(-shift_x, shift_x + 1, (batch, 1, 1), generator=generator), images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1) + dy  # [B, H, 1]
    cols = torch.arange(width, device=images.device).view(1, 1, width) + dx  # [B, 1, W]
    padded = F.pad(images, (1, 1, 1, 1))
    rows = rows.clamp(-1, height) + 1
    cols = cols.clamp(-1, width) + 1
    batch_index = torch.arange(batch, device=images.device).view(batch, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch_index, rows, cols].permute(0, 3, 1, 2)


def cutout(images: Tensor, generator: torch.Generator, ratio: float = 0.5) -> Tensor:
    """Zero a random square of `ratio` of the image's side in each image."""
    batch, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = to_device(torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), generator=generator), images.device)
    left = to_device(torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), generator=generator), images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = ((rows - top + size_y // 2).clamp(0) < size_y) & (rows - top + size_y // 2 >= 0) \
        & ((cols - left + size_x // 2) >= 0) & ((cols - left + size_x // 2) < size_x)  # [B, H, W]
    return images * (~inside).unsqueeze(1).to(images.dtype)


def diff_augment(images: Tensor, policy: str, generator: torch.Generator) -> Tensor:
    """Apply the comma-separated `policy` (a subset of color, translation, cutout) in that order; '' = none."""
    for name in [p.strip() for p in policy.split(",") if p.strip()]:
        if name not in POLICIES:
            raise ValueError(f"augmentation '{name}' is not one of {', '.join(POLICIES)}")
        images = {"color": color, "translation": translation, "cutout": cutout}[name](images, generator)
    return images


__all__ = ["POLICIES", "color", "cutout", "diff_augment", "translation"]
