"""A model folder in pieces small enough to come back from a lent machine (at most 8 files of 16 MiB), and whole again.

    write_pieces(Path("runs/x/export"), out, run_id="a1b2c3")   # there: model.json, pieces.json, model.safetensors.NNN
    join_pieces(out, Path("joined"))                              # here: checksums verified, else PiecesError

pieces.json is written last, so a call killed while writing leaves pieces its (older) pieces.json does not match:
`join_pieces` refuses them rather than joining halves of two saves.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError

PIECE_BYTES = 15 * 2**20  # under the 16 MiB a returned file may have
PIECES_INFO = "pieces.json"
WEIGHTS, INFO = "model.safetensors", "model.json"


class PiecesError(UserError):
    """Pieces that are missing, truncated, from another save or another run."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_pieces(model_dir: Path, out: Path, run_id: str, step: int, max_pieces: int = 5) -> dict[str, Any]:
    """Split model_dir's weights into `out` (replacing earlier pieces of this run), then its model.json, then the
    manifest. More than `max_pieces` pieces is refused (the lending tool returns at most 8 files)."""
    weights = (model_dir / WEIGHTS).read_bytes()
    chunks = [weights[start : start + PIECE_BYTES] for start in range(0, len(weights), PIECE_BYTES)]
    if len(chunks) > max_pieces:
        raise PiecesError(f"{model_dir / WEIGHTS}: {len(weights) / 2**20:.1f} MiB needs {len(chunks)} pieces of 15 MiB, "
                          f"more than the {max_pieces} that can come back; train a smaller model or export float16")
    out.mkdir(parents=True, exist_ok=True)
    pieces = []
    for number, chunk in enumerate(chunks):
        name = f"{WEIGHTS}.{number:03d}"
        (out / f".{name}.tmp").write_bytes(chunk)
        os.replace(out / f".{name}.tmp", out / name)
        pieces.append({"name": name, "bytes": len(chunk), "sha256": _digest(chunk)})
    for stale in out.glob(f"{WEIGHTS}.*"):
        if stale.name not in {piece["name"] for piece in pieces}:
            stale.unlink()
    (out / INFO).write_bytes((model_dir / INFO).read_bytes())
    manifest = {"run_id": run_id, "step": step, "bytes": len(weights), "sha256": _digest(weights), "pieces": pieces,
                "model_json_sha256": _digest((model_dir / INFO).read_bytes())}
    (out / f".{PIECES_INFO}.tmp").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(out / f".{PIECES_INFO}.tmp", out / PIECES_INFO)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / PIECES_INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PiecesError(f"{folder}: no {PIECES_INFO}; not the --out folder of a GPU run (or it returned no weights)") from None
    except (OSError, ValueError) as error:
        raise PiecesError(f"{folder / PIECES_INFO}: unreadable ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("pieces"), list):
        raise PiecesError(f"{folder / PIECES_INFO}: not a pieces manifest")
    return manifest


def join_pieces(folder: Path, out: Path, run_id: str | None = None) -> dict[str, Any]:
    """model.safetensors and model.json in `out`, from `folder`'s pieces; every checksum verified."""
    manifest = read_manifest(folder)
    if run_id is not None and manifest.get("run_id") != run_id:
        raise PiecesError(f"{folder}: pieces of run {manifest.get('run_id')}, not {run_id}")
    parts = []
    for piece in manifest["pieces"]:
        path = folder / str(piece.get("name"))
        if not path.is_file():
            raise PiecesError(f"{path}: missing (the manifest lists {len(manifest['pieces'])} pieces)")
        data = path.read_bytes()
        if len(data) != piece.get("bytes") or _digest(data) != piece.get("sha256"):
            raise PiecesError(f"{path}: {len(data)} bytes that do not match the manifest (truncated, or from another save)")
        parts.append(data)
    weights = b"".join(parts)
    info = (folder / INFO).read_bytes() if (folder / INFO).is_file() else b""
    if _digest(weights) != manifest.get("sha256") or _digest(info) != manifest.get("model_json_sha256"):
        raise PiecesError(f"{folder}: the joined weights or model.json do not match {PIECES_INFO}")
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHTS).write_bytes(weights)
    (out / INFO).write_bytes(info)
    return manifest


__all__ = ["PIECES_INFO", "PIECE_BYTES", "PiecesError", "join_pieces", "read_manifest", "write_pieces"]
