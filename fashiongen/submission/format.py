"""The submission format: its file names, version, image names and seeds, and the checks both the writer and the
validator make (a caption id that can name files, an image file that is what the header says, the header itself)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.records import lone_surrogate
from ..errors import UserError

HEADER_FILE = "submission.json"
LINES_FILE = "submission.jsonl"
IMAGES_DIR = "images"
SUBMISSION_FORMAT = "fashiongen-submission"
SUBMISSION_VERSION = 1
# Header fields a resumed run must share with the folder's run: anything else would mix two sets of images.
MATCHED_FIELDS = ("fingerprint", "settings", "resolution", "per_caption", "base_seed", "use_attributes", "captions_sha256")
IMAGE_NAME = re.compile(r"^(?P<caption_id>.+)_(?P<k>\d+)\.png$")
MAX_ID_BYTES = 200  # file names are limited to 255 bytes; leave room for "_K.png"
MAX_PRINTED_PROBLEMS = 50


class SubmissionError(UserError, ValueError):
    """A caption list or submission folder that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class CaptionItem:
    """One caption of the list to generate for; `id` names its image files."""

    id: str
    caption: str
    attributes: dict[str, Any] = field(default_factory=dict)



def id_problem(caption_id: str) -> str | None:
    """Why `caption_id` cannot name image files, or None when it can."""
    if not caption_id:
        return "the id is empty"
    if (escaped := lone_surrogate(caption_id)) is not None:
        return f"id {caption_id!r} holds a lone surrogate ({escaped}), which is not valid Unicode text"
    if any(char in caption_id for char in "/\\\x00"):
        return f"id {caption_id!r} contains '/', '\\' or NUL, which cannot be part of a file name"
    if caption_id.startswith("."):
        return f"id {caption_id!r} starts with '.' (a hidden file or a path component)"
    if len(caption_id.encode("utf-8")) > MAX_ID_BYTES:
        return f"id {caption_id[:20]!r}... is longer than {MAX_ID_BYTES} bytes"
    return None


def captions_sha256(captions: Sequence[CaptionItem], use_attributes: bool = False) -> str:
    """Identifies the caption list in order (ids, captions and, when they condition the model, attributes)."""
    rows = [[c.id, c.caption, c.attributes] if use_attributes else [c.id, c.caption] for c in captions]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def caption_seed(caption_id: str, k: int, base_seed: int = 0) -> int:
    """The seed of image k of a caption: a hash of (base seed, id, k), independent of the caption's position."""
    digest = hashlib.sha256(f"{base_seed}:{caption_id}:{k}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def image_name(caption_id: str, k: int) -> str:
    return f"{IMAGES_DIR}/{caption_id}_{k}.png"


def image_problem(path: Path, name: str, resolution: int) -> str | None:
    """Why a listed file is not a resolution x resolution RGB PNG; its header is checked before any pixel is decoded,
    so a bomb (a huge image in a small file) costs nothing."""
    try:
        with Image.open(path) as image:
            kind, mode, size = image.format, image.mode, image.size
            if kind == "PNG" and size == (resolution, resolution) and mode == "RGB":
                image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"{name} is not a decodable PNG ({error})"
    if kind != "PNG":
        return f"{name} is a {kind} file, not a PNG"
    if size != (resolution, resolution):
        return f"{name} is {size[0]}x{size[1]} px, expected {resolution}x{resolution}"
    if mode != "RGB":
        return f"{name} has colour mode {mode}, expected RGB"
    return None


def read_header(path: Path) -> dict[str, Any]:
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SubmissionError(f"{path}: cannot read the submission header ({error})") from None
    if not isinstance(header, dict) or header.get("format") != SUBMISSION_FORMAT:
        raise SubmissionError(f"{path}: not a FashionGen submission header (format {SUBMISSION_FORMAT!r} expected)")
    return header



__all__ = ["CaptionItem", "HEADER_FILE", "IMAGES_DIR", "IMAGE_NAME", "LINES_FILE", "MATCHED_FIELDS", "MAX_ID_BYTES",
           "MAX_PRINTED_PROBLEMS", "SUBMISSION_FORMAT", "SUBMISSION_VERSION", "SubmissionError", "caption_seed",
           "captions_sha256", "id_problem", "image_name", "image_problem", "read_header"]
