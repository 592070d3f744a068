"""Small helpers shared across the package: atomic file writes, one writer per output folder, the rule
for files a folder lists (they must lie inside it), readers open only regular files, disk errors in one line, and clearing what a
killed writer left behind."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Iterable, Iterator
from .errors import DISK_ERRORS, UserError

logger = logging.getLogger("fashiongen")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- output folders


class OutputFolderError(UserError, ValueError):
    """An output folder that cannot be written (a file, read-only, or another process writing it)."""


LOCK_FILE = ".lock"


def _folder_problem(folder: Path, error: OSError) -> OutputFolderError:
    blocker = next((path for path in (folder, *folder.parents) if path.exists() and not path.is_dir()), None)
    if blocker is not None:
        return OutputFolderError(f"{blocker} is a file, not a folder; choose another --out")
    return OutputFolderError(f"cannot write in {folder} ({error.strerror or type(error).__name__}); choose another --out")


class LockHeld(Exception):
    """Another process holds the lock; `pid` is what it wrote in the lock file."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = pid


def lock_with_pid(path: Path) -> int:
    """Open `path` (created if needed), take an exclusive non-blocking flock on it and write this process's pid in it;
    the descriptor that holds the lock. The kernel drops a flock when its process ends, even by kill -9. LockHeld
    naming the holder's pid when another process has it; OSError when the file cannot be opened."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise LockHeld(holder) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return descriptor


@contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Create `folder` if needed and hold an exclusive advisory lock on folder/.lock while the job runs: one
    writer per output folder. The kernel drops a flock when its process ends, even by kill -9, so a killed
    job never leaves the folder locked; a second writer gets OutputFolderError naming the first one's pid.
    A path that is a file, or a folder that cannot be written, is refused the same way, before any work.
    Folders it created are removed again when the job leaves them empty (it failed before writing)."""
    folder = Path(folder)
    created = [path for path in (folder, *folder.parents) if not os.path.lexists(path)]  # deepest first
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor = lock_with_pid(folder / LOCK_FILE)
        except LockHeld as held:
            raise OutputFolderError(f"{folder} is being written by another process (pid {held.pid}); wait for it "
                                    "or choose another --out") from None
        except OSError as error:
            raise _folder_problem(folder, error) from None
        try:
            same = os.fstat(descriptor).st_ino == os.stat(folder / LOCK_FILE).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)  # the holder removed the lock file as we opened it: lock the new one
    try:
        yield folder
    finally:
        try:
            os.unlink(folder / LOCK_FILE)  # while still locked, so no one else holds this inode's lock
        except OSError:
            pass
        os.close(descriptor)
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break  # not empty: the job wrote something


# ---------------------------------------------------------------- files listed inside a folder


def file_inside(folder: str | Path, name: Any) -> Path:
    """The path of `name` (a relative path listed in a folder's submission.jsonl or manifest.jsonl) inside
    `folder`; ValueError when it is not a relative path, climbs out with '..', or is (or passes through) a
    symlink whose target lies outside the folder. Every reader of listed files uses this one rule."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"file {name!r} is not a relative path")
    parts = PurePosixPath(name.replace("\\", "/"))
    if parts.is_absolute() or PureWindowsPath(name).drive or "\x00" in name:
        raise ValueError(f"file {name!r} is an absolute path; files must be relative to {folder}")
    if ".." in parts.parts:
        raise ValueError(f"file {name!r} climbs out of {folder} with '..'")
    folder = Path(folder)
    path = folder / parts
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise ValueError(f"file {name!r} is a symlink to {path.resolve()}, outside {folder}") from None
    return path


class NotRegularFile(ValueError):
    """A path a reader was given that is not a regular file (a FIFO, device, socket, folder or nothing); `reason` is
    the message without the path, for errors that name the file their own way."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def regular_file(path: str | Path) -> Path:
    """`path` (symlinks followed) when it is a regular file; NotRegularFile naming it otherwise. Opening a FIFO blocks
    until a writer comes and a device never ends, so every reader of a user's file checks this first (or opens with
    `open_regular`, which cannot block even if the path is swapped between the check and the open)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NotRegularFile(path, "file not found") from None
    except OSError as error:
        raise NotRegularFile(path, f"cannot read ({error.strerror or type(error).__name__})") from None
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, f"{_kind(mode)}, not a regular file")
    return path


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading in binary; NotRegularFile for anything else. The open itself is non-blocking
    (a FIFO would otherwise wait forever for a writer); the type is checked on the opened descriptor."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotRegularFile(path, "file not found") from None
    except OSError as error:
        raise NotRegularFile(path, f"cannot read ({error.strerror or type(error).__name__})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise NotRegularFile(path, f"{_kind(mode)}, not a regular file")
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def first_line(error: BaseException) -> str:
    """An exception's first message line (libraries such as safetensors and torch raise multi-line ones), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# Disk errors a save reports in one line (with the path) instead of a traceback.


def disk_problem(error: BaseException, path: Path) -> str | None:
    """'no space left on device' (etc.) when `error` is a disk error, else None. safetensors and torch.save
    report a full disk as their own exceptions, so their messages are read too; a write failure on a
    filesystem with (almost) no free space counts as a full disk."""
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        return DISK_ERRORS[error.errno]
    text = str(error)
    if "No space left" in text or "StorageFull" in text or "os error 28" in text or "code: 28" in text:
        return DISK_ERRORS[errno.ENOSPC]
    if isinstance(error, (OSError, RuntimeError)):
        try:
            stats = os.statvfs(path if path.exists() else path.parent)
            if stats.f_bavail * stats.f_frsize < 1 << 20:
                return DISK_ERRORS[errno.ENOSPC]
        except OSError:
            pass
    return None


def _open_by_any_process(paths: set[str]) -> set[str]:
    """Which of `paths` some live process holds open (Linux /proc); all of them where that cannot be known."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return paths
    held: set[str] = set()
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target in paths:
                    held.add(target)
        except OSError:
            continue
    return held


def remove_stale_temporaries(folder: Path, targets: Iterable[str] | None = None) -> list[Path]:
    """Remove utils.atomic_path temporaries (`.NAME.XXXXXXXX.tmp`) in `folder` for the `targets` names (all names
    when None) that no live process holds open: what a killed writer left behind."""
    folder = Path(folder).absolute()
    if not folder.is_dir():
        return []
    names = "|".join(re.escape(name) for name in targets) if targets is not None else r"[^/]+"
    pattern = re.compile(rf"^\.(?:{names})\.[A-Za-z0-9_]{{8}}\.tmp$")
    candidates = {str(path): path for path in folder.iterdir() if pattern.match(path.name) and path.is_file()}
    if not candidates:
        return []
    held = _open_by_any_process(set(candidates))
    removed = []
    for name, path in candidates.items():
        if name not in held:
            try:
                path.unlink()
                removed.append(path)
                logger.info("removed %s, left by an interrupted write", path)
            except OSError:
                pass
    return removed
