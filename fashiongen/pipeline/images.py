"""Input images of the pipeline's tasks: photos and masks from paths, PIL images or arrays, checked, decoded within the
upload limits and squared as the base model saw its training images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.images import UPLOAD_MAX_PIXELS, check_aspect, decode_image, to_rgb
from ..data.records import RecordError, as_rgb_uint8
from ..data.transforms import resize_square, to_tensor
from ..generators import ImageFamily
from ..settings import PipelineInputError

logger = logging.getLogger(__name__)

ImageInput = Union[str, Path, Image.Image, np.ndarray]


def load_image(image: ImageInput, where: str = "image", max_pixels: int = UPLOAD_MAX_PIXELS,
               min_size: int | None = None) -> np.ndarray:
    """A path, PIL image or array -> uint8 [H, W, 3]; a missing, corrupt, non-image or oversized file raises PipelineInputError.

    A file over `max_pixels` or longer than MAX_ASPECT_RATIO times its short side is refused before it is decoded;
    with `min_size` a large JPEG is decoded at a reduced scale that keeps both sides >= min_size (data.images.open_image).
    A photo is turned upright by its EXIF orientation, as a viewer shows it. Modes, 16-bit values and
    transparency (composited on white) are converted as for training images (data.records.as_rgb_uint8).
    """
    try:
        if isinstance(image, (str, Path)):
            return decode_image(Path(image), str(image), max_pixels, min_size, upright=True)
        if isinstance(image, Image.Image):  # the pixel limit applies only if it is not decoded yet (Image.open is lazy)
            check_aspect(image.size, where)
            return to_rgb(image, where, max_pixels if getattr(image, "tile", None) else None, upright=True)
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:  # [H, W] or [H, W, C]; other shapes are refused by as_rgb_uint8
                check_aspect((image.shape[1], image.shape[0]), where)
            return as_rgb_uint8(image, where)
    except RecordError as error:
        raise PipelineInputError(f"{where}: {error}" if error.where != where else str(error)) from None
    raise PipelineInputError(f"{where}: expected a path, a PIL image or a uint8 array, got {type(image).__name__}")


def check_mask_shape(photo: tuple[int, ...], mask: tuple[int, ...]) -> None:
    """A mask must cover the photo: the same [H, W], or the same aspect ratio (to one pixel of the smaller),
    as when it was drawn on a resized copy; both are resized to the model's square alike. Else PipelineInputError."""
    (height, width), (mask_height, mask_width) = photo[:2], mask[:2]
    if abs(mask_width * height - width * mask_height) <= max(height, mask_height):
        return
    raise PipelineInputError(f"mask: its shape {mask_width}x{mask_height} (aspect {mask_width / mask_height:.2f}) does not "
                             f"match the photo's {width}x{height} (aspect {width / height:.2f}); draw the mask on the photo "
                             "itself or on a copy of the same proportions")


def input_size(base: ImageFamily) -> int:
    """Edit inputs need only this many pixels a side (4x the model's), so large JPEGs are decoded reduced."""
    return 4 * base.resolution


def square_photo(array: np.ndarray, base: ImageFamily) -> Tensor:
    """A photo as the base model sees training images: [3, R, R] in [-1, 1]."""
    return to_tensor(resize_square(array, base.resolution, base.info.data.resize_mode))  # [3, R, R]


def square_mask(array: np.ndarray, base: ImageFamily, where: str = "mask") -> Tensor:
    """A mask image (white = repaint) -> [1, R, R] of 0/1, resized like the photo."""
    resized = resize_square(array, base.resolution, base.info.data.resize_mode, pad_value=0)
    binary = torch.from_numpy((resized.mean(axis=-1) >= 127.5).astype(np.float32))[None]  # [1, R, R]
    if not binary.any():
        logger.warning("%s is black everywhere: nothing will be repainted", where)
    return binary


__all__ = ["ImageInput", "check_mask_shape", "input_size", "load_image", "square_mask", "square_photo"]
