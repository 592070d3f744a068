"""Fashion-MNIST as one `.npz` (x_train, y_train, x_test, y_test): 28x28 grey images of 10 classes.

Labels are checked when the reader opens; pixel arrays are loaded on first use (an npz cannot be
memory-mapped), once per process, so a pickled reader stays small for spawned DataLoader workers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .records import DataError, Record, RecordError, RecordMeta, SkipLog, as_rgb_uint8, clean_caption, require_path

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# How each class reads inside a sentence ("a photo of ...").
CLASS_PHRASES = (
    "a T-shirt or top", "a pair of trousers", "a pullover", "a dress", "a coat",
    "a sandal", "a shirt", "a sneaker", "a bag", "an ankle boot",
)
# Our split name -> the npz keys holding its images and labels.
SPLIT_KEYS = {"train": ("x_train", "y_train"), "validation": ("x_test", "y_test")}
IMAGE_SIZE = 28


def _npy_header(npz_path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array in an npz, read from its header without loading the data."""
    with zipfile.ZipFile(npz_path) as archive, archive.open(f"{key}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    return shape, dtype


class FashionMnistReader:
    """Reader for the Fashion-MNIST npz; captions are built from the class name."""

    format = "fashion-mnist"
    native_splits: tuple[str, ...] = ("train", "validation")
    caption_template = ""  # captions already come from the class attribute: nothing to add

    @classmethod
    def splits_at(cls, path: Path) -> tuple[str, ...]:
        """Splits a path defines itself."""
        return cls.native_splits

    @classmethod
    def detect(cls, path: Path) -> bool:
        try:
            npz_path = cls._resolve(Path(path))
            with zipfile.ZipFile(npz_path) as archive:
                names = set(archive.namelist())
        except (DataError, OSError, zipfile.BadZipFile):
            return False
        return {"x_train.npy", "y_train.npy"} <= names or {"x_test.npy", "y_test.npy"} <= names

    def __init__(self, path: str | Path, *, split: str | None = None, skip_bad_records: bool = True,
                 caption_field: str = "") -> None:
        if split is not None and split not in self.native_splits:
            raise DataError(f"Fashion-MNIST has no split '{split}' (valid: {', '.join(self.native_splits)}, or none for all)")
        if caption_field:
            raise DataError(f"Fashion-MNIST captions come from the class name; caption_field '{caption_field}' "
                            "cannot be used (leave it empty)")
        self.path = self._resolve(Path(path))
        self.skipped = SkipLog(skip=skip_bad_records)
        self.splits = (split,) if split else tuple(SPLIT_KEYS)
        self._images: dict[str, np.ndarray] = {}  # split -> [N, 28, 28] uint8, loaded on first use
        self._labels: dict[str, np.ndarray] = {}
        rows: list[tuple[str, int]] = []
        for name in self.splits:
            rows.extend((name, int(row)) for row in self._check_split(name, skip_bad_records))
        self.rows = rows  # (split, row in that split's arrays) for every kept record

    # -- opening ---------------------------------------------------------------------------
    @staticmethod
    def _resolve(path: Path) -> Path:
        require_path(path)
        if path.is_file():
            return path
        candidates = sorted(path.glob("*.npz"))
        preferred = [p for p in candidates if p.name == "fashion-mnist.npz"]
        if preferred:
            return preferred[0]
        if len(candidates) != 1:
            raise DataError(f"{path}: expected one Fashion-MNIST .npz file, found {[p.name for p in candidates]}")
        return candidates[0]

    def _check_split(self, split: str, skip_bad_records: bool) -> np.ndarray:
        """Validate one split's arrays and return the rows whose labels are valid."""
        image_key, label_key = SPLIT_KEYS[split]
        try:
            with np.load(self.path) as archive:
                keys = sorted(archive.files)
                for key in (image_key, label_key):
                    if key not in keys:
                        raise DataError(f"{self.path}: no '{key}' array (keys: {', '.join(keys) or 'none'})")
                labels = np.asarray(archive[label_key]).reshape(-1)
            shape, dtype = _npy_header(self.path, image_key)
        except DataError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(f"{self.path}: not a readable npz file ({error})") from None
        if len(shape) != 3 or shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or dtype != np.uint8:
            raise DataError(f"{self.path}: '{image_key}' is {shape} {dtype}, expected (N, 28, 28) uint8")
        if shape[0] != len(labels):
            raise DataError(f"{self.path}: '{image_key}' has {shape[0]} images but '{label_key}' has {len(labels)} labels")
        if labels.dtype.kind not in "iu":
            raise DataError(f"{self.path}: '{label_key}' holds {labels.dtype}, expected integer class labels")
        self._labels[split] = labels
        bad = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
        for row in bad:
            error = RecordError(f"{self.path}:{label_key}[{row}]",
                                f"label {labels[row]} is not a Fashion-MNIST class (0-{len(CLASS_NAMES) - 1})")
            self.skipped.defect(error)
        return np.setdiff1d(np.arange(len(labels)), bad)

    def _split_images(self, split: str) -> np.ndarray:
        if split not in self._images:
            with np.load(self.path) as archive:
                self._images[split] = archive[SPLIT_KEYS[split][0]]
        return self._images[split]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = {}  # reloaded lazily by the receiving process
        return state

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def meta(self, index: int) -> RecordMeta:
        split, row = self.rows[index]
        label = int(self._labels[split][row])
        caption = clean_caption(f"A grey-scale photo of {CLASS_PHRASES[label]}", f"{self.path}:{split}[{row}]")
        return RecordMeta(id=f"{split}-{row:06d}", caption=caption, attributes={"category": CLASS_NAMES[label]})

    def __getitem__(self, index: int) -> Record:
        meta = self.meta(index)
        split, row = self.rows[index]
        image_key = SPLIT_KEYS[split][0]
        image = as_rgb_uint8(self._split_images(split)[row], f"{self.path}:{image_key}[{row}]")  # [28, 28, 3]
        return Record(id=meta.id, image=image, caption=meta.caption, attributes=meta.attributes)

    def split_keys(self) -> list[str]:
        """Per-row keys for a hash split (each image stands alone)."""
        return [f"{split}-{row:06d}" for split, row in self.rows]
