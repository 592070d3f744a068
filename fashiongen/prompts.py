"""Prompts for sample.py's jobs: from the command line or a prompt file, cleaned and checked once, here.

    items = read_prompts("prompts.jsonl", num_images=4)   # [PromptItem(prompt, attributes, seed), ...]

A prompt file is read line by line up to MAX_PROMPT_FILE_BYTES and MAX_JOB_IMAGES prompts (a FIFO or device is refused
before it is opened for blocking reads): `.txt` (or any other suffix) holds one prompt a line, blank lines and '#'
comments skipped; `.jsonl` one row a line, {"prompt" or "caption": ..., optional "attributes": {...}, "seed": int};
`.json` a list of prompts or of such rows. Every prompt loses its invisible format characters (zero-width spaces and
joiners, BOMs: Unicode category Cf) and outer whitespace; one that is then empty, or that holds a lone surrogate
(JSON's "\\ud800", or bytes that are not UTF-8 in a command-line argument), is refused naming its line.
"""

from __future__ import annotations

import itertools
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import PipelineInputError, check_seeds
from .utils import NotRegularFile, open_regular

MAX_JOB_IMAGES = 100_000  # a job's pending manifest rows (about 1 KB each) are held in memory: ~100-200 MB at most
MAX_PROMPT_CHARS = 4000  # the encoder reads 64 tokens (~300 characters); a manifest row stays a few KB
MAX_PROMPT_FILE_BYTES = 64 << 20  # 64 MB: over 100k prompts of 600 characters; a bigger file is not a prompt list


@dataclass(frozen=True)
class PromptItem:
    """One prompt to sample, optionally with its own attributes and seed (from a JSONL prompt file)."""

    prompt: str
    attributes: dict[str, str] = field(default_factory=dict)
    seed: int | None = None


def check_text(text: str, where: str) -> str:
    """`text` unchanged, or PipelineInputError naming `where` when it holds a lone surrogate (it cannot be written)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PipelineInputError(f"{where}: not valid text (a lone surrogate {text[error.start]!r} at character "
                                 f"{error.start + 1}); save it as UTF-8") from None
    return text


def clean_prompt(text: str, where: str) -> str:
    """A prompt as the model reads it: format characters (category Cf) removed, whitespace stripped; PipelineInputError
    naming `where` for one that is then empty or is not valid text."""
    check_text(text, where)
    cleaned = "".join(char for char in text if unicodedata.category(char) != "Cf").strip()
    if not cleaned:
        raise PipelineInputError(f"{where}: the prompt is empty (only spaces or invisible characters); describe the garment")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise PipelineInputError(f"{where}: the prompt is {len(cleaned)} characters, over the limit of {MAX_PROMPT_CHARS} "
                                 "(the model reads its first few hundred)")
    return cleaned


def _item(row: Any, where: str, num_images: int) -> PromptItem:
    """A prompt file's JSON row (or plain string, in a .json list) as a PromptItem."""
    if isinstance(row, str):
        return PromptItem(clean_prompt(row, where))
    prompt = row.get("prompt", row.get("caption")) if isinstance(row, dict) else None
    if not isinstance(prompt, str):
        raise PipelineInputError(f"{where}: needs a non-empty \"prompt\" (or \"caption\") string")
    attributes = row.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise PipelineInputError(f"{where}: \"attributes\" must be an object of name: value")
    seed = row.get("seed")
    if seed is not None:
        try:
            check_seeds("\"seed\"", seed, num_images)
        except PipelineInputError as error:
            raise PipelineInputError(f"{where}: {error}") from None
    pairs = {check_text(str(k), f"{where}: attribute"): check_text(str(v), f"{where}: attribute") for k, v in attributes.items()}
    return PromptItem(clean_prompt(prompt, where), pairs, seed)


def _lines(handle: Any, path: Path) -> Any:
    """(number, text) of a prompt file's lines, read one at a time within MAX_PROMPT_FILE_BYTES."""
    total = 0
    for number in itertools.count(1):
        raw = handle.readline(MAX_PROMPT_FILE_BYTES + 1 - total)
        if not raw:
            return
        total += len(raw)
        if total > MAX_PROMPT_FILE_BYTES:
            raise PipelineInputError(f"{path}:{number}: the prompt file is over {MAX_PROMPT_FILE_BYTES >> 20} MB; "
                                     "split it into several jobs")
        try:
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            raise PipelineInputError(f"{path}:{number}: not UTF-8 text; save the prompt file as UTF-8") from None


def _json_items(handle: Any, path: Path, num_images: int) -> list[PromptItem]:
    try:
        rows = json.loads(handle.read(MAX_PROMPT_FILE_BYTES + 1).decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise PipelineInputError(f"{path}: not UTF-8 text; save the prompt file as UTF-8") from None
    except json.JSONDecodeError as error:
        raise PipelineInputError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); a .json prompt file is a list of "
                                 "prompts, one a line in a .txt file") from None
    if not isinstance(rows, list):
        raise PipelineInputError(f"{path}: a .json prompt file must be a list of prompts or of {{\"prompt\": ...}} rows, "
                                 f"not a {type(rows).__name__}")
    if len(rows) > MAX_JOB_IMAGES:
        raise PipelineInputError(f"{path}: {len(rows)} prompts, over the limit of {MAX_JOB_IMAGES} a job")
    return [_item(row, f"{path}: item {number}", num_images) for number, row in enumerate(rows, start=1)]


def read_prompts(path: str | Path, num_images: int = 1) -> list[PromptItem]:
    """Prompts from a text, JSONL or JSON prompt file (see the module's docstring); a JSONL seed must leave room for
    `num_images` seeds (seed .. seed + num_images - 1) in [0, 2**64). PipelineInputError naming the file and line."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise PipelineInputError(f"prompt file {path} does not exist" if not path.exists() else f"prompt file {path} is not a file")
    try:
        handle = open_regular(path)
    except NotRegularFile as error:
        raise PipelineInputError(f"prompt file {error}") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_PROMPT_FILE_BYTES:
            raise PipelineInputError(f"prompt file {path} is {size / 1e6:.0f} MB, over the limit of "
                                     f"{MAX_PROMPT_FILE_BYTES >> 20} MB; split it into several jobs")
        suffix = path.suffix.lower()
        if suffix == ".json":
            items = _json_items(handle, path, num_images)
        else:
            items = []
            for number, line in _lines(handle, path):
                if not line or line.startswith("#"):
                    continue
                if len(items) == MAX_JOB_IMAGES:
                    raise PipelineInputError(f"{path}:{number}: over {MAX_JOB_IMAGES} prompts, the most one job makes")
                if suffix == ".jsonl":
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise PipelineInputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                    items.append(_item(row if isinstance(row, dict) else None, f"{path}:{number}", num_images))
                else:
                    items.append(PromptItem(clean_prompt(line, f"{path}:{number}")))
    if not items:
        raise PipelineInputError(f"prompt file {path} holds no prompts")
    return items


__all__ = ["MAX_JOB_IMAGES", "MAX_PROMPT_CHARS", "MAX_PROMPT_FILE_BYTES", "PromptItem", "check_text", "clean_prompt", "read_prompts"]
