"""Diffusion as pure functions: schedules and samplers (diffusers), the loss, guided sampling."""

from .loss import diffusion_loss, min_snr_weight
from .interpolation import lerp_text, slerp
from .sampling import Inpainting, classifier_free_guidance, concat_text, initial_noise, noise_from, pad_tokens, sample
from .schedule import (
    SAMPLERS,
    add_noise,
    alphas_cumprod_of,
    diffusion_settings,
    make_noise_scheduler,
    make_sampler,
    snr,
    training_target,
)

__all__ = [
    "Inpainting",
    "SAMPLERS", "add_noise", "alphas_cumprod_of", "classifier_free_guidance", "concat_text", "diffusion_loss",
    "diffusion_settings", "initial_noise", "lerp_text", "noise_from", "slerp", "make_noise_scheduler", "make_sampler", "min_snr_weight", "pad_tokens",
    "sample", "snr", "training_target",
]
