"""Sampling jobs that fill a folder: prompt sheets, interpolations and edits, each with PNGs, a grid
and manifest.jsonl (one line per image: prompt, seed, every setting, the model, the file).

    write_samples(pipe, [PromptItem("a red silk slip dress")], settings, "samples/", num_images=4, seed=0)

A job appends a manifest line right after each batch of images is written, and skips images its
manifest already lists with the same prompt, seed, settings and model: an interrupted job resumes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .grid import captioned_grid, save_animation, save_image
from .pipeline import FashionGenPipeline, ImageInput, PipelineInputError, SamplingSettings

MANIFEST = "manifest.jsonl"
STRIP_FILE = "strip.png"


@dataclass(frozen=True)
class PromptItem:
    """One prompt to sample, optionally with its own attributes and seed (from a JSONL prompt file)."""

    prompt: str
    attributes: dict[str, str] = field(default_factory=dict)
    seed: int | None = None


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Prompts from a text file (one per line; blank lines and '#' comments skipped) or JSONL
    ({"prompt" or "caption": ..., optional "attributes": {...}, "seed": int})."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"prompt file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
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
        if seed is not None and not isinstance(seed, int):
            raise PipelineInputError(f"{path}:{number}: \"seed\" must be an integer, got {seed!r}")
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
    """The complete lines of a manifest (a partial last line from a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _record(pipe: FashionGenPipeline, settings: SamplingSettings, **values: Any) -> dict[str, Any]:
    return {**values, "settings": asdict(settings), "model": pipe.fingerprint}


def write_samples(pipe: FashionGenPipeline, items: Sequence[PromptItem], settings: SamplingSettings, out_dir: str | Path,
                  num_images: int = 1, seed: int = 0, batch_size: int | None = None) -> list[dict[str, Any]]:
    """`num_images` per prompt as out_dir/images/PPP_K_<prompt>.png, grid.png and manifest.jsonl; returns the manifest rows.

    Image k of prompt p gets seed `seed + p * num_images + k` unless the prompt item brings its own seed (then + k).
    """
    settings.check()
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    done = {row["file"]: row for row in read_manifest(manifest)}
    jobs = []
    for p, item in enumerate(items):
        for k in range(num_images):
            image_seed = (item.seed if item.seed is not None else seed + p * num_images) + k
            file = f"images/{p:03d}_{k}_{slug(item.prompt)}.png"
            row = _record(pipe, settings, prompt=item.prompt, attributes=item.attributes, seed=image_seed, file=file, index=p, k=k)
            previous = done.get(file)
            if previous is not None and (out_dir / file).is_file() and previous == row:
                continue
            if previous is not None and previous != row:
                raise PipelineInputError(f"{out_dir} holds {file} from another prompt, seed, setting or model; "
                                         "use a new --out folder")
            jobs.append(row)
    step = batch_size or pipe.batch_size
    for start in range(0, len(jobs), step):
        batch = jobs[start : start + step]
        images = pipe.generate_images([r["prompt"] for r in batch], [r["seed"] for r in batch], settings,
                                      [r["attributes"] for r in batch])
        for row, image in zip(batch, images):
            save_image(image, out_dir / row["file"])
        _append_lines(manifest, batch)
    rows = [row for row in read_manifest(manifest) if (out_dir / row["file"]).is_file()]
    latest = {row["file"]: row for row in rows}
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
    frames = pipe.interpolate(prompt_a, prompt_b, seed_a, seed_b, num_frames, settings.num_inference_steps,
                              settings.guidance_scale, settings.scheduler, settings.negative_prompt, attributes, settings.size)
    paths = save_interpolation_files(frames, prompt_a, prompt_b, out_dir)
    fractions = [number / (num_frames - 1) for number in range(num_frames)]
    rows = [_record(pipe, settings, prompt_a=prompt_a, prompt_b=prompt_b, seed_a=seed_a, seed_b=seed_b, t=t, attributes=attributes or {},
                    file=str(path.relative_to(out_dir))) for t, path in zip(fractions, paths)]
    (out_dir / MANIFEST).unlink(missing_ok=True)
    _append_lines(out_dir / MANIFEST, rows)
    return paths


def write_edits(pipe: FashionGenPipeline, image: ImageInput, prompt: str, settings: SamplingSettings, out_dir: str | Path,
                strength: float = 0.6, mask: ImageInput | None = None, num_images: int = 1, seed: int = 0,
                attributes: dict[str, str] | None = None) -> list[Path]:
    """Edited versions of a photo as out_dir/edits/edit_K.png, a grid (input first) and manifest.jsonl."""
    out_dir = Path(out_dir)
    edits = pipe.edit(image, prompt, strength, mask, num_images, seed, settings.num_inference_steps, settings.guidance_scale,
                      settings.scheduler, settings.negative_prompt, attributes, settings.size)
    paths = []
    for k, edited in enumerate(edits):
        paths.append(out_dir / "edits" / f"edit_{k}.png")
        save_image(edited, paths[-1])
    original = (pipe.prepare_image(image).add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    pictures = [original] + [np.asarray(edited) for edited in edits]
    captions = ["input" + (" (+ mask)" if mask is not None else "")] + [f"{prompt} (seed {seed + k})" for k in range(len(edits))]
    save_image(captioned_grid(pictures, captions, columns=len(pictures), tile=max(128, edits[0].width), caption_lines=3),
               out_dir / "grid.png")
    source = str(image) if isinstance(image, (str, Path)) else "<in-memory image>"
    rows = [_record(pipe, settings, prompt=prompt, input=source, mask=None if mask is None else str(mask) if isinstance(mask, (str, Path))
                    else "<in-memory mask>", strength=strength, seed=seed + k, attributes=attributes or {}, file=str(path.relative_to(out_dir)))
            for k, path in enumerate(paths)]
    _append_lines(out_dir / MANIFEST, rows)
    return paths


__all__ = ["MANIFEST", "PromptItem", "read_manifest", "read_prompts", "slug", "write_edits", "write_interpolation", "write_samples"]
