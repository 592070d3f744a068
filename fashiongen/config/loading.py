"""Reading a config: defaults, then YAML files (each checked to be a small text mapping), then `key.sub=value`
overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from ..utils import NotRegularFile, first_line, open_regular
from .checks import ConfigError
from .merging import apply_mapping, parse_override
from .sections import Config


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; a larger file is not one (and YAML parsing is slow)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping; ConfigError naming the file for anything else: not a regular file, too large,
    binary (a NUL byte, not UTF-8: an image renamed .yaml), not YAML, nested past the parser's depth, empty, or a
    list or scalar at the top."""
    try:
        with open_regular(path) as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except NotRegularFile as error:
        missing = not Path(path).exists() and not Path(path).is_symlink()
        raise ConfigError(f"config file {path} does not exist" if missing else f"config file {error}") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read ({error.strerror or type(error).__name__})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MB, not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file (not UTF-8 at byte {error.start}); expected a YAML config") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (a NUL byte at character {text.index(chr(0))}); expected a YAML config")
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({first_line(error)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a config (nested too deeply to read)") from None
    if mapping is None:
        raise ConfigError(f"{path}: empty config file (no settings); give a YAML mapping such as 'name: my-run'")
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings, got a {type(mapping).__name__}")
    return mapping


def load_config(paths: Sequence[str | Path] = (), overrides: Sequence[str] = (), base: Config | None = None) -> Config:
    """Defaults, then each YAML file in order, then each `key.sub=value` override."""
    config = base if base is not None else Config()
    for path in paths:
        config = apply_mapping(config, read_yaml_mapping(Path(path)), str(path))
    for override in overrides:
        config = apply_mapping(config, parse_override(override), f"override '{override}'")
    return config


def split_cli_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate YAML paths from `key=value` overrides in a script's positional arguments."""
    paths = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return paths, overrides
