"""The error every config check raises, and the choice and range checks each section runs on its own values."""

from __future__ import annotations

from typing import Any, Sequence
from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override names an unknown key or a value of the wrong type or range."""


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(map(str, choices))}")


def check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is outside [{low}, {high}]")
