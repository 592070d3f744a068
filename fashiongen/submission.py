"""Challenge submission sets: `per_caption` generated images for every caption of a validation list.

    captions = read_caption_list("../shared/data/fashion-products")   # its validation split; or a JSONL of {id, caption}
    summary = generate_submission(pipe, captions, "submission/", per_caption=4, settings=SamplingSettings())
    problems = validate_submission("submission/", captions)                                 # [] = valid

    python -m fashiongen.submission validate submission/ [--captions CAPTIONS] [--split SPLIT]

A set is a folder:
    submission.json    header: the model's fingerprint, the settings, resolution, per_caption, base seed, caption-list hash
    submission.jsonl   one line per finished image: {"file", "caption_id", "caption", "k", "seed"}
    images/ID_K.png    image k (0..per_caption-1) of caption ID, resolution x resolution RGB

Image k of caption ID has the seed `caption_seed(ID, k, base_seed)`, which does not depend on the caption's
position, so shards and resumed runs make the same images. Each PNG is written atomically before its
line is appended, so an interrupted run resumes where it stopped; a folder written by another model or
with other settings is refused, never overwritten. One writer per folder (sample.py holds utils.output_lock).
Every file a set lists must lie inside its folder (utils.file_inside: no absolute paths, no '..', no symlink
out), for the validator and for evaluate.py alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm.auto import tqdm

from .data.captions import build_caption
from .data.folder import FILE_COLUMNS
from .data.records import DataError, RecordError, iter_meta, lone_surrogate
from .data.sources import open_source
from .grid import save_image
from .utils import atomic_write_text, file_inside

from .settings import SamplingSettings

if TYPE_CHECKING:  # loading diffusers and transformers would add seconds to every validate run
    from .pipeline import FashionGenPipeline

logger = logging.getLogger(__name__)

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


class SubmissionError(ValueError):
    """A caption list or submission folder that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class CaptionItem:
    """One caption of the list to generate for; `id` names its image files."""

    id: str
    caption: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SubmissionSummary:
    """What one generate_submission call did: images written now, images already there, images in the set."""

    written: int
    skipped: int
    total: int
    out_dir: Path


# ---------------------------------------------------------------- caption lists


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


def _add(items: dict[str, CaptionItem], item: CaptionItem, where: str) -> None:
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
        _add(items, _item_from_row(row, where), where)
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
        _add(items, CaptionItem(str(meta.id), caption, dict(meta.attributes)), f"{path} ({split} row {index})")
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


# ---------------------------------------------------------------- generation


def _header(pipe: FashionGenPipeline, captions: Sequence[CaptionItem], per_caption: int, settings: SamplingSettings,
            resolution: int, base_seed: int, use_attributes: bool) -> dict[str, Any]:
    return {"format": SUBMISSION_FORMAT, "version": SUBMISSION_VERSION, "fingerprint": pipe.fingerprint,
            "model": pipe.describe(), "settings": settings.to_dict(), "resolution": resolution, "per_caption": per_caption,
            "base_seed": base_seed, "use_attributes": use_attributes, "num_captions": len(captions),
            "captions_sha256": captions_sha256(captions, use_attributes),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _read_header(path: Path) -> dict[str, Any]:
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SubmissionError(f"{path}: cannot read the submission header ({error})") from None
    if not isinstance(header, dict) or header.get("format") != SUBMISSION_FORMAT:
        raise SubmissionError(f"{path}: not a FashionGen submission header (format {SUBMISSION_FORMAT!r} expected)")
    return header


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


def _image_problem(path: Path, name: str, resolution: int) -> str | None:
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
            if (problem := _image_problem(out_dir / file, file, resolution)) is None:
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
        _check_same_run(header_path, _read_header(header_path), header)
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
        _add(checked, caption, f"caption {number}")
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


# ---------------------------------------------------------------- validation


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
        header = _read_header(header_path)
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
        elif problem := _image_problem(path, file, resolution):
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


# ---------------------------------------------------------------- command line


class _ArgumentParser(argparse.ArgumentParser):
    """A bad command line is one `error: ...` line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SubmissionError(message)


def main(argv: list[str] | None = None) -> int:
    parser = _ArgumentParser(prog="python -m fashiongen.submission", description="Check a submission set.")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check a submission folder; exit 0 when valid, 1 when not")
    validate.add_argument("dir", help="the submission folder")
    validate.add_argument("--captions", help="caption list (JSONL or dataset source) every caption of which must be present")
    validate.add_argument("--split", help="split of a dataset source (default: the source's own: all of one .h5 file, "
                                          "else validation)")
    try:
        options = parser.parse_args(argv)
        out_dir = Path(options.dir)
        if not out_dir.is_dir():
            raise SubmissionError(f"{out_dir} is not a folder")
        captions = read_caption_list(options.captions, options.split) if options.captions else None
        problems = validate_submission(out_dir, captions)
    except (SubmissionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if problems:
        for problem in problems[:MAX_PRINTED_PROBLEMS]:
            print(problem)
        if len(problems) > MAX_PRINTED_PROBLEMS:
            print(f"... and {len(problems) - MAX_PRINTED_PROBLEMS} more")
        return 1
    header = json.loads((out_dir / HEADER_FILE).read_text(encoding="utf-8"))
    count = sum(1 for line in (out_dir / LINES_FILE).read_text(encoding="utf-8").splitlines() if line.strip())
    print(f"OK: {count} images for {header['num_captions']} captions at {header['resolution']}x{header['resolution']}")
    return 0


__all__ = ["CaptionItem", "SubmissionError", "SubmissionSummary", "caption_seed", "captions_sha256", "generate_submission",
           "id_problem", "read_caption_list", "validate_submission"]

if __name__ == "__main__":
    sys.exit(main())
