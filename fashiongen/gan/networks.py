"""The GAN family's networks, DF-GAN style (Tao et al. 2022): a one-stage generator whose residual up-blocks
normalise nothing but modulate every activation by the condition (noise, pooled caption, attributes), and a
discriminator whose image features meet the caption once, at 4x4, for a one-way output.

    spec = GANS["gan-64"]
    generator = TextGenerator(spec, text_dim=384, attribute_vocab={"colour": [...]})
    images = generator(z, pooled_text, attribute_ids)        # [B, 3, 64, 64] in [-1, 1]
    logits = Discriminator(spec, 384, vocab)(images, pooled_text, attribute_ids)   # [B]

More resolution is more blocks: gan-128 and gan-256 add up-blocks (generator) and down-blocks (discriminator).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_GAN_PARAMETERS = 2_000_000_000


@dataclass(frozen=True)
class GANSpec:
    """Widths of a generator / discriminator pair; `widths` are multiples of `base_channels`, one per 4x4 .. R block."""

    resolution: int = 64
    base_channels: int = 32  # ngf = ndf
    widths: tuple[int, ...] = (8, 8, 4, 2, 1)  # generator: 4x4 features, then one up-block per entry after the first
    z_dim: int = 100
    text_embed: int = 128  # the pooled caption projected to this many values before it meets z
    attribute_embed: int = 16  # per attribute
    description: str = ""
    # The generator's last layer: "tanh" (DF-GAN) or "linear" (StyleGAN's toRGB: unbounded while training, clamped to
    # [-1, 1] when sampling). On our white-background photos a tanh generator went all white (98% of pixels > 0.99 at
    # step 500 of gan-64s) and stopped learning: a saturated tanh passes no gradient. Files written before this field
    # existed were tanh generators, so that is the default of a description; the registry's specs are linear.
    output: str = "tanh"

    def check(self) -> None:
        if self.resolution != 4 * 2 ** (len(self.widths) - 1):
            raise ValueError(f"model.spec.widths: {len(self.widths)} entries make {4 * 2 ** (len(self.widths) - 1)} px, "
                             f"not model.spec.resolution={self.resolution}")
        for name in ("base_channels", "z_dim", "text_embed", "attribute_embed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
                raise ValueError(f"model.spec.{name}: expected an integer between 1 and 4096, got {value!r}")
        if self.output not in ("tanh", "linear"):
            raise ValueError(f"model.spec.output: expected 'tanh' or 'linear', got {self.output!r}")
        if not all(isinstance(w, int) and 1 <= w <= 64 for w in self.widths):
            raise ValueError(f"model.spec.widths: expected integers between 1 and 64, got {self.widths!r}")

    def condition_dim(self, num_attributes: int) -> int:
        return self.text_embed + self.attribute_embed * num_attributes


GANS: dict[str, GANSpec] = {
    "gan-tiny": GANSpec(32, 8, (4, 4, 2, 1), z_dim=16, text_embed=16, attribute_embed=4, description="32 px: tests",
                        output="linear"),
    "gan-64": GANSpec(64, 32, (8, 8, 4, 2, 1), description="64 px, DF-GAN widths at ngf 32", output="linear"),
    # a training step (32 images, G and D) takes 1.0 s against gan-64's 3.6 s on 2 cores: 3.6x the steps per CPU-hour
    "gan-64s": GANSpec(64, 16, (8, 8, 4, 2, 1), description="64 px, DF-GAN widths at ngf 16: CPU training", output="linear"),
    "gan-128": GANSpec(128, 32, (8, 8, 8, 4, 2, 1), description="128 px: one more block", output="linear"),
    "gan-256": GANSpec(256, 32, (8, 8, 8, 4, 2, 1, 1), description="256 px: two more blocks", output="linear"),
}


class Conditioning(nn.Module):
    """pooled caption [B, T] + attribute ids [B, K] -> one condition vector [B, text_embed + K * attribute_embed].
    Attribute id 0 is 'none' (unknown, or dropped in training)."""

    def __init__(self, spec: GANSpec, text_dim: int, attribute_vocab: dict[str, list[str]]) -> None:
        super().__init__()
        self.text = nn.Linear(text_dim, spec.text_embed)
        self.attributes = nn.ModuleList(nn.Embedding(len(values) + 1, spec.attribute_embed) for values in attribute_vocab.values())

    def forward(self, pooled: Tensor, attribute_ids: Tensor | None) -> Tensor:
        parts = [self.text(pooled)]
        if len(self.attributes):
            if attribute_ids is None:
                attribute_ids = torch.zeros(pooled.shape[0], len(self.attributes), dtype=torch.long, device=pooled.device)
            parts += [table(attribute_ids[:, k]) for k, table in enumerate(self.attributes)]
        return torch.cat(parts, dim=1)


class Affine(nn.Module):
    """x * (1 + gamma(c)) + beta(c) per channel; gamma and beta start at 0 (the identity)."""

    def __init__(self, condition_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(condition_dim, channels), nn.ReLU(), nn.Linear(channels, channels))
        self.beta = nn.Sequential(nn.Linear(condition_dim, channels), nn.ReLU(), nn.Linear(channels, channels))
        for head in (self.gamma, self.beta):
            nn.init.zeros_(head[2].weight)
            nn.init.zeros_(head[2].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return x * (1 + self.gamma(c)[:, :, None, None]) + self.beta(c)[:, :, None, None]


class UpBlock(nn.Module):
    """Upsample x2, then two (modulate, leaky ReLU, 3x3 conv) layers, plus a (1x1) shortcut."""

    def __init__(self, condition_dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.affine = nn.ModuleList([Affine(condition_dim, in_channels), Affine(condition_dim, in_channels),
                                     Affine(condition_dim, out_channels), Affine(condition_dim, out_channels)])
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = F.leaky_relu(self.affine[1](F.leaky_relu(self.affine[0](x, c), 0.2), c), 0.2)
        h = self.conv1(h)
        h = F.leaky_relu(self.affine[3](F.leaky_relu(self.affine[2](h, c), 0.2), c), 0.2)
        return self.shortcut(x) + self.conv2(h)


class TextGenerator(nn.Module):
    """(z [B, Z], pooled caption [B, T], attribute ids [B, K]) -> images [B, 3, R, R], one forward: in [-1, 1] for a
    tanh output; a linear output is unbounded (sample() clamps it)."""

    def __init__(self, spec: GANSpec, text_dim: int, attribute_vocab: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        spec.check()
        self.spec, self.text_dim = spec, text_dim
        self.attribute_vocab = dict(attribute_vocab or {})
        self.resolution = spec.resolution
        self.condition = Conditioning(spec, text_dim, self.attribute_vocab)
        condition_dim = spec.z_dim + spec.condition_dim(len(self.attribute_vocab))  # affine layers see [z, c]
        channels = [spec.base_channels * w for w in spec.widths]
        self.fc = nn.Linear(spec.z_dim, channels[0] * 4 * 4)
        self.blocks = nn.ModuleList(UpBlock(condition_dim, a, b) for a, b in zip(channels, channels[1:]))
        self.to_rgb = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, z: Tensor, pooled: Tensor, attribute_ids: Tensor | None = None) -> Tensor:
        return self.from_condition(z, self.condition(pooled, attribute_ids))

    def from_condition(self, z: Tensor, condition: Tensor) -> Tensor:
        """The forward from a condition vector [B, C] (Conditioning's output): editing blends two of them."""
        c = torch.cat([z, condition], dim=1)  # [B, Z + C]
        x = self.fc(z).view(z.shape[0], -1, 4, 4)
        for block in self.blocks:
            x = block(x, c)
        x = self.to_rgb(F.leaky_relu(x, 0.2))
        return torch.tanh(x) if self.spec.output == "tanh" else x

    def sample(self, z: Tensor, pooled: Tensor, attribute_ids: Tensor | None = None) -> Tensor:
        """Images in [-1, 1] (what the pipeline, sample grids and scores see)."""
        return self(z, pooled, attribute_ids).clamp(-1.0, 1.0)

    def description(self) -> dict[str, Any]:
        return {"spec": {**asdict(self.spec), "widths": list(self.spec.widths)}, "text_dim": self.text_dim,
                "attribute_vocab": self.attribute_vocab}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> TextGenerator:
        """Rebuild from `description()`; a malformed or absurdly large one raises ValueError naming the field."""
        spec, text_dim, vocab = check_gan_description(description)
        return cls(spec, text_dim, vocab)


class DownBlock(nn.Module):
    """4x4 stride-2 conv, 3x3 conv, added with a learned weight to a pooled 1x1 shortcut (DF-GAN's D block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 4, 2, 1), nn.LeakyReLU(0.2),
                                      nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.LeakyReLU(0.2))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.shortcut(x), 2) + self.gamma * self.residual(x)


class Discriminator(nn.Module):
    """(images [B, 3, R, R], pooled caption, attribute ids) -> logits [B]: image features down to 4x4, then the
    condition joins them once (one-way output)."""

    def __init__(self, spec: GANSpec, text_dim: int, attribute_vocab: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        spec.check()
        self.spec = spec
        channels = [spec.base_channels * w for w in reversed(spec.widths)]  # R px .. 4x4
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList(DownBlock(a, b) for a, b in zip(channels, channels[1:]))
        self.condition = Conditioning(spec, text_dim, dict(attribute_vocab or {}))
        joined = channels[-1] + spec.condition_dim(len(attribute_vocab or {}))
        self.joint = nn.Sequential(nn.Conv2d(joined, channels[-1] * 2, 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(channels[-1] * 2, 1, 4))

    def features(self, images: Tensor) -> Tensor:
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        return x  # [B, C, 4, 4]

    def logits(self, features: Tensor, condition: Tensor) -> Tensor:
        c = condition[:, :, None, None].expand(-1, -1, *features.shape[-2:])
        return self.joint(torch.cat([features, c], dim=1)).flatten()  # [B]

    def forward(self, images: Tensor, pooled: Tensor, attribute_ids: Tensor | None = None) -> Tensor:
        return self.logits(self.features(images), self.condition(pooled, attribute_ids))


def check_gan_description(description: Any, max_parameters: int = MAX_GAN_PARAMETERS) -> tuple[GANSpec, int, dict[str, list[str]]]:
    """A (possibly hostile) generator description checked field by field, its size counted on the meta device."""
    if not isinstance(description, dict) or not isinstance(description.get("spec"), dict):
        raise ValueError("model.spec: missing or not an object")
    known = {f.name for f in fields(GANSpec)}
    unknown = set(description["spec"]) - known
    if unknown:
        raise ValueError(f"model.spec: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    values = dict(description["spec"])
    if isinstance(values.get("widths"), list):
        values["widths"] = tuple(values["widths"])
    try:
        spec = GANSpec(**values)
    except TypeError as error:
        raise ValueError(f"model.spec: {error}") from None
    spec.check()
    text_dim, vocab = description.get("text_dim"), description.get("attribute_vocab") or {}
    if not isinstance(text_dim, int) or isinstance(text_dim, bool) or not 1 <= text_dim <= 65536:
        raise ValueError(f"model.text_dim: expected an integer between 1 and 65536, got {text_dim!r}")
    if not (isinstance(vocab, dict) and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in vocab.values())):
        raise ValueError("model.attribute_vocab: expected {name: [values]}")
    with torch.device("meta"):
        count = sum(p.numel() for p in TextGenerator(spec, text_dim, vocab).parameters())
    if count > max_parameters:
        raise ValueError(f"model.spec: describes {count:,} parameters, more than the {max_parameters:,} allowed")
    return spec, text_dim, vocab


def get_gan_spec(name: str) -> GANSpec:
    if name not in GANS:
        raise ValueError(f"model.name: unknown GAN '{name}'; known: {', '.join(GANS)}")
    return GANS[name]


def flops_per_image(module: nn.Module, *inputs: Tensor) -> float:
    """Forward FLOPs of one call divided by its batch (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops() / max(1, inputs[0].shape[0])


__all__ = ["Discriminator", "GANS", "GANSpec", "TextGenerator", "check_gan_description", "flops_per_image", "get_gan_spec"]
