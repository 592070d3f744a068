"""Writing a config: a plain nested dict (for JSON and model.json) and YAML that `load_config` reads back identical."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..utils import atomic_write_text
from .sections import Config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples as lists), ready for YAML or JSON."""
    return dataclasses.asdict(config, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v for k, v in items})


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML atomically."""
    atomic_write_text(Path(path), dump_config(config))
