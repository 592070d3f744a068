"""The upsampler family's networks: a one-step 4x super-resolution network in the ESRGAN / Real-ESRGAN family scaled
to two CPU cores, and the patch discriminator it is trained against.

    spec = UPSAMPLERS["upsampler-256"]
    net = Upsampler(spec, text_dim=384)
    high = net(low, pooled)                      # [B, 3, 64, 64] in [-1, 1] -> [B, 3, 256, 256]
    logits, features = PatchDiscriminator(spec)(high, low)

Every layer but the last runs at the input's size (residual blocks, modulated by the caption's pooled embedding);
two pixel-shuffle steps (ICNR-initialised, so they start without checkerboards) reach 4x, and the network adds what it
makes to a bicubic upsampling of its input: at initialisation it *is* bicubic, and training teaches it the detail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_UPSAMPLER_PARAMETERS = 200_000_000


@dataclass(frozen=True)
class UpsamplerSpec:
    """Widths of an upsampler and its discriminator."""

    scale: int = 4  # 2 or 4: one pixel shuffle (x2) per factor of 2
    channels: int = 64  # residual trunk width (at the input's size)
    blocks: int = 10  # residual blocks in the trunk
    hr_channels: int = 32  # width after the last pixel shuffle (at the output's size: the costliest pixels); 0: the
    #                        trunk ends in one conv to 3 * scale^2 channels and a single pixel shuffle (Real-ESRGAN's
    #                        compact SRVGGNet): every conv at the input's size

    text_embed: int = 64  # the pooled caption projected to this many values, then FiLM on every block; 0 = no caption
    d_channels: int = 64  # discriminator: width of its first layer (doubling per layer, at most 8x)
    d_layers: int = 4  # discriminator: stride-2 layers
    description: str = ""

    def check(self) -> None:
        if self.scale not in (2, 4):
            raise ValueError(f"model.spec.scale: expected 2 or 4, got {self.scale!r}")
        for name in ("channels", "blocks", "hr_channels", "d_channels", "d_layers", "text_embed"):
            value, low = getattr(self, name), 0 if name in ("text_embed", "hr_channels") else 1
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1024:
                raise ValueError(f"model.spec.{name}: expected an integer between {low} and 1024, got {value!r}")

    @property
    def shuffles(self) -> int:
        return self.scale.bit_length() - 1


UPSAMPLERS: dict[str, UpsamplerSpec] = {
    "upsampler-tiny": UpsamplerSpec(4, 8, 1, 4, text_embed=4, d_channels=8, d_layers=2, description="tests"),
    "upsampler-256": UpsamplerSpec(4, 64, 10, 32, description="64 -> 256 px: 10 residual blocks of 64 at 64 px"),
    "upsampler-256-notext": UpsamplerSpec(4, 64, 10, 32, text_embed=0, description="64 -> 256 px without the caption"),
    "upsampler-256-compact": UpsamplerSpec(4, 64, 16, 0, description="64 -> 256 px, every conv at 64 px (SRVGGNet-like)"),
}


def get_upsampler_spec(name: str) -> UpsamplerSpec:
    if name not in UPSAMPLERS:
        raise ValueError(f"model.name: '{name}' is not an upsampler ({', '.join(UPSAMPLERS)})")
    return UPSAMPLERS[name]


class ResidualBlock(nn.Module):
    """conv, FiLM by the caption, leaky ReLU, conv; added back at a fifth of its size (ESRGAN's residual scaling)."""

    def __init__(self, channels: int, text_embed: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(text_embed, 2 * channels) if text_embed else None
        if self.film is not None:  # starts as the identity modulation
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, condition: Tensor | None) -> Tensor:
        h = self.conv1(x)
        if self.film is not None and condition is not None:
            gamma, beta = self.film(condition)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + gamma) + beta
        return x + 0.2 * self.conv2(F.leaky_relu(h, 0.2))


def icnr_(conv: nn.Conv2d, factor: int = 2) -> None:
    """ICNR (Aitken et al. 2017): the sub-pixel convolution starts as nearest-neighbour upsampling of one kernel, so a
    pixel shuffle makes no checkerboard before training."""
    out_channels, in_channels, height, width = conv.weight.shape
    sub = torch.empty(out_channels // factor**2, in_channels, height, width)
    nn.init.kaiming_normal_(sub, a=0.2)
    with torch.no_grad():
        conv.weight.copy_(sub.repeat_interleave(factor**2, dim=0))
        if conv.bias is not None:
            conv.bias.zero_()


class Upsampler(nn.Module):
    """(low [B, 3, r, r] in [-1, 1], pooled caption [B, T] or None) -> [B, 3, scale*r, scale*r]: bicubic plus the detail
    the network adds; unbounded while training (`sample` clamps it)."""

    def __init__(self, spec: UpsamplerSpec, text_dim: int) -> None:
        super().__init__()
        spec.check()
        self.spec, self.text_dim = spec, text_dim
        c = spec.channels
        self.text = nn.Sequential(nn.Linear(text_dim, spec.text_embed), nn.LeakyReLU(0.2)) if spec.text_embed else None
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(c, spec.text_embed) for _ in range(spec.blocks))
        self.conv_body = nn.Conv2d(c, c, 3, padding=1)
        if spec.hr_channels:
            widths = [c] * spec.shuffles + [spec.hr_channels]
            self.ups = nn.ModuleList(nn.Conv2d(a, b * 4, 3, padding=1) for a, b in zip(widths, widths[1:]))
            for conv in self.ups:
                icnr_(conv)
            self.conv_hr = nn.Conv2d(spec.hr_channels, spec.hr_channels, 3, padding=1)
            self.conv_out = nn.Conv2d(spec.hr_channels, 3, 3, padding=1)
        else:  # compact: the detail of every output pixel comes from the input-size features
            self.ups, self.conv_hr = nn.ModuleList(), None
            self.conv_out = nn.Conv2d(c, 3 * spec.scale**2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # starts as bicubic
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, low: Tensor, pooled: Tensor | None = None) -> Tensor:
        base = F.interpolate(low, scale_factor=self.spec.scale, mode="bicubic", align_corners=False)
        condition = self.text(pooled) if self.text is not None and pooled is not None else None
        x = self.conv_in(low)
        h = x
        for block in self.blocks:
            h = block(h, condition)
        h = self.conv_body(h) + x
        if self.conv_hr is None:
            return base + F.pixel_shuffle(self.conv_out(F.leaky_relu(h, 0.2)), self.spec.scale)
        for conv in self.ups:
            h = F.leaky_relu(F.pixel_shuffle(conv(h), 2), 0.2)
        return base + self.conv_out(F.leaky_relu(self.conv_hr(h), 0.2))

    def sample(self, low: Tensor, pooled: Tensor | None = None) -> Tensor:
        return self(low, pooled).clamp(-1.0, 1.0)

    def description(self) -> dict[str, Any]:
        return {"spec": asdict(self.spec), "text_dim": self.text_dim}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Upsampler:
        """Rebuild from `description()`; a malformed or absurdly large one raises ValueError naming the field."""
        spec, text_dim = check_upsampler_description(description)
        return cls(spec, text_dim)


def back_project(high: Tensor, low: Tensor, steps: int = 2) -> Tensor:
    """Iterative back-projection (Irani & Peleg 1991): `high` [N, 3, R, R] corrected so that its box average over each
    (R/r)^2 block comes back to `low` [N, 3, r, r]. `steps` times the bicubic-upsampled residual is added, which mends
    the smooth part of the error; then what is left of each block's error is added to its pixels evenly, which makes
    the block means exact wherever the [-1, 1] clamp allows. It moves only what a block's mean can see, so the detail
    the network added stays."""
    factor = high.shape[-1] // low.shape[-1]
    for _ in range(steps):
        residual = low - F.avg_pool2d(high, factor)
        high = (high + F.interpolate(residual, scale_factor=factor, mode="bicubic", align_corners=False)).clamp(-1.0, 1.0)
    residual = low - F.avg_pool2d(high, factor)
    return (high + F.interpolate(residual, scale_factor=factor, mode="nearest")).clamp(-1.0, 1.0)


class PatchDiscriminator(nn.Module):
    """(high [B, 3, R, R], low [B, 3, R/s, R/s]) -> (logits [B, 1, R/2^L, R/2^L], features): a PatchGAN with spectral
    norm that sees the image beside its bicubic-upsampled low-res input, so it judges detail that fits the input. The
    features of every layer serve the generator's feature-matching loss."""

    def __init__(self, spec: UpsamplerSpec) -> None:
        super().__init__()
        self.spec = spec
        sn = nn.utils.parametrizations.spectral_norm
        widths = [6] + [spec.d_channels * min(2**i, 8) for i in range(spec.d_layers)]
        self.layers = nn.ModuleList(sn(nn.Conv2d(a, b, 4, 2, 1)) for a, b in zip(widths, widths[1:]))
        self.out = sn(nn.Conv2d(widths[-1], 1, 3, padding=1))

    def forward(self, high: Tensor, low: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = torch.cat([high, F.interpolate(low, size=high.shape[-2:], mode="bicubic", align_corners=False)], dim=1)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


def check_upsampler_description(description: Any) -> tuple[UpsamplerSpec, int]:
    """model.json's "model" of an upsampler -> (spec, text_dim); ValueError naming the field when it is not valid."""
    if not isinstance(description, dict) or not isinstance(description.get("spec"), dict):
        raise ValueError("model.spec: expected an object")
    raw, known = description["spec"], {f.name for f in fields(UpsamplerSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"model.spec: unknown field '{unknown[0]}'")
    spec = UpsamplerSpec(**raw)
    spec.check()
    text_dim = description.get("text_dim")
    if not isinstance(text_dim, int) or isinstance(text_dim, bool) or not 1 <= text_dim <= 65536:
        raise ValueError(f"model.text_dim: expected an integer between 1 and 65536, got {text_dim!r}")
    with torch.device("meta"):  # counted without allocating anything
        parameters = sum(p.numel() for p in Upsampler(spec, text_dim).parameters())
    if parameters > MAX_UPSAMPLER_PARAMETERS:
        raise ValueError(f"model.spec: {parameters:,} parameters is more than an upsampler of ours has "
                         f"({MAX_UPSAMPLER_PARAMETERS:,})")
    return spec, text_dim


__all__ = ["PatchDiscriminator", "UPSAMPLERS", "Upsampler", "UpsamplerSpec", "check_upsampler_description",
           "get_upsampler_spec", "icnr_"]
