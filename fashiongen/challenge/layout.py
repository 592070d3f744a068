"""Whether an extracted upload is a submission for this challenge: the rules of `fashiongen.submission validate`
(every caption present, per_caption PNGs each, RGB at the resolution, files inside the folder) plus the
challenge's own resolution and images per caption. The server checks before accepting; a worker checks again
before scoring what it read back from the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..submission import HEADER_FILE, CaptionItem, validate_submission
from .archive import ArchiveLimits
from .config import ChallengeConfig

MAX_PROBLEMS_SHOWN = 5


class ScoringError(ValueError):
    """A submission or caption source that cannot be scored; the message says why (a submission's status message)."""


def layout_problems(root: Path, captions: list[CaptionItem], config: ChallengeConfig) -> list[str]:
    """Every problem with the submission folder `root` as a sentence naming the file; [] when it may be scored."""
    header_path = root / HEADER_FILE
    if header_path.is_file() and header_path.stat().st_size <= 2**20:
        try:
            header: Any = json.loads(header_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
        if isinstance(header, dict):
            for name, wanted in (("resolution", config.resolution), ("per_caption", config.per_caption)):
                if header.get(name) != wanted:
                    return [f"{HEADER_FILE}: {name} is {header.get(name)!r}; this challenge asks for {wanted}"]
    elif header_path.is_file():
        return [f"{HEADER_FILE} is over 1 MB"]
    return validate_submission(root, captions)


def summary(problems: list[str]) -> str:
    """One line for an HTTP answer: the first few problems and how many more."""
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    return shown + (f"; and {more} more problem(s)" if more > 0 else "")


def archive_limits(config: ChallengeConfig, num_captions: int) -> ArchiveLimits:
    """What an upload may hold: the challenge's upload cap, room for its images and little more."""
    images = num_captions * config.per_caption
    per_image = 3 * config.resolution**2 + 2**16  # an uncompressed RGB PNG and its headers
    return ArchiveLimits(max_upload_bytes=config.max_upload_mb * 2**20, max_members=images + 64,
                         max_total_bytes=images * per_image + 2**24, max_member_bytes=max(per_image, 2**24))
