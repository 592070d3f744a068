"""Caption-conditioned UNet: diffusers' UNet2DConditionModel plus our conditioning on the time embedding.

The UNet cross-attends to the caption encoder's token states (masked). Optionally the pooled caption
vector and learned attribute embeddings (category, gender, colour, ...) are added to the time
embedding, through diffusers' "identity" class embedding. A super-resolution stage takes the
upsampled low-res image as three extra input channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
from torch import Tensor, nn

NONE_ATTRIBUTE = 0  # row 0 of every attribute table: unknown value, or dropped for guidance
MAX_PARAMETERS = 2_000_000_000  # a model file describing more is refused before anything is allocated (8 GB in float32)


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
        from diffusers import UNet2DConditionModel  # here: its import pulls in Accelerate, which importing fashiongen must not

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
                attribute_ids: Tensor | None = None, low_res: Tensor | None = None,
                extra_embedding: Tensor | None = None) -> Tensor:
        """sample [B, 3, H, W]; timesteps [B]; text_states [B, L, D]; text_mask [B, L]; text_pooled [B, D];
        attribute_ids [B, K]; low_res [B, 3, H, W] (already upsampled) for a super-resolution stage;
        extra_embedding [B, time_dim] added to the conditioning (a distilled student's guidance scale)."""
        if self.super_resolution:
            if low_res is None:
                raise ValueError("a super-resolution UNet needs the upsampled low-res image (low_res [B, 3, H, W])")
            sample = torch.cat([sample, low_res.to(sample.dtype)], dim=1)  # [B, 6, H, W]
        class_labels = self.condition(text_pooled.to(sample.dtype), attribute_ids)  # [B, time_dim]
        if extra_embedding is not None:
            class_labels = class_labels + extra_embedding.to(class_labels.dtype)
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
    def from_description(cls, description: dict[str, Any], max_parameters: int = MAX_PARAMETERS) -> FashionUNet:
        """Rebuild from `description()`; a malformed or absurdly large one raises ValueError naming the field first."""
        check_description(description, max_parameters)
        return cls._from_checked(description)

    @classmethod
    def _from_checked(cls, description: dict[str, Any]) -> FashionUNet:
        spec = dict(description["spec"])
        spec["block_out_channels"] = tuple(spec["block_out_channels"])
        return cls(UNetSpec(**spec), description["resolution"], description["text_dim"],
                   description["pooled_text"], description["attribute_vocab"])


def _field(value: Any, name: str, kind: type, low: float | None = None, high: float | None = None) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"{name}: expected {kind.__name__}, got {value!r:.80}")
    if low is not None and not low <= value <= high:
        raise ValueError(f"{name}: {value} is outside {low}..{high}")
    return value


def check_description(description: Any, max_parameters: int = MAX_PARAMETERS) -> int:
    """The parameter count a (possibly hostile) model description would build, checked field by field first and
    counted on the meta device (no memory); ValueError('model.FIELD: ...') when malformed or above `max_parameters`."""
    if not isinstance(description, dict):
        raise ValueError(f"model: expected an object, got {type(description).__name__}")
    for key in ("spec", "resolution", "text_dim", "pooled_text", "attribute_vocab"):
        if key not in description:
            raise ValueError(f"model.{key}: missing")
    spec = _field(description["spec"], "model.spec", dict)
    known = {f.name for f in fields(UNetSpec)}
    if unknown := sorted(set(spec) - known):
        raise ValueError(f"model.spec: unknown fields {unknown}")
    channels = _field(spec.get("block_out_channels"), "model.spec.block_out_channels", list)
    if not 1 <= len(channels) <= 8:
        raise ValueError(f"model.spec.block_out_channels: {len(channels)} levels, expected 1..8")
    for channel in channels:
        _field(channel, "model.spec.block_out_channels", int, 1, 2**16)
    _field(spec.get("layers_per_block"), "model.spec.layers_per_block", int, 1, 16)
    _field(spec.get("head_channels"), "model.spec.head_channels", int, 1, 2**16)
    _field(spec.get("native_resolution"), "model.spec.native_resolution", int, 1, 2**14)
    _field(spec.get("max_attention_resolution", 16), "model.spec.max_attention_resolution", int, 1, 2**14)
    groups = _field(spec.get("norm_num_groups", 32), "model.spec.norm_num_groups", int, 1, 2**16)
    if any(channel % groups for channel in channels):
        raise ValueError(f"model.spec.norm_num_groups: {groups} does not divide block_out_channels {channels}")
    _field(spec.get("super_resolution", False), "model.spec.super_resolution", bool)
    _field(spec.get("description", ""), "model.spec.description", str)
    resolution = _field(description["resolution"], "model.resolution", int, 1, 2**14)
    _field(description["text_dim"], "model.text_dim", int, 1, 2**16)
    _field(description["pooled_text"], "model.pooled_text", bool)
    vocab = _field(description["attribute_vocab"], "model.attribute_vocab", dict)
    for name, values in vocab.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"model.attribute_vocab.{name}: expected a list of strings")
        if len(values) > 10**6:
            raise ValueError(f"model.attribute_vocab.{name}: {len(values)} values, more than 10^6")
    try:
        UNetSpec(**{**spec, "block_out_channels": tuple(channels)}).check_resolution(resolution)
    except ValueError as error:
        raise ValueError(f"model.resolution: {error}") from None
    count = parameters_of(lambda: FashionUNet._from_checked(description))
    if count > max_parameters:
        raise ValueError(f"model.spec: describes {count / 1e9:.1f}B parameters, more than the {max_parameters / 1e9:.0f}B "
                         "a FashionGen model file may (edited or corrupted architecture?)")
    return count


def parameters_of(build: Callable[[], nn.Module]) -> int:
    """How many parameters `build()` makes, counted on the meta device so nothing is allocated."""
    with torch.device("meta"):
        return count_parameters(build())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
