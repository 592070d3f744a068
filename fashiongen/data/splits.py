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


def join_identical(keys: list[str], hashes: list[str | None], val_fraction: float) -> tuple[list[str], int]:
    """Split keys under which rows with identical pixels never straddle the split; returns them and how many rows moved.

    Keys that share a photo are joined (union-find over key and content). A joined group with any
    training key is training: its validation rows take the group's smallest training key, so a copy
    of a training photo can only leave validation, never enter it, and a converted file that stores
    these keys splits the same way. Groups without a training key keep their keys.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for key, content in zip(keys, hashes):
        if content is not None:
            parent[find("key:" + key)] = find("pixels:" + content)
    training_key: dict[str, str] = {}
    for key in keys:
        if split_of(key, val_fraction) == "train":
            root = find("key:" + key)
            training_key[root] = min(training_key.get(root, key), key)
    joined, moved = [], 0
    for key in keys:
        target = key
        if split_of(key, val_fraction) == "validation":
            target = training_key.get(find("key:" + key), key)
            moved += target != key
        joined.append(target)
    return joined, moved
