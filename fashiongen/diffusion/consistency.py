"""Consistency distillation of a guided diffusion model (latent consistency distillation, Luo et al. 2023, in pixel
space) and the student's multistep sampler, as pure functions over the teacher's forward process.

The student f(x_t, t, c, w) maps any point of the teacher's guided probability-flow ODE to the ODE's end. Training
(train/distill.py) takes a photo noised to a point t_n of a skip grid (every `skip`-th training step), moves it one
grid step along the ODE with the teacher's guided DDIM step at guidance w, and pulls the student's answer at t_n
towards the (EMA) student's answer at t_{n-1}. Sampling in N steps: predict the end, re-noise it to the next of N
grid timesteps with fresh noise, repeat.

    x0 = consistency_sample(student, alphas, text, noise, num_steps=4, guidance=3.0, generators=generators, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0  # LCM's: the boundary terms are ~0 at every grid step but t = 0


def skip_grid(num_train_timesteps: int, grid_size: int) -> Tensor:
    """The solver's timesteps, ascending: [skip - 1, 2 skip - 1, ..., T - 1] with skip = T // grid_size. [grid_size] long."""
    skip = num_train_timesteps // grid_size
    return torch.arange(1, grid_size + 1, dtype=torch.long) * skip - 1


def sampling_timesteps(num_steps: int, num_train_timesteps: int, grid_size: int) -> list[int]:
    """N timesteps of the grid from the last one down, evenly strided (LCM's schedule): 1 step [999], 2 [999, 499],
    4 [999, 759, 519, 279] for T = 1000 and a 50-point grid."""
    grid = skip_grid(num_train_timesteps, grid_size).flip(0)
    if not 1 <= num_steps <= grid_size:
        raise ValueError(f"a consistency student samples in 1 to {grid_size} steps, not {num_steps}")
    stride = grid_size // num_steps
    return [int(t) for t in grid[::stride][:num_steps]]


def boundary_scalings(timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """c_skip, c_out [B] with c_skip(0) = 1, c_out(0) = 0: f(x, 0) = x exactly (the consistency boundary condition)."""
    scaled = timesteps.float() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2).sqrt()
    return c_skip, c_out


def _column(values: Tensor, like: Tensor) -> Tensor:
    return values.to(like.device, torch.float32).view(-1, *([1] * (like.ndim - 1)))


def clean_and_noise(prediction_type: str, alphas_cumprod: Tensor, x_t: Tensor, output: Tensor,
                    timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """The network output at x_t read as (predicted clean image, predicted noise), both [B, C, H, W] float32."""
    alpha_bar = alphas_cumprod.to(x_t.device)[timesteps]
    alpha, sigma = _column(alpha_bar.sqrt(), x_t), _column((1 - alpha_bar).sqrt(), x_t)
    x_t, output = x_t.float(), output.float()
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha, output
    if prediction_type == "v_prediction":
        return alpha * x_t - sigma * output, sigma * x_t + alpha * output
    raise ValueError(f"unknown prediction_type '{prediction_type}'")


def ddim_step(alphas_cumprod: Tensor, clean: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """The deterministic DDIM point at `timesteps` [B] for a predicted clean image and noise (t = 0 gives ~clean)."""
    alpha_bar = alphas_cumprod.to(clean.device)[timesteps]
    return _column(alpha_bar.sqrt(), clean) * clean + _column((1 - alpha_bar).sqrt(), clean) * noise


def consistency_output(prediction_type: str, alphas_cumprod: Tensor, x_t: Tensor, output: Tensor,
                       timesteps: Tensor) -> Tensor:
    """The student's answer f(x_t, t) = c_skip x_t + c_out x0_pred: [B, C, H, W] float32."""
    clean, _ = clean_and_noise(prediction_type, alphas_cumprod, x_t, output, timesteps)
    c_skip, c_out = boundary_scalings(timesteps)
    return _column(c_skip, x_t) * x_t.float() + _column(c_out, x_t) * clean


def pseudo_huber(prediction: Tensor, target: Tensor, c: float) -> Tensor:
    """sqrt(d^2 + c^2) - c, averaged per sample: [B] (Song & Dhariwal 2023: robust to the targets' outliers)."""
    difference = (prediction.float() - target.float()).square()
    return ((difference + c * c).sqrt() - c).mean(dim=tuple(range(1, prediction.ndim)))


@dataclass
class StartFrom:
    """Begin part-way (an edit): `image` [B, 3, H, W] noised to the first of the remaining steps; with `mask`
    [B, 1, H, W] (1 = repaint) the kept region is put back, noised to each step's level, before every step."""

    image: Tensor
    first_step: int
    mask: Tensor | None = None
    noise: Tensor | None = None  # [B, 3, H, W]: brings the kept region to each step's level


@torch.no_grad()
def consistency_sample(
    model: Callable[..., Tensor],  # (x_t, t [B], token_states, mask, pooled, attribute_ids, low_res, guidance [B]) -> output
    alphas_cumprod: Tensor,
    prediction_type: str,
    text_states: Tensor, text_mask: Tensor, text_pooled: Tensor,
    noise: Tensor,  # [B, 3, H, W] the first draw
    timesteps: Sequence[int],
    guidance_scale: float,
    generators: Sequence[torch.Generator],  # per image: the fresh noise of each later step
    attribute_ids: Tensor | None = None,
    start: StartFrom | None = None,
    preview: Callable[[int, int, Tensor], None] | None = None,
) -> Tensor:
    """Images in [-1, 1]: [B, 3, H, W] float32, each depending only on its own noise and generator."""
    batch, shape = noise.shape[0], tuple(noise.shape[1:])
    guidance = torch.full((batch,), float(guidance_scale), device=noise.device)
    steps = list(timesteps)[start.first_step:] if start is not None else list(timesteps)
    if start is not None and not steps:
        return start.image.clamp(-1.0, 1.0)
    t0 = torch.full((batch,), steps[0], dtype=torch.long, device=noise.device)
    # from pure noise, x_T is the draw itself (as the teacher's samplers start); an edit noises its photo to t0
    x = ddim_step(alphas_cumprod, start.image, noise, t0) if start is not None else noise.float()
    clean = x
    dtype = next(model.parameters()).dtype if isinstance(model, torch.nn.Module) else torch.float32
    for index, t in enumerate(steps):
        t_batch = torch.full((batch,), t, dtype=torch.long, device=noise.device)
        if start is not None and start.mask is not None:
            known = ddim_step(alphas_cumprod, start.image, start.noise, t_batch)
            x = start.mask * x + (1 - start.mask) * known
        output = model(x.to(dtype), t_batch, text_states.to(dtype), text_mask, text_pooled.to(dtype), attribute_ids, None,
                       guidance)
        clean = consistency_output(prediction_type, alphas_cumprod, x, output, t_batch).clamp(-1.0, 1.0)
        if preview is not None:
            preview(index + 1, len(steps), clean)
        if index + 1 < len(steps):
            fresh = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(noise.device)
            x = ddim_step(alphas_cumprod, clean, fresh, torch.full_like(t_batch, steps[index + 1]))
    if start is not None and start.mask is not None:
        clean = start.mask * clean + (1 - start.mask) * start.image
    return clean.clamp(-1.0, 1.0)


__all__ = ["StartFrom", "boundary_scalings", "clean_and_noise", "consistency_output", "consistency_sample", "ddim_step",
           "pseudo_huber", "sampling_timesteps", "skip_grid"]
