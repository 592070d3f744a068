"""Exported models: EMA weights in safetensors plus a JSON description that rebuilds them.

    export_model(ema_model, config, text_identity, "runs/001-small64/export")
    model, info = load_exported("runs/001-small64/export")

model.json holds the architecture (no YAML needed), the diffusion settings, the caption encoder's
identity (a model trained with one encoder is useless with another), the attribute vocabulary,
training facts, the full config, and the sha256 of the weights, checked at load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import Config, config_to_dict, load_config
from ..diffusion import diffusion_settings
from ..models import FashionUNet, build_model
from .checkpoint import STATE_FILE, checkpoint_dirs, read_state
from .runs import MetricsLog, run_facts

EXPORT_FORMAT = "fashiongen-diffusion"
EXPORT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelFileError(ValueError):
    """A path is not an exported FashionGen model, or its weights do not match their recorded checksum."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def export_info(model: FashionUNet, config: Config, text_identity: str, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.json without its "weights" entry: everything that rebuilds and describes the model."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": model.description(),
        "diffusion": diffusion_settings(config.model),
        "text": {"encoder": config.text.encoder, "identity": text_identity, "max_length": config.text.max_length,
                 "normalize_pooled": config.text.normalize_pooled, "dim": model.description()["text_dim"]},
        "data": {"source": config.data.source, "split": config.data.split, "resolution": config.data.resolution,
                 "caption_mode": config.data.caption_mode, "caption_template": config.data.caption_template},
        "training": training or {},
        "config": config_to_dict(config),
    }


def write_model_files(model: FashionUNet, info: dict[str, Any], directory: Path, dtype: str = "float32") -> dict[str, Any]:
    """model.safetensors + model.json into an existing (temporary) directory; returns the info written."""
    state = {name: tensor.detach().to("cpu", DTYPES[dtype]).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE, metadata={"format": EXPORT_FORMAT})
    info = {**info, "weights": {"file": WEIGHTS_FILE, "dtype": dtype, "sha256": sha256_of(directory / WEIGHTS_FILE)}}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (directory / WEIGHTS_FILE).chmod((directory / INFO_FILE).stat().st_mode)  # safetensors writes 0600
    return info


def temporary_directory(out_dir: Path) -> Path:
    """A fresh hidden sibling of `out_dir` to fill before `replace_directory` swaps it in."""
    temporary = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def replace_directory(temporary: Path, out_dir: Path) -> Path:
    """Put a complete directory in place of `out_dir` by renames, so no reader ever sees half of one."""
    previous = out_dir.with_name(f".old-{out_dir.name}")
    if out_dir.exists():
        shutil.rmtree(previous, ignore_errors=True)
        out_dir.rename(previous)
    temporary.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
    return out_dir


def export_model(model: FashionUNet, config: Config, text_identity: str, out_dir: str | Path, *,
                 dtype: str = "float32", training: dict[str, Any] | None = None) -> Path:
    """Write model.safetensors + model.json into `out_dir`, replacing it only once both are complete."""
    out_dir = Path(out_dir)
    temporary = temporary_directory(out_dir)
    write_model_files(model, export_info(model, config, text_identity, training), temporary, dtype)
    return replace_directory(temporary, out_dir)


def read_versioned_json(info_path: Path, expected_format: str, max_version: int) -> dict[str, Any]:
    """A model's JSON description, checked for its format name and a version this FashionGen reads."""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{info_path}: not valid JSON ({error})") from None
    if info.get("format") != expected_format:
        raise ModelFileError(f"{info_path}: format is {info.get('format')!r}, expected {expected_format!r}")
    if info.get("version", 0) > max_version:
        raise ModelFileError(f"{info_path}: version {info['version']} is newer than this FashionGen reads ({max_version})")
    return info


def read_info(path: str | Path) -> dict[str, Any]:
    """model.json of an export directory, with a clear error when `path` is not one."""
    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise ModelFileError(f"{path} is not an exported FashionGen model (no {INFO_FILE})")
    return read_versioned_json(info_path, EXPORT_FORMAT, EXPORT_VERSION)


def load_exported(path: str | Path, device: str | torch.device = "cpu", dtype: str | None = None,
                  verify: bool = True) -> tuple[FashionUNet, dict[str, Any]]:
    """Rebuild the model from model.json and load its weights (checksum verified) on `device` in `dtype`."""
    path = Path(path)
    info = read_info(path)
    weights = path / info["weights"]["file"]
    if not weights.is_file():
        raise ModelFileError(f"{path}: weights file {weights.name} is missing")
    if verify and sha256_of(weights) != info["weights"]["sha256"]:
        raise ModelFileError(f"{weights}: checksum does not match model.json (file corrupted or replaced); "
                             "re-export or re-download the model")
    model = FashionUNet.from_description(info["model"])
    try:
        state = load_file(weights)
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, OSError) as error:
        raise ModelFileError(f"{weights}: weights do not fit the architecture in model.json ({error})") from None
    target = DTYPES[dtype or "float32"]
    return model.to(device=device, dtype=target).eval().requires_grad_(False), info


def load_checkpoint_model(checkpoint: str | Path, device: str | torch.device = "cpu",
                          dtype: str | None = None) -> tuple[FashionUNet, dict[str, Any]]:
    """A checkpoint's EMA model, rebuilt from its config and state, with the model.json an export of it would have."""
    checkpoint = Path(checkpoint)
    config = load_config([checkpoint / "config.yaml"])
    state = read_state(checkpoint)
    model = build_model(config.model, config.data.resolution, state["text_dim"], state.get("attribute_vocab") or {})
    weights = checkpoint / "ema.safetensors"
    try:
        model.load_state_dict(load_file(weights), strict=True)
    except (RuntimeError, OSError) as error:
        raise ModelFileError(f"{weights}: EMA weights do not fit the checkpoint's config ({error})") from None
    training = {"steps": state["step"], "images_seen": state.get("images_seen"), "run": checkpoint.parent.parent.name,
                "checkpoint": checkpoint.name, "num_processes": state.get("num_processes"),
                "images_per_step": state.get("images_per_step"), "mixed_precision": config.train.mixed_precision,
                "hardware": state.get("hardware"), "initialised_from": state.get("initialised_from")}
    metrics = checkpoint.parent.parent / "metrics.jsonl"
    if metrics.is_file():
        training.update(run_facts(MetricsLog(metrics).read(), state["step"]))
    info = export_info(model, config, state["text_identity"], training)
    info["weights"] = {"file": weights.name, "dtype": "float32", "sha256": sha256_of(weights)}
    return model.to(device=device, dtype=DTYPES[dtype or "float32"]).eval().requires_grad_(False), info


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | None = None,
               verify: bool = True) -> tuple[FashionUNet, dict[str, Any], Path]:
    """An exported model, a checkpoint (its EMA weights) or a run directory (its newest checkpoint, else its export).

    Returns the model, its model.json (exports) or the model.json an export would have (checkpoints), and the
    directory the weights came from.
    """
    path = Path(path)
    if (path / INFO_FILE).is_file():
        return (*load_exported(path, device, dtype, verify), path)
    if (path / STATE_FILE).is_file() and (path / "ema.safetensors").is_file():
        return (*load_checkpoint_model(path, device, dtype), path)
    if path.is_dir() and (checkpoints := checkpoint_dirs(path)):
        return load_model(checkpoints[-1], device, dtype, verify)
    if path.is_dir() and (path / "export" / INFO_FILE).is_file():
        return load_model(path / "export", device, dtype, verify)
    if not path.exists():
        raise ModelFileError(f"model path {path} does not exist")
    raise ModelFileError(f"{path} is not a FashionGen model: expected an exported model ({INFO_FILE}), a pipeline "
                         f"folder, a checkpoint directory ({STATE_FILE} + ema.safetensors) or a run directory "
                         "with checkpoints")
