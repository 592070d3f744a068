"""Checking a submission set: every problem as a sentence naming the file, [] when the set is valid."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..utils import file_inside
from .format import (HEADER_FILE, IMAGE_NAME, IMAGES_DIR, LINES_FILE, CaptionItem, SubmissionError, id_problem, image_name,
                     image_problem, read_header)


def _row_problem(row: Any, number: int, out_dir: Path) -> str | None:
    """Whether a submission.jsonl row has its fields and a file inside the folder named after its caption id and k."""
    where = f"{LINES_FILE} line {number}"
    if not isinstance(row, dict) or not all(key in row for key in ("file", "caption_id", "k")):
        return f"{where} lacks \"file\", \"caption_id\" or \"k\""
    if not isinstance(row["k"], int) or not isinstance(row["caption_id"], str) or not isinstance(row["file"], str):
        return f"{where}: \"file\" and \"caption_id\" must be strings and \"k\" an integer"
    try:
        file_inside(out_dir, row["file"])
    except ValueError as error:
        return f"{where}: {error}"
    if problem := id_problem(row["caption_id"]):
        return f"{where}: caption {problem}"
    if row["file"] != image_name(row["caption_id"], row["k"]):
        return (f"{where}: file {row['file']} does not match its caption id and k "
                f"(expected {image_name(row['caption_id'], row['k'])})")
    return None


def validate_submission(out_dir: str | Path, captions: Sequence[CaptionItem] | None = None) -> list[str]:
    """Every problem with a submission folder as a sentence naming the file; [] means the set is valid."""
    out_dir = Path(out_dir)
    header_path, lines_path = out_dir / HEADER_FILE, out_dir / LINES_FILE
    problems = [f"{path} is missing" for path in (header_path, lines_path) if not path.is_file()]
    if problems:
        return problems
    try:
        header = read_header(header_path)
        resolution, per_caption = int(header["resolution"]), int(header["per_caption"])
        num_captions = int(header.get("num_captions", 0))
    except (SubmissionError, KeyError, TypeError, ValueError) as error:
        return [f"{header_path}: {error}" if not isinstance(error, SubmissionError) else str(error)]
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(lines_path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            problems.append(f"{lines_path} line {number} is not valid JSON (an interrupted run? rerun generation to finish it)")
            continue
        if problem := _row_problem(row, number, out_dir):
            problems.append(problem)
            continue
        rows.append(row)
    problems += _file_problems(out_dir, rows, resolution)
    problems += _count_problems(rows, per_caption, num_captions)
    if captions is not None:
        problems += _caption_problems(rows, captions)
    return problems


def _file_problems(out_dir: Path, rows: list[dict[str, Any]], resolution: int) -> list[str]:
    problems, listed = [], Counter(row["file"] for row in rows)
    problems += [f"{file} is listed {count} times in {LINES_FILE}" for file, count in listed.items() if count > 1]
    for file in listed:
        try:
            path = file_inside(out_dir, file)
        except ValueError as error:
            problems.append(f"{LINES_FILE}: {error}")
            continue
        if not path.is_file():
            problems.append(f"{file} is listed in {LINES_FILE} but missing")
        elif problem := image_problem(path, file, resolution):
            problems.append(problem)
    images = out_dir / IMAGES_DIR
    for path in sorted(images.iterdir()) if images.is_dir() else []:
        name = f"{IMAGES_DIR}/{path.name}"
        if name in listed:
            continue
        why = (f"not listed in {LINES_FILE}" if IMAGE_NAME.match(path.name)
               else "left by an interrupted write; rerun generation to clear it" if path.name.endswith(".tmp")
               else "its name is not {caption_id}_{k}.png")
        problems.append(f"{name} is an extra file in {IMAGES_DIR}/ ({why})")
    return problems


def _count_problems(rows: list[dict[str, Any]], per_caption: int, num_captions: int) -> list[str]:
    problems = []
    ks: dict[str, set[int]] = {}
    for row in rows:
        ks.setdefault(row["caption_id"], set()).add(row["k"])
    for caption_id, found in ks.items():
        if found != set(range(per_caption)):
            missing = sorted(set(range(per_caption)) - found)
            extra = sorted(found - set(range(per_caption)))
            problems.append(f"caption {caption_id}: {len(found)} image(s), expected {per_caption} "
                            f"(images/{caption_id}_K.png; missing k {missing or 'none'}, unexpected k {extra or 'none'})")
    if num_captions and len(ks) != num_captions:
        problems.append(f"{LINES_FILE} lists images for {len(ks)} captions, {HEADER_FILE} says {num_captions}")
    return problems


def _caption_problems(rows: list[dict[str, Any]], captions: Sequence[CaptionItem]) -> list[str]:
    wanted = {c.id: c.caption for c in captions}
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        found.setdefault(row["caption_id"], row)
    missing = [caption_id for caption_id in wanted if caption_id not in found]
    problems = [f"{len(missing)} caption(s) of the list have no images in {LINES_FILE}: " + ", ".join(missing[:10])
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")] if missing else []
    problems += [f"{row['file']}: caption id {caption_id} is not in the caption list" for caption_id, row in found.items()
                 if caption_id not in wanted]
    problems += [f"{row['file']}: caption {row.get('caption')!r} differs from the list's {wanted[caption_id]!r}"
                 for caption_id, row in found.items() if caption_id in wanted and row.get("caption") != wanted[caption_id]]
    return problems



__all__ = ["validate_submission"]
