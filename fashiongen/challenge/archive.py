"""Uploaded submission archives (zip, or tar with or without gzip/bzip2/xz) from hostile users.

    size, sha256 = await receive_upload_async(request.stream(), work / "upload", max_bytes)
    root = extract_archive(work / "upload", work / "files", ArchiveLimits(...))   # the submission folder

Every member is checked before anything is written (names, types, counts, declared sizes, compression ratio),
and the bytes are counted again while they are copied, since headers can lie. Only regular files and folders
are written, with fixed modes; macOS/Windows junk is skipped; a failed extraction leaves no folder behind.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from .receiving import receive_upload, receive_upload_async
from .records import ArchiveError, UploadTooLarge
from .zipcheck import check_zip_layout, zip_directory

HEADER_FILE = "submission.json"
CHUNK = 2**20
JUNK_FILES = {".DS_Store", "Thumbs.db"}
MAX_NAME_PART_BYTES = 255  # a file name on Linux filesystems
TAR_HEADER_SLACK, TAR_HEADER_PER_MEMBER = 2**16, 2**12  # tar header bytes (pax, long names) allowed in memory
ZIP_DIRECTORY_ENTRY_BYTES = 46 + 1024  # a central directory entry without its name, with room for extras
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
TAR_REFUSED = {tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hardlink", tarfile.CHRTYPE: "a character device",
               tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO", tarfile.GNUTYPE_SPARSE: "a sparse file"}
DECOMPRESSORS: tuple[tuple[bytes, Callable[[BinaryIO], IO[bytes]]], ...] = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")), (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile))
# What a damaged or truncated archive raises while it is read (ArchiveError, a ValueError, is re-raised first).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error,
               lzma.LZMAError, NotImplementedError, struct.error, ValueError)
WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveLimits:
    """What an upload may hold; the server and workers size them to the challenge (layout.archive_limits)."""

    max_upload_bytes: int = 512 * 2**20  # the archive as uploaded
    max_members: int = 20_000  # files + folders
    max_total_bytes: int = 2 * 2**30  # sum of uncompressed member sizes
    max_member_bytes: int = 64 * 2**20  # one member, uncompressed
    max_ratio: float = 200.0  # uncompressed / compressed, whole archive (and per zip member with compressed size > 0)
    max_path_bytes: int = 400
    max_depth: int = 4  # path components


@dataclass(frozen=True)
class Member:
    """One entry of a checked archive."""

    name: str  # normalised relative POSIX path inside the archive
    size: int  # uncompressed bytes (declared)
    is_dir: bool


# ---------------------------------------------------------------- reading archives

# One archive entry as read: raw name, declared size, folder?, why it is refused (or None), and how to open its bytes.
Entry = tuple[str, int, bool, str | None, Callable[[], IO[bytes]]]
ONLY_FILES = "only regular files and folders are allowed"


class _TarHeaderBudget:
    """The decompressed tar stream, refusing to hand tarfile more bytes than the members' headers and the data read
    need: tarfile holds a pax or GNU long-name header in memory whole, and a 1 GB one must not get there."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.budget = handle, TAR_HEADER_SLACK

    def read(self, size: int | None = -1) -> bytes:
        data = self.handle.read(self.budget + 1 if size is None or size < 0 else min(size, self.budget + 1))
        self.budget -= len(data)
        if self.budget < 0:
            raise ArchiveError("the archive has tar headers or trailing data larger than its members need "
                               "(a pax or long-name header bomb?)")
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()


@contextmanager
def _open_tar(path: Path) -> Iterator[tuple[tarfile.TarFile, _TarHeaderBudget]]:
    """The tar inside `path`, its compression chosen by magic bytes (never by file name)."""
    with path.open("rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        stream = next((opener(raw) for magic, opener in DECOMPRESSORS if head.startswith(magic)), raw)
        budget = _TarHeaderBudget(stream)
        with stream, tarfile.open(fileobj=budget, mode="r:") as tar:  # type: ignore[call-overload]
            yield tar, budget


def _tar_entries(path: Path) -> Iterator[Entry]:
    with _open_tar(path) as (tar, budget):
        for info in tar:
            budget.budget += TAR_HEADER_PER_MEMBER  # for the next member's headers
            refused = info.type in TAR_REFUSED or info.issparse() or not (info.isreg() or info.isdir())
            what = TAR_REFUSED.get(info.type, "a sparse file" if info.issparse() else f"of tar type {info.type!r}")
            problem = f"is {what}; {ONLY_FILES}" if refused else None

            def open_member(info: tarfile.TarInfo = info) -> IO[bytes]:
                budget.budget += info.size
                return tar.extractfile(info)  # type: ignore[return-value]

            yield info.name, info.size, info.isdir(), problem, open_member
        while budget.read(CHUNK):  # to the end: gzip, bzip2 and xz check their trailer there
            pass


def _zip_problem(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str | None:
    """Why a zip member is refused whatever its name, or None."""
    kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix mode, where the archiver recorded one
    if info.flag_bits & 0x1:
        return "is encrypted; upload an archive without a password"
    if kind == stat.S_IFLNK:
        return f"is a symlink; {ONLY_FILES}"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"is a device, FIFO or socket; {ONLY_FILES}"
    if info.compress_type not in ZIP_METHODS:
        return f"uses compression method {info.compress_type}; use deflate, bzip2, lzma or none"
    if info.compress_size and info.file_size > limits.max_ratio * info.compress_size:
        return (f"expands {info.file_size / info.compress_size:.0f} times, more than {limits.max_ratio:g} "
                "(a compression bomb?)")
    return None


def _zip_entries(path: Path, limits: ArchiveLimits) -> Iterator[Entry]:
    directory = zip_directory(path)
    if directory and directory[0] > limits.max_members:
        raise ArchiveError(f"the archive has more than {limits.max_members} members ({directory[0]})")
    if directory and directory[1] > limits.max_members * (ZIP_DIRECTORY_ENTRY_BYTES + limits.max_path_bytes):
        raise ArchiveError(f"the archive has a zip directory of {directory[1]} bytes, more than its members can need")
    with zipfile.ZipFile(path) as archive:
        check_zip_layout(path, archive)
        for info in archive.infolist():
            is_dir = info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)
            yield info.orig_filename, info.file_size, is_dir, _zip_problem(info, limits), lambda info=info: archive.open(info)


def _entries(path: Path, kind: str, limits: ArchiveLimits) -> Iterator[Entry]:
    """The archive's entries in order; a damaged or truncated archive is an ArchiveError saying so."""
    try:
        yield from (_zip_entries(path, limits) if kind == "zip" else _tar_entries(path))
    except ArchiveError:
        raise
    except READ_ERRORS as error:
        raise ArchiveError(f"the archive is a damaged or truncated {kind} file ({_reason(error)})") from None


def _reason(error: BaseException) -> str:
    """What went wrong reading an archive, without the server's own paths (an OSError's str names its file)."""
    if isinstance(error, OSError) and (error.filename or error.filename2):
        return error.strerror or type(error).__name__
    return str(error) or type(error).__name__


def _kind(path: Path) -> str:
    """'zip' or 'tar', by content; ArchiveError for anything else."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise ArchiveError("the archive is an empty file, not a zip or tar archive")
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    try:
        with _open_tar(path):
            return "tar"
    except ArchiveError:
        raise
    except READ_ERRORS as error:
        if zipfile.is_zipfile(path):  # a zip after a prefix (a self-extractor, or junk to be stored with it)
            raise ArchiveError("the zip does not start at the archive's first byte (bytes were prepended?)") from None
        raise ArchiveError(f"the archive is neither a zip nor a tar file, or is damaged ({_reason(error)})") from None


# ---------------------------------------------------------------- checking


def _normalise(raw: str, limits: ArchiveLimits) -> str:
    """A member name as a relative POSIX path ('' for the archive's own folder); ArchiveError when it could land
    outside the destination or cannot be a file name here. Backslashes count as separators (Windows archivers)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in raw):
        raise ArchiveError(f"member {raw!r} has a NUL or control character in its name")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveError(f"member {raw!r} has a name that is not valid UTF-8") from None
    path = raw.replace("\\", "/")
    if path.startswith("/") or WINDOWS_DRIVE.match(path):
        raise ArchiveError(f"member {raw!r} is an absolute path; members must be relative")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"member {raw!r} climbs out of the archive with '..'")
    name = "/".join(parts)
    if len(name.encode("utf-8")) > limits.max_path_bytes or any(len(p.encode("utf-8")) > MAX_NAME_PART_BYTES for p in parts):
        raise ArchiveError(f"member {raw!r} has a path longer than {limits.max_path_bytes} bytes "
                           f"(or a name longer than {MAX_NAME_PART_BYTES})")
    if len(parts) > limits.max_depth:
        raise ArchiveError(f"member {raw!r} is {len(parts)} levels deep; at most {limits.max_depth} are allowed")
    return name


def _key(name: str) -> str:
    """What two names that one filesystem or another would treat as the same file share."""
    return unicodedata.normalize("NFC", name).casefold()


def _check(path: Path, entries: Iterable[Entry], limits: ArchiveLimits) -> list[Member]:
    archive_bytes, count, total = path.stat().st_size, 0, 0
    members: list[Member] = []
    seen: dict[str, str] = {}
    for raw, size, is_dir, problem, _ in entries:
        count += 1
        if count > limits.max_members:
            raise ArchiveError(f"the archive has more than {limits.max_members} members")
        name = _normalise(raw, limits)
        if problem:
            raise ArchiveError(f"member {raw!r} {problem}")
        if not 0 <= size <= limits.max_member_bytes:
            raise ArchiveError(f"member {raw!r} declares {size} bytes; one file may hold at most {limits.max_member_bytes}")
        total += size
        if total > limits.max_total_bytes:
            raise ArchiveError(f"member {raw!r} brings the members to more than {limits.max_total_bytes} bytes uncompressed")
        if total > limits.max_ratio * archive_bytes:
            raise ArchiveError(f"member {raw!r} brings the members to more than {limits.max_ratio:g} times the archive's "
                               f"{archive_bytes} bytes (a compression bomb?)")
        if not name and is_dir:
            continue  # the archive's own folder, './'
        if not name:
            raise ArchiveError(f"member {raw!r} is a file without a name")
        if (first := seen.get(_key(name))) is not None:
            raise ArchiveError(f"member {raw!r} duplicates {first!r} (names must differ by more than letter case or a "
                               "trailing '/')")
        seen[_key(name)] = raw
        members.append(Member(name, size, is_dir))
    files = {_key(m.name): m.name for m in members if not m.is_dir}
    for member in members:
        parts = member.name.split("/")
        for depth in range(1, len(parts)):
            if (file := files.get(_key("/".join(parts[:depth])))) is not None:
                raise ArchiveError(f"member {member.name!r} lies inside {file!r}, which is a file")
    return members


def _is_junk(name: str) -> bool:
    """What macOS and Windows archivers add: __MACOSX/, AppleDouble ._ files, .DS_Store, Thumbs.db."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1] in JUNK_FILES or parts[-1].startswith("._")


def inspect_archive(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> tuple[str, list[Member]]:
    """The archive's kind ('zip' or 'tar', by content) and its members, every rule checked before anything is
    extracted; ArchiveError naming the first offending member (or the archive) and the rule."""
    path = Path(path)
    if (size := path.stat().st_size) > limits.max_upload_bytes:
        raise UploadTooLarge(f"the archive is {size} bytes; the limit is {limits.max_upload_bytes} bytes")
    kind = _kind(path)
    with closing(_entries(path, kind, limits)) as entries:
        return kind, _check(path, entries, limits)


def _root(members: list[Member]) -> str:
    """'' when submission.json is at the archive's top, else the one top-level folder holding it."""
    files = {m.name for m in members if not m.is_dir and not _is_junk(m.name)}
    if HEADER_FILE in files:
        return ""
    candidates = sorted(name.split("/")[0] for name in files if name.count("/") == 1 and name.endswith("/" + HEADER_FILE))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ArchiveError(f"the archive has {HEADER_FILE} in {len(candidates)} folders ({', '.join(candidates[:5])}); "
                           "upload one submission")
    raise ArchiveError(f"the archive has no {HEADER_FILE} at its top or in a single top-level folder")


# ---------------------------------------------------------------- extracting


def _copy(source: IO[bytes], target: Path, raw: str, limits: ArchiveLimits, total: int) -> int:
    """Copy one member's bytes into a new file, counting them (headers can lie); the new running total."""
    written = 0
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as handle:
        os.fchmod(handle.fileno(), 0o644)
        while True:
            try:
                chunk = source.read(CHUNK)
            except ArchiveError:
                raise
            except READ_ERRORS as error:
                raise ArchiveError(f"member {raw!r} is damaged or truncated ({_reason(error)})") from None
            if not chunk:
                return total
            written, total = written + len(chunk), total + len(chunk)
            if written > limits.max_member_bytes:
                raise ArchiveError(f"member {raw!r} holds more than {limits.max_member_bytes} bytes, more than it declares")
            if total > limits.max_total_bytes:
                raise ArchiveError(f"member {raw!r} brings the members to more than {limits.max_total_bytes} bytes")
            handle.write(chunk)


def _folder(destination: Path, name: str) -> Path:
    """destination/name as a folder (mode 0755), with its parents."""
    path = destination
    for part in name.split("/") if name else []:
        path = path / part
        if not path.is_dir():
            path.mkdir(mode=0o755)
            os.chmod(path, 0o755)
    return path


def extract_archive(path: Path, destination: Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Check, then extract the archive's files and folders into `destination` (created; it must not exist) and
    return the submission root. Sizes are counted while copying; on any error `destination` is removed."""
    path, destination = Path(path), Path(destination)
    if os.path.lexists(destination):
        raise FileExistsError(f"{destination} already exists; extract into a new folder")
    kind, members = inspect_archive(path, limits)
    root = _root(members)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.mkdir(mode=0o755)
    try:
        os.chmod(destination, 0o755)
        total = 0
        with closing(_entries(path, kind, limits)) as entries:
            named = (entry for entry in entries if _normalise(entry[0], limits))  # as _check: without './'
            for member, (raw, *_, open_member) in zip(members, named, strict=True):
                if _is_junk(member.name):
                    continue
                if member.is_dir:
                    _folder(destination, member.name)
                    continue
                parent, _, base = member.name.rpartition("/")
                try:
                    opened = open_member()
                except READ_ERRORS as error:  # ArchiveError included: its reason is kept
                    raise ArchiveError(f"member {raw!r} cannot be read ({_reason(error)})") from None
                with opened as source:
                    total = _copy(source, _folder(destination, parent) / base, raw, limits, total)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return _folder(destination, root)


__all__ = ["ArchiveError", "ArchiveLimits", "Member", "UploadTooLarge", "extract_archive", "inspect_archive",
           "receive_upload", "receive_upload_async"]
