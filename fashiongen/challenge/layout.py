"""Whether an extracted upload is a submission for this challenge: the rules of `fashiongen.submission validate`
(every caption present, per_caption PNGs each, RGB at the resolution, files inside the folder) plus the
challenge's own resolution and images per caption. The server checks before accepting; a worker checks again
before scoring what it read back from the database."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..submission import HEADER_FILE, LINES_FILE, CaptionItem, validate_submission
from .archive import ArchiveLimits
from .config import ChallengeConfig
from ..errors import UserError

MAX_PROBLEMS_SHOWN = 5
MAX_JSON_DEPTH = 32  # a header or line nests a few levels; Python's parser recurses once per level
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
JSON_BRACKETS = re.compile(rb"[\[\]{}]")
PNG_OVERHEAD_BYTES = 2**16  # chunk and zlib framing of an uncompressed PNG, and room for its text chunks
MEMBER_OVERHEAD_BYTES = 2**11  # an archive's headers for one member (zip local + central entries, or tar's)
LINE_BYTES = 2**12  # one image's line in the lines file: its name, caption, seed
HEADER_BYTES = 2**20  # the header file at most (layout_problems refuses a larger one)


class ScoringError(UserError, ValueError):
    """A submission or caption source that cannot be scored; the message says why (a submission's status message)."""


def nesting_problem(path: Path) -> str | None:
    """Why a JSON file nests too deeply to be parsed safely (json.loads recurses per level), or None; its brackets are
    counted outside strings before any parser sees it."""
    depth = deepest = 0
    for bracket in JSON_BRACKETS.findall(JSON_STRING.sub(b'""', path.read_bytes())):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return f"{path.name} nests JSON more than {MAX_JSON_DEPTH} levels deep"
    return None


def layout_problems(root: Path, captions: list[CaptionItem], config: ChallengeConfig) -> list[str]:
    """Every problem with the submission folder `root` as a sentence naming the file (relative to `root`: refusals
    never show the server's own paths); [] when it may be scored."""
    problems = [problem for path in (root / HEADER_FILE, root / LINES_FILE) if path.is_file()
                if (problem := nesting_problem(path))]
    if problems:
        return problems
    prefix = str(root).rstrip("/") + "/"
    return [problem.replace(prefix, "").replace(str(root), ".") for problem in _problems(root, captions, config)]


def _problems(root: Path, captions: list[CaptionItem], config: ChallengeConfig) -> list[str]:
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


def upload_cap(config: ChallengeConfig, num_captions: int) -> int:
    """The most bytes a valid upload can need: every image as an uncompressed RGB PNG at the resolution, plus
    its archive headers and its line, plus the header (and `max_upload_mb` as a lower ceiling when set)."""
    images = num_captions * config.per_caption
    per_image = 3 * config.resolution**2 + config.resolution + PNG_OVERHEAD_BYTES  # pixels, filter bytes, framing
    derived = images * (per_image + MEMBER_OVERHEAD_BYTES + LINE_BYTES) + HEADER_BYTES + 2 * MEMBER_OVERHEAD_BYTES
    return min(derived, config.max_upload_mb * 2**20) if config.max_upload_mb else derived


def archive_limits(config: ChallengeConfig, num_captions: int) -> ArchiveLimits:
    """What an upload may hold: sized to the challenge's images, with little room for anything else."""
    images = num_captions * config.per_caption
    per_image = 3 * config.resolution**2 + config.resolution + PNG_OVERHEAD_BYTES
    return ArchiveLimits(max_upload_bytes=upload_cap(config, num_captions), max_members=images + 64,
                         max_total_bytes=images * (per_image + LINE_BYTES) + HEADER_BYTES + 2**24,
                         max_member_bytes=max(per_image, 2**24))
