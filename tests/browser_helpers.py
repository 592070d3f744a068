"""Debian's Chromium for the browser tests (the app's and the challenge server's): its path, its flags, and the rule
that CI (which installs it in .ci/run) fails without it while other machines skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-quic", "--no-first-run", "--disable-sync"]


def require_chromium() -> None:
    """Skip the calling test module when Chromium is missing; in CI, fail instead."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):  # CI installs it, so a missing browser there is a failure, not a skip
            raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must apt-get install chromium chromium-driver")
        pytest.skip("Debian chromium is not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
