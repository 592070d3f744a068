"""Sampling jobs that fill a folder: prompt sheets, interpolations and edits, each with PNGs, a grid
and manifest.jsonl (one line per image: prompt, seed, every setting, the model, the file).

    write_samples(pipe, [PromptItem("a red silk slip dress")], settings, "samples/", num_images=4, seed=0)

A job appends a manifest line right after each batch of images is written, and skips images its
manifest already lists with the same prompt, seed, settings and model: an interrupted job resumes.
A manifest lists each file once (its latest row): a resumed job first rewrites it without the rows of
missing images, duplicates and a kill's partial last line. One writer per folder (sample.py holds
utils.output_lock for the job).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .grid import captioned_grid, save_animation, save_image
from .pipeline import FashionGenPipeline, ImageInput
from .settings import PipelineInputError, SamplingSettings, check_seeds, image_seeds
from .utils import atomic_write_text

MANIFEST = "manifest.jsonl"
STRIP_FILE = "strip.png"
MAX_JOB_IMAGES = 1_000_000  # a job's rows (and a sheet's grid) are held in memory: the most images one job makes


@dataclass(frozen=True)
class PromptItem:
    """One prompt to sample, optionally with its own attributes and seed (from a JSONL prompt file)."""

    prompt: str
    attributes: dict[str, str] = field(default_factory=dict)
    seed: int | None = None


def read_prompts(path: str | Path, num_images: int = 1) -> list[PromptItem]:
    """Prompts from a text file (one per line; blank lines and '#' comments skipped) or JSONL
    ({"prompt" or "caption": ..., optional "attributes": {...}, "seed": int}); a JSONL seed must leave room
    for `num_images` seeds (seed .. seed + num_images - 1) in [0, 2**64)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"prompt file {path} does not exist" if not path.exists() else f"prompt file {path} is not a file")
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as error:
        raise PipelineInputError(f"prompt file {path}: cannot read it ({error.strerror})") from None
    items = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            raise PipelineInputError(f"{path}:{number}: not UTF-8 text; save the prompt file as UTF-8") from None
        if not line or line.startswith("#"):
            continue
        if path.suffix.lower() != ".jsonl":
            items.append(PromptItem(line))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise PipelineInputError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        prompt = row.get("prompt", row.get("caption")) if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise PipelineInputError(f"{path}:{number}: needs a non-empty \"prompt\" (or \"caption\") string")
        attributes = row.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise PipelineInputError(f"{path}:{number}: \"attributes\" must be an object of name: value")
        seed = row.get("seed")
        if seed is not None:
            try:
                check_seeds("\"seed\"", seed, num_images)
            except PipelineInputError as error:
                raise PipelineInputError(f"{path}:{number}: {error}") from None
        items.append(PromptItem(prompt.strip(), {str(k): str(v) for k, v in attributes.items()}, seed))
    if not items:
        raise PipelineInputError(f"prompt file {path} holds no prompts")
    return items


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length].rstrip("-") or "prompt"


def _append_lines(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append JSON lines durably (a kill leaves at most one partial last line, which readers skip)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The complete lines of a manifest (a partial last line from a kill, or any damaged line, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("file"), str):
            rows.append(row)
    return rows


def _write_manifest(out_dir: Path, rows: Sequence[dict[str, Any]], replace_all: bool = False) -> None:
    """Rewrite out_dir/manifest.jsonl atomically: the rows already there for other files whose images exist
    (unless `replace_all`), then `rows`; each file listed once."""
    new = {row["file"]: row for row in rows}
    kept = [] if replace_all else [row for row in _latest(read_manifest(out_dir / MANIFEST)).values()
                                   if row["file"] not in new and (out_dir / row["file"]).is_file()]
    atomic_write_text(out_dir / MANIFEST, "".join(json.dumps(row) + "\n" for row in [*kept, *new.values()]))


def _latest(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """file -> the last row that lists it."""
    return {row["file"]: row for row in rows}


def _record(pipe: FashionGenPipeline, settings: SamplingSettings, **values: Any) -> dict[str, Any]:
    return {**values, "settings": settings.to_dict(), "model": pipe.fingerprint}


def write_samples(pipe: FashionGenPipeline, items: Sequence[PromptItem], settings: SamplingSettings, out_dir: str | Path,
                  num_images: int = 1, seed: int = 0, batch_size: int | None = None) -> list[dict[str, Any]]:
    """`num_images` per prompt as out_dir/images/PPP_K_<prompt>.png, grid.png and manifest.jsonl; returns the manifest rows.

    Prompt p's images have the seeds image_seeds(seed + p * num_images, num_images), or image_seeds(item.seed, ...)
    when the prompt item brings its own seed.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    listed = read_manifest(manifest)
    done = _latest(listed)
    jobs = []
    for p, item in enumerate(items):
        first = item.seed if item.seed is not None else seed + p * num_images
        for k, image_seed in enumerate(image_seeds(first, num_images, f"prompt {p}'s seed")):
            file = f"images/{p:03d}_{k}_{slug(item.prompt)}.png"
            row = _record(pipe, settings, prompt=item.prompt, attributes=item.attributes, seed=image_seed, file=file, index=p, k=k)
            previous = done.get(file)
            if previous is not None and (out_dir / file).is_file() and previous == row:
                continue
            if previous is not None and previous != row:
                raise PipelineInputError(f"{out_dir} holds {file} from another prompt, seed, setting or model; "
                                         "use a new --out folder")
            jobs.append(row)
    finished = [row for row in done.values() if (out_dir / row["file"]).is_file()]
    text = manifest.read_bytes() if manifest.is_file() else b""
    if len(finished) != len(listed) or (text and not text.endswith(b"\n")) or len(text.split(b"\n")) - 1 != len(listed):
        _write_manifest(out_dir, finished, replace_all=True)  # drop duplicates, missing images and damaged lines
    step = batch_size or pipe.batch_size
    for start in range(0, len(jobs), step):
        batch = jobs[start : start + step]
        images = pipe.generate_images([r["prompt"] for r in batch], [r["seed"] for r in batch], settings,
                                      [r["attributes"] for r in batch])
        for row, image in zip(batch, images):
            save_image(image, out_dir / row["file"])
        _append_lines(manifest, batch)
    latest = {file: row for file, row in _latest(read_manifest(manifest)).items() if (out_dir / file).is_file()}
    ordered = sorted(latest.values(), key=lambda r: (r.get("index", 0), r.get("k", 0)))
    pictures = [np.asarray(Image.open(out_dir / r["file"]).convert("RGB")) for r in ordered]
    captions = [f"{r['prompt']} (seed {r['seed']})" for r in ordered]
    if pictures:
        save_image(captioned_grid(pictures, captions, columns=num_images, tile=max(128, pictures[0].shape[0]), caption_lines=3),
                   out_dir / "grid.png")
    return ordered


def save_interpolation_files(frames: Sequence[Image.Image], prompt_a: str, prompt_b: str, out_dir: str | Path) -> list[Path]:
    """out_dir/frames/frame_NN.png, strip.png (captioned ends) and interpolation.gif/.webp; returns the frame paths."""
    out_dir = Path(out_dir)
    paths = []
    for number, frame in enumerate(frames):
        paths.append(out_dir / "frames" / f"frame_{number:02d}.png")
        save_image(frame, paths[-1])
    fractions = [number / (len(frames) - 1) for number in range(len(frames))]
    captions = [prompt_a if t == 0 else prompt_b if t == 1 else f"t = {t:.2f}" for t in fractions]
    arrays = [np.asarray(frame) for frame in frames]
    save_image(captioned_grid(arrays, captions, columns=len(frames), tile=max(96, frames[0].width), caption_lines=3),
               out_dir / STRIP_FILE)
    for suffix in (".gif", ".webp"):
        save_animation(frames, out_dir / f"interpolation{suffix}")
    return paths


def write_interpolation(pipe: FashionGenPipeline, prompt_a: str, prompt_b: str, settings: SamplingSettings,
                        out_dir: str | Path, seed_a: int = 0, seed_b: int = 1, num_frames: int = 8,
                        attributes: dict[str, str] | None = None) -> list[Path]:
    """Frames as out_dir/frames/frame_NN.png, strip.png, interpolation.gif and .webp, manifest.jsonl."""
    out_dir = Path(out_dir)
    frames = pipe.interpolate(prompt_a, prompt_b, seed_a, seed_b, num_frames, attributes=attributes, settings=settings)
    paths = save_interpolation_files(frames, prompt_a, prompt_b, out_dir)
    fractions = [number / (num_frames - 1) for number in range(num_frames)]
    rows = [_record(pipe, settings, prompt_a=prompt_a, prompt_b=prompt_b, seed_a=seed_a, seed_b=seed_b, t=t, attributes=attributes or {},
                    file=str(path.relative_to(out_dir))) for t, path in zip(fractions, paths)]
    _write_manifest(out_dir, rows, replace_all=True)
    return paths


def write_edits(pipe: FashionGenPipeline, image: ImageInput, prompt: str, settings: SamplingSettings, out_dir: str | Path,
                strength: float = 0.6, mask: ImageInput | None = None, num_images: int = 1, seed: int = 0,
                attributes: dict[str, str] | None = None) -> list[Path]:
    """Edited versions of a photo as out_dir/edits/edit_K.png, a grid (input first) and manifest.jsonl."""
    out_dir = Path(out_dir)
    seeds = image_seeds(seed, num_images)
    edits = pipe.edit(image, prompt, strength, mask, num_images, seeds, attributes=attributes, settings=settings)
    paths = []
    for k, edited in enumerate(edits):
        paths.append(out_dir / "edits" / f"edit_{k}.png")
        save_image(edited, paths[-1])
    original = (pipe.prepare_image(image).add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    pictures = [original] + [np.asarray(edited) for edited in edits]
    captions = ["input" + (" (+ mask)" if mask is not None else "")] + [f"{prompt} (seed {one})" for one in seeds]
    save_image(captioned_grid(pictures, captions, columns=len(pictures), tile=max(128, edits[0].width), caption_lines=3),
               out_dir / "grid.png")
    source = str(image) if isinstance(image, (str, Path)) else "<in-memory image>"
    rows = [_record(pipe, settings, prompt=prompt, input=source, mask=None if mask is None else str(mask) if isinstance(mask, (str, Path))
                    else "<in-memory mask>", strength=strength, seed=one, attributes=attributes or {}, file=str(path.relative_to(out_dir)))
            for one, path in zip(seeds, paths)]
    _write_manifest(out_dir, rows)
    return paths


__all__ = ["MANIFEST", "MAX_JOB_IMAGES", "PromptItem", "read_manifest", "read_prompts", "slug", "write_edits", "write_interpolation", "write_samples"]
