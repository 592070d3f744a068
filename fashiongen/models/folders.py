"""Replacing an output folder atomically: refuse an OUT that holds something the user did not ask to replace, fill
a hidden sibling, and swap it in by one rename, so a kill at any point leaves the old folder or the new one."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..utils import disk_problem
from .info import INFO_FILE, MAX_INFO_BYTES, PIPELINE_INFO_FILE, ModelFileError


def _is_ours(path: Path) -> bool:
    """A folder holding a model of ours: model.json or pipeline.json with one of our format names."""
    for name in (INFO_FILE, PIPELINE_INFO_FILE):
        try:
            if (path / name).stat().st_size <= MAX_INFO_BYTES:
                info = json.loads((path / name).read_text(encoding="utf-8"))
                if isinstance(info, dict) and str(info.get("format", "")).startswith("fashiongen-"):
                    return True
        except (OSError, ValueError):
            continue
    return False


def check_output_dir(out_dir: Path, overwrite: bool = False, protected: Sequence[Path] = ()) -> None:
    """Refuse, before any work, an OUT whose replacement would lose something the user did not ask to replace:
    an existing file or link, a non-empty folder that is not a model of ours, or a `protected` folder (the
    package's shipped model) unless `overwrite`; and an OUT whose parent cannot be written."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise ModelFileError(f"{out_dir}: is a symbolic link; pass the folder it points to")
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelFileError(f"{out_dir}: exists and is not a folder; remove it or choose another output folder")
    if not overwrite and any(out_dir.resolve() == Path(p).resolve() for p in protected):
        raise ModelFileError(f"{out_dir}: is a model shipped in the package (the shipped default model or GAN); pass --overwrite to replace it")
    if out_dir.is_dir() and not overwrite and any(out_dir.iterdir()) and not _is_ours(out_dir):
        raise ModelFileError(f"{out_dir}: folder is not empty and holds no FashionGen model ({INFO_FILE} or "
                             f"{PIPELINE_INFO_FILE}); choose a new or empty folder, or pass --overwrite to replace it")
    parent = out_dir.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ModelFileError(f"{out_dir}: cannot write in {parent} (read-only or no permission)")


def temporary_directory(out_dir: Path) -> Path:
    """A fresh hidden sibling of `out_dir` to fill before `replace_directory` swaps it in. Leftovers of a killed
    write to the same `out_dir` are cleared first (and a previous folder stranded mid-swap is put back)."""
    out_dir = Path(out_dir)
    temporary = out_dir.with_name(f".tmp-{out_dir.name}")
    previous = out_dir.with_name(f".old-{out_dir.name}")
    if previous.is_dir() and not out_dir.exists():  # killed between the two renames of the fallback swap
        previous.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic rename (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_directory(temporary: Path, out_dir: Path) -> Path:
    """Put a complete directory in place of `out_dir` by renames, so no reader ever sees half of one."""
    if not out_dir.exists():
        temporary.rename(out_dir)
        return out_dir
    if _exchange(temporary, out_dir):  # `temporary` now holds the old folder
        shutil.rmtree(temporary, ignore_errors=True)
        return out_dir
    previous = out_dir.with_name(f".old-{out_dir.name}")
    shutil.rmtree(previous, ignore_errors=True)
    out_dir.rename(previous)
    temporary.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
    return out_dir


@contextmanager
def replacing_directory(out_dir: str | Path, overwrite: bool = False, protected: Sequence[Path] = ()) -> Iterator[Path]:
    """Check `out_dir` (see `check_output_dir`), yield an empty temporary folder to fill, and swap it in on success;
    on any failure the temporary folder is removed and `out_dir` is untouched."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite, protected)
    temporary = temporary_directory(out_dir)
    try:
        yield temporary
        replace_directory(temporary, out_dir)
    except Exception as error:  # safetensors and json report a full disk as their own exceptions
        problem = disk_problem(error, temporary)
        shutil.rmtree(temporary, ignore_errors=True)
        if problem is None:
            raise
        raise ModelFileError(f"{out_dir}: {problem}; nothing was replaced") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # still there only when something failed
