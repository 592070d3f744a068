"""The one record type every data source yields, and the errors and skip log readers share."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, Union

import numpy as np

from ..utils import NotRegularFile, regular_file
from ..errors import UserError

logger = logging.getLogger("fashiongen.data")

AttributeValue = Union[str, int, float]

# Canonical attribute names shared by all readers (a reader may add source-specific extras).
CANONICAL_ATTRIBUTES = (
    "name", "brand", "category", "subcategory", "gender", "colour", "season",
    "department", "composition", "pose", "product_id", "msrp", "usage", "year",
)


@dataclass
class Record:
    """One image with its caption: `image` is uint8 [H, W, 3]; `id` is unique within its source."""

    id: str
    image: np.ndarray
    caption: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordMeta:
    """A record without its pixels: cheap to read for every row (inspect, splits, caption caches)."""

    id: str
    caption: str
    attributes: dict[str, AttributeValue]


class DataError(UserError, ValueError):
    """A source cannot be read at all (missing path, missing key, malformed metadata file)."""


class RecordError(UserError, ValueError):
    """One record is defective (truncated image, empty or undecodable caption).

    `where` names the file and row/key so the message can be acted on.
    """

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass
class SkipLog:
    """Counts records skipped because of per-record defects, with their locations."""

    skip: bool = True  # False: a defect raises instead of being counted
    entries: list[tuple[str, str]] = field(default_factory=list)

    def defect(self, error: RecordError) -> None:
        """Count and log `error` when skipping, else raise it: the one place that policy lives."""
        if not self.skip:
            raise error
        self.add(error)

    def add(self, error: RecordError) -> None:
        self.entries.append((error.where, error.reason))
        logger.warning("skipping record %s: %s", error.where, error.reason)

    def __len__(self) -> int:
        return len(self.entries)

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason in self.entries))

    def summary(self, limit: int = 5) -> str:
        if not self.entries:
            return "no records skipped"
        shown = "; ".join(f"{where}: {reason}" for where, reason in self.entries[:limit])
        more = f" (+{len(self.entries) - limit} more)" if len(self.entries) > limit else ""
        return f"skipped {len(self.entries)} defective record(s): {shown}{more}"


class Source(Protocol):
    """What every reader provides. Indices are 0..len-1 over the rows the reader kept."""

    format: str
    path: Path
    skipped: SkipLog  # rows dropped while opening (bad metadata rows), when skipping is on
    caption_template: str  # how this source's attributes read as a caption (see captions.py)

    @classmethod
    def splits_at(cls, path: Path) -> tuple[str, ...]:
        """The splits `path` defines itself (the registry hash-splits sources that define none)."""
        ...

    def __len__(self) -> int: ...

    def meta(self, index: int) -> RecordMeta:
        """Caption and attributes of one row without decoding its image; raises RecordError."""
        ...

    def __getitem__(self, index: int) -> Record:
        """The full record; raises RecordError for a per-record defect."""
        ...


def require_path(path: str | Path) -> Path:
    """`path` as a Path; a missing one, or one that is neither a folder nor a regular file (a FIFO would block the
    HDF5 and npz libraries forever), is a DataError naming it (every reader starts here)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if not path.is_dir():
        try:
            regular_file(path)
        except NotRegularFile as error:
            raise DataError(str(error)) from None
    return path


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in `text`, escaped ('\\ud800'), or None. JSON's "\\ud800" decodes to one, and no
    UTF-8 writer, tokenizer or terminal can take it, so every reader of a user's text refuses it where it reads it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return ascii(text[error.start])[1:-1]
    return None


def check_text(text: str, where: str, what: str) -> str:
    """`text` unchanged, or a RecordError naming `where` and `what` (caption, id, ...) when it holds a lone surrogate."""
    if (escaped := lone_surrogate(text)) is not None:
        raise RecordError(where, f"{what} holds a lone surrogate ({escaped}), which is not valid Unicode text")
    return text


def clean_caption(text: str, where: str) -> str:
    """Strip padding and whitespace; an empty caption, or one holding a lone surrogate, is a per-record defect."""
    text = " ".join(check_text(text, where, "caption").replace("\x00", " ").split())
    if not text:
        raise RecordError(where, "empty caption")
    return text


def iter_records(source: Source, skip_bad_records: bool = True, log: SkipLog | None = None) -> Iterator[Record]:
    """Yield every record, skipping (and logging) defective ones unless `skip_bad_records` is off."""
    log = log if log is not None else SkipLog(skip=skip_bad_records)
    for index in range(len(source)):
        try:
            yield source[index]
        except RecordError as error:
            log.defect(error)


def iter_meta(source: Source) -> Iterator[RecordMeta | RecordError]:
    """Every row's metadata in order (or the RecordError that row raised), using a reader's fast path."""
    fast = getattr(source, "iter_meta", None)
    if fast is not None:
        yield from fast()
        return
    for index in range(len(source)):
        try:
            yield source.meta(index)
        except RecordError as error:
            yield error


composited_on_white = 0  # images with transparent pixels flattened on white in this process (logged at 1, 10, 100, ...)


def as_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Return `image` as uint8 [H, W, 3], the one conversion every reader and the pipeline use.

    Grey [H, W] / [H, W, 1] is repeated; an alpha channel (grey+alpha [H, W, 2], RGBA [H, W, 4]) is
    composited on white, the catalogue's background, instead of dropped (which blackens cut-outs; a 4th
    channel that is 0 everywhere is padding and dropped);
    16-bit values are scaled to 8 bit (uint16 / 257), booleans to 0/255, and floats in [0, 1] times
    255 (other floats are clipped to 0..255). Other dtypes are a RecordError.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise RecordError(where, f"image shape {image.shape} is not HxW, HxWx1, HxWx2, HxWx3 or HxWx4")
    image = _to_uint8_values(image, where)
    if image.shape[2] in (2, 4):
        colour, alpha = image[:, :, :-1].astype(np.uint32), image[:, :, -1:].astype(np.uint32)
        if alpha.min() < 255 and alpha.max() > 0:  # all-zero: a padding channel (RGBX), not a transparent image
            _count_composited(where)
            colour = (colour * alpha + 255 * (255 - alpha) + 127) // 255  # "over" a white background, rounded
        image = colour.astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def _to_uint8_values(image: np.ndarray, where: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16 or (image.dtype.kind in "iu" and image.dtype.itemsize <= 2):
        return ((image.astype(np.uint32).clip(0, 65535) + 128) // 257).astype(np.uint8)  # 65535 -> 255
    if image.dtype.kind == "f":
        values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return values.clip(0, 255).round().astype(np.uint8)
    raise RecordError(where, f"image dtype is {image.dtype}, expected uint8, uint16, bool or float")


def _count_composited(where: str) -> None:
    global composited_on_white
    composited_on_white += 1
    if composited_on_white in (1, 10, 100, 1000) or composited_on_white % 10000 == 0:
        logger.warning("%d image(s) with transparency composited on white so far (e.g. %s)", composited_on_white, where)
