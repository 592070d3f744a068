"""Noise schedules and samplers, all diffusers schedulers built from our model config.

Training uses DDPM's forward process; sampling may use any of SAMPLERS with the same betas. Every
sampler uses "trailing" timestep spacing so the first sampling step starts at the last training
step (required for zero-terminal-SNR schedules, harmless otherwise).
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    SchedulerMixin,
)
from torch import Tensor

from ..config import ModelConfig

SAMPLERS: dict[str, type[SchedulerMixin]] = {
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,  # DPM-Solver++(2M)
    "euler": EulerDiscreteScheduler,
    "ddpm": DDPMScheduler,
}


def diffusion_settings(config: ModelConfig) -> dict[str, Any]:
    """The scheduler arguments that define the forward process (stored with every export)."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction_type,
        "rescale_betas_zero_snr": config.zero_terminal_snr,
    }


def make_noise_scheduler(settings: dict[str, Any]) -> DDPMScheduler:
    """The training-time forward process: betas, alphas_cumprod, add_noise, get_velocity."""
    return DDPMScheduler(**settings, clip_sample=False, timestep_spacing="trailing")


def make_sampler(name: str, settings: dict[str, Any]) -> SchedulerMixin:
    """A fresh sampling scheduler (they hold per-run state) for the same forward process."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    extra: dict[str, Any] = {"timestep_spacing": "trailing"}
    if name in ("ddim", "ddpm"):
        extra["clip_sample"] = False
    if name == "dpm++":
        extra.update(algorithm_type="dpmsolver++", solver_order=2)
        if settings.get("rescale_betas_zero_snr"):
            extra["final_sigmas_type"] = "zero"
    return SAMPLERS[name](**settings, **extra)


def snr(alphas_cumprod: Tensor, timesteps: Tensor) -> Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep: [B]."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1.0 - alpha_bar).clamp(min=1e-20)


def add_noise(alphas_cumprod: Tensor, clean: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise, per sample (same as DDPMScheduler.add_noise)."""
    alpha_bar = alphas_cumprod.to(device=clean.device, dtype=clean.dtype)[timesteps]  # [B]
    alpha_bar = alpha_bar.view(-1, *([1] * (clean.ndim - 1)))  # [B, 1, 1, 1]
    return alpha_bar.sqrt() * clean + (1.0 - alpha_bar).sqrt() * noise


def training_target(prediction_type: str, alphas_cumprod: Tensor, clean: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """What the network learns to output: the noise (epsilon) or v = sqrt(a) noise - sqrt(1 - a) x_0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        alpha_bar = alphas_cumprod.to(device=clean.device, dtype=clean.dtype)[timesteps].view(-1, *([1] * (clean.ndim - 1)))
        return alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * clean
    raise ValueError(f"unknown prediction_type '{prediction_type}'")


def alphas_cumprod_of(settings: dict[str, Any]) -> Tensor:
    return make_noise_scheduler(settings).alphas_cumprod.clone()  # [T] float32


__all__ = ["SAMPLERS", "add_noise", "alphas_cumprod_of", "diffusion_settings", "make_noise_scheduler", "make_sampler",
           "snr", "training_target"]
