"""Caption lists to generate for: a JSONL of {"id", "caption", optional "attributes"} or a dataset source's split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..data.captions import build_caption
from ..data.folder import FILE_COLUMNS
from ..data.records import DataError, RecordError, iter_meta, lone_surrogate
from ..data.sources import open_source
from .format import CaptionItem, SubmissionError, id_problem

logger = logging.getLogger(__name__)


def _is_caption_jsonl(path: Path) -> bool:
    """A .jsonl file whose first row has no image column: a caption list, not a folder dataset's metadata."""
    if not (path.is_file() and path.suffix.lower() == ".jsonl"):
        return False
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return True  # a caption list with a bad first line: let the JSONL reader name it
                return not (isinstance(row, dict) and any(column in row for column in FILE_COLUMNS))
    return True


def _item_from_row(row: Any, where: str) -> CaptionItem:
    if not isinstance(row, dict):
        raise SubmissionError(f"{where}: expected a JSON object with \"id\" and \"caption\"")
    caption_id, caption = row.get("id"), row.get("caption")
    if caption_id is None or isinstance(caption_id, bool) or not isinstance(caption_id, (str, int)):
        raise SubmissionError(f"{where}: needs an \"id\" (a string or an integer)")
    if not isinstance(caption, str):
        raise SubmissionError(f"{where}: needs a \"caption\" string")
    if not caption.strip():
        raise SubmissionError(f"{where}: the caption is empty")
    if (escaped := lone_surrogate(caption)) is not None:
        raise SubmissionError(f"{where}: the caption holds a lone surrogate ({escaped}), which is not valid Unicode text")
    attributes = row.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise SubmissionError(f"{where}: \"attributes\" must be an object of name: value")
    if (escaped := lone_surrogate(json.dumps(attributes, ensure_ascii=False))) is not None:
        raise SubmissionError(f"{where}: \"attributes\" hold a lone surrogate ({escaped}), which is not valid Unicode text")
    return CaptionItem(str(caption_id), " ".join(caption.split()), dict(attributes))


def add_item(items: dict[str, CaptionItem], item: CaptionItem, where: str) -> None:
    """Add `item` when its id can name files and is new; else SubmissionError naming `where`."""
    if problem := id_problem(item.id):
        raise SubmissionError(f"{where}: {problem}")
    if item.id in items:
        raise SubmissionError(f"{where}: duplicate id '{item.id}'")
    items[item.id] = item


def _read_caption_jsonl(path: Path) -> list[CaptionItem]:
    items: dict[str, CaptionItem] = {}
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise SubmissionError(f"{where}: not UTF-8 text") from None
        except json.JSONDecodeError as error:
            raise SubmissionError(f"{where}: not valid JSON ({error.msg})") from None
        add_item(items, _item_from_row(row, where), where)
    return list(items.values())


def _read_caption_source(path: Path, split: str, caption_mode: str = "raw") -> list[CaptionItem]:
    """The captions of a dataset source's split (as `caption_mode` builds them, like training does);
    rows the reader finds defective are skipped with a warning."""
    try:
        source = open_source(path, split=split)
        metas = list(iter_meta(source))
    except (DataError, OSError) as error:
        raise SubmissionError(f"cannot read captions from {path} (split {split}): {error}") from None
    items: dict[str, CaptionItem] = {}
    for index, meta in enumerate(metas):
        if isinstance(meta, RecordError):
            logger.warning("skipping caption %s", meta)
            continue
        caption = build_caption(meta.caption, meta.attributes, caption_mode, source.caption_template)
        add_item(items, CaptionItem(str(meta.id), caption, dict(meta.attributes)), f"{path} ({split} row {index})")
    return list(items.values())


def default_split(path: str | Path) -> str:
    """The split a caption source stands for when none is named: all of a single .h5 file (one file is one
    split, whether or not its name ends in _validation.h5), else validation (a dataset's own validation
    split, or the hash split of a folder without one)."""
    path = Path(path)
    return "all" if path.is_file() and path.suffix.lower() in {".h5", ".hdf5"} else "validation"


def read_caption_list(path: str | Path, split: str | None = None, caption_mode: str = "raw") -> list[CaptionItem]:
    """Captions from a JSONL of {"id", "caption", optional "attributes"} or any dataset source (its `split`,
    default `default_split(path)`; `caption_mode` raw | attributes | both builds its captions as training does).

    Ids must be unique and usable in file names; a bad row raises SubmissionError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        raise SubmissionError(f"caption list {path} does not exist")
    split = split or default_split(path)
    is_jsonl = _is_caption_jsonl(path)
    items = _read_caption_jsonl(path) if is_jsonl else _read_caption_source(path, split, caption_mode)
    if not items:
        hint = "" if is_jsonl or split == "all" else f" in split '{split}' (split 'all' reads every row)"
        raise SubmissionError(f"{path}: no captions{hint}")
    return items



__all__ = ["add_item", "default_split", "read_caption_list"]
