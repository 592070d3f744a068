"""A zip's layout, checked before its members are trusted: a zip is read from its end (the central directory),
so bytes before, between or after its members, and local headers that disagree with the directory, would go unseen.

    check_zip_layout(path, archive)      # ArchiveError naming the member or the rule

The archive must start with a member's local header at offset 0, its members and their data descriptors must
follow one another without a gap, the central directory must follow the last member, and the end record (with a
comment of at most MAX_COMMENT_BYTES) must end the file. Each local header must repeat the directory's name,
compression method, flags and (without a data descriptor) sizes and CRC.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from .records import ArchiveError

END_RECORD = struct.Struct("<4s4H2LH")  # signature, disks, entries on disk, entries, directory size, offset, comment
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name, extra
MAX_COMMENT_BYTES = 1024
DESCRIPTOR_FLAG, UTF8_FLAG = 0x08, 0x800


def zip_directory(path: Path) -> tuple[int, int] | None:
    """(entries, bytes) of a zip's central directory as its end record declares them, read before zipfile loads it all."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, end - 22 - 2**16))
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        count, size = struct.unpack("<HL", tail[at + 10: at + 16])
        if (count == 0xFFFF or size == 0xFFFFFFFF) and at >= 20 and tail[at - 20: at - 16] == b"PK\x06\x07":
            handle.seek(struct.unpack("<Q", tail[at - 12: at - 4])[0])
            record = handle.read(56)
            if len(record) == 56 and record.startswith(b"PK\x06\x06"):
                count, size = struct.unpack("<2Q", record[32:48])
    return count, size


def _end_record(handle: BinaryIO, size: int) -> tuple[int, int, int]:
    """(directory offset, directory size, where the directory must end) from the end record that ends the file."""
    handle.seek(max(0, size - END_RECORD.size - MAX_COMMENT_BYTES))
    tail = handle.read()
    base = size - len(tail)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and (len(tail) - at < END_RECORD.size or at + END_RECORD.size + END_RECORD.unpack_from(tail, at)[7] != len(tail)):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise ArchiveError(f"the zip's end record is not at the end of the file (bytes appended after it, or a "
                             f"comment over {MAX_COMMENT_BYTES} bytes)")
    *_, entries, directory_size, directory_offset, _ = END_RECORD.unpack_from(tail, at)
    end = base + at
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF or directory_offset == 0xFFFFFFFF:
        handle.seek(end - ZIP64_LOCATOR.size)
        signature, _, record_at, _ = ZIP64_LOCATOR.unpack(handle.read(ZIP64_LOCATOR.size))
        handle.seek(record_at)
        raw = handle.read(ZIP64_END_RECORD.size)
        if signature != b"PK\x06\x07" or len(raw) < ZIP64_END_RECORD.size or not raw.startswith(b"PK\x06\x06"):
            raise ArchiveError("the zip's zip64 end records are damaged")
        fields = ZIP64_END_RECORD.unpack(raw)
        if record_at + 12 + fields[1] != end - ZIP64_LOCATOR.size:
            raise ArchiveError("the zip has bytes between its zip64 end records")
        directory_size, directory_offset, end = fields[8], fields[9], record_at
    return directory_offset, directory_size, end


def _extra_fields(extra: bytes) -> dict[int, bytes]:
    """A local header's extra field as {header id: data}."""
    fields, at = {}, 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        fields[kind] = extra[at + 4: at + 4 + length]
        at += 4 + length
    return fields


def _local_sizes(zip64: bytes | None, sizes: tuple[int, int]) -> tuple[int, int]:
    """(compressed, uncompressed) of a local header, from its zip64 extra field where the header says 0xFFFFFFFF."""
    compressed, uncompressed = sizes
    values = list(struct.unpack_from(f"<{min(len(zip64) // 8, 2)}Q", zip64)) if zip64 else []
    if uncompressed == 0xFFFFFFFF and values:
        uncompressed = values.pop(0)
    if compressed == 0xFFFFFFFF and values:
        compressed = values.pop(0)
    return compressed, uncompressed


def _member_end(handle: BinaryIO, info: zipfile.ZipInfo, size: int) -> int:
    """Where a member (local header, data, data descriptor) ends; ArchiveError where its header disagrees."""
    handle.seek(info.header_offset)
    raw = handle.read(LOCAL_HEADER.size)
    if len(raw) < LOCAL_HEADER.size or not raw.startswith(b"PK\x03\x04"):
        raise ArchiveError(f"member {info.orig_filename!r} has no local header where the zip's directory points")
    _, _, flags, method, _, _, crc, compressed, uncompressed, name_length, extra_length = LOCAL_HEADER.unpack(raw)
    name = handle.read(name_length)
    extra = handle.read(extra_length)
    local_name = name.decode("utf-8" if flags & UTF8_FLAG else "cp437", "replace")
    if local_name != info.orig_filename:
        raise ArchiveError(f"member {info.orig_filename!r} is named {local_name!r} in its local header")
    if method != info.compress_type or (flags ^ info.flag_bits) & (DESCRIPTOR_FLAG | 0x1):
        raise ArchiveError(f"member {info.orig_filename!r} has a local header whose compression or flags differ "
                             "from the zip's directory")
    zip64 = _extra_fields(extra).get(1)
    if not flags & DESCRIPTOR_FLAG:
        compressed, uncompressed = _local_sizes(zip64, (compressed, uncompressed))
        if (compressed, uncompressed, crc) != (info.compress_size, info.file_size, info.CRC):
            raise ArchiveError(f"member {info.orig_filename!r} has a local header whose sizes or checksum differ "
                                 "from the zip's directory")
    end = info.header_offset + LOCAL_HEADER.size + name_length + extra_length + info.compress_size
    if flags & DESCRIPTOR_FLAG:
        handle.seek(end)
        signed = handle.read(4) == b"PK\x07\x08"
        wide = zip64 is not None or info.compress_size >= 0xFFFFFFFF or info.file_size >= 0xFFFFFFFF
        end += (4 if signed else 0) + (20 if wide else 12)
    if end > size:
        raise ArchiveError(f"member {info.orig_filename!r} runs past the end of the file")
    return end


def check_zip_layout(path: Path, archive: zipfile.ZipFile) -> None:
    """ArchiveError unless the zip's bytes are exactly its members, their directory and its end record."""
    size = Path(path).stat().st_size
    with Path(path).open("rb") as handle:
        if handle.read(4) != b"PK\x03\x04" and size > END_RECORD.size:
            raise ArchiveError("the zip does not start with a member at offset 0 (bytes were prepended?)")
        directory_offset, directory_size, directory_end = _end_record(handle, size)
        expected = 0
        for info in sorted(archive.infolist(), key=lambda member: member.header_offset):
            if info.header_offset != expected:
                raise ArchiveError(f"the zip has {info.header_offset - expected} bytes before member "
                                     f"{info.orig_filename!r} that belong to no member")
            expected = _member_end(handle, info, size)
        if expected != directory_offset or directory_offset + directory_size != directory_end:
            raise ArchiveError("the zip has bytes between its last member, its directory and its end record "
                                 "that belong to none of them")
