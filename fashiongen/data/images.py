"""Decoding image files into uint8 [H, W, 3] arrays with clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .records import RecordError, as_rgb_uint8


def decode_image(data: bytes | Path, where: str) -> np.ndarray:
    """Decode an image file (path or bytes) fully; missing, truncated or non-image input raises RecordError."""
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(source) as image:
            image.load()  # forces a full decode, so a truncated file fails here, not mid-training
            array = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise RecordError(where, "image file not found") from None
    except UnidentifiedImageError:
        raise RecordError(where, "not an image file (cannot identify its format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise RecordError(where, f"corrupt or truncated image ({error})") from None
    return as_rgb_uint8(array, where)


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], where: str) -> np.ndarray:
    """Crop `image` [H, W, 3] to (x1, y1, x2, y2), clamped to the image; an empty box raises RecordError."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise RecordError(where, f"bounding box {list(box)} is empty inside a {width}x{height} image")
    return np.ascontiguousarray(image[y1:y2, x1:x2])
