"""Caption-conditioned UNet: diffusers' UNet2DConditionModel plus our conditioning on the time embedding.

The UNet cross-attends to the caption encoder's token states (masked). Optionally the pooled caption
vector and learned attribute embeddings (category, gender, colour, ...) are added to the time
embedding, through diffusers' "identity" class embedding. A super-resolution stage takes the
upsampled low-res image as three extra input channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

NONE_ATTRIBUTE = 0  # row 0 of every attribute table: unknown value, or dropped for guidance


@dataclass(frozen=True)
class UNetSpec:
    """An architecture: channels per resolution level (highest first) and where attention may run."""

    block_out_channels: tuple[int, ...]
    layers_per_block: int
    head_channels: int  # channels per attention head
    native_resolution: int  # the output size it is meant for (any size divisible by 2**(levels-1) works)
    max_attention_resolution: int = 16  # self/cross-attention only at feature maps this size or smaller
    norm_num_groups: int = 32
    super_resolution: bool = False  # takes the upsampled low-res image as 3 extra input channels
    description: str = ""

    @property
    def num_levels(self) -> int:
        return len(self.block_out_channels)

    def attention_levels(self, resolution: int) -> list[bool]:
        """Which levels (highest resolution first) get attention at this image size."""
        return [resolution // 2**level <= self.max_attention_resolution for level in range(self.num_levels)]

    def check_resolution(self, resolution: int) -> None:
        """Raise ValueError unless `resolution` halves cleanly down every level to the attention limit."""
        factor = 2 ** (self.num_levels - 1)
        if resolution % factor or resolution < factor:
            raise ValueError(f"resolution {resolution} is not divisible by {factor} (this UNet has {self.num_levels} levels)")
        if resolution // factor > self.max_attention_resolution:  # the mid block always attends
            raise ValueError(f"at {resolution} px the lowest level is {resolution // factor} px, above the "
                             f"{self.max_attention_resolution} px attention limit (use a model with more levels)")

    def unet_config(self, resolution: int, cross_attention_dim: int) -> dict[str, Any]:
        """Keyword arguments for UNet2DConditionModel at this resolution."""
        self.check_resolution(resolution)
        attention = self.attention_levels(resolution)
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
        up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
        return {
            "sample_size": resolution,
            "in_channels": 6 if self.super_resolution else 3,
            "out_channels": 3,
            "down_block_types": tuple(down),
            "up_block_types": tuple(up),
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            # diffusers' legacy name: this argument is the number of heads per level
            "attention_head_dim": tuple(max(1, c // self.head_channels) for c in self.block_out_channels),
            "cross_attention_dim": cross_attention_dim,
            "norm_num_groups": self.norm_num_groups,
            "class_embed_type": "identity",  # our ConditionEmbedding output is added to the time embedding
        }


class ConditionEmbedding(nn.Module):
    """Pooled caption projection + one embedding table per attribute, summed into a time-embedding vector."""

    def __init__(self, time_dim: int, text_dim: int, pooled_text: bool, attribute_sizes: dict[str, int]) -> None:
        super().__init__()
        self.pooled = nn.Linear(text_dim, time_dim) if pooled_text else None
        self.attribute_names = list(attribute_sizes)
        # one row per known value plus row 0 for 'none' (unknown or dropped)
        self.attributes = nn.ModuleList(nn.Embedding(size + 1, time_dim) for size in attribute_sizes.values())
        self.time_dim = time_dim
        for table in self.attributes:
            nn.init.normal_(table.weight, std=0.02)
        if self.pooled is not None:
            nn.init.normal_(self.pooled.weight, std=0.02)
            nn.init.zeros_(self.pooled.bias)

    def forward(self, text_pooled: Tensor, attribute_ids: Tensor | None) -> Tensor:
        """text_pooled [B, D], attribute_ids [B, K] long -> [B, time_dim]."""
        out = text_pooled.new_zeros(text_pooled.shape[0], self.time_dim)
        if self.pooled is not None:
            out = out + self.pooled(text_pooled)
        if self.attributes:
            if attribute_ids is None:
                raise ValueError(f"this model is conditioned on attributes {self.attribute_names}; pass attribute_ids [B, {len(self.attributes)}]")
            for column, table in enumerate(self.attributes):
                out = out + table(attribute_ids[:, column])
        return out


class FashionUNet(nn.Module):
    """The denoiser: (noisy image, timestep, caption, attributes[, low-res image]) -> model output [B, 3, H, W]."""

    def __init__(self, spec: UNetSpec, resolution: int, text_dim: int, pooled_text: bool = True,
                 attribute_vocab: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.resolution = resolution
        self.attribute_vocab = dict(attribute_vocab or {})
        self.unet = UNet2DConditionModel(**spec.unet_config(resolution, text_dim))
        time_dim = self.unet.config.block_out_channels[0] * 4
        sizes = {name: len(values) for name, values in self.attribute_vocab.items()}
        self.condition = ConditionEmbedding(time_dim, text_dim, pooled_text, sizes)

    @property
    def super_resolution(self) -> bool:
        return self.spec.super_resolution

    def forward(self, sample: Tensor, timesteps: Tensor, text_states: Tensor, text_mask: Tensor, text_pooled: Tensor,
                attribute_ids: Tensor | None = None, low_res: Tensor | None = None) -> Tensor:
        """sample [B, 3, H, W]; timesteps [B]; text_states [B, L, D]; text_mask [B, L]; text_pooled [B, D];
        attribute_ids [B, K]; low_res [B, 3, H, W] (already upsampled) for a super-resolution stage."""
        if self.super_resolution:
            if low_res is None:
                raise ValueError("a super-resolution UNet needs the upsampled low-res image (low_res [B, 3, H, W])")
            sample = torch.cat([sample, low_res.to(sample.dtype)], dim=1)  # [B, 6, H, W]
        class_labels = self.condition(text_pooled.to(sample.dtype), attribute_ids)  # [B, time_dim]
        return self.unet(sample, timesteps, encoder_hidden_states=text_states.to(sample.dtype),
                         encoder_attention_mask=text_mask, class_labels=class_labels).sample

    def description(self) -> dict[str, Any]:
        """Everything needed to rebuild this module without its training config (stored with exports)."""
        return {
            "spec": {**asdict(self.spec), "block_out_channels": list(self.spec.block_out_channels)},
            "resolution": self.resolution,
            "text_dim": self.unet.config.cross_attention_dim,
            "pooled_text": self.condition.pooled is not None,
            "attribute_vocab": self.attribute_vocab,
        }

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> FashionUNet:
        spec = dict(description["spec"])
        spec["block_out_channels"] = tuple(spec["block_out_channels"])
        return cls(UNetSpec(**spec), description["resolution"], description["text_dim"],
                   description["pooled_text"], description["attribute_vocab"])


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
