"""Disk cache of caption embeddings, so training never encodes the same caption twice.

One SQLite file per encoder identity (`{directory}/{identity}.sqlite`, WAL mode): concurrent
readers and writers in other processes (DataLoader workers, parallel runs) are safe, and each
`put_many` is one transaction, so a crash never leaves half a row. Rows are keyed by the sha256 of
the caption text and hold the unpadded token states [L_i, D] and pooled [D] as float32 blobs.
float32 rather than float16: a warm cache returns exactly what a cold run computes, so turning the
cache on or off never changes a result, at ~1.5 KB per token for D=384.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

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
        self._connect()  # fail early on an unwritable directory or a file of another identity

    def _connect(self) -> sqlite3.Connection:
        """The connection of this process: a connection must not cross a fork, so workers open their own."""
        if self._connection is None or self._pid != os.getpid():
            if self._connection is not None:  # inherited through fork: keep it referenced, never close it here
                self._inherited.append(self._connection)
            self.directory.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
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

    def get_many(self, captions: Sequence[str]) -> list[CachedEmbedding | None]:
        """Look up each caption; None where it is missing. Counts hits and misses per distinct caption."""
        keys = [caption_key(caption) for caption in captions]
        unique_keys = list(dict.fromkeys(keys))
        found: dict[bytes, CachedEmbedding] = {}
        connection = self._connect()
        for start in range(0, len(unique_keys), _LOOKUP_CHUNK):
            chunk = unique_keys[start : start + _LOOKUP_CHUNK]
            rows = connection.execute(
                "SELECT key, length, dim, truncated, token_states, pooled FROM embeddings "
                f"WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for key, length, dim, truncated, token_blob, pooled_blob in rows:
                token_states = np.frombuffer(token_blob, dtype=np.float32).reshape(length, dim)  # [L_i, D]
                pooled = np.frombuffer(pooled_blob, dtype=np.float32)  # [D]
                found[key] = CachedEmbedding(torch.from_numpy(token_states.copy()), torch.from_numpy(pooled.copy()), bool(truncated))
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
