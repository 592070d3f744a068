"""The FashionGen challenge's HDF5 release (and files `convert` writes in the same schema).

Rows are read lazily: the file is opened once per process (so each DataLoader worker has its
own handle) and only the requested row is read. Text fields are (N, 1) fixed-length bytes in
latin-1/cp1252, NUL-padded; they are decoded robustly and stripped. A file HDF5 cannot open (not
HDF5, truncated) or whose schema objects are unreadable raises DataError naming it; a row whose
image or text chunk cannot be read raises RecordError (skipped like any defective record).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..extras import require
from .records import DataError, Record, RecordError, RecordMeta, SkipLog, as_rgb_uint8, clean_caption, require_path
from .splits import missing_sibling_message, sibling_file, split_of_file

if TYPE_CHECKING:
    import h5py

IMAGE_KEY = "input_image"
DEFAULT_CAPTION_KEY = "input_description"
CAPTION_KEYS = ("input_description", "input_concat_description")
# Schema text fields and the canonical attribute each one becomes.
TEXT_FIELDS = {
    "input_name": "name",
    "input_brand": "brand",
    "input_category": "category",
    "input_subcategory": "subcategory",
    "input_gender": "gender",
    "input_season": "season",
    "input_department": "department",
    "input_composition": "composition",
    "input_pose": "pose",
}
NUMERIC_FIELDS = {"input_productID": "product_id", "input_msrpUSD": "msrp"}
RECORD_ID_KEY = "input_record_id"  # written by `convert` so ids survive a conversion
SPLIT_KEY_KEY = "input_split_key"  # written by `convert`: the key the source was split by
COLUMN_CACHE_BYTES = 64 * 2**20
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def decode_text(raw: Any, encoding: str, where: str) -> str:
    """Decode one fixed-length bytes cell: 'auto' tries utf-8, then cp1252, then latin-1."""
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size else b""
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, (bytes, np.bytes_)):
        raw = bytes(raw).rstrip(b"\x00")
        codecs = ("utf-8", "cp1252", "latin-1") if encoding == "auto" else (encoding,)
        for codec in codecs:
            try:
                text = raw.decode(codec)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise RecordError(where, f"text is not decodable as {encoding}")
    else:
        raise RecordError(where, f"text field holds {type(raw).__name__}, expected bytes")
    if len(_CONTROL.findall(text)) > max(2, len(text) // 20):
        raise RecordError(where, "text is undecodable (binary control characters)")
    return " ".join(_CONTROL.sub(" ", text).split())


# What h5py raises on a damaged file: OSError (open, read), KeyError (a broken object header), RuntimeError,
# ValueError/TypeError (a dataset of unexpected type or shape) and AttributeError (a group where a dataset belongs).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


def h5py_module() -> Any:
    """h5py, imported when a .h5 dataset is opened (it is an extra, not needed to sample)."""
    return require("h5py", "train", "a .h5 dataset (h5py)")


def _is_dataset(handle: h5py.File, key: str) -> bool:
    return isinstance(handle.get(key), h5py_module().Dataset)


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only; DataError naming it when it is not HDF5, truncated or unreadable."""
    h5py = h5py_module()
    try:
        return h5py.File(path, "r")
    except H5_ERRORS as error:
        raise DataError(f"{path}: not a readable HDF5 file ({_reason(error)})") from None


class FashionGenH5Reader:
    """Reader for `fashiongen_256_256_{train,validation}.h5` and files in the same schema."""

    format = "fashiongen-h5"
    caption_template = "{gender:title+possessive} {colour:lower} {category:lower}, {brand}, {season}"

    @classmethod
    def detect(cls, path: Path) -> bool:
        if path.is_dir():
            return any(path.glob("*.h5"))
        return path.suffix in (".h5", ".hdf5")

    def __init__(
        self,
        path: str | Path,
        *,
        split: str | None = None,
        skip_bad_records: bool = True,
        caption_field: str = "",
        poses: list[str] | tuple[str, ...] = (),
        one_pose_per_product: bool = False,
        text_encoding: str = "auto",
    ) -> None:
        self.path = self._resolve(Path(path), split)
        self.split_name = split_of_file(self.path)
        self.skipped = SkipLog()
        self.text_encoding = text_encoding
        self.caption_key = caption_field or DEFAULT_CAPTION_KEY
        self._handle: h5py.File | None = None
        self._columns: dict[str, np.ndarray] = {}  # raw metadata columns cached by this process
        self._pid = -1
        try:
            with open_h5(self.path) as handle:
                self._check_schema(handle)
                self.num_rows = handle[IMAGE_KEY].shape[0]
                self.text_keys = {k: v for k, v in TEXT_FIELDS.items() if _is_dataset(handle, k)}
                self.text_keys.update(self._extra_text_keys(handle))
                self.numeric_keys = {k: v for k, v in NUMERIC_FIELDS.items() if _is_dataset(handle, k)}
                self.has_record_ids = _is_dataset(handle, RECORD_ID_KEY)
                # a converted file keeps its source's template, so captions read the same after conversion
                self.caption_template = str(handle.attrs.get("caption_template", type(self).caption_template))
                self.rows = self._select_rows(handle, list(poses), one_pose_per_product)
                self.schema = self._schema_of(handle)
        except (DataError, RecordError):
            raise
        except H5_ERRORS as error:
            raise DataError(f"{self.path}: unreadable HDF5 metadata ({_reason(error)})") from None
        if split is not None:
            self._check_pair(caption_field, text_encoding)

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def splits_at(cls, path: Path) -> tuple[str, ...]:
        """Splits a path defines itself: a folder of `*_train.h5`/`*_validation.h5` files, or one such file, which
        stands for its pair (its sibling, present or not, holds the other split)."""
        if not path.is_dir():
            return ("train", "validation") if split_of_file(path) else ()
        return tuple(sorted({s for s in map(split_of_file, sorted(path.glob("*.h5"))) if s}))

    def _resolve(self, path: Path, split: str | None) -> Path:
        require_path(path)
        if path.is_file():
            own = split_of_file(path)
            if split is None or own is None or split == own:
                return path
            sibling = sibling_file(path, split)
            if not sibling.is_file():
                with open_h5(path) as handle:
                    made = dict(handle.attrs)
                raise DataError(missing_sibling_message(path, sibling, split, made))
            return sibling
        files = sorted(path.glob("*.h5"))
        if split is None:
            if len(files) != 1:
                raise DataError(f"{path}: {len(files)} .h5 files; name one of {[f.name for f in files]} or a split")
            return files[0]
        chosen = [f for f in files if split_of_file(f) == split]
        if not chosen:
            raise DataError(f"{path}: no *_{split}.h5 file (found {[f.name for f in files]})")
        return chosen[0]

    def _check_schema(self, handle: h5py.File) -> None:
        keys = sorted(handle.keys())
        if not _is_dataset(handle, IMAGE_KEY):
            raise DataError(f"{self.path}: no '{IMAGE_KEY}' dataset (keys: {', '.join(keys)})")
        images = handle[IMAGE_KEY]
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise DataError(f"{self.path}: '{IMAGE_KEY}' is {images.shape} {images.dtype}, expected (N, H, W, 3) uint8")
        if not _is_dataset(handle, self.caption_key):
            raise DataError(f"{self.path}: no caption field '{self.caption_key}' (keys: {', '.join(keys)})")
        for key in keys:
            item = handle[key]
            if isinstance(item, h5py_module().Dataset) and item.ndim >= 1 and item.shape[0] != images.shape[0]:
                raise DataError(f"{self.path}: '{key}' has {item.shape[0]} rows but '{IMAGE_KEY}' has {images.shape[0]}")

    def _schema_of(self, handle: h5py.File) -> dict[str, Any]:
        """What the two files of a pair must share: image size, the schema's attribute columns (not the extra ones
        `convert` keeps, which depend on the rows a split holds), and how `convert` made them."""
        schema_keys = {key for key in (*TEXT_FIELDS, *NUMERIC_FIELDS) if _is_dataset(handle, key)}
        return {
            "image size": "x".join(map(str, handle[IMAGE_KEY].shape[1:3])),
            "schema columns": ", ".join(sorted(schema_keys)) or "none",
            "resize mode": str(handle.attrs.get("resize_mode", "as released")),
            "caption template": self.caption_template,
        }

    def _check_pair(self, caption_field: str, text_encoding: str) -> None:
        """A split read from one file of a pair: refuse a sibling whose schema differs (validation would measure
        another kind of data), naming both files and what differs."""
        own = split_of_file(self.path)
        other = sibling_file(self.path, "validation" if own == "train" else "train") if own else None
        if other is None or not other.is_file():
            return
        schema = type(self)(other, caption_field=caption_field, text_encoding=text_encoding).schema
        differences = [f"{key} {value} against {schema[key]}" for key, value in self.schema.items() if value != schema[key]]
        if differences:
            raise DataError(f"{self.path} and {other} are not one pair: {'; '.join(differences)}; convert both splits "
                            "once, with one command (python -m fashiongen.data convert SOURCE FOLDER --size N)")

    def _extra_text_keys(self, handle: h5py.File) -> dict[str, str]:
        """Other `input_*` text datasets (e.g. input_colour written by convert) become attributes."""
        known = set(TEXT_FIELDS) | set(CAPTION_KEYS) | {RECORD_ID_KEY, SPLIT_KEY_KEY, self.caption_key}
        return {
            key: key.removeprefix("input_")
            for key, item in handle.items()
            if key.startswith("input_") and key not in known and isinstance(item, h5py_module().Dataset)
            and item.dtype.kind in ("S", "O") and item.ndim in (1, 2)
        }

    def _select_rows(self, handle: h5py.File, poses: list[str], one_pose_per_product: bool) -> np.ndarray:
        rows = np.arange(self.num_rows)
        if not poses and not one_pose_per_product:
            return rows
        if "input_pose" not in handle:
            raise DataError(f"{self.path}: pose selection needs 'input_pose', which this file lacks")
        pose_of = np.array([decode_text(v, self.text_encoding, f"{self.path}:input_pose") for v in handle["input_pose"][:]])
        if poses:
            unknown = sorted(set(poses) - set(pose_of))
            if unknown:
                raise DataError(f"{self.path}: poses {unknown} not in the file (it has {sorted(set(pose_of))})")
            rows = rows[np.isin(pose_of, poses)]
        if one_pose_per_product:
            if "input_productID" not in handle:
                raise DataError(f"{self.path}: one_pose_per_product needs 'input_productID', which this file lacks")
            products = handle["input_productID"][:].reshape(-1)[rows]
            _, first = np.unique(products, return_index=True)
            rows = rows[np.sort(first)]
        return rows

    @property
    def handle(self) -> h5py.File:
        """This process's own read handle (a forked DataLoader worker opens its own)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle = open_h5(self.path)
            self._pid = os.getpid()
            self._columns = {}
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_pid"], state["_columns"] = None, -1, {}
        return state

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def _where(self, row: int, key: str) -> str:
        return f"{self.path}:row {row}:{key}"

    def meta(self, index: int) -> RecordMeta:
        row = int(self.rows[index])
        return self._meta_from(row, lambda key: self._cell(key, row))

    def _cell(self, key: str, row: int) -> Any:
        """One metadata cell; columns up to COLUMN_CACHE_BYTES are read whole once per process.

        Reading a cell through h5py costs ~50 us (and a whole compressed chunk), while a training
        example needs a dozen cells, so small columns are kept in memory as raw bytes.
        """
        column = self._columns.get(key)
        if column is None:
            try:
                dataset = self.handle[key]
                if dataset.size * dataset.dtype.itemsize > COLUMN_CACHE_BYTES:
                    return dataset[row]
                column = self._columns[key] = dataset[:]
            except DataError:
                raise
            except H5_ERRORS as error:
                raise RecordError(self._where(row, key), f"unreadable ({_reason(error)})") from None
        return column[row]

    def iter_meta(self, chunk_rows: int = 4096) -> Iterator[RecordMeta | RecordError]:
        """Every kept row's metadata in order, read a column chunk at a time (fast for whole-file stats)."""
        handle = self.handle
        keys = [self.caption_key, *self.text_keys, *self.numeric_keys] + ([RECORD_ID_KEY] if self.has_record_ids else [])
        for start in range(0, self.num_rows, chunk_rows):
            stop = min(start + chunk_rows, self.num_rows)
            kept = self.rows[(self.rows >= start) & (self.rows < stop)]
            if not len(kept):
                continue
            try:
                columns = {key: handle[key][start:stop] for key in keys}
            except H5_ERRORS as error:
                for row in kept:
                    yield RecordError(self._where(int(row), "metadata"), f"unreadable ({_reason(error)})")
                continue
            for row in kept:
                try:
                    yield self._meta_from(int(row), lambda key: columns[key][row - start])
                except RecordError as error:
                    yield error

    def _meta_from(self, row: int, cell: Callable[[str], Any]) -> RecordMeta:
        def text(key: str) -> str:
            return decode_text(cell(key), self.text_encoding, self._where(row, key))

        caption = clean_caption(text(self.caption_key), self._where(row, self.caption_key))
        attributes: dict[str, Any] = {}
        for key, name in self.text_keys.items():
            value = text(key)
            if value:
                attributes[name] = value
        for key, name in self.numeric_keys.items():
            value = np.asarray(cell(key)).reshape(-1)[0].item()
            if not (name == "product_id" and value < 0):
                attributes[name] = value
        record_id = text(RECORD_ID_KEY) if self.has_record_ids else str(row)
        return RecordMeta(id=record_id, caption=caption, attributes=attributes)

    def __getitem__(self, index: int) -> Record:
        meta = self.meta(index)
        row = int(self.rows[index])
        try:
            pixels = self.handle[IMAGE_KEY][row]
        except H5_ERRORS as error:
            raise RecordError(self._where(row, IMAGE_KEY), f"unreadable ({_reason(error)})") from None
        image = as_rgb_uint8(pixels, self._where(row, IMAGE_KEY))
        return Record(id=meta.id, image=image, caption=meta.caption, attributes=meta.attributes)

    def split_keys(self) -> list[str]:
        """Per-row keys for a hash split: the recorded key, else the product id, else the row."""
        handle = self.handle
        try:
            if _is_dataset(handle, SPLIT_KEY_KEY):
                column = handle[SPLIT_KEY_KEY][:].reshape(-1)
                return [decode_text(column[r], "utf-8", self._where(int(r), SPLIT_KEY_KEY)) for r in self.rows]
            if _is_dataset(handle, "input_productID"):
                products = handle["input_productID"][:].reshape(-1)
                return [str(products[r]) if products[r] >= 0 else str(r) for r in self.rows]
        except RecordError as error:
            raise DataError(f"{error}: the split keys must all be readable") from None
        except H5_ERRORS as error:
            raise DataError(f"{self.path}: split keys unreadable ({_reason(error)})") from None
        return [str(r) for r in self.rows]
