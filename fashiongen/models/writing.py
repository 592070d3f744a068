"""Writing a model folder's files (weights, then model.json with their sha256 and its own digest), and copying an
unchanged model's files byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from ..config import Config, config_to_dict
from .info import (
    DESCRIPTION_DIGEST,
    INFO_FILE,
    MODEL_FORMAT,
    MODEL_VERSION,
    WEIGHTS_FILE,
    ModelFileError,
    ModelInfo,
    description_digest,
    legacy_family,
)
from .reading import read_info
from .weights import DTYPES, sha256_of


def training_description(config: Config, text_identity: str, text_dim: int,
                         training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The part of model.json every family writes alike: caption encoder, training data, training facts, config."""
    return {
        "text": {"encoder": config.text.encoder, "identity": text_identity, "max_length": config.text.max_length,
                 "normalize_pooled": config.text.normalize_pooled, "dim": text_dim},
        "data": {"source": config.data.source, "split": config.data.split, "resolution": config.data.resolution,
                 "caption_mode": config.data.caption_mode, "caption_template": config.data.caption_template},
        "training": training or {},
        "config": config_to_dict(config),
    }


def write_model_files(state_dict: Mapping[str, torch.Tensor], info: Mapping[str, Any] | ModelInfo, directory: Path,
                      dtype: str = "float32") -> ModelInfo:
    """model.safetensors + model.json into an existing (temporary) directory; returns the description written.
    `info` is everything but the weights entry and the digest, which are computed here."""
    raw = info.to_dict() if isinstance(info, ModelInfo) else dict(info)
    state = {name: tensor.detach().to("cpu", DTYPES[dtype]).contiguous() for name, tensor in state_dict.items()}
    save_file(state, directory / WEIGHTS_FILE, metadata={"format": MODEL_FORMAT})
    raw = {key: value for key, value in raw.items() if key not in ("weights", DESCRIPTION_DIGEST)}
    raw = {"format": MODEL_FORMAT, **raw, "version": MODEL_VERSION, "family": raw.get("family", legacy_family(raw))}
    raw["format"] = MODEL_FORMAT
    raw["weights"] = {"file": WEIGHTS_FILE, "dtype": dtype, "sha256": sha256_of(directory / WEIGHTS_FILE)}
    raw[DESCRIPTION_DIGEST] = description_digest(raw)
    (directory / INFO_FILE).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    (directory / WEIGHTS_FILE).chmod((directory / INFO_FILE).stat().st_mode)  # safetensors writes 0600
    return ModelInfo.from_dict(raw, directory / INFO_FILE)


def named_files(raw: Any) -> list[str]:
    """Every file a model.json names (its weights, a discriminator's weights...): the "file" of each entry that also
    records a sha256, at any depth."""
    if isinstance(raw, dict):
        own = [raw["file"]] if isinstance(raw.get("file"), str) and "sha256" in raw else []
        return own + [name for value in raw.values() for name in named_files(value)]
    if isinstance(raw, list):
        return [name for value in raw for name in named_files(value)]
    return []


def copy_unchanged(info: ModelInfo, source: Path, directory: Path, dtype: str) -> bool:
    """Copy `source`'s model.json and the files it names into `directory` byte for byte when they describe exactly
    `info` at `dtype`; False (nothing copied) otherwise. A model republished unchanged (a folder that gains a stage)
    then keeps its files: no second copy of its weights in git, every recorded sha256 still valid."""
    try:
        on_disk = read_info(source)
    except (ModelFileError, OSError):
        return False
    if on_disk.raw != info.raw or on_disk.weights is None or on_disk.weights.dtype != dtype:
        return False
    names = [INFO_FILE, *named_files(on_disk.raw)]
    if not all((source / name).is_file() and Path(name).name == name for name in names):
        return False
    for name in names:
        shutil.copyfile(source / name, directory / name)
    return sha256_of(directory / on_disk.weights.file) == on_disk.weights.sha256  # changed since it was loaded: rewrite
