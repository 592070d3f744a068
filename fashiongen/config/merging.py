"""Applying nested values (a YAML mapping, a parsed override, a model.json section) to a config: every key checked
against its dataclass, every value coerced to the field's declared type, with errors that name the key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from .checks import ConfigError
from .sections import Config


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
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def apply_mapping(obj: Any, mapping: dict[str, Any], where: str, prefix: str = "") -> Any:
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
            changes[key] = apply_mapping(current, value, where, f"{full_key}.")
        else:
            changes[key] = _coerce(value, kinds[key], full_key, where)
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def check_section(section: str, values: Any, where: str | Path, label: str = "") -> None:
    """Hold saved `values` (model.json's "text", its copy of the config...) to the types and ranges of config section
    `section` (keys the section does not know are left alone); ConfigError naming `where` and the key, spelt
    `label.key` where the file keeps it under another name."""
    kinds = _field_types(_field_types(Config)[section])
    known = {key: value for key, value in values.items() if key in kinds} if isinstance(values, dict) else values
    try:
        apply_mapping(_field_types(Config)[section](), known, "", f"{section}.")
    except ConfigError as error:
        message = str(error).removeprefix(": ")
        raise ConfigError(f"{where}: {message.replace(f'{section}.', f'{label}.') if label else message}") from None


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
