"""Receiving an upload: streamed chunks written to disk atomically, hashed and counted, cut off past a byte limit.

    size, sha256 = await receive_upload_async(request.stream(), work / "upload", max_bytes)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import BinaryIO

from ..utils import atomic_path
from .records import UploadTooLarge


class _Sink:
    """Writes an upload's chunks to a handle, hashing and counting them; UploadTooLarge past `max_bytes`."""

    def __init__(self, handle: BinaryIO, max_bytes: int) -> None:
        self.handle, self.max_bytes, self.size, self.digest = handle, max_bytes, 0, hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise UploadTooLarge(f"the upload is larger than the limit of {self.max_bytes} bytes")
        self.digest.update(chunk)
        self.handle.write(chunk)


def receive_upload(chunks: Iterable[bytes], destination: Path, max_bytes: int) -> tuple[int, str]:
    """Write streamed chunks to `destination` atomically (a partial upload leaves nothing); (size, sha256 hex).
    UploadTooLarge as soon as more than `max_bytes` arrived."""
    destination = Path(destination)
    with atomic_path(destination) as temporary, temporary.open("wb") as handle:
        sink = _Sink(handle, max_bytes)
        for chunk in chunks:
            sink.write(chunk)
    return sink.size, sink.digest.hexdigest()


async def receive_upload_async(chunks: AsyncIterable[bytes], destination: Path, max_bytes: int) -> tuple[int, str]:
    """receive_upload for an ASGI request stream (Starlette's request.stream())."""
    destination = Path(destination)
    with atomic_path(destination) as temporary, temporary.open("wb") as handle:
        sink = _Sink(handle, max_bytes)
        async for chunk in chunks:
            sink.write(chunk)
    return sink.size, sink.digest.hexdigest()
