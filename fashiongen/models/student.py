"""A few-step student's network: its teacher's UNet (with low-rank adapters while it trains, merged after) plus an
embedding of the guidance scale, so one forward gives what the teacher's two guided forwards gave (Meng et al. 2023's
w-conditioned student; LCM's guidance embedding).

    student = StudentUNet(teacher_unet_copy, guidance_dim=64)
    output = student(x, t, states, mask, pooled, attribute_ids, guidance=torch.full((B,), 3.0))
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .unet import FashionUNet

GUIDANCE_FREQUENCY_SCALE = 100.0  # w = 3.0 is embedded like timestep 300: scales 1..8 spread over the frequencies


def guidance_features(guidance: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of the guidance scale: [B] -> [B, dim] (sin and cos at geometric frequencies)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=guidance.device) / half)
    angles = guidance.float()[:, None] * GUIDANCE_FREQUENCY_SCALE * frequencies[None]  # [B, half]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class GuidanceEmbedding(nn.Module):
    """Guidance scale -> a time-embedding vector; the last layer starts at zero, so a fresh student is its teacher's
    conditional branch."""

    def __init__(self, features: int, time_dim: int) -> None:
        super().__init__()
        self.features = features
        self.layers = nn.Sequential(nn.Linear(features, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        nn.init.zeros_(self.layers[2].weight)
        nn.init.zeros_(self.layers[2].bias)

    def forward(self, guidance: Tensor) -> Tensor:
        return self.layers(guidance_features(guidance, self.features).to(self.layers[0].weight.dtype))


class StudentUNet(nn.Module):
    """unet (a FashionUNet with its teacher's architecture) conditioned also on the guidance scale."""

    def __init__(self, unet: FashionUNet, guidance_features: int = 64) -> None:
        super().__init__()
        self.unet = unet
        self.guidance = GuidanceEmbedding(guidance_features, unet.unet.config.block_out_channels[0] * 4)

    @property
    def resolution(self) -> int:
        return self.unet.resolution

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        return self.unet.attribute_vocab

    @property
    def super_resolution(self) -> bool:
        return self.unet.super_resolution

    @property
    def spec(self) -> Any:
        return self.unet.spec

    def forward(self, sample: Tensor, timesteps: Tensor, text_states: Tensor, text_mask: Tensor, text_pooled: Tensor,
                attribute_ids: Tensor | None = None, low_res: Tensor | None = None,
                guidance: Tensor | None = None) -> Tensor:
        """As FashionUNet's forward, plus guidance [B] (the scale each image is made at)."""
        if guidance is None:
            raise ValueError("a student takes the guidance scale as an input (guidance [B])")
        return self.unet(sample, timesteps, text_states, text_mask, text_pooled, attribute_ids, low_res,
                         extra_embedding=self.guidance(guidance.to(sample.device)))


__all__ = ["GuidanceEmbedding", "StudentUNet", "guidance_features"]
