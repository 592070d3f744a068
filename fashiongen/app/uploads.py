"""Uploaded images as the studio takes them: read within the upload limits before any pixel is decoded, and the photo
editor's value split into the photo and the mask of what was painted over.

    photo = read_upload(path_or_bytes, limits, "photo")      # uint8 [H, W, 3], about limits.photo_side px a side
    photo, mask = editor_parts(editor_value)                 # [H, W, 3], bool [H, W] (None: nothing painted)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.images import open_image, to_rgb
from ..data.records import RecordError
from ..pipeline import check_mask_shape
from ..settings import PipelineInputError
from .checks import Limits


def read_upload(source: str | Path | bytes, limits: Limits, what: str = "photo", keep_alpha: bool = False) -> np.ndarray:
    """An uploaded image file -> uint8 [H, W, 3] (RGBA [H, W, 4] with `keep_alpha`), within the upload limits.

    An image over `max_upload_pixels` or MAX_ASPECT_RATIO (a 300000x1 strip) is refused from its header, before
    any pixel is decoded; a JPEG is decoded at 1/2-1/8 scale and anything larger reduced (box filter) to about
    `photo_side` px on the short side, so a big photo costs a few MB however large its file says it is. A photo is
    turned upright by its EXIF orientation, as the browser shows it. Transparency is composited on white.
    """
    name = f"{what} '{Path(source).name}'" if isinstance(source, (str, Path)) else what
    side = limits.photo_side
    try:
        with open_image(source, name, limits.max_upload_pixels, min_size=side, upright=True) as image:
            factor = min(image.size) // side
            if keep_alpha:
                picture = image.convert("RGBA")
                return np.asarray(picture.reduce(factor) if factor >= 2 else picture)
            pixels = to_rgb(image, name)  # [H, W, 3]
    except RecordError as error:
        raise PipelineInputError(f"The {name} cannot be used: {error.reason}. Uploads may be up to "
                                 f"{limits.max_upload_mb} MB and {limits.max_upload_pixels / 1e6:g} megapixels "
                                 "(e.g. 4000x4000); a photo of 1000-2000 px a side is plenty.") from None
    return np.asarray(Image.fromarray(pixels).reduce(factor)) if factor >= 2 else pixels


def editor_parts(value: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """An ImageEditor value -> (photo uint8 [H, W, 3] or None, mask bool [H, W] of drawn strokes or None)."""
    if value is None:
        return None, None
    if isinstance(value, np.ndarray):
        return _rgb(value), None
    background = value.get("background") if isinstance(value, dict) else None
    if background is None:
        background = value.get("composite") if isinstance(value, dict) else None
    if background is None:
        return None, None
    photo = _rgb(np.asarray(background))
    mask = np.zeros(photo.shape[:2], dtype=bool)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.shape[:2] != mask.shape:  # a layer of another size: fitted when its proportions match, else refused
            check_mask_shape(mask.shape, layer.shape)
            layer = np.asarray(Image.fromarray(layer).resize(mask.shape[::-1], Image.Resampling.NEAREST))
        mask |= (layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[-1] == 4 else (layer.reshape(*mask.shape, -1).max(-1) > 0)
    return photo, (mask if mask.any() else None)


def _rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:  # transparent parts on white, as product photos are
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1 - alpha)).round()
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


__all__ = ["editor_parts", "read_upload"]
