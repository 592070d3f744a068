"""Picture grids with wrapped captions: dataset previews, validation samples, sample sheets."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .resize import resize_square
from .utils import atomic_path


def captioned_grid(images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4, tile: int = 160,
                   caption_lines: int = 4) -> Image.Image:
    """Tile uint8 [H, W, 3] images row-major, each padded to `tile` px with up to `caption_lines` lines under it."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    columns = min(columns, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    line_height = 13
    text_height = caption_lines * line_height + 6 if caption_lines else 0
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (columns * tile, rows * (tile + text_height)), "white")
    draw = ImageDraw.Draw(canvas)
    for position, (image, caption) in enumerate(zip(images, captions)):
        x, y = (position % columns) * tile, (position // columns) * (tile + text_height)
        canvas.paste(Image.fromarray(resize_square(image, tile, "pad")), (x, y))
        for number, line in enumerate(textwrap.wrap(caption, width=max(8, tile // 6))[:caption_lines]):
            draw.text((x + 3, y + tile + 2 + line_height * number), line, fill="black", font=font)
    return canvas


MAX_GRID_TILES = 64  # a grid shows at most this many images: a larger job's grid is an even sample of it
MAX_TILE = 256  # px a tile: a grid of 4096 px images is a preview, not 64 full images in one picture


def sample_indices(count: int, limit: int = MAX_GRID_TILES) -> list[int]:
    """Which of `count` images a grid of at most `limit` tiles shows: all of them, or `limit` spread evenly from the
    first to the last (so a grid's memory is bounded by `limit`, not by the job)."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [0]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def tile_size(image_size: int, smallest: int = 128) -> int:
    """A grid tile's size for images of `image_size` px: at least `smallest` (room for captions), at most MAX_TILE."""
    return min(max(smallest, image_size), MAX_TILE)


def save_image(image: Image.Image, path: str | Path) -> None:
    """Write a PNG atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def save_animation(frames: Sequence[Image.Image], path: str | Path, duration_ms: int = 150, bounce: bool = True) -> None:
    """An endlessly looping GIF or WebP (by suffix), atomically; `bounce` plays forward then back."""
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".webp"):
        raise ValueError(f"{path}: animations are written as .gif or .webp")
    sequence = list(frames) + (list(frames)[-2:0:-1] if bounce else [])
    with atomic_path(path) as temporary:
        extra = {"lossless": True} if path.suffix.lower() == ".webp" else {"disposal": 2}
        sequence[0].save(temporary, format=path.suffix[1:].upper(), save_all=True, append_images=sequence[1:],
                         duration=duration_ms, loop=0, **extra)
