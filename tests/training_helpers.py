"""Shared settings for training tests: unet-tiny at 32 px on a tiny folder dataset."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from fashiongen.config import Config, load_config


def tiny_overrides(source: Path, output_dir: Path, cache_dir: Path, **extra: object) -> list[str]:
    settings: dict[str, object] = {
        "data.source": source, "data.resolution": 32, "data.val_fraction": 0.0, "model.name": "unet-tiny",
        "text.cache_dir": cache_dir, "train.output_dir": output_dir, "train.batch_size": 8, "train.num_workers": 0,
        "train.max_steps": 12, "train.warmup_steps": 2, "train.learning_rate": 1e-3, "train.log_every": 1,
        "train.checkpoint_every": 4, "train.validate_every": 0, "train.validation_prompts": "[red dress]",
        "train.validation_seeds": "[0]", "train.validation_inference_steps": 2,
    }
    settings.update(extra)
    return [f"{key}={value}" for key, value in settings.items()]


def tiny_config(source: Path, output_dir: Path, cache_dir: Path, **extra: object) -> Config:
    return load_config([], tiny_overrides(source, output_dir, cache_dir, **extra))


def weights(path: Path) -> dict:
    return load_file(path)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
