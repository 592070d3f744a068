"""Reading a model: model.json checked (format, version, digest, fields), and the weights with their description
from an export, a checkpoint or a run directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import Config, ConfigError, load_config
from ..runs import EMA_FILE, STATE_FILE, MetricsLog, checkpoint_dirs, read_state, run_facts
from .info import (
    DESCRIPTION_DIGEST,
    INFO_FILE,
    LEGACY_FORMATS,
    MAX_INFO_BYTES,
    MODEL_FORMAT,
    MODEL_VERSION,
    ModelFileError,
    ModelInfo,
    description_digest,
)
from .weights import load_weights, sha256_of


def read_versioned_json(info_path: Path, formats: Mapping[str, int]) -> dict[str, Any]:
    """A JSON description, checked for one of our `formats` ({name: newest version this FashionGen reads})."""
    try:
        if info_path.stat().st_size > MAX_INFO_BYTES:
            raise ModelFileError(f"{info_path}: {info_path.stat().st_size} bytes, too large for a model description")
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{info_path}: not valid JSON ({error})") from None
    except OSError as error:
        raise ModelFileError(f"{info_path}: cannot be read ({error.strerror})") from None
    if not isinstance(info, dict):
        raise ModelFileError(f"{info_path}: expected a JSON object, got {type(info).__name__}")
    if not isinstance(info.get("version", 0), int):
        raise ModelFileError(f"{info_path}: version is {info.get('version')!r}, expected an integer")
    if info.get("format") not in formats:
        expected = " or ".join(repr(name) for name in formats)
        raise ModelFileError(f"{info_path}: format is {info.get('format')!r}, expected {expected}")
    if info.get("version", 0) > formats[info["format"]]:
        raise ModelFileError(f"{info_path}: version {info['version']} is newer than this FashionGen reads "
                             f"({formats[info['format']]})")
    return info


def read_info(path: str | Path) -> ModelInfo:
    """model.json of a model folder, checked (format, version, digest, fields), with a clear error when `path` is not one."""
    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise ModelFileError(f"{path} is not an exported FashionGen model (no {INFO_FILE})")
    raw = read_versioned_json(info_path, {MODEL_FORMAT: MODEL_VERSION, **LEGACY_FORMATS})
    recorded = raw.get(DESCRIPTION_DIGEST)
    if recorded is None and raw.get("version", 0) >= 2:
        raise ModelFileError(f"{info_path}: {DESCRIPTION_DIGEST}: missing (required from version 2)")
    if recorded is not None and recorded != description_digest(raw):
        raise ModelFileError(f"{info_path}: {DESCRIPTION_DIGEST}: does not match the file's content (model.json edited "
                             "or corrupted); re-export or re-download the model")
    if raw.get("weights") is None:
        raise ModelFileError(f"{info_path}: weights: expected {{file: NAME.safetensors in this folder, sha256, dtype}}")
    return ModelInfo.from_dict(raw, info_path)


@dataclass
class ModelFiles:
    """What a family needs to build a model for inference: its weights and either its model.json (an export) or,
    for a checkpoint, the resolved config and state.json it rebuilds the description from."""

    directory: Path  # where the weights came from
    state_dict: dict[str, torch.Tensor]
    info: ModelInfo | None = None  # exports
    config: Config | None = None  # checkpoints
    state: dict[str, Any] = field(default_factory=dict)  # checkpoints: state.json
    training: dict[str, Any] = field(default_factory=dict)  # checkpoints: the facts an export would record
    weights_sha256: str = ""

    @property
    def where(self) -> Path:
        return self.directory / (INFO_FILE if self.info is not None else STATE_FILE)


def _export_files(path: Path, verify: bool) -> ModelFiles:
    info = read_info(path)
    assert info.weights is not None
    weights = path / info.weights.file
    if not weights.is_file():
        raise ModelFileError(f"{path}: weights file {weights.name} is missing")
    if verify and sha256_of(weights) != info.weights.sha256:
        raise ModelFileError(f"{weights}: checksum does not match model.json (file corrupted or replaced); "
                             "re-export or re-download the model")
    return ModelFiles(path, load_weights(weights), info=info, weights_sha256=info.weights.sha256)


def _checkpoint_files(checkpoint: Path) -> ModelFiles:
    """A checkpoint's EMA weights with its resolved config and state (no Accelerate: inference needs neither
    optimizer nor RNG states), and the training facts an export of it would record."""
    try:
        config = load_config([checkpoint / "config.yaml"])
        state = read_state(checkpoint)
    except ConfigError as error:
        raise ModelFileError(str(error)) from None
    weights = checkpoint / EMA_FILE
    training = {"steps": state["step"], "images_seen": state.get("images_seen"), "run": checkpoint.parent.parent.name,
                "checkpoint": checkpoint.name, "num_processes": state.get("num_processes"),
                "images_per_step": state.get("images_per_step"), "mixed_precision": config.train.mixed_precision,
                "hardware": state.get("hardware"), "initialised_from": state.get("initialised_from")}
    metrics = checkpoint.parent.parent / "metrics.jsonl"
    if metrics.is_file():
        training.update(run_facts(MetricsLog(metrics).read(), state["step"]))
    return ModelFiles(checkpoint, load_weights(weights), config=config, state=state, training=training,
                      weights_sha256=sha256_of(weights))


def find_model_dir(path: str | Path) -> Path:
    """The folder whose weights `path` means: an exported model, a checkpoint, or a run directory (its newest
    checkpoint, else its export/)."""
    path = Path(path)
    if (path / INFO_FILE).is_file() or ((path / STATE_FILE).is_file() and (path / EMA_FILE).is_file()):
        return path
    if path.is_dir() and (checkpoints := checkpoint_dirs(path)):
        return find_model_dir(checkpoints[-1])
    if path.is_dir() and (path / "export" / INFO_FILE).is_file():
        return path / "export"
    if not path.exists():
        raise ModelFileError(f"model path {path} does not exist")
    raise ModelFileError(f"{path} is not a FashionGen model: expected an exported model ({INFO_FILE}), a pipeline "
                         f"folder, a checkpoint directory ({STATE_FILE} + {EMA_FILE}) or a run directory "
                         "with checkpoints")


def read_model_files(path: str | Path, verify: bool = True) -> ModelFiles:
    """The weights (checksum verified) and description of an exported model, a checkpoint or a run directory."""
    directory = find_model_dir(path)
    if (directory / INFO_FILE).is_file():
        return _export_files(directory, verify)
    return _checkpoint_files(directory)
