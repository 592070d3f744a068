"""Convert a source's two splits once, into one folder that every reader of ours opens as a train/validation pair.

    python -m fashiongen.data convert data/fashiongen data/fashiongen64 --size 64
    -> data/fashiongen64/fashiongen64_train.h5, fashiongen64_validation.h5 and each one's .json summary

Training, evaluation and inspection then take the folder, or either file, as their source (the reader finds a
file's sibling). The folder appears in one rename when both splits are done; until then they are built in a
hidden sibling `.NAME.partial/`, one complete file at a time (`convert_source`'s atomic writes), so a killed
conversion resumes where it stopped: a split whose file and summary are there, readable and made with the same
settings is kept, the other is converted. One writer at a time: a flock on `.NAME.lock` beside OUT.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..utils import LockHeld, atomic_write_text, lock_with_pid
from .convert import OutputError, check_parent, convert_source, result_path
from .fashiongen_h5 import FashionGenH5Reader
from .records import DataError, Source

PAIR_SPLITS = ("train", "validation")
FILE_SUFFIXES = (".h5", ".hdf5", ".json")  # an OUT with one of these names a file (`.json` is refused there)
_PAIR_FILE = re.compile(r"^.+_(train|validation)\.(h5|json)$")
logger = logging.getLogger("fashiongen.data")


def is_pair_output(out: Path) -> bool:
    """`convert SOURCE OUT`: OUT.h5 is one file (as before pairs existed); any other name is a pair's folder."""
    return Path(out).suffix.lower() not in FILE_SUFFIXES


def pair_files(out: Path) -> dict[str, Path]:
    """The pair's files inside OUT, named as the release names its own (`..._train.h5`, `..._validation.h5`)."""
    return {split: out / f"{out.name}_{split}.h5" for split in PAIR_SPLITS}


def _foreign_entry(folder: Path) -> Path | None:
    """An entry of `folder` that a pair conversion did not write (so --overwrite may not delete it), if any."""
    return next((path for path in sorted(folder.iterdir()) if not (path.is_file() and _PAIR_FILE.match(path.name))), None)


def check_pair_output(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an OUT folder that exists (unless --overwrite, and then only a converted pair's
    folder: nothing else of the user's is deleted), a file or link there, or a parent that cannot be written."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise OutputError(f"{out}: name the pair's folder (its name becomes the files' names: NAME_train.h5)")
    if out.is_symlink():
        raise OutputError(f"{out}: is a symbolic link; name the folder itself")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; a pair is written into a new folder (name OUT.h5 "
                          "to write one file)")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(f"{out}: exists; pass --overwrite to replace it")
        if (foreign := _foreign_entry(out)) is not None:
            raise OutputError(f"{out}: holds {foreign.name}, which is not a converted pair's file; --overwrite "
                              "replaces only a folder that convert wrote; choose a new folder")
    check_parent(out)
    return out


@dataclass
class PairResult:
    path: str
    splits: dict[str, dict[str, Any]]  # each split's conversion summary (as in NAME_split.json)
    kept: list[str] = field(default_factory=list)  # splits a killed conversion had finished, kept as they were
    seconds: float = 0.0


def convert_pair(open_split: Callable[[str], Source], out: str | Path, settings: dict[str, Any], *, resolution: int,
                 resize_mode: str = "center-crop", caption_template: str = "", skip_bad_records: bool = True,
                 progress: bool = True, overwrite: bool = False) -> PairResult:
    """Convert the train and validation splits `open_split` opens into OUT; `settings` (whatever decides the files'
    contents: the source, its options) is stored with each split, and a finished split is kept only when equal."""
    out = check_pair_output(out, overwrite)
    start = time.perf_counter()
    sources = {split: open_split(split) for split in PAIR_SPLITS}  # both readable before anything is written
    for split, source in sources.items():
        if len(source) == 0:
            raise DataError(f"{source.path}: the {split} split is empty; a pair needs rows in both splits")
    staging = out.parent / f".{out.name}.partial"
    descriptor = _lock(out)
    try:
        _restore_stranded(out)
        staging.mkdir(parents=True, exist_ok=True)
        results, kept = {}, []
        for split, source in sources.items():
            target = staging / pair_files(out)[split].name
            wanted = {**settings, "split": split, "size": resolution, "resize_mode": resize_mode,
                      "caption_template": caption_template}
            if (summary := _finished(target, wanted)) is not None:
                logger.warning("%s: kept the %s split a previous conversion finished", out, split)
                results[split], kept = summary, [*kept, split]
                continue
            result = convert_source(source, target, resolution=resolution, resize_mode=resize_mode,
                                    caption_template=caption_template, skip_bad_records=skip_bad_records,
                                    progress=progress, overwrite=True)
            results[split] = {**result.__dict__, "path": str(out / target.name), "split": split, "settings": wanted}
            atomic_write_text(result_path(target), json.dumps(results[split], indent=2, default=str) + "\n")
        _install(staging, out)
    finally:
        _unlock(out, descriptor)
    return PairResult(str(out), results, kept, round(time.perf_counter() - start, 2))


def _finished(target: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a split a killed conversion completed with the same settings, if its file reads back whole."""
    try:
        summary = json.loads(result_path(target).read_text(encoding="utf-8"))
        same = json.loads(json.dumps(wanted, default=str)) == summary.get("settings")
        if same and len(FashionGenH5Reader(target)) == summary["num_records"]:
            return summary
    except (OSError, ValueError, KeyError, TypeError, DataError):
        pass  # missing, damaged or made otherwise: converted again
    return None


def _lock(out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return lock_with_pid(out.parent / f".{out.name}.lock")
    except LockHeld as held:
        raise OutputError(f"{out}: being converted by another process (pid {held.pid}); wait for it") from None


def _unlock(out: Path, descriptor: int) -> None:
    try:
        os.unlink(out.parent / f".{out.name}.lock")  # while still locked, so no one else holds this inode's lock
    except OSError:
        pass
    os.close(descriptor)


def _restore_stranded(out: Path) -> None:
    """A conversion killed between the two renames of `_install` left the old OUT as `.NAME.old`: put it back."""
    previous = out.parent / f".{out.name}.old"
    if previous.is_dir() and not out.exists():
        previous.rename(out)
    shutil.rmtree(previous, ignore_errors=True)


def _install(staging: Path, out: Path) -> None:
    """Put the finished pair in place of OUT by renames: a reader sees the old folder or the new one, never half."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        staging.rename(out)
        return
    previous = out.parent / f".{out.name}.old"
    out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)
