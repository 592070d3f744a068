"""Sampling with classifier-free guidance, written out: one batched call for the conditional and
unconditional branches, then uncond + scale * (cond - uncond).

    images = sample(model, make_sampler("ddim", settings), cond, uncond, noise, num_inference_steps=20, guidance_scale=3.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin
from torch import Tensor

from ..text import TextEncoding


def pad_tokens(text: TextEncoding, length: int) -> TextEncoding:
    """Zero-pad token states and mask to `length` tokens."""
    extra = length - text.token_states.shape[1]
    if extra <= 0:
        return text
    return TextEncoding(F.pad(text.token_states, (0, 0, 0, extra)), F.pad(text.mask, (0, extra)), text.pooled)


def concat_text(first: TextEncoding, second: TextEncoding) -> TextEncoding:
    """Stack two encodings along the batch, padding to the longer: [B1 + B2, L, D]."""
    length = max(first.token_states.shape[1], second.token_states.shape[1])
    a, b = pad_tokens(first, length), pad_tokens(second, length)
    return TextEncoding(torch.cat([a.token_states, b.token_states]), torch.cat([a.mask, b.mask]), torch.cat([a.pooled, b.pooled]))


def classifier_free_guidance(conditional: Tensor, unconditional: Tensor, guidance_scale: float) -> Tensor:
    """uncond + s (cond - uncond); s = 1 is the plain conditional model, s = 0 the unconditional one."""
    return unconditional + guidance_scale * (conditional - unconditional)


@dataclass
class Inpainting:
    """Keep `known` where `mask` is 0 and paint where it is 1 (RePaint-style replacement at every step)."""

    known: Tensor  # [B, 3, H, W] in [-1, 1]
    mask: Tensor  # [B, 1, H, W] 1 = repaint, 0 = keep
    noise: Tensor  # [B, 3, H, W] noise that brings `known` to each step's noise level


@torch.no_grad()
def sample(
    model: Callable[..., Tensor],
    scheduler: SchedulerMixin,
    text: TextEncoding,  # [B, L, D] the captions
    unconditional: TextEncoding,  # [B, L', D] empty captions (or negative prompts)
    noise: Tensor,  # [B, 3, H, W] initial noise, drawn by the caller (per-image seeds)
    num_inference_steps: int = 20,
    guidance_scale: float = 3.0,
    attribute_ids: Tensor | None = None,  # [B, K] for the conditional branch; the unconditional branch gets 'none'
    low_res: Tensor | None = None,  # [B, 3, H, W] upsampled low-res image for a super-resolution stage
    generator: list[torch.Generator] | None = None,  # per-image generators for stochastic samplers (ddpm)
    start_step: int = 0,  # skip the first sampling steps (img2img / SDEdit)
    init_image: Tensor | None = None,  # [B, 3, H, W] with start_step: start from it noised to that step with `noise`
    inpainting: Inpainting | None = None,
    progress: Callable[[int, int], None] | None = None,
    preview: Callable[[int, int, Tensor], None] | None = None,  # (step, steps, predicted clean images [B, 3, H, W])
) -> Tensor:
    """Denoise `noise` into images in [-1, 1]: [B, 3, H, W] float32."""
    device, batch = noise.device, noise.shape[0]
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps[start_step:]
    guided = guidance_scale != 1.0
    both = concat_text(text, unconditional) if guided else text
    none_ids = torch.zeros_like(attribute_ids) if attribute_ids is not None else None
    ids = torch.cat([attribute_ids, none_ids]) if guided and attribute_ids is not None else attribute_ids
    low = torch.cat([low_res, low_res]) if guided and low_res is not None else low_res
    if init_image is not None and len(timesteps):
        x = scheduler.add_noise(init_image, noise, timesteps[:1])  # SDEdit: the input at the first step's noise level
    elif init_image is not None:
        x = init_image  # strength 0: nothing to denoise
    else:
        x = noise * scheduler.init_noise_sigma if start_step == 0 else noise
    dtype = next(model.parameters()).dtype if isinstance(model, torch.nn.Module) else x.dtype
    for index, t in enumerate(timesteps):
        if inpainting is not None:  # the kept region, noised to this step's level, replaces the sample there
            known = scheduler.add_noise(inpainting.known, inpainting.noise, t.reshape(1))
            x = inpainting.mask * x + (1 - inpainting.mask) * known
        x_in = scheduler.scale_model_input(x, t)
        x_in = torch.cat([x_in, x_in]) if guided else x_in  # [2B, 3, H, W]
        t_batch = torch.full((x_in.shape[0],), int(t), device=device, dtype=torch.long)
        output = model(x_in.to(dtype), t_batch, both.token_states.to(dtype), both.mask, both.pooled.to(dtype), ids,
                       None if low is None else low.to(dtype)).float()
        if guided:
            conditional, unconditional_output = output.chunk(2)
            output = classifier_free_guidance(conditional, unconditional_output, guidance_scale)
        if preview is not None:
            preview(index + 1, len(timesteps), predicted_clean(scheduler, x_in[:batch], output, t).clamp(-1.0, 1.0))
        x = scheduler.step(output, t, x, generator=generator).prev_sample
        if progress is not None:
            progress(index + 1, len(timesteps))
    if inpainting is not None:
        x = inpainting.mask * x + (1 - inpainting.mask) * inpainting.known
    return x.clamp(-1.0, 1.0)[:batch]


def predicted_clean(scheduler: SchedulerMixin, x_in: Tensor, output: Tensor, t: Tensor) -> Tensor:
    """The model's current estimate of the finished image from the scaled input x_t (variance-preserving, as
    every sampler here hands it to the model) and its output: what a live preview shows after each step."""
    alpha_bar = scheduler.alphas_cumprod.to(x_in.device)[int(t)].float()
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (x_in.float() - sigma * output) / alpha
    if kind == "v_prediction":
        return alpha * x_in.float() - sigma * output
    return output  # "sample"


def initial_noise(seeds: list[int], shape: tuple[int, int, int], device: torch.device | str = "cpu") -> Tensor:
    """One CPU generator per image so an image depends on its seed only, not on batch size or position."""
    return noise_from([torch.Generator().manual_seed(seed) for seed in seeds], shape, device)


def noise_from(generators: list[torch.Generator], shape: tuple[int, int, int], device: torch.device | str = "cpu") -> Tensor:
    """The next draw of each image's own generator: [B, C, H, W] (drawn on the generators' device, then moved)."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(device)
