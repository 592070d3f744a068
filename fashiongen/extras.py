"""Optional dependencies: a feature whose extra is not installed says which one in one line.

    faiss = require("faiss", "eval", "the nearest-neighbour index")
    -> MissingExtra: the nearest-neighbour index needs the 'eval' extra: pip install 'fashiongen[eval]'

A core install (`pip install fashiongen`) samples images; training, evaluation, the app, the fast path and the
challenge server each have an extra (pyproject.toml). The `fashiongen` command prints a MissingExtra as
`error: ...` and exits 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError


class MissingExtra(UserError, ModuleNotFoundError):
    """A module of an extra that is not installed; the message names the extra and the pip command."""


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """`module` imported, or MissingExtra naming `extra` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but something it imports is broken: that is not a missing extra
        raise MissingExtra(f"{feature or module} needs the '{extra}' extra: pip install 'fashiongen[{extra}]'") from None
