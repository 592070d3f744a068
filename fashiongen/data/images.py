"""Decoding image files into uint8 [H, W, 3] arrays with clear errors and bounded memory.

An image file's header says how many pixels it will decode to, and a few hundred KB of PNG can
claim 20000x20000 (400 megapixels, 1.2 GB as RGB): a decompression bomb. `open_image` reads the
header (PIL's open is lazy) and refuses an image over `max_pixels` before any pixel is decoded.
When only a small image is needed (`min_size`, e.g. a 64 px model input), JPEGs are decoded at
1/2, 1/4 or 1/8 scale by libjpeg itself (`draft`), so a large photo costs a fraction of its size.
A long strip (over `MAX_ASPECT_RATIO`) is refused from the header too: no garment photo is 20000x1, and the
few pixels it has would be cropped to a sliver or padded to a line at the model's size.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..resize import MAX_ASPECT_RATIO
from ..utils import NotRegularFile, regular_file
from .records import RecordError, as_rgb_uint8

DATASET_MAX_PIXELS = 64_000_000  # 8000x8000: above any catalogue photo; a bigger "photo" is a bomb or a mistake
UPLOAD_MAX_PIXELS = 16_000_000  # uploads and edit inputs (4000x4000, a phone photo): well below PIL's 89 MP warning

ImageSource = Union[bytes, str, Path]


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".rstrip("0").rstrip(".")


def _too_large(size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (f"image is {width}x{height} = {_megapixels(width * height)} megapixels, over the limit of "
            f"{_megapixels(max_pixels)} megapixels")


def check_aspect(size: tuple[int, int], where: str) -> None:
    """Refuse an image (width, height) longer than MAX_ASPECT_RATIO times its short side, naming `where`."""
    width, height = size
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        shape = "wide as it is tall" if width > height else "tall as it is wide"
        raise RecordError(where, f"image is {width}x{height}, over {MAX_ASPECT_RATIO} times as {shape} (the limit is "
                                 f"{MAX_ASPECT_RATIO}:1); crop it to the garment")


def open_image(data: ImageSource, where: str, max_pixels: int = DATASET_MAX_PIXELS, min_size: int | None = None,
               upright: bool = False) -> Image.Image:
    """Open an image file (path or bytes) and decode it, refusing one over `max_pixels` or MAX_ASPECT_RATIO before decoding.

    With `min_size`, a JPEG is decoded at the smallest 1/2^k scale that keeps both sides >= min_size,
    and the pixel limit applies to that reduced decode. With `upright`, the decoded pixels are turned by the
    file's EXIF orientation (a phone's portrait photo is stored sideways with a tag saying so). Missing,
    truncated, non-image, oversized and strip-shaped files raise RecordError naming `where`.
    """
    if not isinstance(data, (bytes, bytearray)):
        try:
            regular_file(data)  # a FIFO would block PIL's open forever, a device never ends
        except NotRegularFile as error:
            raise RecordError(where, error.reason) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, checked next, is lower
            image = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        try:
            size = image.size
            check_aspect(size, where)
            if min_size and image.format == "JPEG" and image.width * image.height > min_size * min_size * 4:
                image.draft(image.mode, (min_size, min_size))  # sets the decoded size; nothing is decoded yet
            if image.width * image.height > max_pixels:
                if not min_size:
                    reduced = ""
                elif image.format == "JPEG":
                    reduced = f" even when read at {image.width}x{image.height}, JPEG's smallest reduced size"
                else:
                    reduced = f" ({image.format or 'this format'} is decoded in full; a JPEG would be read at up to 1/8 size)"
                raise RecordError(where, _too_large(size, max_pixels) + reduced)
            image.load()  # forces a full decode, so a truncated file fails here, not mid-training
            if upright:  # after the (reduced) decode, so it turns only what was decoded; a corrupt EXIF turns nothing
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    ImageOps.exif_transpose(image, in_place=True)
        except BaseException:
            image.close()
            raise
    except FileNotFoundError:
        raise RecordError(where, "image file not found") from None
    except IsADirectoryError:
        raise RecordError(where, "is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise RecordError(where, "not an image file (cannot identify its format)") from None
    except Image.DecompressionBombError as error:  # over twice PIL's own limit: it refuses before we see the size
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = f"{_megapixels(int(found.group(1)))} megapixels" if found else "too many pixels"
        raise RecordError(where, f"image is {pixels} (PIL refuses it as a decompression bomb), over the limit of "
                                 f"{_megapixels(max_pixels)} megapixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        if isinstance(error, RecordError):
            raise
        raise RecordError(where, f"corrupt or truncated image ({type(error).__name__}: {error})") from None
    return image


def image_array(image: Image.Image, where: str) -> np.ndarray:
    """A decoded PIL image in any mode -> the values as_rgb_uint8 turns into uint8 [H, W, 3].

    16-bit grey ('I;16', 'I;16B', 'I') keeps its 16 bits for proper scaling; 'F' stays float; a mode
    with alpha or a transparent colour ('RGBA', 'LA', 'P' with transparency, ...) becomes RGBA so the
    alpha is composited on white; everything else (1-bit, palette, CMYK, YCbCr, ...) goes through RGB.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)  # [H, W]; 'I;16B' is big-endian
    if mode == "I":
        return np.asarray(image).clip(0, 65535).astype(np.uint16)  # 32-bit ints: 16-bit grey from PNG/TIFF
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode in ("L", "RGB") and "transparency" not in image.info:
        return np.asarray(image)
    if mode in ("RGBA", "LA"):
        return np.asarray(image)
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def to_rgb(image: Image.Image, where: str = "image", max_pixels: int | None = None, upright: bool = False) -> np.ndarray:
    """A PIL image (maybe not yet decoded) -> uint8 [H, W, 3], checking `max_pixels` before it is decoded; with
    `upright`, turned by its EXIF orientation (the image itself is left as it is)."""
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise RecordError(where, _too_large(image.size, max_pixels))
    try:
        if upright and image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                image = ImageOps.exif_transpose(image)  # a turned copy
        return as_rgb_uint8(image_array(image, where), where)
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, RecordError):
            raise
        raise RecordError(where, f"corrupt or truncated image ({type(error).__name__}: {error})") from None


def decode_image(data: ImageSource, where: str, max_pixels: int = DATASET_MAX_PIXELS, min_size: int | None = None,
                 upright: bool = False) -> np.ndarray:
    """Decode an image file (path or bytes) fully into uint8 [H, W, 3]; see open_image for the limits, `upright` and errors."""
    with open_image(data, where, max_pixels, min_size, upright) as image:
        return to_rgb(image, where)


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], where: str) -> np.ndarray:
    """Crop `image` [H, W, 3] to (x1, y1, x2, y2), clamped to the image; an empty box raises RecordError."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise RecordError(where, f"bounding box {list(box)} is empty inside a {width}x{height} image")
    return np.ascontiguousarray(image[y1:y2, x1:x2])
