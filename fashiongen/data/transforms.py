"""Image preparation: high-quality antialiased resize, then center-crop or pad to a square, optional flip.

The work is bounded by the output, not the input: a centre crop resizes only the source region that becomes the
square (PIL's resize `box`), so a 4000x40 strip costs a 40x40 crop, not a 6400x64 intermediate; scaling the short
side first would make a 200000x1 strip a 12,800,000x64 image (2.4 GB) on the way to 64x64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

RESIZE_MODES = ("center-crop", "pad")
LANCZOS_SUPPORT = 3.0  # the Lanczos kernel's reach either side, in source pixels per output pixel
REDUCING_GAP = 3.0  # shrink by an integer box filter first while over 3x too big, then Lanczos (PIL's reducing_gap)


def resize_square(image: np.ndarray, resolution: int, mode: str = "center-crop", pad_value: int = 255) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [resolution, resolution, 3].

    'center-crop' takes the middle square (the short side scaled to `resolution`); 'pad' scales the
    long side and pads with `pad_value` (white, like a studio background). Downscaling uses
    PIL's box filter when shrinking a lot, then Lanczos (antialiased, no aliasing of fine prints).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"data.resize_mode '{mode}' is not one of {', '.join(RESIZE_MODES)}")
    height, width = image.shape[:2]
    scale = resolution / (min(height, width) if mode == "center-crop" else max(height, width))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if mode == "center-crop":  # the square [top, top + R) x [left, left + R) of the image scaled to new_w x new_h
        new_w, new_h = max(new_w, resolution), max(new_h, resolution)
        top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
        if (new_w, new_h) == (width, height):
            return np.ascontiguousarray(image[top : top + resolution, left : left + resolution])
        box = (left * width / new_w, top * height / new_h, (left + resolution) * width / new_w,
               (top + resolution) * height / new_h)  # that square in source pixels
        return resize_region(image, (resolution, resolution), box)
    new_w, new_h = min(new_w, resolution), min(new_h, resolution)
    resized = image if (new_w, new_h) == (width, height) else resize_region(image, (new_w, new_h), (0, 0, width, height))
    canvas = np.full((resolution, resolution, 3), pad_value, dtype=np.uint8)
    top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def resize_region(image: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """The region `box` (x1, y1, x2, y2, in source pixels) of uint8 [H, W, 3] resized to `size` (w, h), as
    PIL's resize(size, LANCZOS, box, reducing_gap=3) of the whole image would, within a level or two of rounding.

    Only the pixels the filter reads are copied: the box plus the kernel's reach, widened to whole blocks of the
    box-filter pre-reduction (aligned to the image's origin, as PIL's own reduce of the whole image would be).
    """
    height, width = image.shape[:2]
    (out_w, out_h), (x1, y1, x2, y2) = size, box
    factor_x = int((x2 - x1) / out_w / REDUCING_GAP) or 1
    factor_y = int((y2 - y1) / out_h / REDUCING_GAP) or 1
    reach_x = LANCZOS_SUPPORT * max(1.0, (x2 - x1) / out_w) + 2 * factor_x
    reach_y = LANCZOS_SUPPORT * max(1.0, (y2 - y1) / out_h) + 2 * factor_y
    left = max(0, math.floor((x1 - reach_x) / factor_x) * factor_x)
    top = max(0, math.floor((y1 - reach_y) / factor_y) * factor_y)
    right = min(width, math.ceil((x2 + reach_x) / factor_x) * factor_x)
    bottom = min(height, math.ceil((y2 + reach_y) / factor_y) * factor_y)
    picture = Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))  # [h, w, 3]: only the region is copied
    if factor_x > 1 or factor_y > 1:
        picture = picture.reduce((factor_x, factor_y))
    inner = ((x1 - left) / factor_x, (y1 - top) / factor_y, (x2 - left) / factor_x, (y2 - top) / factor_y)
    return np.array(picture.resize(size, Image.Resampling.LANCZOS, box=inner))  # [out_h, out_w, 3]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1], the range diffusion models train in."""
    if not image.flags.writeable:
        image = image.copy()
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
