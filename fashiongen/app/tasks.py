"""The studio's model tasks, each as one job: check the request against the chosen model, run it on the compute worker
with live previews, and save what a designer downloads. The studio (studio.py) picks the model and calls these.

A many-step model generates its images one at a time: on a CPU a batch costs as much per image as single images, so
the first finished image arrives after 1/N of the time, and every step shows a live preview. A one-forward model (a
GAN) generates them all in one forward.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..grid import save_image
from ..jobs import STRIP_FILE, save_interpolation_files
from ..pipeline import FashionGenPipeline, StepPreview
from ..settings import PipelineInputError, SamplingSettings, image_seeds
from .checks import (
    MAX_SEED,
    EditRequest,
    GenerateRequest,
    InterpolateRequest,
    Limits,
    check_attributes,
    check_count,
    check_description,
    check_first_seed,
    check_settings,
    finite_number,
    whole_number,
)
from .compute import Jobs, Report

FEW_STEPS = 4  # a base model sampling in this many steps or fewer shows no previews and batches all but the first image


@dataclass
class Update:
    """One step of a job as the page shows it: the images so far (finished first, then previews)."""

    images: list[tuple[Image.Image, str]]  # (image, caption under it)
    status: str
    done: bool = False
    files: list[str] = field(default_factory=list)  # downloads, when done
    progress: tuple[int, int] = (0, 1)  # (steps done, steps in all)
    extra: dict[str, Any] = field(default_factory=dict)  # per-job results (e.g. the GIF path)


@dataclass(frozen=True)
class Workshop:
    """What a task needs of the studio: its limits, the compute worker's jobs, and a new download folder per job."""

    limits: Limits
    jobs: Jobs
    folder: Callable[[str], Path]  # kind ("generate", ...) -> a new, empty folder


def _notes(notes: list[str]) -> str:
    return "".join(f"\n\n*Note: {text}*" for text in notes)


def _write_settings(directory: Path, record: dict[str, Any]) -> Path:
    path = directory / "settings.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- generate

def generate(shop: Workshop, pipeline: FashionGenPipeline, request: GenerateRequest, session: str,
             model_name: str = "") -> Iterator[Update]:
    """Images for a description, one at a time with live previews; the last update carries the downloads and says
    which model (`model_name`) made them."""
    limits = shop.limits
    description, notes = check_description(request.description, limits, pipeline)
    negative = " ".join(str(request.negative or "").split())[: limits.max_description_chars]
    settings = check_settings(pipeline, limits, request.steps, request.guidance, request.sampler, negative, request.truncation)
    count = check_count(request.num_images, "Number of images", 1, limits.max_images)
    attributes = check_attributes(request.attributes, pipeline)
    seed = secrets.randbelow(MAX_SEED - count) if request.random_seed else whole_number(request.seed, "Seed")
    seeds = image_seeds(check_first_seed(seed, count), count)
    per_image = pipeline.stages[0].steps_per_image(settings) * len(pipeline.stages)
    total_steps = count * per_image
    started = time.perf_counter()
    work = _generation_work(pipeline, description, seeds, settings, attributes)
    finished: list[tuple[Image.Image, str]] = []
    timings: list[float] = []
    note = _notes(notes)
    for kind, value in shop.jobs.stream(session, work):
        if kind == "preview":
            number, step = value
            done = number * per_image + step.stage * (per_image // len(pipeline.stages)) + step.step
            caption = f"seed {seeds[number]} · step {step.step}/{step.steps}"
            status = f"Image {number + 1} of {count}: step {step.step} of {step.steps}{note}"
            yield Update(finished + [(step.pil()[0], caption)], status, progress=(done, total_steps))
        elif kind in ("image", "images"):
            for number, image in [value] if kind == "image" else value:
                timings.append(time.perf_counter() - started)
                finished.append((image, f"seed {seeds[number]}"))
            status = (f"Image {number + 1} of {count} finished after {timings[-1]:.1f} s{note}" if kind == "image" or
                      len(value) == 1 else f"Images {value[0][0] + 1}-{number + 1} of {count} finished after "
                                           f"{timings[-1]:.1f} s{note}")
            yield Update(list(finished), status, progress=((number + 1) * per_image, total_steps))
        elif kind == "cancelled":
            yield Update(list(finished), f"Stopped after {len(finished)} of {count} images.", done=True)
            return
        else:
            break
    elapsed = time.perf_counter() - started
    directory = shop.folder("generate")
    files = []
    for (image, _), image_seed in zip(finished, seeds):
        path = directory / f"fashiongen-seed{image_seed}.png"
        save_image(image, path)
        files.append(str(path))
    record = {"description": description, "negative": negative, "attributes": attributes, "seeds": seeds,
              "num_images": count, "settings": asdict(settings), "notes": notes, "seconds": round(elapsed, 3),
              "seconds_to_first_image": round(timings[0], 3) if timings else None, "model": pipeline.describe()}
    files.append(str(_write_settings(directory, record)))
    by = f" by {model_name}" if model_name else ""
    status = (f"{count} image{'s' if count > 1 else ''}{by} in {elapsed:.1f} s (first after {timings[0]:.1f} s), "
              f"seeds {seeds[0]}–{seeds[-1]}{note}") if count > 1 else f"1 image{by} in {elapsed:.1f} s, seed {seeds[0]}{note}"
    yield Update(list(finished), status, done=True, files=files, progress=(total_steps, total_steps),
                 extra={"seeds": seeds, "seed": seed})


def _generation_work(pipeline: FashionGenPipeline, description: str, seeds: list[int], settings: SamplingSettings,
                     attributes: dict[str, str]) -> Callable[[Report], list[Image.Image]]:
    """The job that makes a request's images on the compute worker, reporting previews and finished images."""
    count = len(seeds)
    per_image = pipeline.stages[0].steps_per_image(settings) * len(pipeline.stages)

    def work(report: Report) -> list[Image.Image]:
        if per_image == 1:  # one forward makes every image: one batch, no previews
            images = pipeline.generate_images([description] * count, seeds, settings, [attributes] * count)
            for number, image in enumerate(images):
                report("image", (number, image))
            return images
        if pipeline.stages[0].steps_per_image(settings) <= FEW_STEPS:  # a few-step model (the student): no previews,
            # the first image alone (the soonest first result), then the others in one batch, which costs about
            # half of making them one by one (batch 1 forwards waste most of the CPU); seeds make the same images
            finished = []
            for first, group in ((0, seeds[:1]), (1, seeds[1:])):
                if group:
                    images = pipeline.generate_images([description] * len(group), group, settings, [attributes] * len(group))
                    finished.extend(images)
                    report("images", list(enumerate(images, start=first)))  # one page update for the batch
            return finished
        finished = []
        for number, image_seed in enumerate(seeds):
            def preview(step: StepPreview, number: int = number) -> None:
                report("preview", (number, step))

            image = pipeline.generate_images([description], [image_seed], settings, [attributes], preview=preview)[0]
            finished.append(image)
            report("image", (number, image))
        return finished

    return work


# ---------------------------------------------------------------------- interpolate

def interpolate(shop: Workshop, pipeline: FashionGenPipeline, request: InterpolateRequest, session: str) -> Iterator[Update]:
    """Frames between two (description, seed) designs: a strip, a looping GIF and the frames."""
    limits = shop.limits
    description_a, notes_a = check_description(request.description_a, limits, pipeline, "first description")
    description_b, notes_b = check_description(request.description_b, limits, pipeline, "second description")
    settings = check_settings(pipeline, limits, request.steps, request.guidance, request.sampler, truncation=request.truncation)
    deterministic = list(pipeline.deterministic_samplers)
    if settings.scheduler not in deterministic:
        raise PipelineInputError(f"Interpolation needs a deterministic sampler ({', '.join(deterministic)}), "
                                 f"not {settings.scheduler}.")
    frames = check_count(request.frames, "Number of frames", 2, limits.max_frames)
    seed_a, seed_b = (whole_number(request.seed_a, "First seed"), whole_number(request.seed_b, "Second seed"))
    for seed, what in ((seed_a, "First seed"), (seed_b, "Second seed")):
        check_first_seed(seed, 0, what)
    per_batch = pipeline.stages[0].steps_per_image(settings)
    total_steps = per_batch * len(pipeline.stages) * -(-frames // pipeline.batch_size)
    started = time.perf_counter()

    def work(report: Report) -> list[Image.Image]:
        return pipeline.interpolate(description_a, description_b, seed_a, seed_b, frames, settings=settings,
                                    preview=lambda step: report("preview", step))

    note = _notes(notes_a + notes_b)
    result: list[Image.Image] = []
    for kind, value in shop.jobs.stream(session, work):
        if kind == "preview":
            batch = value.first // pipeline.batch_size
            done = (batch * len(pipeline.stages) + value.stage) * per_batch + value.step
            pictures = value.pil()
            shown = [(image, f"frame {value.first + i + 1} · step {value.step}/{value.steps}") for i, image in enumerate(pictures)]
            yield Update(shown, f"Frames {value.first + 1}–{value.first + len(pictures)} of {frames}: step {value.step} of "
                         f"{value.steps}{note}", progress=(done, total_steps))
        elif kind == "cancelled":
            yield Update([], "Stopped.", done=True)
            return
        elif kind == "done":
            result = value
    directory = shop.folder("interpolate")
    save_interpolation_files(result, description_a, description_b, directory)
    record = {"description_a": description_a, "description_b": description_b, "seed_a": seed_a, "seed_b": seed_b,
              "frames": frames, "settings": asdict(settings), "model": pipeline.describe()}
    _write_settings(directory, record)
    elapsed = time.perf_counter() - started
    captions = [f"t = {i / (frames - 1):.2f}" for i in range(frames)]
    yield Update(list(zip(result, captions)), f"{frames} frames in {elapsed:.1f} s{note}", done=True,
                 files=[str(directory / "interpolation.gif"), str(directory / STRIP_FILE), str(directory / "settings.json")],
                 progress=(total_steps, total_steps),
                 extra={"strip": str(directory / STRIP_FILE), "gif": str(directory / "interpolation.gif")})


# ---------------------------------------------------------------------- edit

def edit(shop: Workshop, pipeline: FashionGenPipeline, request: EditRequest, session: str) -> Iterator[Update]:
    """New versions of a photo for a new description (SDEdit); with a mask only the masked region is repainted. The
    studio has checked that the model edits."""
    limits = shop.limits
    if request.image is None:
        raise PipelineInputError("Upload a photo to edit (or send a generated image here).")
    description, notes = check_description(request.description, limits, pipeline, "new description")
    settings = check_settings(pipeline, limits, request.steps, request.guidance, request.sampler)
    strength = finite_number(request.strength, "Strength")
    if not 0.0 <= strength <= 1.0:
        raise PipelineInputError(f"Strength must be between 0 (keep the photo) and 1 (ignore it), got {strength:g}.")
    count = check_count(request.num_images, "Number of images", 1, limits.max_images)
    seeds = image_seeds(check_first_seed(whole_number(request.seed, "Seed"), count), count)
    mask = None
    if request.mask is not None and request.mask.any():
        mask = Image.fromarray(np.where(request.mask, 255, 0).astype(np.uint8)).convert("RGB")
    per_image = max(1, min(settings.num_inference_steps, round(settings.num_inference_steps * strength)))
    total_steps = count * per_image * len(pipeline.stages)
    started = time.perf_counter()

    def work(report: Report) -> list[Image.Image]:
        finished = []
        for number, image_seed in enumerate(seeds):
            image = pipeline.edit(request.image, description, strength, mask, 1, image_seed, settings=settings,
                                  preview=lambda step, number=number: report("preview", (number, step)))[0]
            finished.append(image)
            report("image", (number, image))
        return finished

    finished: list[tuple[Image.Image, str]] = []
    note = _notes(notes)
    what = "masked region repainted" if mask is not None else "whole photo"
    for kind, value in shop.jobs.stream(session, work):
        if kind == "preview":
            number, step = value
            unit = per_image * len(pipeline.stages)  # the step's own count decides the fraction (a GAN's inversion has its own)
            done = number * unit + min(unit, round(unit * step.step / max(step.steps, 1)))
            yield Update(finished + [(step.pil()[0], f"seed {seeds[number]} · step {step.step}/{step.steps}")],
                         f"Edit {number + 1} of {count}: step {step.step} of {step.steps}{note}", progress=(done, total_steps))
        elif kind == "image":
            number, image = value
            finished.append((image, f"seed {seeds[number]}"))
            yield Update(list(finished), f"Edit {number + 1} of {count} finished{note}",
                         progress=((number + 1) * per_image * len(pipeline.stages), total_steps))
        elif kind == "cancelled":
            yield Update(list(finished), f"Stopped after {len(finished)} of {count} edits.", done=True)
            return
    directory = shop.folder("edit")
    files = []
    save_image(Image.fromarray(np.ascontiguousarray(request.image)), directory / "input.png")
    for (image, _), image_seed in zip(finished, seeds):
        files.append(str(directory / f"fashiongen-edit-seed{image_seed}.png"))
        save_image(image, files[-1])
    record = {"description": description, "strength": strength, "masked": mask is not None, "seeds": seeds,
              "settings": asdict(settings), "model": pipeline.describe()}
    files.append(str(_write_settings(directory, record)))
    elapsed = time.perf_counter() - started
    yield Update(list(finished), f"{count} edit{'s' if count > 1 else ''} ({what}, strength {strength:g}) in {elapsed:.1f} s{note}",
                 done=True, files=files, progress=(total_steps, total_steps))


__all__ = ["FEW_STEPS", "Update", "Workshop", "edit", "generate", "interpolate"]
