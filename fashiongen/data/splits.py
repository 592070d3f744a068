"""Deterministic train/validation splits by id for sources without a split of their own."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "all")
_BUCKETS = 1_000_000


def split_of(key: str, val_fraction: float) -> str:
    """'validation' for a stable `val_fraction` share of keys (by SHA-1), else 'train'.

    The hash does not depend on the other records, so adding data never moves an old record.
    """
    bucket = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % _BUCKETS
    return "validation" if bucket < val_fraction * _BUCKETS else "train"
