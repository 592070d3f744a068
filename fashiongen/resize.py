"""Square resizing of uint8 pictures, below every layer that shows or reads images (data, grids, evaluation).

The work is bounded by the output, not the input. A centre crop scales the short side to the output size, so a photo
within MAX_ASPECT_RATIO passes through at most that many output squares; a longer strip (an array that never went
through data.images.open_image's check) has its middle square cut out first: scaling the short side of a 200000x1
strip would make it 12,800,000x64 (2.4 GB) on the way to 64x64.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Catalogue photos are near 3:4 and a full-length shot about 1:3; a phone panorama is 4:1 to 10:1. At 20:1 a centre
# crop keeps 5% of the picture and padding leaves a band 3 px high at 64 px: past that it is a strip, not a photo.
MAX_ASPECT_RATIO = 20

RESIZE_MODES = ("center-crop", "pad")


def resize_square(image: np.ndarray, resolution: int, mode: str = "center-crop", pad_value: int = 255) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [resolution, resolution, 3].

    'center-crop' scales the short side to `resolution` and crops the middle; 'pad' scales the
    long side and pads with `pad_value` (white, like a studio background). Downscaling uses
    PIL's box filter when shrinking a lot, then Lanczos (antialiased, no aliasing of fine prints).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"data.resize_mode '{mode}' is not one of {', '.join(RESIZE_MODES)}")
    height, width = image.shape[:2]
    if mode == "center-crop" and max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        side = min(height, width)  # a strip: keep the middle square, the only part a centre crop shows
        top, left = (height - side) // 2, (width - side) // 2
        image, height, width = image[top : top + side, left : left + side], side, side
    scale = resolution / (min(height, width) if mode == "center-crop" else max(height, width))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if mode == "center-crop":
        new_w, new_h = max(new_w, resolution), max(new_h, resolution)
    else:
        new_w, new_h = min(new_w, resolution), min(new_h, resolution)
    picture = Image.fromarray(image)
    if (new_w, new_h) != (width, height):
        picture = picture.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    resized = np.asarray(picture)
    if mode == "center-crop":
        top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
        return np.ascontiguousarray(resized[top : top + resolution, left : left + resolution])
    canvas = np.full((resolution, resolution, 3), pad_value, dtype=np.uint8)
    top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


__all__ = ["MAX_ASPECT_RATIO", "RESIZE_MODES", "resize_square"]
