"""The training photos as they travel: the model-resolution HDF5 file of `python -m fashiongen.data convert`, with its
images re-encoded as lossless WebP (the 9,583 bundled photos at 64 px: 44 MiB gzip'd in the HDF5 file, 26 MiB
as WebP) and everything else (captions, attributes, ids, split keys) in a small HDF5 file beside them.

    pack(config.data, kit / "data")          # here: photos.bin + photos.offsets.npy + meta.h5
    rebuild(kit / "data", Path("data64.h5"))  # there: the converted HDF5 file again, pixel for pixel

Training reads the rebuilt file with the same reader as any converted file, so the GPU run trains on the pixels a
run here would (`compare_sources` checks it on every record of both splits, or an evenly spaced sample).
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import FashionDataset
from ..data.convert import convert_source
from ..data.fashiongen_h5 import IMAGE_KEY, h5py_module
from ..data.sources import open_source
from ..errors import UserError

PHOTOS, OFFSETS, META = "photos.bin", "photos.offsets.npy", "meta.h5"
WEBP_METHOD = 2  # 0..6: method 2 is within 2% of method 6's size at 1/100 of its time (25.7 vs 25.4 MiB)


class KitDataError(UserError):
    """The kit's photos are missing, damaged, or do not give back the pixels they were made from."""


def _webp(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "WEBP", lossless=True, quality=50, method=WEBP_METHOD, exact=True)
    return buffer.getvalue()


def pack(data: Any, out: Path) -> dict[str, Any]:
    """Convert the config's data (both splits) at its resolution, then split the result into photos and metadata."""
    source = open_source(data.source, format=data.format, split="all", val_fraction=data.val_fraction,
                         skip_bad_records=data.skip_bad_records, caption_field=data.caption_field, poses=data.poses,
                         one_pose_per_product=data.one_pose_per_product, text_encoding=data.text_encoding)
    out.mkdir(parents=True, exist_ok=True)
    h5py = h5py_module()
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        converted = Path(scratch) / "converted.h5"
        result = convert_source(source, converted, data.resolution, data.resize_mode, data.pad_value,
                                data.caption_template, data.skip_bad_records, progress=False, overwrite=True)
        with h5py.File(converted, "r") as handle, h5py.File(out / META, "w") as meta:
            images = handle[IMAGE_KEY]
            offsets, total = [0], 0
            with (out / PHOTOS).open("wb") as photos:
                for start in range(0, len(images), 512):
                    for image in images[start : start + 512]:
                        encoded = _webp(image)
                        photos.write(encoded)
                        total += len(encoded)
                        offsets.append(total)
            np.save(out / OFFSETS, np.asarray(offsets, dtype=np.int64))
            for key in handle:
                if key != IMAGE_KEY:
                    handle.copy(handle[key], meta, name=key)
            meta.attrs.update(dict(handle.attrs))
            meta.attrs["image_shape"] = images.shape
    return {"records": result.num_records, "skipped": result.num_skipped, "resolution": data.resolution,
            "photos_bytes": total, "converted_bytes": result.size_bytes}


def rebuild(packed: Path, out: Path) -> Path:
    """The converted HDF5 file again from the packed photos and metadata (uncompressed: it is read, not moved)."""
    h5py = h5py_module()
    try:
        offsets = np.load(packed / OFFSETS)
        blob = (packed / PHOTOS).read_bytes()
        meta = h5py.File(packed / META, "r")
    except (OSError, ValueError) as error:
        raise KitDataError(f"{packed}: the kit's photos cannot be read ({error}); run `prepare` again") from None
    with meta, h5py.File(out, "w") as handle:
        shape = tuple(int(n) for n in meta.attrs["image_shape"])
        if len(offsets) != shape[0] + 1 or offsets[-1] != len(blob):
            raise KitDataError(f"{packed / PHOTOS}: {len(blob)} bytes for {len(offsets) - 1} photos, expected "
                               f"{offsets[-1]} bytes for {shape[0]}: truncated or from another kit")
        images = handle.create_dataset(IMAGE_KEY, shape=shape, dtype=np.uint8, chunks=(1, *shape[1:]))
        for index in range(shape[0]):
            with Image.open(io.BytesIO(blob[offsets[index] : offsets[index + 1]])) as image:
                images[index] = np.asarray(image.convert("RGB"))
        for key in meta:
            meta.copy(meta[key], handle, name=key)
        handle.attrs.update({k: v for k, v in meta.attrs.items() if k != "image_shape"})
    return out


def _evenly(count: int, sample: int) -> list[int]:
    if sample <= 0 or sample >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / (sample - 1)) for i in range(sample)})


def compare_sources(data: Any, rebuilt: Path, seed: int, sample: int = 0) -> dict[str, int]:
    """Training examples of the original source and of the rebuilt file, split by split: the same count, pixels,
    captions and attribute values (`sample` > 0: that many evenly spaced records per split)."""
    checked = {}
    for split in ("train", "validation"):
        original = FashionDataset.from_config(data, seed=seed, split=split)
        packed = FashionDataset.from_config(dataclasses.replace(data, source=str(rebuilt), format="auto"), seed=seed,
                                            split=split)
        if len(original) != len(packed):
            raise KitDataError(f"{rebuilt}: {len(packed)} {split} records, the source has {len(original)}")
        for index in _evenly(len(original), sample):
            a, b = original[index], packed[index]
            kept = {key: b["attributes"].get(key) for key in a["attributes"]}  # the HDF5 schema adds name, msrp
            if not torch.equal(a["pixel_values"], b["pixel_values"]) or a["caption"] != b["caption"] \
                    or a["attributes"] != kept:
                raise KitDataError(f"{rebuilt}: {split} record {index} ({a['id']}) differs from the source's")
        checked[split] = len(original)
    return checked


__all__ = ["KitDataError", "compare_sources", "pack", "rebuild"]
