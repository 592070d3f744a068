"""Sampling jobs that fill a folder: prompt sheets, interpolations and edits, each with PNGs, a grid
and manifest.jsonl (one line per image: prompt, seed, every setting, the model, the file).

    write_samples(pipe, [PromptItem("a red silk slip dress")], settings, "samples/", num_images=4, seed=0)

A job first checks the folder is its own (job_folder.check_job: a new folder, or this job's earlier run; anything
else only with `overwrite`), and claims it (job.json) once its first batch is made. It appends a manifest line right
after each batch of images is written, and skips images its manifest already lists with the same prompt, seed,
settings and model: an interrupted job resumes. A resumed job first rewrites the manifest with each file once (its
latest row), without the rows of missing images and a kill's partial last line; every listed file it keeps is
checked (inside the folder, a regular file, an image within the pixel limit) and one that fails stops the job naming
the line. Sheets and edits are made and written a
batch at a time; a grid shows at most grid.MAX_GRID_TILES images. One writer per folder (sample.py holds
utils.output_lock for the job).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .data.transforms import resize_square
from .grid import MAX_GRID_TILES, captioned_grid, sample_indices, save_animation, save_image, tile_size
from .job_folder import MANIFEST, Job, check_image_header, check_job, manifest_rows, read_back_image, record_job
from .pipeline import FashionGenPipeline, ImageInput
from .prompts import MAX_JOB_IMAGES, PromptItem, clean_prompt, read_prompts
from .settings import PipelineInputError, SamplingSettings, image_seeds
from .utils import atomic_write_text

STRIP_FILE = "strip.png"
MAX_STRIP_FRAMES = 16  # strip.png shows at most this many frames (both ends always); the animations show them all
JOB_MEMORY_BYTES = 2 << 30  # what one job holds at once: a batch of images, or an interpolation's frames, is kept under it
IMAGE_HELD_BYTES = 32  # bytes held a pixel of an image being made: float32 RGB in and out of a stage, the PIL copy


def held_bytes(pipe: FashionGenPipeline, settings: SamplingSettings, count: int, *, with_text: bool = False) -> int:
    """About the memory `count` images made at once hold (with their caption embeddings, for an interpolation)."""
    size = settings.size or pipe.resolution
    per_image = IMAGE_HELD_BYTES * size * size
    if with_text:
        per_image += 3 * 4 * pipe.encoder.max_length * pipe.encoder.dim  # interpolated, conditional and unconditional
    return count * per_image


def most_held(pipe: FashionGenPipeline, settings: SamplingSettings, *, with_text: bool = False) -> int:
    """The most images (or interpolation frames) a job makes at once within JOB_MEMORY_BYTES (at least one)."""
    return max(1, JOB_MEMORY_BYTES // held_bytes(pipe, settings, 1, with_text=with_text))


def check_held(name: str, pipe: FashionGenPipeline, settings: SamplingSettings, count: int, *, with_text: bool = False) -> None:
    """PipelineInputError naming `name` and the most this job can hold when `count` images at once would pass JOB_MEMORY_BYTES."""
    most = most_held(pipe, settings, with_text=with_text)
    if count > most:
        size = settings.size or pipe.resolution
        raise PipelineInputError(f"{name} {count}: at {size} px at most {most} are held in memory at once "
                                 f"(the limit is {JOB_MEMORY_BYTES >> 20} MB a job)")


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
    """The complete rows of a job folder's manifest (a partial last line from a kill is skipped); JobFolderError naming
    the line for a damaged one or a file outside the folder."""
    path = Path(path)
    return [row for _, row in manifest_rows(path.parent)] if path.name == MANIFEST else []


def _write_manifest(out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite out_dir/manifest.jsonl atomically with `rows`."""
    atomic_write_text(out_dir / MANIFEST, "".join(json.dumps(row) + "\n" for row in rows))


def _record(pipe: FashionGenPipeline, settings: SamplingSettings, **values: Any) -> dict[str, Any]:
    return {**values, "settings": settings.to_dict(), "model": pipe.fingerprint}


ROW_FIELDS = {"prompt-sheet": {"prompt": str, "seed": int, "index": int, "k": int}, "edit": {"prompt": str, "seed": int}}


def _resume(out_dir: Path, job: Job, overwrite: bool) -> dict[str, dict[str, Any]]:
    """file -> row of the images an earlier run of `job` in out_dir finished, each checked (job_folder.check_job: none
    for a new or overwritten folder). Nothing is written: `_begin` does that once the first batch is made."""
    done: dict[str, dict[str, Any]] = {}
    if check_job(out_dir, job, overwrite):
        listed = {}
        for number, row in manifest_rows(out_dir):
            where = f"{out_dir / MANIFEST}:{number}"
            for name, kind in ROW_FIELDS[job.kind].items():
                if not isinstance(row.get(name), kind) or isinstance(row.get(name), bool):
                    raise PipelineInputError(f"{where}: a row without {'an integer' if kind is int else 'a text'} "
                                             f"\"{name}\"; use another --out (or --overwrite)")
            listed[row["file"]] = (where, row)
        for file, (where, row) in listed.items():
            path = out_dir / file
            if path.exists() or path.is_symlink():
                check_image_header(out_dir, file, where)  # a FIFO, folder or non-image stops the job here
                done[file] = row
    return done


def _make(out_dir: Path, job: Job, done: dict[str, dict[str, Any]], rows: Sequence[dict[str, Any]], step: int,
          generate: Callable[[Sequence[dict[str, Any]]], Sequence[Image.Image]]) -> None:
    """Make `rows` a batch of `step` at a time: each batch's images written, then its manifest lines appended. The folder
    is claimed (job.json, the manifest rewritten to list `done`) only once the first batch is made, so a job the model
    refuses (a mask of other proportions, a family that cannot edit) leaves the folder as it was."""
    for start in range(0, max(len(rows), 1), step):
        batch = rows[start : start + step]
        images = generate(batch) if batch else []
        if start == 0:
            record_job(out_dir, job)
            _write_manifest(out_dir, list(done.values()))
        for row, image in zip(batch, images):
            save_image(image, out_dir / row["file"])
        if batch:
            _append_lines(out_dir / MANIFEST, batch)


def _save_grid(out_dir: Path, rows: Sequence[dict[str, Any]], caption: Callable[[dict[str, Any]], str], columns: int,
               size: int, first: tuple[np.ndarray, str] | None = None) -> None:
    """out_dir/grid.png of (an even sample of) `rows`' images, each read back through the folder's gate, `first` before."""
    tile = tile_size(size)
    shown = [rows[i] for i in sample_indices(len(rows), MAX_GRID_TILES - (first is not None))]
    pictures = [] if first is None else [resize_square(first[0], tile, "pad")]
    captions = [] if first is None else [first[1]]
    for row in shown:
        picture = read_back_image(out_dir, row["file"], f"{out_dir / MANIFEST} ({row['file']})")
        pictures.append(resize_square(picture, tile, "pad"))
        captions.append(caption(row))
    if len(shown) < len(rows):
        columns = min(8, len(pictures))
    if pictures:
        save_image(captioned_grid(pictures, captions, columns=columns, tile=tile, caption_lines=3), out_dir / "grid.png")


def write_samples(pipe: FashionGenPipeline, items: Sequence[PromptItem], settings: SamplingSettings, out_dir: str | Path,
                  num_images: int = 1, seed: int = 0, batch_size: int | None = None,
                  overwrite: bool = False) -> list[dict[str, Any]]:
    """`num_images` per prompt as out_dir/images/PPP_K_<prompt>.png, grid.png and manifest.jsonl; returns the manifest rows.

    Prompt p's images have the seeds image_seeds(seed + p * num_images, num_images), or image_seeds(item.seed, ...)
    when the prompt item brings its own seed.
    """
    out_dir = Path(out_dir)
    job = Job("prompt-sheet", pipe.fingerprint, {"settings": settings.to_dict()})
    done = _resume(out_dir, job, overwrite)
    todo = []
    for p, item in enumerate(items):
        first = item.seed if item.seed is not None else seed + p * num_images
        for k, image_seed in enumerate(image_seeds(first, num_images, f"prompt {p}'s seed")):
            file = f"images/{p:03d}_{k}_{slug(item.prompt)}.png"
            row = _record(pipe, settings, prompt=item.prompt, attributes=item.attributes, seed=image_seed, file=file, index=p, k=k)
            previous = done.get(file)
            if previous is not None and previous != row:
                raise PipelineInputError(f"{out_dir} holds {file} from another prompt, seed, setting or model; "
                                         "use a new --out folder (or --overwrite)")
            if previous is None:
                todo.append(row)
    _make(out_dir, job, done, todo, batch_size or pipe.batch_size, lambda batch: pipe.generate_images(
        [r["prompt"] for r in batch], [r["seed"] for r in batch], settings, [r["attributes"] for r in batch]))
    done.update((row["file"], row) for row in todo)
    ordered = sorted(done.values(), key=lambda r: (r["index"], r["k"]))
    _save_grid(out_dir, ordered, lambda r: f"{r['prompt']} (seed {r['seed']})", num_images, settings.size or pipe.resolution)
    return ordered


def save_interpolation_files(frames: Sequence[Image.Image], prompt_a: str, prompt_b: str, out_dir: str | Path) -> list[Path]:
    """out_dir/frames/frame_NN.png, strip.png (captioned ends, at most MAX_STRIP_FRAMES) and interpolation.gif/.webp;
    returns the frame paths."""
    out_dir = Path(out_dir)
    paths = []
    for number, frame in enumerate(frames):
        paths.append(out_dir / "frames" / f"frame_{number:02d}.png")
        save_image(frame, paths[-1])
    shown = sample_indices(len(frames), MAX_STRIP_FRAMES)
    fractions = [number / (len(frames) - 1) for number in shown]
    captions = [prompt_a if t == 0 else prompt_b if t == 1 else f"t = {t:.2f}" for t in fractions]
    tile = tile_size(frames[0].width, smallest=96)
    arrays = [resize_square(np.asarray(frames[number]), tile, "pad") for number in shown]
    save_image(captioned_grid(arrays, captions, columns=len(arrays), tile=tile, caption_lines=3), out_dir / STRIP_FILE)
    for suffix in (".gif", ".webp"):
        save_animation(frames, out_dir / f"interpolation{suffix}")
    return paths


def write_interpolation(pipe: FashionGenPipeline, prompt_a: str, prompt_b: str, settings: SamplingSettings,
                        out_dir: str | Path, seed_a: int = 0, seed_b: int = 1, num_frames: int = 8,
                        attributes: dict[str, str] | None = None, overwrite: bool = False) -> list[Path]:
    """Frames as out_dir/frames/frame_NN.png, strip.png, interpolation.gif and .webp, manifest.jsonl. Every frame is
    held in memory at once (one slerp, one animation), so `num_frames` is checked against JOB_MEMORY_BYTES first."""
    out_dir = Path(out_dir)
    prompt_a, prompt_b = clean_prompt(prompt_a, "prompt_a"), clean_prompt(prompt_b, "prompt_b")
    check_held("--frames", pipe, settings, num_frames, with_text=True)
    identity = {"settings": settings.to_dict(), "prompt_a": prompt_a, "prompt_b": prompt_b, "seed_a": seed_a,
                "seed_b": seed_b, "attributes": attributes or {}, "frames": num_frames}
    job = Job("interpolation", pipe.fingerprint, identity)
    check_job(out_dir, job, overwrite)  # a rerun makes it all again
    frames = pipe.interpolate(prompt_a, prompt_b, seed_a, seed_b, num_frames, attributes=attributes, settings=settings)
    record_job(out_dir, job)
    paths = save_interpolation_files(frames, prompt_a, prompt_b, out_dir)
    fractions = [number / (num_frames - 1) for number in range(num_frames)]
    rows = [_record(pipe, settings, prompt_a=prompt_a, prompt_b=prompt_b, seed_a=seed_a, seed_b=seed_b, t=t, attributes=attributes or {},
                    file=str(path.relative_to(out_dir))) for t, path in zip(fractions, paths)]
    _write_manifest(out_dir, rows)
    return paths


def write_edits(pipe: FashionGenPipeline, image: ImageInput, prompt: str, settings: SamplingSettings, out_dir: str | Path,
                strength: float = 0.6, mask: ImageInput | None = None, num_images: int = 1, seed: int = 0,
                attributes: dict[str, str] | None = None, overwrite: bool = False,
                batch_size: int | None = None) -> list[Path]:
    """Edited versions of a photo as out_dir/edits/edit_K.png, a grid (input first) and manifest.jsonl, made a batch at
    a time and resumed like a prompt sheet."""
    out_dir = Path(out_dir)
    prompt = clean_prompt(prompt, "prompt")
    source = str(image) if isinstance(image, (str, Path)) else "<in-memory image>"
    mask_name = None if mask is None else str(mask) if isinstance(mask, (str, Path)) else "<in-memory mask>"
    identity = {"settings": settings.to_dict(), "prompt": prompt, "input": source, "mask": mask_name, "strength": strength,
                "attributes": attributes or {}}
    original = pipe.prepare_image(image).add(1).mul(127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    job = Job("edit", pipe.fingerprint, identity)
    done = _resume(out_dir, job, overwrite)
    rows = [_record(pipe, settings, prompt=prompt, input=source, mask=mask_name, strength=strength, seed=one,
                    attributes=attributes or {}, file=f"edits/edit_{k}.png") for k, one in enumerate(image_seeds(seed, num_images))]
    for row in rows:
        if row["file"] in done and done[row["file"]] != row:
            raise PipelineInputError(f"{out_dir} holds {row['file']} from another seed; use a new --out folder (or --overwrite)")
    todo = [row for row in rows if row["file"] not in done]
    _make(out_dir, job, done, todo, batch_size or pipe.batch_size, lambda batch: pipe.edit(
        image, prompt, strength, mask, len(batch), [r["seed"] for r in batch], attributes=attributes, settings=settings))
    captions = "input" + (" (+ mask)" if mask is not None else "")
    _save_grid(out_dir, rows, lambda r: f"{prompt} (seed {r['seed']})", len(rows) + 1, settings.size or pipe.resolution,
               first=(original, captions))
    return [out_dir / row["file"] for row in rows]


__all__ = ["JOB_MEMORY_BYTES", "MANIFEST", "MAX_JOB_IMAGES", "MAX_STRIP_FRAMES", "PromptItem", "check_held",
           "clean_prompt", "held_bytes", "most_held", "read_manifest", "read_prompts", "slug", "write_edits", "write_interpolation", "write_samples"]
