"""What travels to a lent GPU machine, and making the checkout small enough for it.

The lending tool copies the checkout's tracked files, its untracked files that git does not ignore, a `shared/`
folder inside it, and the ignored paths a call carries; at most 64 MiB in all. `travelling_files` counts exactly
those files as they are on disk now (a tracked file that is missing does not travel). The shipped weights, the docs,
the test fixtures and the benchmarks are 82 of the tracked tree's 84 MiB, and the GPU run reads none of them:
`stage_out` moves them to a folder beside the checkout, recording each with its sha256 in that folder's manifest;
`restore` moves every one back, checks its bytes, and may run any number of times (after a failed or killed call
too, and when nothing was staged).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import UserError
from ..utils import atomic_write_text

MIB = 2**20
LIMIT_MIB = 60.0  # the tool's limit is 64 MiB; the rest is headroom for files that appear before the call
# Tracked files the GPU run never reads: the shipped models' weights (60 MiB), the docs (21.6 MiB, pictures mostly),
# the legacy-format test fixtures (1.4 MiB; tests/test_cuda.py builds its own) and the benchmarks' results.
STAGED_PATTERNS = ("fashiongen/*.safetensors", "docs/*", "tests/fixtures/*", "benchmarks/*")
MANIFEST = "manifest.json"


class TravelError(UserError):
    """The checkout cannot be measured, staged or restored as asked (not a git checkout, a foreign stash...)."""


def repo_root(start: Path) -> Path:
    """The git checkout holding `start`."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise TravelError(f"{start}: not inside a git checkout (the lending tool sends a checkout's files)") from None
    return Path(out.stdout.strip())


def _git_files(repo: Path, *args: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=repo, capture_output=True, check=True).stdout
    return [name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]


def tracked_files(repo: Path) -> list[str]:
    return _git_files(repo, "--cached")


def _files_under(path: Path) -> list[Path]:
    if path.is_symlink() or path.is_file():
        return [path]
    return [Path(root) / name for root, _, names in os.walk(path) for name in names] if path.is_dir() else []


def travelling_files(repo: Path, carry: list[str]) -> dict[str, int]:
    """Every file the tool would send, relative to `repo`, with its size in bytes (a link counts as itself)."""
    names = set(_git_files(repo, "--cached", "--others", "--exclude-standard"))
    for extra in ["shared", *carry]:
        names.update(str(p.relative_to(repo)) for p in _files_under(repo / extra))
    sizes = {}
    for name in sorted(names):
        try:
            sizes[name] = (repo / name).lstat().st_size
        except FileNotFoundError:
            continue  # tracked but staged out (or deleted): it does not travel
    return sizes


def travelling_mib(repo: Path, carry: list[str]) -> float:
    return sum(travelling_files(repo, carry).values()) / MIB


def stageable(repo: Path, patterns: tuple[str, ...] = STAGED_PATTERNS) -> list[str]:
    """Tracked files, present now, that match `patterns` (fnmatch: '*' crosses folders)."""
    return [name for name in tracked_files(repo) if any(fnmatch.fnmatch(name, p) for p in patterns)
            and (repo / name).is_file()]


def default_stash(repo: Path) -> Path:
    """Beside the checkout, so that it never travels: ../.NAME-gpu-staged."""
    return repo.parent / f".{repo.name}-gpu-staged"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_manifest(stash: Path, repo: Path) -> dict:
    path = stash / MANIFEST
    if not path.exists():
        return {"repo": str(repo), "files": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TravelError(f"{path}: not a staging manifest ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise TravelError(f"{path}: not a staging manifest (no 'files' object)")
    if manifest.get("repo") != str(repo):
        raise TravelError(f"{path}: holds files staged out of {manifest.get('repo')}, not {repo}; "
                          "pass --stash with this checkout's own folder")
    return manifest


def stage_out(repo: Path, stash: Path, names: list[str]) -> dict[str, str]:
    """Move `names` out of the checkout into `stash`, recording each one's sha256 in the manifest before it moves
    (so a kill at any point leaves every file either in place or recorded and in the stash)."""
    manifest = _read_manifest(stash, repo)
    stash.mkdir(parents=True, exist_ok=True)
    for name in names:
        source, kept = repo / name, stash / "files" / name
        manifest["files"][name] = _sha256(source)
        atomic_write_text(stash / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, kept)
    return manifest["files"]


def restore(repo: Path, stash: Path) -> list[str]:
    """Move every staged file back (byte-identical, checked); returns the names restored. Nothing staged: []."""
    manifest = _read_manifest(stash, repo)
    restored = []
    for name, digest in sorted(manifest["files"].items()):
        target, kept = repo / name, stash / "files" / name
        if kept.exists():
            if _sha256(kept) != digest:
                raise TravelError(f"{kept}: its bytes differ from those staged out of {name}; left where it is")
            if target.exists() and _sha256(target) != digest:
                raise TravelError(f"{target}: changed while staged out; {kept} kept, resolve by hand")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(kept, target)
        elif not (target.exists() and _sha256(target) == digest):
            raise TravelError(f"{name}: staged out but neither in {kept} nor back in place")
        restored.append(name)
        del manifest["files"][name]
        atomic_write_text(stash / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if stash.exists() and not manifest["files"]:
        shutil.rmtree(stash)
    return restored


__all__ = ["LIMIT_MIB", "MIB", "STAGED_PATTERNS", "TravelError", "default_stash", "repo_root", "restore",
           "stage_out", "stageable", "tracked_files", "travelling_files", "travelling_mib"]
