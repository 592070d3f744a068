"""The pipeline's tasks as per-image inputs for the cascade: text to image, one image per (prompt, seed) pair,
interpolation between two (prompt, seed) ends, and photo editing. Each checks its own arguments and encodes its
prompts through `pipe.encode_prompts`; the settings come resolved (settings.resolve)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch

from ..diffusion import lerp_text, slerp
from ..generators import GenerationInputs
from ..settings import PipelineInputError, SamplingSettings, check_seeds, resolve_seeds
from ..text import TextEncoding
from .cascade import Cascade
from .images import ImageInput, check_mask_shape, input_size, load_image, square_mask, square_photo

Attributes = Union[dict[str, str], Sequence[dict[str, str]], None]


def prompt_list(prompts: str | Sequence[str], num_images_per_prompt: int) -> list[str]:
    """A text-to-image call's prompts as a list, refused when there are none or no images are asked for."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise PipelineInputError("no prompts given")
    if num_images_per_prompt < 1:
        raise PipelineInputError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
    return prompts


def _per_prompt(value: Any, count: int, name: str) -> list[Any]:
    if value is None or isinstance(value, (str, dict)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise PipelineInputError(f"{name}: got {len(values)} values for {count} prompts")
    return values


def text_to_image(pipe: Cascade, prompts: list[str], negative_prompt: str | Sequence[str] | None,
                  num_images_per_prompt: int, seed: int | Sequence[int] | None, attributes: Attributes,
                  rngs: torch.Generator | Sequence[torch.Generator] | None, settings: SamplingSettings) -> GenerationInputs:
    """Prompt-major rows (all images of prompt 0 first); image i has seed `seed + i`, or one drawn from `rngs`."""
    negatives = _per_prompt(negative_prompt, len(prompts), "negative_prompt")
    wanted = _per_prompt(attributes, len(prompts), "attributes")
    expand = [i for i in range(len(prompts)) for _ in range(num_images_per_prompt)]
    text = pipe.encode_prompts([prompts[i] for i in expand])
    unconditional = pipe.encode_prompts([negatives[i] or settings.negative_prompt for i in expand], "negative prompt",
                                        allow_empty=True)
    seeds = resolve_seeds(len(expand), seed, rngs)
    return GenerationInputs(text, unconditional, seeds, [dict(wanted[i] or {}) for i in expand])


def paired(pipe: Cascade, prompts: Sequence[str], seeds: Sequence[int], settings: SamplingSettings,
           attributes: Sequence[dict[str, str]] | None = None) -> GenerationInputs:
    """One row per (prompt, seed) pair: what sample.py, submissions and the app ask for."""
    if len(seeds) != len(prompts) or (attributes is not None and len(attributes) != len(prompts)):
        raise PipelineInputError(f"{len(prompts)} prompts need as many seeds (got {len(seeds)}) and attribute sets "
                                 f"(got {'none' if attributes is None else len(attributes)})")
    for number, seed in enumerate(seeds):
        check_seeds(f"seed {number}", seed)
    text = pipe.encode_prompts(list(prompts))
    unconditional = pipe.encode_prompts([settings.negative_prompt] * len(prompts), "negative prompt", allow_empty=True)
    return GenerationInputs(text, unconditional, list(seeds), [dict(a) for a in (attributes or [{}] * len(prompts))])


def interpolation(pipe: Cascade, prompt_a: str, prompt_b: str, seed_a: int, seed_b: int, num_frames: int,
                  attributes: dict[str, str] | None, settings: SamplingSettings) -> GenerationInputs:
    """Frames from (prompt_a, seed_a) to (prompt_b, seed_b): slerp of every stage's starting draw, lerp of the caption
    embeddings, one deterministic sampler; frame 0 and the last frame equal the two single samples."""
    if settings.scheduler not in pipe.deterministic_samplers:
        raise PipelineInputError(f"interpolation needs a deterministic sampler ({', '.join(pipe.deterministic_samplers)}), "
                                 f"not {settings.scheduler}")
    check_seeds("seed_a", seed_a)
    check_seeds("seed_b", seed_b)
    both = pipe.encode_prompts([prompt_a, prompt_b])
    ends = [TextEncoding(both.token_states[i : i + 1], both.mask[i : i + 1], both.pooled[i : i + 1]) for i in (0, 1)]
    fractions = [i / (num_frames - 1) for i in range(num_frames)]
    texts = [lerp_text(ends[0], ends[1], t) for t in fractions]
    text = TextEncoding(torch.cat([t.token_states for t in texts]), torch.cat([t.mask for t in texts]),
                        torch.cat([t.pooled for t in texts]))
    rngs = [torch.Generator().manual_seed(seed) for seed in (seed_a, seed_b)]
    stage_latents = []
    for stage in pipe.stages_for(settings.size):
        latent_a, latent_b = stage.draw_latents(rngs, settings)
        stage_latents.append(torch.stack([slerp(latent_a, latent_b, t) for t in fractions]))
    unconditional = pipe.encode_prompts([settings.negative_prompt] * num_frames, "negative prompt", allow_empty=True)
    seeds = [seed_a if t < 0.5 else seed_b for t in fractions]  # only for the record: every draw is given
    return GenerationInputs(text, unconditional, seeds, [dict(attributes or {})] * num_frames, stage_latents=stage_latents)


def check_edit(pipe: Cascade, strength: float, num_images: int) -> None:
    """Refuse an edit before any work: a family that cannot edit, a strength outside [0, 1], no images."""
    if not pipe.stages[0].can_edit:
        raise PipelineInputError(f"this model ({pipe.stages[0].family}) cannot edit photos; generate from a description instead")
    if not (isinstance(strength, (int, float)) and 0.0 <= strength <= 1.0):
        raise PipelineInputError(f"strength must be between 0 (keep the photo) and 1 (ignore it), got {strength}")
    if num_images < 1:
        raise PipelineInputError(f"num_images must be >= 1, got {num_images}")


def edit(pipe: Cascade, image: ImageInput, prompt: str, strength: float, mask: ImageInput | None, num_images: int,
         seed: int | Sequence[int] | None, attributes: dict[str, str] | None, settings: SamplingSettings) -> GenerationInputs:
    """SDEdit rows (noise the photo to `strength`, denoise with the new caption); with a mask, only its white region is
    repainted and the rest is kept (RePaint-style)."""
    base = pipe.stages[0]
    photo_pixels = load_image(image, "image", min_size=input_size(base))
    photo, repaint = square_photo(photo_pixels, base), None
    if mask is not None:
        mask_pixels = load_image(mask, "mask", min_size=input_size(base))
        check_mask_shape(photo_pixels.shape, mask_pixels.shape)
        repaint = square_mask(mask_pixels, base)
    text = pipe.encode_prompts([prompt] * num_images)
    unconditional = pipe.encode_prompts([settings.negative_prompt] * num_images, "negative prompt", allow_empty=True)
    return GenerationInputs(text, unconditional, resolve_seeds(num_images, seed), [dict(attributes or {})] * num_images,
                            init_image=photo.expand(num_images, -1, -1, -1).clone(),
                            mask=None if repaint is None else repaint.expand(num_images, -1, -1, -1).clone(),
                            strength=float(strength))


__all__ = ["Attributes", "check_edit", "edit", "interpolation", "paired", "prompt_list", "text_to_image"]
