"""Write any source as a FashionGen-schema HDF5 file at a fixed resolution, the one fast training format.

Images go in (N, S, S, 3) uint8 chunked one image per chunk (random access reads one chunk) and
gzip-compressed; text goes in (N, 1) fixed-length UTF-8 bytes (ASCII-compatible with the
original's latin-1 for plain text; the reader decodes both). Attributes without a schema key
are kept as extra `input_<name>` text datasets, and the record ids and split keys are kept so
a converted file splits exactly as its source did.

OUT is checked before any work (`check_output`): a folder, an unwritable parent, or an existing
file (unless overwrite) is refused. OUT appears in one rename when complete; a killed conversion's
hidden `.OUT.*.tmp` files (utils.atomic_path) are removed by the next conversion to the same OUT
once no process holds them open. `convert SOURCE FOLDER` (an OUT without .h5) writes both splits as a pair: pairs.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..utils import atomic_path, atomic_write_text, disk_problem, remove_stale_temporaries
from .captions import build_caption
from .fashiongen_h5 import IMAGE_KEY, NUMERIC_FIELDS, RECORD_ID_KEY, SPLIT_KEY_KEY, TEXT_FIELDS, h5py_module
from .records import Record, RecordError, SkipLog, Source
from .sources import split_keys
from .transforms import resize_square
from ..errors import UserError

if TYPE_CHECKING:
    import h5py

ATTRIBUTE_TO_KEY = {name: key for key, name in TEXT_FIELDS.items()}
logger = logging.getLogger("fashiongen.data")


class OutputError(UserError, ValueError):
    """OUT cannot or may not be written: a folder, a read-only or missing parent, an existing file (no overwrite)."""


def result_path(out: Path) -> Path:
    """The JSON summary written beside OUT."""
    return out.with_suffix(".json")


def _is_our_result(path: Path, out: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size < 2**20 else None
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and Path(str(data.get("path", ""))).name == out.name and "num_records" in data


def check_output(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an OUT that cannot be written or whose replacement was not asked for."""
    out = Path(out)
    summary = result_path(out)
    if out.suffix == ".json":
        raise OutputError(f"{out}: the output must not end in .json (the summary {summary.name} is written beside it)")
    for path in (out, summary):
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; name the output file, e.g. {path / 'data.h5'}")
        if path.is_symlink():
            raise OutputError(f"{path}: is a symbolic link; name the file itself")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: exists; pass --overwrite to replace it")
    if summary.exists() and not overwrite and not _is_our_result(summary, out):
        raise OutputError(f"{summary}: exists and is not a summary of a conversion to {out.name}; pass --overwrite "
                          "to replace it, or choose another output name")
    check_parent(out)
    return out


def check_parent(out: Path) -> None:
    """Refuse an OUT whose nearest existing parent is a file or cannot be written in."""
    parent = out.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write in {parent} (read-only or no permission)")


def clear_stale_temporaries(out: Path) -> list[Path]:
    """A killed conversion's temporaries for exactly this OUT and its summary."""
    out = Path(out).absolute()
    return remove_stale_temporaries(out.parent, [out.name, result_path(out).name])


@dataclass
class ConvertResult:
    path: str
    num_records: int
    num_skipped: int
    skipped_by_reason: dict[str, int]
    seconds: float
    images_per_second: float
    size_bytes: int


def _text_dataset(handle: h5py.File, key: str, values: list[str]) -> None:
    encoded = [v.encode("utf-8") for v in values]
    width = max(1, max((len(v) for v in encoded), default=1))
    data = np.array(encoded, dtype=f"S{width}").reshape(-1, 1)
    handle.create_dataset(key, data=data, chunks=(min(len(values), 4096) or 1, 1), compression="gzip", compression_opts=4)


def convert_source(
    source: Source,
    out: str | Path,
    resolution: int = 64,
    resize_mode: str = "center-crop",
    pad_value: int = 255,
    caption_template: str = "",
    skip_bad_records: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert every record of `source`; the output appears atomically only when complete."""
    out = check_output(out, overwrite)
    clear_stale_temporaries(out)
    start = time.perf_counter()
    template = caption_template or source.caption_template
    keys = split_keys(source)
    skipped = SkipLog(skip=skip_bad_records)
    columns: dict[str, list[Any]] = {"ids": [], "split_keys": [], "captions": [], "concat": [], "attributes": []}
    try:
        with atomic_path(out) as temporary:
            with h5py_module().File(temporary, "w") as handle:
                images = handle.create_dataset(
                    IMAGE_KEY, shape=(0, resolution, resolution, 3), maxshape=(None, resolution, resolution, 3),
                    dtype=np.uint8, chunks=(1, resolution, resolution, 3), compression="gzip", compression_opts=4,
                )
                buffer: list[np.ndarray] = []
                for index in tqdm(range(len(source)), desc=f"convert -> {out.name}", unit="img", disable=not progress):
                    try:
                        record: Record = source[index]
                    except RecordError as error:
                        skipped.defect(error)
                        continue
                    buffer.append(resize_square(record.image, resolution, resize_mode, pad_value))
                    columns["ids"].append(record.id)
                    columns["split_keys"].append(keys[index])
                    columns["captions"].append(record.caption)
                    columns["concat"].append(build_caption(record.caption, record.attributes, "both", template))
                    columns["attributes"].append(record.attributes)
                    if len(buffer) == 256:
                        _append(images, buffer)
                _append(images, buffer)
                _write_metadata(handle, columns)
                handle.attrs.update({
                    "fashiongen_version": __version__, "source": str(source.path), "source_format": source.format,
                    "resolution": resolution, "resize_mode": resize_mode, "text_encoding": "utf-8", "caption_template": template,
                    "num_skipped": len(skipped) + len(source.skipped),
                })
    except Exception as error:  # h5py reports a full disk as OSError or RuntimeError
        if (problem := disk_problem(error, out)) is None:
            raise
        raise OutputError(f"{out}: {problem}; nothing was written") from None
    seconds = time.perf_counter() - start
    count = len(columns["ids"])
    return ConvertResult(
        path=str(out), num_records=count, num_skipped=len(skipped) + len(source.skipped),
        skipped_by_reason={**source.skipped.by_reason(), **skipped.by_reason()}, seconds=round(seconds, 2),
        images_per_second=round(count / max(seconds, 1e-9), 1), size_bytes=out.stat().st_size,
    )


def _append(dataset: h5py.Dataset, buffer: list[np.ndarray]) -> None:
    if buffer:
        start = dataset.shape[0]
        dataset.resize(start + len(buffer), axis=0)
        dataset[start:] = np.stack(buffer)
        buffer.clear()


def _write_metadata(handle: h5py.File, columns: dict[str, list[Any]]) -> None:
    attributes: list[dict[str, Any]] = columns["attributes"]
    count = len(attributes)
    _text_dataset(handle, "input_description", columns["captions"])
    _text_dataset(handle, "input_concat_description", columns["concat"])
    _text_dataset(handle, RECORD_ID_KEY, columns["ids"])
    _text_dataset(handle, SPLIT_KEY_KEY, columns["split_keys"])
    names = sorted(set().union(*attributes)) if attributes else []
    for key, name in TEXT_FIELDS.items():  # the schema's text keys always exist, empty where unknown
        values = [str(a.get(name, "")) for a in attributes]
        if name == "name":
            values = [v or caption for v, caption in zip(values, columns["captions"])]
        _text_dataset(handle, key, values)
    product_ids = [_as_int(a.get("product_id")) for a in attributes]
    handle.create_dataset("input_productID", data=np.array(product_ids, dtype=np.int32).reshape(-1, 1))
    msrp = [float(a["msrp"]) if _is_number(a.get("msrp")) else np.nan for a in attributes]
    handle.create_dataset("input_msrpUSD", data=np.array(msrp, dtype=np.float32).reshape(-1, 1))
    handle.create_dataset("index", data=np.arange(count, dtype=np.int64).reshape(-1, 1))
    handle.create_dataset("index_2", data=np.arange(count, dtype=np.int64).reshape(-1, 1))
    schema_names = set(TEXT_FIELDS.values()) | set(NUMERIC_FIELDS.values())
    for name in names:
        if name not in schema_names:
            key = f"input_{name}"
            if key not in handle:
                _text_dataset(handle, key, [str(a.get(name, "")) for a in attributes])


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return value is not None and not isinstance(value, bool)
    except (TypeError, ValueError):
        return False


def _as_int(value: Any) -> int:
    """An int32 product id, or -1 where the source's id is not an integer."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return -1
    return number if 0 <= number < 2**31 else -1


def write_result(result: ConvertResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(result.__dict__, indent=2) + "\n")
