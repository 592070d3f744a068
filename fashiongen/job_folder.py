"""Whose a sample.py output folder is, and reading back what it lists, checked before a job writes in it.

A job records what wrote the folder in job.json (the job's kind, the model's fingerprint, and what else makes two
runs the same job: the settings, and an interpolation's or edit's inputs) before it writes its first image. A new or
empty folder is started; a folder this same job wrote is resumed; anything else (files sample.py did not write, such
as a user's grid.png or manifest.jsonl, another kind of job, another model or other settings) is refused in one line
unless `overwrite`. Folders written before job.json existed are recognised by their manifest rows.

Everything read back goes through one gate: a listed file must lie inside the folder (utils.file_inside) and be a
regular file (utils.open_regular, so a FIFO cannot block), an image decodes within data.images' pixel limit, and the
manifest is read line by line up to a size limit. What fails is named (file, manifest line) and the job stops:
a kill leaves only a partial last manifest line and missing images (writes are atomic), both of which a resume
mends, so anything else was put there by someone else and is not overwritten.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from .data.images import UPLOAD_MAX_PIXELS, decode_image
from .data.records import RecordError
from .settings import PipelineInputError
from .utils import LOCK_FILE, NotRegularFile, atomic_write_text, file_inside, open_regular

JOB_FILE = "job.json"
MANIFEST = "manifest.jsonl"
SUBMISSION_HEADER = "submission.json"  # submission.py's own header: that folder is a submission set
KINDS = {"prompt-sheet": "a prompt sheet", "interpolation": "an interpolation", "edit": "edits of a photo",
         "submission": "a submission set"}
# Every path each kind of job writes, and whether it is a file or a folder (submission.py lists its own).
OUTPUTS = {"prompt-sheet": ((MANIFEST, "file"), ("grid.png", "file"), ("images", "folder")),
           "edit": ((MANIFEST, "file"), ("grid.png", "file"), ("edits", "folder")),
           "interpolation": ((MANIFEST, "file"), ("frames", "folder"), ("strip.png", "file"), ("interpolation.gif", "file"),
                             ("interpolation.webp", "file")),
           "submission": ()}
MAX_MANIFEST_BYTES = 512 << 20  # ~2 KB a row for MAX_JOB_IMAGES rows; read line by line, never whole
MAX_JOB_FILE_BYTES = 1 << 20
READ_BACK_MAX_PIXELS = UPLOAD_MAX_PIXELS  # images read back for a grid: ours are at most 4096 px a side
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # utils.atomic_path's temporaries


class JobFolderError(PipelineInputError):
    """An output folder that is not this job's, or whose files cannot be read back; the message names the file or line."""


@dataclass(frozen=True)
class Job:
    """What a job writes into its folder and what makes a rerun the same job (so it resumes instead of being refused)."""

    kind: str
    model: str
    identity: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"job": self.kind, "model": self.model, "identity": self.identity}


def _kind_of_row(row: dict[str, Any]) -> str | None:
    """A manifest row's job kind, from the fields each kind writes (folders made before job.json)."""
    if "prompt_a" in row:
        return "interpolation"
    if "input" in row:
        return "edit"
    if "index" in row and "k" in row:
        return "prompt-sheet"
    return None


def identity_of_row(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """The fields of a manifest row that name the job rather than the image (see each write_* in jobs.py; an
    interpolation's frame count is the number of its rows)."""
    names = {"prompt-sheet": ("settings",), "edit": ("settings", "prompt", "input", "mask", "strength", "attributes"),
             "interpolation": ("settings", "prompt_a", "prompt_b", "seed_a", "seed_b", "attributes")}[kind]
    return {name: row.get(name) for name in names}


def manifest_rows(folder: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every complete line of folder/manifest.jsonl, read line by line; a partial last line (a
    kill's) is skipped. JobFolderError naming the line for anything else: not JSON, not a row with a "file" inside
    the folder; naming the file for a manifest that is not a regular file or is over MAX_MANIFEST_BYTES."""
    path = folder / MANIFEST
    if not path.exists() and not path.is_symlink():
        return
    try:
        handle = open_regular(path)
    except NotRegularFile as error:
        raise JobFolderError(f"{error}; sample.py cannot read back its manifest") from None
    with handle:
        total = 0
        for number, line in enumerate(handle, start=1):
            total += len(line)
            if total > MAX_MANIFEST_BYTES:
                raise JobFolderError(f"{path}:{number}: the manifest is over {MAX_MANIFEST_BYTES >> 20} MB; "
                                     "it is not one sample.py wrote")
            if not line.endswith(b"\n"):
                return  # a kill's partial last line
            yield number, _manifest_row(folder, path, number, line)


def _manifest_row(folder: Path, path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JobFolderError(f"{path}:{number}: not a JSON row; use another --out (or --overwrite)") from None
    if not isinstance(row, dict) or not isinstance(row.get("file"), str):
        raise JobFolderError(f"{path}:{number}: a row without a \"file\" string; use another --out (or --overwrite)")
    try:
        file_inside(folder, row["file"])
    except ValueError as error:
        raise JobFolderError(f"{path}:{number}: {error}") from None
    return row


def read_back_image(folder: Path, name: str, where: str, max_pixels: int = READ_BACK_MAX_PIXELS) -> np.ndarray:
    """uint8 [H, W, 3] of a file the folder lists, through the one gate: inside the folder, a regular file, within the
    pixel limit; JobFolderError naming `where` and the file otherwise."""
    try:
        path = file_inside(folder, name)
        with open_regular(path) as handle:
            return decode_image(handle.read(max_pixels * 4 + (1 << 20)), str(path), max_pixels)
    except (ValueError, RecordError) as error:  # NotRegularFile and RecordError are ValueErrors
        raise JobFolderError(f"{where}: {error}; use another --out (or --overwrite to make it again)") from None


def check_image_header(folder: Path, name: str, where: str, max_pixels: int = READ_BACK_MAX_PIXELS) -> None:
    """That a file the folder lists is an image within the pixel limit, from its header alone (a resume checks every
    image it skips this way, cheaply); JobFolderError naming `where` and the file otherwise."""
    try:
        path = file_inside(folder, name)
        with open_regular(path) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                pixels = image.width * image.height
        if pixels > max_pixels:
            raise ValueError(f"{path}: image is {pixels} pixels, over the limit of {max_pixels}")
    except ValueError as error:
        raise JobFolderError(f"{where}: {error}; use another --out (or --overwrite to make it again)") from None
    except Image.DecompressionBombError:
        raise JobFolderError(f"{where}: {path}: image is over the limit of {max_pixels} pixels (a decompression bomb); "
                             "use another --out") from None
    except (OSError, SyntaxError) as error:
        raise JobFolderError(f"{where}: {path} is not an image sample.py wrote ({type(error).__name__}); use another "
                             "--out (or --overwrite to make it again)") from None


def _entries(folder: Path) -> list[str]:
    """Names in the folder besides the lock and atomic temporaries."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE and not TEMPORARY.match(p.name))


def _read_job_file(folder: Path) -> dict[str, Any]:
    path = folder / JOB_FILE
    try:
        with open_regular(path) as handle:
            record = json.loads(handle.read(MAX_JOB_FILE_BYTES + 1).decode("utf-8"))
    except NotRegularFile as error:
        raise JobFolderError(f"{error}; use another --out (or --overwrite)") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not (isinstance(record, dict) and record.get("job") in KINDS and isinstance(record.get("model"), str)
            and isinstance(record.get("identity"), dict)):
        raise JobFolderError(f"{path} is not a job record sample.py wrote; use another --out (or --overwrite)")
    return record


def _legacy_record(folder: Path) -> dict[str, Any] | str:
    """The job a manifest written before job.json describes, or why it is not one job of ours."""
    record: dict[str, Any] | None = None
    files: set[str] = set()
    for number, row in manifest_rows(folder):
        kind = _kind_of_row(row)
        if kind is None or not isinstance(row.get("model"), str) or not isinstance(row.get("settings"), dict):
            return f"a {MANIFEST} sample.py did not write (line {number} is not one of its rows)"
        this = {"job": kind, "model": row["model"], "identity": identity_of_row(kind, row)}
        if record is not None and this != record:
            return f"a {MANIFEST} of more than one job (line {number} is from another model or setting than line 1)"
        record = record or this
        files.add(row["file"])
    if record is None:
        return f"a {MANIFEST} that lists no images and no {JOB_FILE}"
    if record["job"] == "interpolation":
        record["identity"]["frames"] = len(files)  # rows before job.json did not record it
    return record


def folder_record(folder: Path) -> dict[str, Any] | str | None:
    """None for a new or empty folder; the record of the job that wrote it; or (a string) what it holds that is not ours."""
    names = _entries(folder)
    if not names:
        return None
    if JOB_FILE in names:
        return _read_job_file(folder)
    if SUBMISSION_HEADER in names:
        return {"job": "submission", "model": "", "identity": {}}  # submission.py checks its own header
    if MANIFEST in names:
        return _legacy_record(folder)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"files sample.py did not write ({shown})"


def _problem(folder: Path, kind: str) -> tuple[dict[str, Any] | None, str | None]:
    """What the folder holds (its job record, None when new) and, when that is not a job of `kind`, what it holds."""
    check_outputs(folder, OUTPUTS[kind])
    found = folder_record(folder)
    if isinstance(found, str):
        return None, f"holds {found}"
    if found is not None and found["job"] != kind:
        return found, f"holds {KINDS[found['job']]}, not {KINDS[kind]}"
    return found, None


def check_folder(folder: str | Path, kind: str, overwrite: bool = False) -> None:
    """Before the model loads: JobFolderError when the folder holds files that are not ours, another kind of job or a
    path the job writes of the wrong type (the model and settings are compared by start_job, once they are known)."""
    folder = Path(folder)
    _, problem = _problem(folder, kind)
    if problem is not None and not overwrite:
        raise JobFolderError(f"{folder} {problem}; use another --out, or --overwrite to write over it")


def _difference(found: dict[str, Any], job: Job) -> str | None:
    if job.kind == "submission":
        return None
    if found["model"] != job.model:
        return f"holds {KINDS[job.kind]} from another model ({found['model']}, not {job.model})"
    for name, value in job.identity.items():
        old = found["identity"].get(name)
        if old != value:
            if isinstance(old, dict) and isinstance(value, dict):  # name the setting, not the whole settings
                name, old, value = next((f"{name}.{key}", old.get(key), value.get(key)) for key in {**old, **value}
                                        if old.get(key) != value.get(key))
            return f"holds {KINDS[job.kind]} from another prompt, seed, setting or model ({name} {old!r}, not {value!r})"
    return None


def check_outputs(folder: Path, outputs: tuple[tuple[str, str], ...]) -> None:
    """Every path the job writes is inside the folder and, where it exists, of the kind the job writes (never replaced)."""
    for name, kind in outputs:
        try:
            path = file_inside(folder, name)
        except ValueError as error:
            raise JobFolderError(f"{folder / name}: {error}; use another --out") from None
        if path.exists() and not (path.is_dir() if kind == "folder" else path.is_file()):
            what = "a folder" if path.is_dir() else "a file" if path.is_file() else "not a regular file"
            raise JobFolderError(f"{path} is {what}, where sample.py writes {'a folder' if kind == 'folder' else 'a file'}; "
                                 "move it or use another --out")


def check_job(folder: str | Path, job: Job, overwrite: bool = False) -> bool:
    """Whether `folder` may hold `job`, writing nothing: True when it resumes this job's own earlier run, False for a
    new folder (or one `overwrite` lets the job write over); JobFolderError naming what the folder holds otherwise."""
    folder = Path(folder)
    found, problem = _problem(folder, job.kind)
    if problem is None and found is not None:
        problem = _difference(found, job)
    if problem is not None and not overwrite:
        raise JobFolderError(f"{folder} {problem}; use another --out, or --overwrite to write over it")
    return found is not None and problem is None


def record_job(folder: str | Path, job: Job) -> None:
    """Write folder/job.json for `job` (its first image follows; a submission's header is submission.py's, so an
    overwritten folder's job.json goes)."""
    folder = Path(folder)
    if job.kind == "submission":
        if (folder / JOB_FILE).is_file():
            (folder / JOB_FILE).unlink()
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / JOB_FILE, json.dumps(job.record(), indent=2) + "\n")


def start_job(folder: str | Path, job: Job, overwrite: bool = False) -> bool:
    """check_job, then record_job: for a job that writes as soon as it starts (a submission)."""
    resume = check_job(folder, job, overwrite)
    record_job(folder, job)
    return resume


__all__ = ["JOB_FILE", "KINDS", "MANIFEST", "OUTPUTS", "Job", "JobFolderError", "check_folder", "check_image_header",
           "check_job", "check_outputs", "folder_record", "identity_of_row", "manifest_rows", "read_back_image", "record_job",
           "start_job"]
