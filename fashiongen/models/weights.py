"""Weight files: the dtypes they are written in, their sha256, and reading one back with the finite check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..utils import first_line
from .info import ModelFileError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or malformed file, or one holding NaN or infinite values (a diverged
    model draws uniformly black images, and a recomputed checksum cannot tell), raises ModelFileError naming it."""
    try:
        state = load_file(path)
    except Exception as error:  # safetensors raises SafetensorError, OSError, or others on a damaged file
        reason = first_line(error)
        raise ModelFileError(f"{path}: not a readable safetensors file ({reason})") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: tensor {name} holds NaN or infinite values (a diverged or damaged model); "
                                 "export an earlier checkpoint or re-download the model")
    return state
