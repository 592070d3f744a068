"""Hashes of decoded pixels, so that pixel-identical photos filed under different ids split together.

A catalogue files one photo under several product ids (the bundled set has 121 such groups): a hash
split by id then puts copies of training photos into validation, and every "real validation"
baseline (FID floor, critic accuracy, nearest-neighbour distances) partly measures the training set.
`sources.split_keys` joins rows with equal pixels; this module only computes the hashes, cached on
disk by file size and modification time because decoding every photo costs ~1 ms each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..utils import atomic_write_text
from .records import RecordError, Source

logger = logging.getLogger("fashiongen.data")
CACHE_VERSION = 1
PROGRESS_ABOVE = 2000  # rows: show a progress bar when hashing takes a noticeable while


def pixel_hash(image: Any) -> str:
    """sha256 of a uint8 [H, W, 3] array's shape and bytes: equal only for identical decoded pixels."""
    digest = hashlib.sha256(f"{tuple(image.shape)}{image.dtype}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fashiongen" / "content-hashes"


def _signature(source: Source) -> str | None:
    """What the hashes depend on (row ids, and the size and mtime of every file the pixels come from), or None
    when the source cannot name its files, in which case the hashes are computed without a cache."""
    if hasattr(source, "image_files"):
        files = list(source.image_files())
    elif Path(source.path).is_file():
        files = [Path(source.path)]
    else:
        return None
    digest = hashlib.sha256(f"{CACHE_VERSION}|{source.format}|{Path(source.path).resolve()}|{len(source)}".encode())
    for index in range(len(source)):
        digest.update(f"|{source.meta(index).id}".encode())
    for file in files:
        stat = file.stat()
        digest.update(f"|{os.path.abspath(file)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def content_hashes(source: Source, progress: bool = True) -> list[str | None]:
    """One pixel hash per row of `source` (None for a row whose image cannot be decoded), cached on disk."""
    signature = _signature(source)
    cache = cache_dir() / f"{signature}.json" if signature else None
    if cache is not None and cache.is_file():
        try:
            hashes = json.loads(cache.read_text(encoding="utf-8"))
            if isinstance(hashes, list) and len(hashes) == len(source):
                return hashes
        except (OSError, ValueError):
            pass  # a damaged cache is recomputed
    hashes: list[str | None] = []
    rows = tqdm(range(len(source)), desc="hashing pixels for the split", unit="img",
                disable=not progress or len(source) < PROGRESS_ABOVE)
    for index in rows:
        try:
            hashes.append(pixel_hash(source[index].image))
        except RecordError:
            hashes.append(None)  # counted by the reader's skip log when the row is read
    if cache is not None:
        try:
            atomic_write_text(cache, json.dumps(hashes))
        except OSError as error:  # a read-only or full home: the split still works, just slower next time
            logger.info("content-hash cache not written (%s)", error)
    return hashes
