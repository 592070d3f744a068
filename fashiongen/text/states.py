"""The caption states of one fixed set of captions in one read-only memory-mapped file, shared by every process.

    states = resident_states(cache, captions)   # written once (one writer, under a lock), then mapped
    cache.attach(states)                         # cache.get_many now reads these captions without a query

Training reads one caption per example: a SQLite query each was 37% of example time, and loading the whole cache
into every rank was ~10 GB a rank for FashionGen's 128-token paragraphs. A mapped file costs neither: a lookup is a
binary search over mapped keys, and the OS page cache holds one copy for all ranks and DataLoader workers.

The file is `{cache_dir}/{identity}-{digest}.states`, digest = sha256 of the captions' sorted keys, so another set
of captions (another split, a data set converted again) names another file and a stale array is never read. After
a 4 KiB header (magic, then JSON), each section 64-byte aligned, rows in key order:
    prefixes  uint64 [N]     first 8 bytes of each key read big-endian: searchable without a dict in each process
    keys      uint8 [N, 32]  sha256 of the caption text (cache.caption_key)
    offsets   int64 [N + 1]  caption i's tokens are tokens[offsets[i] : offsets[i + 1]]
    truncated uint8 [N]
    pooled    float32 [N, D]
    tokens    float32 [T, D] the SQLite rows' float32 bytes as they are: the model gets the same values
It is written through utils.atomic_path, so a killed writer leaves no half file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import os
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..utils import LockHeld, atomic_path, lock_with_pid, remove_stale_temporaries
from .cache import CachedEmbedding, EmbeddingCache, caption_key

logger = logging.getLogger(__name__)

MAGIC = b"FGSTATES"
FORMAT = 1
HEADER_BYTES = 4096
STALL_TIMEOUT_S = 1800.0  # give up waiting on another process after this long without any progress
_ALIGN = 64
_WRITE_CHUNK = 512  # captions read from SQLite per step while writing
_LOG_EVERY_S = 30.0


class StatesFileError(UserError, ValueError):
    """A caption-states file that cannot be used; `repairable` when it is ours but incomplete (it is written again)."""

    def __init__(self, path: Path, reason: str, repairable: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.repairable = repairable


def captions_digest(keys: Iterable[bytes]) -> str:
    """sha256 over the sorted distinct caption keys: names one set of captions, whatever their order."""
    digest = hashlib.sha256()
    for key in sorted(set(keys)):
        digest.update(key)
    return digest.hexdigest()


def states_path(cache: EmbeddingCache, digest: str) -> Path:
    return cache.directory / f"{cache.identity}-{digest[:16]}.states"


def _layout(count: int, dim: int, tokens: int) -> tuple[dict[str, tuple[int, int]], int]:
    """(offset, bytes) of each section and the file's size, for N captions, D dims and T tokens in all."""
    sizes = {"prefixes": 8 * count, "keys": 32 * count, "offsets": 8 * (count + 1), "truncated": count,
             "pooled": 4 * count * dim, "tokens": 4 * tokens * dim}
    spans, position = {}, HEADER_BYTES
    for name, size in sizes.items():
        spans[name] = (position, size)
        position = -(-(position + size) // _ALIGN) * _ALIGN
    return spans, position


def _read_header(handle: BinaryIO, path: Path, identity: str, digest: str) -> dict[str, Any]:
    """The header of an open states file, checked against the encoder identity, caption digest and file size."""
    head = handle.read(HEADER_BYTES)
    if not head.startswith(MAGIC):
        raise StatesFileError(path, "not a caption-states file (no FGSTATES magic); remove it")
    try:
        header = json.loads(head[len(MAGIC):].rstrip(b" \0").decode("utf-8"))
        count, dim, tokens = int(header["count"]), int(header["dim"]), int(header["tokens"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise StatesFileError(path, "unreadable header (cut short?)", repairable=True) from None
    if header.get("format") != FORMAT:
        raise StatesFileError(path, f"format {header.get('format')}, not {FORMAT}", repairable=True)
    if header.get("identity") != identity:
        raise StatesFileError(path, f"holds states of encoder '{header.get('identity')}', not '{identity}'; remove it")
    if header.get("captions") != digest:
        raise StatesFileError(path, "holds another set of captions than its name says; remove it")
    size, expected = os.fstat(handle.fileno()).st_size, _layout(count, dim, tokens)[1]
    if size != expected:
        raise StatesFileError(path, f"truncated or padded: {size} bytes, expected {expected}", repairable=True)
    return header


class CaptionStates:
    """Caption key -> CachedEmbedding from a mapped states file; picklable (a spawned worker maps the file again)."""

    def __init__(self, path: str | Path, identity: str, digest: str) -> None:
        self.path, self.identity, self.digest = Path(path), identity, digest
        self._map()

    def _map(self) -> None:
        with open(self.path, "rb") as handle:
            header = _read_header(handle, self.path, self.identity, self.digest)
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # the mapping outlives the descriptor
        count, self.dim = int(header["count"]), int(header["dim"])
        spans, _ = _layout(count, self.dim, int(header["tokens"]))

        def section(name: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
            offset, size = spans[name]
            if size == 0:
                return np.zeros(shape, dtype)
            return np.frombuffer(mapped, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset).reshape(shape)

        self._prefixes = section("prefixes", np.uint64, (count,))
        self._keys = section("keys", np.uint8, (count, 32))
        self._offsets = section("offsets", np.int64, (count + 1,))
        self._truncated = section("truncated", np.uint8, (count,))
        self._pooled = section("pooled", np.float32, (count, self.dim))  # [N, D]
        self._tokens = section("tokens", np.float32, (int(header["tokens"]), self.dim))  # [T, D]

    def row(self, key: bytes) -> int | None:
        """The row of a caption key, by binary search on the mapped prefixes; None when the set does not hold it."""
        prefix = np.uint64(int.from_bytes(key[:8], "big"))
        row = int(np.searchsorted(self._prefixes, prefix))
        while row < len(self._prefixes) and self._prefixes[row] == prefix:
            if self._keys[row].tobytes() == key:
                return row
            row += 1
        return None

    def get(self, key: bytes) -> CachedEmbedding | None:
        """A caption's embedding as the SQLite cache returns it (fresh float32 tensors); None when not held."""
        row = self.row(key)
        if row is None:
            return None
        token_states = np.array(self._tokens[self._offsets[row] : self._offsets[row + 1]])  # [L_i, D]
        return CachedEmbedding(torch.from_numpy(token_states), torch.from_numpy(np.array(self._pooled[row])),
                               bool(self._truncated[row]))

    def __len__(self) -> int:
        return len(self._prefixes)

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)  # T, over every caption

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "identity": self.identity, "digest": self.digest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.identity, self.digest = state["path"], state["identity"], state["digest"]
        self._map()

    def __repr__(self) -> str:
        return f"CaptionStates({str(self.path)!r}, captions={len(self)}, dim={self.dim})"


def _write(handle: BinaryIO, offset: int, array: np.ndarray) -> None:
    handle.seek(offset)
    handle.write(np.ascontiguousarray(array).tobytes())


def write_states(cache: EmbeddingCache, keys: Sequence[bytes], path: Path, digest: str) -> None:
    """Write the stored states of `keys` (sorted, all in the cache) to `path` in one atomic replacement."""
    shapes = cache.shapes(keys)
    if len(shapes) != len(keys):
        raise RuntimeError(f"{len(keys) - len(shapes)} of {len(keys)} captions are not in {cache.path}; encode them first")
    dims = {dim for _, dim, _ in shapes.values()}
    if len(dims) != 1:
        raise RuntimeError(f"{cache.path} holds rows of several widths {sorted(dims)} for one encoder")
    dim = dims.pop()
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([shapes[key][0] for key in keys], out=offsets[1:])
    spans, size = _layout(len(keys), dim, int(offsets[-1]))
    header = json.dumps({"format": FORMAT, "identity": cache.identity, "captions": digest, "count": len(keys),
                         "dim": dim, "tokens": int(offsets[-1])}).encode("utf-8")
    with atomic_path(path) as temporary, open(temporary, "r+b") as handle:
        handle.truncate(size)
        handle.write((MAGIC + header).ljust(HEADER_BYTES, b" "))
        _write(handle, spans["prefixes"][0], np.array([int.from_bytes(key[:8], "big") for key in keys], dtype=np.uint64))
        _write(handle, spans["keys"][0], np.frombuffer(b"".join(keys), dtype=np.uint8))
        _write(handle, spans["offsets"][0], offsets)
        _write(handle, spans["truncated"][0], np.array([shapes[key][2] for key in keys], dtype=np.uint8))
        for start in range(0, len(keys), _WRITE_CHUNK):
            chunk = keys[start : start + _WRITE_CHUNK]
            loaded = cache.load(chunk)
            _write(handle, spans["pooled"][0] + 4 * dim * start, torch.stack([loaded[key].pooled for key in chunk]).numpy())
            tokens = torch.cat([loaded[key].token_states for key in chunk]).numpy()  # [sum L_i, D]
            _write(handle, spans["tokens"][0] + 4 * dim * int(offsets[start]), tokens)
        handle.flush()
        os.fsync(handle.fileno())


def wait_with_progress(what: str, ready: Callable[[], bool], progress: Callable[[], object],
                       stall_timeout_s: float = STALL_TIMEOUT_S, poll_s: float = 1.0) -> None:
    """Poll `ready` until it is true, logging what it waits for every 30 s; TimeoutError naming `what` once
    `progress` has not changed for stall_timeout_s (a slow but working writer is waited for however long it takes)."""
    last, changed, logged = progress(), time.monotonic(), time.monotonic()
    while not ready():
        now, current = time.monotonic(), progress()
        if current != last:
            last, changed = current, now
        elif now - changed > stall_timeout_s:
            raise TimeoutError(f"waited {stall_timeout_s:.0f} s without progress for {what}")
        if now - logged >= _LOG_EVERY_S:
            logger.info("waiting for %s", what)
            logged = now
        time.sleep(poll_s)


def _open_if_sound(path: Path, identity: str, digest: str) -> CaptionStates | None:
    """The mapped file; None when it is absent or incomplete (then it is written again); refused when foreign."""
    try:
        return CaptionStates(path, identity, digest)
    except FileNotFoundError:
        return None
    except StatesFileError as error:
        if not error.repairable:
            raise
        logger.warning("%s; writing it again", error)
        return None


def _lock_free(lock: Path) -> bool:
    descriptor = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)  # closing drops a lock taken here


def _temporaries(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What a writer of `path` has written so far (its temporaries' names, blocks, modification times)."""
    found = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stat = candidate.stat()
        except FileNotFoundError:
            continue
        found.append((candidate.name, stat.st_blocks, stat.st_mtime_ns))
    return tuple(sorted(found))


def resident_states(cache: EmbeddingCache, captions: Iterable[str], stall_timeout_s: float = STALL_TIMEOUT_S) -> CaptionStates:
    """The mapped states of `captions` (all stored in `cache`): opened when written already, else written by the one
    process that takes its lock while the others wait; a killed writer's lock goes with it and the next one writes."""
    keys = sorted({caption_key(caption) for caption in captions})
    digest = captions_digest(keys)
    path = states_path(cache, digest)
    lock = path.with_name(path.name + ".lock")
    while (states := _open_if_sound(path, cache.identity, digest)) is None:
        try:
            descriptor = lock_with_pid(lock)
        except LockHeld as held:
            wait_with_progress(f"{path}, which process {held.pid} is writing", lambda: _lock_free(lock),
                               lambda: _temporaries(path), stall_timeout_s)
            continue
        try:
            if (states := _open_if_sound(path, cache.identity, digest)) is None:  # written while we took the lock?
                remove_stale_temporaries(path.parent, [path.name])
                began = time.perf_counter()
                write_states(cache, keys, path, digest)
                logger.info("wrote the states of %d captions to %s in %.1f s", len(keys), path, time.perf_counter() - began)
                states = CaptionStates(path, cache.identity, digest)
        finally:
            os.close(descriptor)
        return states
    return states
