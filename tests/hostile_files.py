"""Small files that claim to be big: decompression-bomb PNGs written row by row, never held in memory at full size."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def write_png_bomb(path: Path, width: int, height: int, bit_depth: int = 1) -> Path:
    """A valid grey PNG of width x height, all black: 20000x20000 at 1 bit is ~50 KB on disk, 400 MP (1.2 GB as RGB) decoded."""
    row = b"\x00" + bytes(-(-width * bit_depth // 8))  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    compressed = [packer.compress(row * min(64, height - start)) for start in range(0, height, 64)]
    compressed.append(packer.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(compressed)) + chunk(b"IEND", b""))
    return path
