"""The studio's requests and their checks against the chosen model: the second half of request validation.

The page's field table (requests.py) has already refused a value of the wrong type or outside the page's range before
Gradio processed it; what is checked here needs the model or the app's limits (its samplers, its tokenizer, its
attribute vocabulary, the seeds a request will use), and holds for callers that never went through the page (scripts,
tests). Every refusal is a PipelineInputError in one sentence that names the field as the page labels it.

    description, notes = check_description(request.description, limits, pipeline)
    settings = check_settings(pipeline, limits, request.steps, request.guidance, request.sampler)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.images import UPLOAD_MAX_PIXELS
from ..pipeline import FashionGenPipeline
from ..settings import DEFAULT_GUIDANCE, PipelineInputError, SamplingLimits, SamplingSettings

ATTRIBUTES = ("category", "gender", "colour", "season")  # the dropdowns, always present so the API never changes
ANY = "any"
MAX_SEED = 2**31 - 1

# The page's names for the sampling settings, so a refusal speaks the page's language.
SETTING_LABELS = {"num_inference_steps": "Steps", "guidance_scale": "Guidance scale", "scheduler": "Sampler",
                  "negative_prompt": "Negative description", "truncation": "Truncation"}


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for (the sliders use them too)."""

    max_images: int = 8
    sampling: SamplingLimits = SamplingLimits(max_steps=100, max_guidance=20.0)  # steps, guidance: a public server's share
    max_frames: int = 16
    max_description_chars: int = 2000  # longer text is cut here, before the tokenizer
    max_neighbours: int = 16
    max_upload_mb: int = 20  # one uploaded file; Gradio refuses a larger one while it arrives (launch(max_file_size))
    max_upload_pixels: int = UPLOAD_MAX_PIXELS  # one uploaded image, checked from its header before it is decoded
    photo_side: int = 1024  # uploads are kept at about this many px on the short side (the models work at 64-256)


@dataclass
class GenerateRequest:
    description: str
    negative: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    num_images: int = 4
    steps: int | None = None  # None: the model's default (20 for diffusion, 4 for a student)
    guidance: float = DEFAULT_GUIDANCE
    sampler: str | None = None  # None: the model's default (dpm++ for diffusion, one-step for a GAN)
    seed: int = 0
    random_seed: bool = False
    model: str | None = None  # one of Studio.models; None: the first
    truncation: float | None = None  # GAN only: None = the model's default


@dataclass
class InterpolateRequest:
    description_a: str
    description_b: str
    seed_a: int = 0
    seed_b: int = 1
    frames: int = 8
    steps: int | None = None  # None: the model's default (20 for diffusion, 4 for a student)
    guidance: float = DEFAULT_GUIDANCE
    sampler: str | None = None
    model: str | None = None
    truncation: float | None = None


@dataclass
class EditRequest:
    image: np.ndarray  # uint8 [H, W, 3]
    description: str
    mask: np.ndarray | None = None  # bool [H, W], True = repaint
    strength: float = 0.6
    num_images: int = 2
    steps: int | None = None  # None: the model's default (20 for diffusion, 4 for a student)
    guidance: float = DEFAULT_GUIDANCE
    sampler: str | None = None
    seed: int = 0
    model: str | None = None


def check_description(text: Any, limits: Limits, pipeline: FashionGenPipeline,
                      what: str = "description") -> tuple[str, list[str]]:
    """A usable description and the notes to show about it (cut, truncated)."""
    if not isinstance(text, str) or not text.strip():
        raise PipelineInputError(f"The {what} is empty: describe the garment, e.g. \"red floral summer dress\".")
    notes = []
    text = " ".join(text.split())
    if len(text) > limits.max_description_chars:
        text = text[: limits.max_description_chars]
        notes.append(f"The {what} was cut to {limits.max_description_chars} characters.")
    encoder = pipeline.encoder
    tokens = encoder.token_count(text)
    if tokens > encoder.max_length:
        notes.append(f"The {what} is {tokens} tokens long; the caption encoder reads the first {encoder.max_length}, "
                     "so the rest was ignored.")
    return text, notes


def check_settings(pipeline: FashionGenPipeline, limits: Limits, steps: Any, guidance: Any, sampler: Any,
                   negative: str = "", truncation: Any = None) -> SamplingSettings:
    """The request's settings, checked once against the app's limits and the model's samplers. Steps and guidance
    always come from the page's sliders (hidden for a model that does not use them, and then unused); a negative
    description or a truncation given to a model that does not use it is refused."""
    uses = pipeline.stages[0].settings_used
    for field_name, value in (("negative_prompt", negative), ("truncation", truncation)):
        if value not in (None, "") and field_name not in uses:
            raise PipelineInputError(f"{SETTING_LABELS[field_name]}: this model ({pipeline.stages[0].family}) does not use it.")
    steps = pipeline.stages[0].default_steps if steps in (None, "") else steps
    return SamplingSettings.parse(names=SETTING_LABELS, limits=limits.sampling, samplers=pipeline.samplers,
                                  num_inference_steps=whole_number(steps, "Steps"),
                                  guidance_scale=finite_number(guidance, "Guidance scale"),
                                  scheduler=sampler if sampler not in (None, "") else pipeline.default_sampler,
                                  negative_prompt=negative,
                                  truncation=None if truncation in (None, "") else finite_number(truncation, "Truncation"))


def check_count(value: Any, what: str, low: int, high: int) -> int:
    count = whole_number(value, what)
    if not low <= count <= high:
        raise PipelineInputError(f"{what} must be between {low} and {high}, got {count}.")
    return count


def check_first_seed(seed: int, count: int, what: str = "Seed") -> int:
    """A first seed whose `count` images (seed, seed + 1, ...) all stay within MAX_SEED."""
    if not 0 <= seed <= MAX_SEED - count:
        raise PipelineInputError(f"{what} must be between 0 and {MAX_SEED - count}, got {seed}.")
    return seed


def check_attributes(wanted: dict[str, Any], pipeline: FashionGenPipeline) -> dict[str, str]:
    vocab = pipeline.attribute_vocab
    choices = {attribute: [ANY, *vocab.get(attribute, [])] for attribute in ATTRIBUTES}
    chosen = {}
    for name, value in wanted.items():
        if value in (None, "", ANY):
            continue
        if name not in choices or value not in choices[name]:
            raise PipelineInputError(f"{name} '{value}' is not one this model knows; choose from the list.")
        chosen[name] = str(value)
    return chosen


def whole_number(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PipelineInputError(f"{what} must be a whole number, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineInputError(f"{what} must be a whole number, got {value!r}.") from None
    if not number.is_integer():
        raise PipelineInputError(f"{what} must be a whole number, got {value!r}.")
    return int(number)


def finite_number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineInputError(f"{what} must be a number, got {value!r}.") from None
    if not np.isfinite(number):
        raise PipelineInputError(f"{what} must be a finite number, got {value!r}.")
    return number


__all__ = ["ANY", "ATTRIBUTES", "MAX_SEED", "SETTING_LABELS", "EditRequest", "GenerateRequest", "InterpolateRequest", "Limits",
           "check_attributes", "check_count", "check_description", "check_first_seed", "check_settings", "finite_number",
           "whole_number"]
