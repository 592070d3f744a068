"""Reading what is evaluated: a folder of generated images with their captions, and real images of a
dataset split, both as uint8 [H, W, 3] arrays at one resolution.

A folder may be a challenge submission (submission.jsonl: file -> caption id, caption), a sample.py
folder (manifest.jsonl: file -> prompt, attributes) or plain images (no captions: image-quality
metrics and memorisation only). Every file read must lie inside the folder: the rule of
`utils.file_inside` (no absolute paths, no '..', no symlink out), which the submission validator applies too,
and is opened only when it is a regular file (`utils.open_regular`: a FIFO would block forever).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data import iter_records, open_source
from ..data.records import lone_surrogate
from ..data.transforms import resize_square
from ..utils import NotRegularFile, file_inside, open_regular
from ..errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class EvaluationInputError(UserError, ValueError):
    """Images or captions that cannot be evaluated; the message names the file or row and the fix."""


@dataclass
class ImageSet:
    """Images with (optionally) the caption and attributes each was generated for or comes with."""

    images: list[np.ndarray]  # uint8 [H, W, 3], all one size
    captions: list[str] | None
    attributes: list[dict[str, Any]]
    ids: list[str]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return self.images[0].shape[0] if self.images else 0


def _rgb(image: Image.Image) -> np.ndarray:
    if image.mode == "RGBA" or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return np.asarray(background)
    return np.asarray(image.convert("RGB"))


def _read(path: Path) -> bytes:
    """The bytes of a regular file; EvaluationInputError naming it for a FIFO, device, folder or missing file."""
    try:
        with open_regular(path) as handle:
            return handle.read()
    except NotRegularFile as error:
        raise EvaluationInputError(f"{error}; only regular files are evaluated") from None


def _open(path: Path) -> tuple[np.ndarray, str]:
    if not path.exists() and not path.is_symlink():
        raise EvaluationInputError(f"{path}: listed but missing")
    try:
        with open_regular(path) as handle, Image.open(handle) as image:
            image.load()
            return _rgb(image), image.mode
    except NotRegularFile as error:
        raise EvaluationInputError(f"{error}; only regular files are evaluated") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise EvaluationInputError(f"{path}: not a readable image ({error})") from None


def _rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except UnicodeDecodeError:
            raise EvaluationInputError(f"{path}:{number}: not UTF-8 text") from None
        except json.JSONDecodeError as error:
            raise EvaluationInputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if (escaped := lone_surrogate(json.dumps(rows[-1], ensure_ascii=False))) is not None:
            raise EvaluationInputError(f"{path}:{number}: holds a lone surrogate ({escaped}), which is not valid Unicode text")
    return rows


def _inside(folder: Path, file: Any, where: str) -> Path:
    try:
        return file_inside(folder, file)
    except ValueError as error:
        raise EvaluationInputError(f"{where}: {error}; only files inside the folder are evaluated") from None


def read_image_folder(folder: str | Path, resolution: int | None = None,
                      caption_attributes: dict[str, dict[str, Any]] | None = None) -> ImageSet:
    """A submission, a sample.py folder or plain images. Mixed sizes are an error unless `resolution`
    is given (then every image is resized to it); non-RGB images are converted, with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationInputError(f"{folder} is not a folder of images")
    captions: list[str] | None = []
    attributes: list[dict[str, Any]] = []
    ids: list[str] = []
    info: dict[str, Any] = {}
    if os.path.lexists(folder / "submission.jsonl"):  # a FIFO or folder of that name is refused, not passed over
        rows = _rows(folder / "submission.jsonl")
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict) or "file" not in row or not str(row.get("caption") or "").strip():
                raise EvaluationInputError(f"{folder / 'submission.jsonl'}:{number}: needs \"file\" and a non-empty \"caption\"; "
                                           "the critic scores need the caption each image was made for")
        files = [_inside(folder, row["file"], f"{folder / 'submission.jsonl'}:{number}") for number, row in enumerate(rows, start=1)]
        captions = [str(row["caption"]) for row in rows]
        ids = [str(row.get("caption_id", row["file"])) for row in rows]
        attributes = [dict((caption_attributes or {}).get(str(row.get("caption_id")), {})) for row in rows]
        if os.path.lexists(folder / "submission.json"):
            try:
                info = json.loads(_read(folder / "submission.json").decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise EvaluationInputError(f"{folder / 'submission.json'}: not a readable submission header ({error})") from None
            if not isinstance(info, dict):
                raise EvaluationInputError(f"{folder / 'submission.json'}: not a submission header (a JSON object)")
        info["kind"] = "submission"
    elif os.path.lexists(folder / "manifest.jsonl"):
        latest = {row["file"]: row for row in _rows(folder / "manifest.jsonl") if isinstance(row, dict) and "file" in row}
        rows = [row for row in latest.values() if "prompt" in row]
        if not rows:
            raise EvaluationInputError(f"{folder / 'manifest.jsonl'} lists no images with a prompt")
        files = [_inside(folder, row["file"], f"{folder / 'manifest.jsonl'} ({row['file']!r})") for row in rows]
        captions = [str(row["prompt"]) for row in rows]
        ids = [row["file"] for row in rows]
        attributes = [dict(row.get("attributes") or {}) for row in rows]
        info = {"kind": "samples", "settings": rows[0].get("settings"), "model": rows[0].get("model")}
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        files = [_inside(folder, str(p.relative_to(folder)), str(p)) for p in files]
        if not files:
            raise EvaluationInputError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        captions = None
        ids = [str(p.relative_to(folder)) for p in files]
        attributes = [{} for _ in files]
        info = {"kind": "folder"}
        logger.warning("%s has no submission.jsonl or manifest.jsonl: no captions, so only FID/KID and memorisation "
                       "are computed", folder)
    opened = [_open(path) for path in files]
    images = [image for image, _ in opened]
    modes = Counter(mode for _, mode in opened)
    if set(modes) - {"RGB"}:
        logger.warning("converted non-RGB images to RGB (%s)", ", ".join(f"{n} {m}" for m, n in modes.items()))
    sizes = Counter(image.shape[:2] for image in images)
    if resolution is None:
        if len(sizes) > 1:
            examples = {size: next(p for p, (im, _) in zip(files, opened) if im.shape[:2] == size) for size in sizes}
            listing = "; ".join(f"{n} at {w}x{h} (e.g. {examples[(h, w)].name})" for (h, w), n in sizes.most_common())
            raise EvaluationInputError(f"{folder}: images of mixed sizes ({listing}); pass --resolution N to resize them all")
        (height, width), = sizes
        if height != width:
            raise EvaluationInputError(f"{folder}: images are {width}x{height}; pass --resolution N to centre-crop them square")
    else:
        images = [image if image.shape[:2] == (resolution, resolution) else resize_square(image, resolution) for image in images]
    return ImageSet(images, captions, attributes, ids, str(folder), info)


def read_dataset_images(source: str | Path, split: str, resolution: int, limit: int | None = None,
                        val_fraction: float = 0.05, minimum: int = 1) -> ImageSet:
    """Real images of a dataset split at `resolution` with their captions and attributes (defective rows skipped);
    EvaluationInputError naming --reference and the count when fewer than `minimum` are readable (FID/KID need 2)."""
    opened = open_source(source, split=split, val_fraction=val_fraction)
    images, captions, attributes, ids = [], [], [], []
    for record in iter_records(opened):
        images.append(resize_square(record.image, resolution))
        captions.append(record.caption)
        attributes.append(dict(record.attributes))
        ids.append(record.id)
        if limit is not None and len(images) >= limit:
            break
    if len(images) < max(1, minimum):
        need = f"; FID/KID need at least {minimum}" if minimum > 1 else ""
        raise EvaluationInputError(f"--reference {source}: {len(images)} readable image(s) in split '{split}'{need}")
    return ImageSet(images, captions, attributes, ids, str(source),
                    {"kind": "dataset", "split": split, "moved_to_train": getattr(opened, "moved_to_train", 0)})
