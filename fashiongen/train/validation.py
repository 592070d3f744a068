"""Validation sample grids: fixed prompts and fixed seeds, so grids of successive steps compare directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data.transforms import to_uint8
from ..diffusion import diffusion_settings, initial_noise, make_sampler, sample
from ..grid import captioned_grid, save_image
from ..models import FashionUNet
from ..text import CaptionEncoder


@torch.no_grad()
def sample_grid(model: FashionUNet, encoder: CaptionEncoder, config: Config, path: Path,
                low_res_examples: list[dict[str, Any]] | None = None) -> Path:
    """One image per (seed, prompt): rows are seeds, columns prompts. A super-resolution model
    upsamples the given examples' low-res images with their captions instead of the prompts."""
    train = config.train
    device = next(model.parameters()).device
    if low_res_examples:
        prompts = [e["caption"] for e in low_res_examples]
        low_res = torch.stack([e["low_res"] for e in low_res_examples]).to(device)
    else:
        prompts, low_res = list(train.validation_prompts), None
    text = encoder.encode(prompts).to(device)
    unconditional = encoder.encode_unconditional(len(prompts)).to(device)
    images, captions = [], []
    for seed in train.validation_seeds:
        size = model.resolution
        noise = initial_noise([seed * 10_000 + i for i in range(len(prompts))], (3, size, size), device)
        ids = torch.zeros(len(prompts), len(model.attribute_vocab), dtype=torch.long, device=device) if model.attribute_vocab else None
        out = sample(model, make_sampler(train.validation_sampler, diffusion_settings(config.model)), text, unconditional, noise,
                     num_inference_steps=train.validation_inference_steps, guidance_scale=train.validation_guidance,
                     attribute_ids=ids, low_res=low_res)
        images += list(to_uint8(out.cpu()))
        captions += [f"{prompt} (seed {seed})" for prompt in prompts]
    save_image(captioned_grid(images, captions, columns=len(prompts), tile=max(96, model.resolution), caption_lines=3), path)
    return path
