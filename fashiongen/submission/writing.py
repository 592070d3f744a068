"""Writing a submission set: the header, one PNG and one line per image, resumable after a kill at any point."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..grid import save_image
from ..settings import SamplingSettings
from ..utils import atomic_write_text, file_inside
from .captions import add_item
from .format import (HEADER_FILE, IMAGES_DIR, LINES_FILE, MATCHED_FIELDS, SUBMISSION_FORMAT, SUBMISSION_VERSION, CaptionItem,
                     SubmissionError, caption_seed, captions_sha256, image_name, image_problem, read_header)

if TYPE_CHECKING:  # loading diffusers and transformers would add seconds to every validate run
    from ..pipeline import FashionGenPipeline

logger = logging.getLogger(__name__)


@dataclass
class SubmissionSummary:
    """What one generate_submission call did: images written now, images already there, images in the set."""

    written: int
    skipped: int
    total: int
    out_dir: Path



def _header(pipe: FashionGenPipeline, captions: Sequence[CaptionItem], per_caption: int, settings: SamplingSettings,
            resolution: int, base_seed: int, use_attributes: bool) -> dict[str, Any]:
    return {"format": SUBMISSION_FORMAT, "version": SUBMISSION_VERSION, "fingerprint": pipe.fingerprint,
            "model": pipe.describe(), "settings": settings.to_dict(), "resolution": resolution, "per_caption": per_caption,
            "base_seed": base_seed, "use_attributes": use_attributes, "num_captions": len(captions),
            "captions_sha256": captions_sha256(captions, use_attributes),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _check_same_run(path: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to add images to a folder begun by another model, other settings or another caption list."""
    if old.get("version") != SUBMISSION_VERSION:
        raise SubmissionError(f"{path}: submission version {old.get('version')!r}, this code writes {SUBMISSION_VERSION}")
    differences = [f"{name}: the folder has {before!r}, this run asks for {after!r}"
                   for name in MATCHED_FIELDS for name, before, after in _differences(name, old.get(name), new[name])]
    if differences:
        raise SubmissionError(f"{path.parent} was written by another model, with other settings or for other captions ("
                              + "; ".join(differences) + "); use a new --out folder (nothing was changed)")
    for name in ("device", "dtype"):
        if old.get("model", {}).get(name) != new["model"][name]:
            logger.warning("%s: resuming on %s %s, begun on %s %s: images may differ slightly in their numerics",
                           path.parent, name, new["model"][name], name, old.get("model", {}).get(name))


def _differences(name: str, before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """(field, old, new) for each differing value; dicts (the settings) are compared key by key."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [(f"{name}.{key}", before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)]
    return [] if before == after else [(name, before, after)]


def _remove_leftovers(folder: Path) -> None:
    """Temporary files of atomic writes a kill left behind (`.NAME.XXXX.tmp`)."""
    if folder.is_dir():
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of submission.jsonl, and whether a partial last line (a kill mid-append) was dropped."""
    if not path.is_file():
        return [], False
    lines = path.read_bytes().split(b"\n")
    complete, last = lines[:-1], lines[-1]  # `last` is b"" when the file ends in a newline
    rows, dropped = [], bool(last.strip())
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number == len(complete) and not dropped:
                dropped = True  # the last line itself is damaged
                continue
            raise SubmissionError(f"{path}:{number}: not valid JSON; the file is damaged, use a new --out folder") from None
    return rows, dropped


def _recover(out_dir: Path, expected: dict[str, dict[str, Any]], resolution: int) -> list[dict[str, Any]]:
    """The finished images' rows; rewrites submission.jsonl when a kill left it out of step with images/."""
    path = out_dir / LINES_FILE
    rows, dirty = _read_lines(path)
    done: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, start=1):
        file = row.get("file") if isinstance(row, dict) else None
        if file not in expected or row != expected[file]:
            raise SubmissionError(f"{path}: entry {number} ({file}) is not what this run would write there (another caption, k or "
                                  "seed); use a new --out folder")
        _inside(out_dir, file)
        if file in done:
            dirty = True  # listed twice
        elif (out_dir / file).is_file():
            done[file] = row
        else:
            dirty = True  # listed but gone: generate it again
            logger.warning("%s is listed in %s but missing; generating it again", file, LINES_FILE)
    for file, row in expected.items():
        if file not in done and (out_dir / file).is_file():
            _inside(out_dir, file)
            if (problem := image_problem(out_dir / file, file, resolution)) is None:
                done[file], dirty = row, True  # written just before a kill, never listed
            else:
                logger.warning("%s; generating it again", problem)
    if dirty:
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in done.values()))
    return list(done.values())


def _inside(out_dir: Path, file: str) -> Path:
    """out_dir/file, or SubmissionError when it leads outside the folder (a symlink planted in images/)."""
    try:
        return file_inside(out_dir, file)
    except ValueError as error:
        raise SubmissionError(f"{out_dir / LINES_FILE}: {error}; use a new --out folder") from None


def _append_line(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _start(out_dir: Path, header: dict[str, Any]) -> None:
    """Check a begun folder's header against this run, or write the header of a fresh one; clear .tmp leftovers."""
    header_path = out_dir / HEADER_FILE
    if header_path.is_file():
        _check_same_run(header_path, read_header(header_path), header)
    elif (out_dir / LINES_FILE).exists() or any((out_dir / IMAGES_DIR).glob("*.png")):
        raise SubmissionError(f"{out_dir} holds images but no {HEADER_FILE}, so they cannot be checked against this "
                              "run; use a new --out folder")
    else:
        atomic_write_text(header_path, json.dumps(header, indent=2, ensure_ascii=False) + "\n")
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    _remove_leftovers(out_dir / IMAGES_DIR)


def generate_submission(pipe: FashionGenPipeline, captions: Sequence[CaptionItem], out_dir: str | Path, per_caption: int,
                        settings: SamplingSettings, resolution: int = 256, base_seed: int = 0, batch_size: int | None = None,
                        use_attributes: bool = False, show_progress: bool = True) -> SubmissionSummary:
    """Generate (or finish) a submission set in `out_dir`: `per_caption` images of `resolution` px per caption.

    `settings.size` is replaced by `resolution` (the cascade runs up to it and resizes). Attributes are passed
    to the model only with `use_attributes`: the names and values the model was trained with (others count as 'none').
    """
    if per_caption < 1:
        raise SubmissionError(f"per_caption must be >= 1, got {per_caption}")
    if not captions:
        raise SubmissionError("no captions to generate for")
    checked: dict[str, CaptionItem] = {}
    for number, caption in enumerate(captions):
        add_item(checked, caption, f"caption {number}")
    settings = replace(settings, size=resolution)  # a SamplingSettings checks itself when made
    out_dir = Path(out_dir)
    header = _header(pipe, captions, per_caption, settings, resolution, base_seed, use_attributes)
    expected = {image_name(c.id, k): {"file": image_name(c.id, k), "caption_id": c.id, "caption": c.caption, "k": k,
                                      "seed": caption_seed(c.id, k, base_seed)}
                for c in captions for k in range(per_caption)}
    _start(out_dir, header)
    done = {row["file"] for row in _recover(out_dir, expected, resolution)}
    todo = [row for file, row in expected.items() if file not in done]
    step = batch_size or pipe.batch_size
    with tqdm(total=len(expected), initial=len(done), desc="submission", unit="img", disable=not show_progress) as bar:
        for start in range(0, len(todo), step):
            batch = todo[start : start + step]
            wanted = [pipe.known_attributes(checked[row["caption_id"]].attributes) for row in batch] if use_attributes else None
            images = pipe.generate_images([row["caption"] for row in batch], [row["seed"] for row in batch], settings, wanted)
            for row, image in zip(batch, images):
                save_image(image.convert("RGB"), out_dir / row["file"])
                _append_line(out_dir / LINES_FILE, row)
                bar.update(1)
    return SubmissionSummary(written=len(todo), skipped=len(done), total=len(expected), out_dir=out_dir)



__all__ = ["SubmissionSummary", "generate_submission"]
