"""Disk cache of caption embeddings, so training never encodes the same caption twice.

One SQLite file per encoder identity (`{directory}/{identity}.sqlite`, WAL mode): concurrent
readers and writers in other processes (DataLoader workers, parallel runs) are safe, and each
`put_many` is one transaction, so a crash never leaves half a row. Rows are keyed by the sha256 of
the caption text and hold the unpadded token states [L_i, D] and pooled [D] as float32 blobs.
float32 rather than float16: a warm cache returns exactly what a cold run computes, so turning the
cache on or off never changes a result, at ~1.5 KB per token for D=384.

Training reads one caption per example; a query each was 37% of example time. So once a run's captions are all
stored, `attach` puts a read-only memory-mapped array of exactly those captions in front of SQLite (states.py):
lookups there need no query, and every process maps the same pages instead of holding its own copy.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .states import CaptionStates

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    key BLOB PRIMARY KEY,        -- sha256 of the caption text (utf-8)
    length INTEGER NOT NULL,     -- kept tokens L_i, special tokens included
    dim INTEGER NOT NULL,        -- D
    truncated INTEGER NOT NULL,  -- 1 if the caption was cut at max_length
    token_states BLOB NOT NULL,  -- float32 [L_i, D], C order
    pooled BLOB NOT NULL         -- float32 [D]
) WITHOUT ROWID;
"""
_LOOKUP_CHUNK = 500  # stay under SQLite's limit on bound parameters per statement


@dataclass(frozen=True)
class CachedEmbedding:
    """One caption's encoding without padding: what the cache stores and the encoder assembles."""

    token_states: Tensor  # [L_i, D] float32, cpu
    pooled: Tensor  # [D] float32, cpu
    truncated: bool


def caption_key(caption: str) -> bytes:
    return hashlib.sha256(caption.encode("utf-8")).digest()


class EmbeddingCache:
    """Caption -> CachedEmbedding for one encoder identity, persisted in `{directory}/{identity}.sqlite`."""

    def __init__(self, directory: str | Path, identity: str) -> None:
        if not identity or any(sep in identity for sep in ("/", "\\", os.sep)):
            raise ValueError(f"cache identity must be a non-empty file-name-safe string, got {identity!r}")
        self.directory = Path(directory)
        self.identity = identity
        self.path = self.directory / f"{identity}.sqlite"
        self.hits = 0  # distinct captions found, over this object's lifetime
        self.misses = 0  # distinct captions looked up and not found
        self._connection: sqlite3.Connection | None = None
        self._pid = -1
        self._inherited: list[sqlite3.Connection] = []
        self.resident: CaptionStates | None = None  # set by attach()
        self._connect()  # fail early on an unwritable directory or a file of another identity

    def _connect(self) -> sqlite3.Connection:
        """The connection of this process: a connection must not cross a fork, so workers open their own."""
        if self._connection is None or self._pid != os.getpid():
            if self._connection is not None:  # inherited through fork: keep it referenced, never close it here
                self._inherited.append(self._connection)
            self.directory.mkdir(parents=True, exist_ok=True)
            # A writer waits up to `timeout` for the write lock: ranks storing their shares at once queue behind each
            # other's transactions (1,024 captions of 128 tokens are ~200 MB in one), so the wait is generous.
            connection = sqlite3.connect(self.path, timeout=600.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            connection.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (self.identity,))
            (stored,) = connection.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
            if stored != self.identity:
                connection.close()
                raise ValueError(f"{self.path} holds embeddings of encoder '{stored}', not '{self.identity}'")
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _rows(self, keys: Sequence[bytes], columns: str) -> Iterator[tuple]:
        """Rows `columns` of the stored keys among `keys`, in chunks under SQLite's limit on bound parameters."""
        connection = self._connect()
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            yield from connection.execute(f"SELECT {columns} FROM embeddings WHERE key IN ({', '.join('?' * len(chunk))})", chunk)

    def load(self, keys: Sequence[bytes]) -> dict[bytes, CachedEmbedding]:
        """The stored embeddings of `keys` (caption_key values), without counting hits: for bulk readers."""
        found: dict[bytes, CachedEmbedding] = {}
        for key, length, dim, truncated, token_blob, pooled_blob in self._rows(keys, "key, length, dim, truncated, token_states, pooled"):
            token_states = np.frombuffer(token_blob, dtype=np.float32).reshape(length, dim)  # [L_i, D]
            pooled = np.frombuffer(pooled_blob, dtype=np.float32)  # [D]
            found[key] = CachedEmbedding(torch.from_numpy(token_states.copy()), torch.from_numpy(pooled.copy()), bool(truncated))
        return found

    def shapes(self, keys: Sequence[bytes]) -> dict[bytes, tuple[int, int, bool]]:
        """(tokens L_i, dim D, truncated) of the stored keys among `keys`, without reading their states."""
        return {key: (length, dim, bool(truncated)) for key, length, dim, truncated in self._rows(keys, "key, length, dim, truncated")}

    def missing(self, captions: Sequence[str]) -> list[str]:
        """The distinct captions not stored yet, in order; reads keys only, so a check of every caption of a data set
        never holds their states in memory (a full read was ~10 GB for FashionGen's 128-token paragraphs)."""
        keys = {caption_key(caption): caption for caption in dict.fromkeys(captions)}
        stored = {key for (key,) in self._rows(list(keys), "key")}
        return [caption for key, caption in keys.items() if key not in stored]

    def attach(self, resident: CaptionStates | None) -> None:
        """Serve the captions `resident` holds from it (a memory-mapped array, no query), the rest from SQLite."""
        self.resident = resident

    def get_many(self, captions: Sequence[str]) -> list[CachedEmbedding | None]:
        """Look up each caption; None where it is missing. Counts hits and misses per distinct caption."""
        keys = [caption_key(caption) for caption in captions]
        unique_keys = list(dict.fromkeys(keys))
        found: dict[bytes, CachedEmbedding] = {}
        if self.resident is not None:
            found = {key: item for key in unique_keys if (item := self.resident.get(key)) is not None}
        rest = [key for key in unique_keys if key not in found]
        if rest:
            found.update(self.load(rest))
        self.hits += len(found)
        self.misses += len(unique_keys) - len(found)
        return [found.get(key) for key in keys]

    def put_many(self, items: Iterable[tuple[str, CachedEmbedding]]) -> None:
        """Store (caption, embedding) pairs in one transaction; a caption already stored is kept as is."""
        rows = []
        for caption, embedding in items:
            token_states = embedding.token_states.detach().to("cpu", torch.float32).contiguous()  # [L_i, D]
            pooled = embedding.pooled.detach().to("cpu", torch.float32).contiguous()  # [D]
            length, dim = token_states.shape
            rows.append((caption_key(caption), length, dim, int(embedding.truncated), token_states.numpy().tobytes(), pooled.numpy().tobytes()))
        if not rows:
            return
        connection = self._connect()
        with connection:  # isolation_level=None: open the transaction explicitly, commit on exit
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        (count,) = self._connect().execute("SELECT COUNT(*) FROM embeddings").fetchone()
        return count

    def close(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None

    def __getstate__(self) -> dict:
        """Picklable for spawned DataLoader workers: the connection stays behind and is reopened there."""
        state = self.__dict__.copy()
        state["_connection"], state["_pid"], state["_inherited"] = None, -1, []
        return state

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"
