"""The reader registry: detect a source's format, open it, and apply the train/validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .deepfashion2 import DeepFashion2Reader
from .deepfashion_mm import DeepFashionMMReader
from .fashion_mnist import FashionMnistReader
from .fashiongen_h5 import FashionGenH5Reader
from .folder import FolderReader
from .content import content_hashes
from .records import DataError, Record, RecordMeta, Source, logger, require_path
from .splits import SPLITS, join_identical, split_of

READERS: dict[str, Any] = {
    "fashiongen-h5": FashionGenH5Reader,
    "folder": FolderReader,
    "deepfashion-mm": DeepFashionMMReader,
    "deepfashion2": DeepFashion2Reader,
    "fashion-mnist": FashionMnistReader,
}
# Most specific first: a folder with captions.json and images/ is DeepFashion-MM, and a folder with
# a metadata file is a folder source even when a converted .h5 lies beside it.
DETECT_ORDER = ("fashion-mnist", "deepfashion2", "deepfashion-mm", "folder", "fashiongen-h5")


def detect_format(path: Path) -> str:
    require_path(path)
    for name in DETECT_ORDER:
        if READERS[name].detect(path):
            return name
    raise DataError(f"{path}: cannot tell its format; set data.format to one of {', '.join(READERS)}")


class SplitView:
    """The rows of a source whose split key hashes into one split; `moved_to_train` counts the source's rows that
    a hash of their key put in validation but that left it as copies of training photos."""

    def __init__(self, source: Source, indices: np.ndarray, split: str, moved_to_train: int = 0) -> None:
        self.source, self.indices, self.split_name, self.moved_to_train = source, indices, split, moved_to_train
        self.format, self.path, self.skipped = source.format, source.path, source.skipped
        self.caption_template = source.caption_template

    def __len__(self) -> int:
        return len(self.indices)

    def meta(self, index: int) -> RecordMeta:
        return self.source.meta(int(self.indices[index]))

    def __getitem__(self, index: int) -> Record:
        return self.source[int(self.indices[index])]


def split_keys(source: Source, val_fraction: float = 0.05) -> list[str]:
    """The key each row is split by: its product (so poses of one product stay together), else its id, joined
    across rows whose pixels are identical (`splits.join_identical`)."""
    return joined_split_keys(source, val_fraction)[0]


def joined_split_keys(source: Source, val_fraction: float) -> tuple[list[str], int]:
    """`split_keys` and the number of rows whose identical photo in training moved them out of validation."""
    keys, moved = join_identical(own_split_keys(source), content_hashes(source), val_fraction)
    if moved:
        logger.info("%s: %d row(s) moved from validation to train: pixel-identical to training photos", source.path, moved)
    return keys, moved


def own_split_keys(source: Source) -> list[str]:
    """The reader's key for each row, before joining identical photos."""
    if hasattr(source, "split_keys"):
        return source.split_keys()
    keys = []
    for index in range(len(source)):
        meta = source.meta(index)
        keys.append(str(meta.attributes.get("product_id", meta.id)))
    return keys


def open_source(
    path: str | Path,
    *,
    format: str = "auto",
    split: str = "all",
    val_fraction: float = 0.05,
    skip_bad_records: bool = True,
    caption_field: str = "",
    **options: Any,
) -> Source:
    """Open any supported source; `split` is the source's own split where it has one, else a hash split.

    `options` go to readers that take them (FashionGen h5: poses, one_pose_per_product, text_encoding).
    """
    path = Path(path)
    name = detect_format(path) if format == "auto" else format
    if name not in READERS:
        raise DataError(f"data.format '{name}' is not one of {', '.join(READERS)} (or auto)")
    if split not in SPLITS:
        raise DataError(f"data.split '{split}' is not one of {', '.join(SPLITS)}")
    reader = READERS[name]
    kwargs: dict[str, Any] = {"skip_bad_records": skip_bad_records, "caption_field": caption_field}
    if reader is FashionGenH5Reader:
        kwargs.update(options)
    native = reader.splits_at(path)
    if split != "all" and native:
        if split not in native:
            raise DataError(f"{path} has the split(s) {', '.join(native)}, not '{split}'")
        return reader(path, split=split, **kwargs)
    source = reader(path, **kwargs)
    if split == "all":
        return source
    keys, moved = joined_split_keys(source, val_fraction)
    indices = np.array([i for i, key in enumerate(keys) if split_of(key, val_fraction) == split], dtype=np.int64)
    return SplitView(source, indices, split, moved)


def open_from_config(data_config: Any, split: str | None = None) -> Source:
    """Open the source a `DataConfig` describes (optionally another split than its own)."""
    return open_source(
        data_config.source,
        format=data_config.format,
        split=split or data_config.split,
        val_fraction=data_config.val_fraction,
        skip_bad_records=data_config.skip_bad_records,
        caption_field=data_config.caption_field,
        poses=data_config.poses,
        one_pose_per_product=data_config.one_pose_per_product,
        text_encoding=data_config.text_encoding,
    )
