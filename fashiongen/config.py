"""Typed configuration: dataclasses hold every default; YAML files and `key.sub=value` overrides change them.

    cfg = load_config(["configs/small64.yaml"], ["data.resolution=32", "text.max_length=48"])
    save_config(cfg, run_dir / "config.yaml")   # loads back identical with load_config([that file])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .utils import atomic_write_text


def _check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(map(str, choices))}")


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is outside [{low}, {high}]")


class ConfigError(ValueError):
    """A config file or override names an unknown key or a value of the wrong type or range."""


@dataclass
class DataConfig:
    """Where images and captions come from and how they are prepared for a model."""

    source: str = "../shared/data/fashion-products"  # a path; the format is detected unless `format` is set
    format: str = "auto"  # auto | fashiongen-h5 | folder | deepfashion-mm | deepfashion2 | fashion-mnist
    split: str = "train"  # train | validation | all
    val_fraction: float = 0.05  # for sources without their own split: share of ids held out, by hash
    resolution: int = 64
    resize_mode: str = "center-crop"  # center-crop | pad
    pad_value: int = 255  # studio photos have white backgrounds
    hflip: bool = True
    caption_mode: str = "both"  # raw | attributes | both
    caption_template: str = ""  # empty: the source's own template
    caption_field: str = ""  # empty: the source's default caption field/column
    skip_bad_records: bool = True  # skip, count and report defective records instead of failing
    poses: list[str] = field(default_factory=list)  # FashionGen h5: keep only these poses (empty: all)
    one_pose_per_product: bool = False  # FashionGen h5: keep the first kept pose of each product
    text_encoding: str = "auto"  # FashionGen h5 text bytes: auto (utf-8, then cp1252, then latin-1) or a codec

    def __post_init__(self) -> None:
        _check_choice("data.split", self.split, ("train", "validation", "all"))
        _check_choice("data.resize_mode", self.resize_mode, ("center-crop", "pad"))
        _check_choice("data.caption_mode", self.caption_mode, ("raw", "attributes", "both"))
        _check_range("data.resolution", self.resolution, 8, 4096)
        _check_range("data.val_fraction", self.val_fraction, 0.0, 0.99)
        _check_range("data.pad_value", self.pad_value, 0, 255)


@dataclass
class TextConfig:
    """The caption encoder whose token states condition the generator."""

    encoder: str = "minilm"  # 'minilm' (bundled all-MiniLM-L6-v2) or a local Hugging Face model directory
    max_length: int = 64  # tokens, including special tokens; longer captions are truncated with a warning
    batch_size: int = 64
    device: str = "cpu"
    dtype: str = "float32"  # float32 | float16 | bfloat16 for the encoder's forward pass
    normalize_pooled: bool = True  # L2-normalise the pooled sentence embedding
    cache_dir: str = ".cache/fashiongen/text"  # empty string disables the embedding cache

    def __post_init__(self) -> None:
        _check_range("text.max_length", self.max_length, 2, 4096)
        _check_range("text.batch_size", self.batch_size, 1, 1 << 16)
        _check_choice("text.dtype", self.dtype, ("float32", "float16", "bfloat16"))


@dataclass
class Config:
    """Everything one run needs; saved next to every run and inside every checkpoint."""

    name: str = "default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, valid: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'{hint}; valid keys: {', '.join(valid)}")


def _coerce(value: Any, kind: Any, key: str, where: str) -> Any:
    """Convert a YAML value or a command-line string to the field's declared type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            return None
        return _coerce(value, options[0], key, where)
    if origin in (list, tuple):
        (item_kind, *_) = typing.get_args(kind) or (Any,)
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip() else []
            value = parsed if isinstance(parsed, list) else [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        items = [_coerce(item, item_kind, key, where) for item in value]
        return items if origin is list else tuple(items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        try:
            number = kind(value) if not isinstance(value, str) else kind(yaml.safe_load(value))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def _apply_mapping(obj: Any, mapping: dict[str, Any], where: str, prefix: str = "") -> Any:
    """Return a copy of dataclass `obj` with the nested `mapping` applied, checking every key."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {mapping!r}")
    kinds = _field_types(type(obj))
    changes: dict[str, Any] = {}
    for key, value in mapping.items():
        full_key = f"{prefix}{key}"
        if key not in kinds:
            raise _unknown_key(full_key, list(kinds), where)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _apply_mapping(current, value, where, f"{full_key}.")
        else:
            changes[key] = _coerce(value, kinds[key], full_key, where)
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def parse_override(text: str) -> dict[str, Any]:
    """Turn 'data.resolution=32' into {'data': {'resolution': '32'}} (values are coerced later)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(paths: Sequence[str | Path] = (), overrides: Sequence[str] = (), base: Config | None = None) -> Config:
    """Defaults, then each YAML file in order, then each `key.sub=value` override."""
    config = base if base is not None else Config()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            mapping = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        config = _apply_mapping(config, mapping, str(path))
    for override in overrides:
        config = _apply_mapping(config, parse_override(override), f"override '{override}'")
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples as lists), ready for YAML or JSON."""
    return dataclasses.asdict(config, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v for k, v in items})


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML atomically."""
    atomic_write_text(Path(path), dump_config(config))


def split_cli_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate YAML paths from `key=value` overrides in a script's positional arguments."""
    paths = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return paths, overrides
