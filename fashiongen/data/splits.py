"""Deterministic train/validation splits by id for sources without a split of their own."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "all")
_BUCKETS = 1_000_000
# A FashionGen-schema pair is two files that differ only in this suffix (the release's and `convert`'s names).
SPLIT_FILE_PATTERN = re.compile(r"_(train|validation)\.h5$")
CONVERT = "python -m fashiongen.data convert"


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


def split_of_file(path: Path) -> str | None:
    """'train' or 'validation' for a `NAME_train.h5` / `NAME_validation.h5` file, else None."""
    match = SPLIT_FILE_PATTERN.search(path.name)
    return match.group(1) if match else None


def sibling_file(path: Path, split: str) -> Path:
    """The other file of `path`'s pair: `NAME_train.h5` -> `NAME_validation.h5` beside it, and back."""
    return path.with_name(SPLIT_FILE_PATTERN.sub(f"_{split}.h5", path.name))


def missing_sibling_message(path: Path, sibling: Path, split: str, made: dict[str, Any]) -> str:
    """Why `sibling` is needed and the exact command that makes it, from `made` (the attributes `convert` stored in
    `path`: source, resolution, resize_mode); a file `convert` did not write (the release's own) needs its download."""
    reason = f"{sibling}: no such file; the '{split}' split of {path} is read from it"
    if "source" not in made or "resolution" not in made:
        return f"{reason}: download the release's {split} file to that path"
    source = Path(str(made["source"]))
    options = f" --size {int(made['resolution'])}"
    if made.get("resize_mode", "center-crop") != "center-crop":
        options += f" --resize-mode {made['resize_mode']}"
    if split_of_file(source):  # converted from one file of a pair: its sibling holds this split
        command = f"{CONVERT} {shlex.quote(str(sibling_file(source, split)))} {shlex.quote(str(sibling))}{options}"
        pair_source = source.parent
    else:  # a source split by hash: the same source, the other split
        command = f"{CONVERT} {shlex.quote(str(source))} --split {split} {shlex.quote(str(sibling))}{options}"
        pair_source = source
    folder = sibling.parent / SPLIT_FILE_PATTERN.sub("", path.name)
    return (f"{reason}; make it with: {command} (or convert both splits once into a folder: "
            f"{CONVERT} {shlex.quote(str(pair_source))} {shlex.quote(str(folder))}{options})")
