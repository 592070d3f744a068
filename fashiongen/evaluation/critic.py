"""Text-image critic: a small CNN and a caption projection trained CLIP-style on our training split.

The FashionGen challenge scored how well images agree with their captions with a pretrained
critic; with no CLIP offline we train our own (InfoNCE on image/caption pairs plus attribute heads
on the image embedding; fashiongen/train/critic.py, `python -m fashiongen.train critic configs/critic.yaml`)
and score with it:

    critic, info = load_critic(path, encoder=encoder)                 # raises if encoder differs
    image_emb = embed_images(critic, images)                          # uint8 [H, W, 3] arrays -> [N, E]
    text_emb = embed_captions(critic, encoder, captions)              # [N, E]
    score, per_item = critic_score(image_emb, text_emb)               # mean cosine image <-> own caption
    mean, std = r_precision(image_emb, text_emb, caption_ids=captions)  # AttnGAN protocol, 1 of 100
    accuracy = attribute_accuracy(critic, image_emb, [{"colour": "Red", "category": "Dresses"}, ...])
    mean, std = critic_inception_score(critic, image_emb)             # IS formula on the category head

This module holds the network and its files (critic.safetensors + critic.json); the scores live in
critic_scores.py and are offered here too. Embeddings are L2-normalised, so scores are cosines in
[-1, 1] (not x100, not clipped at 0 as CLIP-score is). The critic's caption side reads the frozen
caption encoder, so a critic is only valid with the encoder it was trained with; its identity is
stored and checked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ..config import Config, config_to_dict
from ..models import MAX_PARAMETERS, parameters_of
from ..models.files import ModelFileError, load_weights, read_versioned_json, sha256_of
from ..text import CaptionEncoder
from ..utils import atomic_path, atomic_write_text
from .critic_scores import (  # the scores, offered here too: `from fashiongen.evaluation.critic import embed_images`
    EncoderMismatchError,
    attribute_accuracy,
    attribute_probabilities,
    check_encoder,
    critic_inception_score,
    critic_score,
    embed_captions,
    embed_images,
    inception_score,
    predict_attributes,
    r_precision,
    r_precision_draws,
)

CRITIC_FORMAT = "fashiongen-critic"
CRITIC_VERSION = 1
WEIGHTS_FILE = "critic.safetensors"
INFO_FILE = "critic.json"


# ----------------------------------------------------------------------------------------------- model


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                   _norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ImageTower(nn.Module):
    """[B, 3, R, R] in [-1, 1] -> [B, E]: a strided stem, one residual block per stage, a halving between stages."""

    def __init__(self, channels: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, stride=2, padding=1)]  # R -> R/2
        for index, width in enumerate(channels):
            layers.append(ResBlock(width))
            if index + 1 < len(channels):
                layers.append(nn.Conv2d(width, channels[index + 1], 3, stride=2, padding=1))
        layers += [_norm(channels[-1]), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], embed_dim)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.layers(pixels)


class TextTower(nn.Module):
    """Frozen-encoder outputs -> [B, E]: the pooled vector (and an attention pooling of token states) through an MLP."""

    def __init__(self, text_dim: int, hidden: int, embed_dim: int, token_attention: bool) -> None:
        super().__init__()
        self.attention = nn.Linear(text_dim, 1) if token_attention else None  # one learned score per token
        features = text_dim * (2 if token_attention else 1)
        self.mlp = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, embed_dim))

    def forward(self, token_states: Tensor, mask: Tensor, pooled: Tensor) -> Tensor:
        features = pooled  # [B, D]
        if self.attention is not None:
            scores = self.attention(token_states).squeeze(-1)  # [B, L]
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            attended = torch.einsum("bl,bld->bd", scores.softmax(dim=-1), token_states)  # [B, D]
            features = torch.cat([pooled, attended], dim=-1)  # [B, 2D]
        return self.mlp(features)


class Critic(nn.Module):
    """Image and caption towers into one L2-normalised space, a CLIP logit scale, and one linear head per attribute."""

    def __init__(self, *, resolution: int, channels: Sequence[int], embed_dim: int, text_dim: int, text_hidden: int,
                 token_attention: bool, vocab: dict[str, list[str]], resize_mode: str = "center-crop",
                 pad_value: int = 255) -> None:
        super().__init__()
        self.resolution, self.channels, self.embed_dim = resolution, list(channels), embed_dim
        self.text_dim, self.text_hidden, self.token_attention = text_dim, text_hidden, token_attention
        self.vocab = {name: list(values) for name, values in vocab.items()}
        self.resize_mode, self.pad_value = resize_mode, pad_value
        self.encoder_identity = ""  # set by training and load_critic; checked by embed_captions
        self.image_tower = ImageTower(channels, embed_dim)
        self.text_tower = TextTower(text_dim, text_hidden, embed_dim, token_attention)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
        self.heads = nn.ModuleDict({name: nn.Linear(embed_dim, len(values)) for name, values in self.vocab.items()})

    def encode_image(self, pixels: Tensor) -> Tensor:
        return F.normalize(self.image_tower(pixels), dim=-1)  # [B, E]

    def encode_text(self, token_states: Tensor, mask: Tensor, pooled: Tensor) -> Tensor:
        return F.normalize(self.text_tower(token_states, mask, pooled), dim=-1)  # [B, E]

    def attribute_logits(self, image_emb: Tensor) -> dict[str, Tensor]:
        """Head logits name -> [B, K_name]; the unit-norm embedding is scaled to unit variance per coordinate first,
        so the heads reach confident (calibrated) probabilities without huge weights."""
        features = image_emb * math.sqrt(self.embed_dim)  # [B, E]
        return {name: head(features) for name, head in self.heads.items()}

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()  # CLIP caps the inverse temperature at 100

    def forward(self, pixels: Tensor, token_states: Tensor, mask: Tensor,
                pooled: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Training entry point (so DDP sees one forward): image and text embeddings [B, E], logit scale, attribute logits."""
        image_emb = self.encode_image(pixels)
        return image_emb, self.encode_text(token_states, mask, pooled), self.scale(), self.attribute_logits(image_emb)

    def description(self) -> dict[str, Any]:
        """Everything `from_description` needs to rebuild this critic (weights aside)."""
        return {"resolution": self.resolution, "channels": self.channels, "embed_dim": self.embed_dim, "text_dim": self.text_dim,
                "text_hidden": self.text_hidden, "token_attention": self.token_attention, "vocab": self.vocab,
                "resize_mode": self.resize_mode, "pad_value": self.pad_value}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Critic:
        return cls(**description)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device


# ------------------------------------------------------------------------------------------ save / load


def save_critic(critic: Critic, encoder_identity: str, vocab: dict[str, list[str]], config: Config, out_dir: str | Path, *,
                training: dict[str, Any] | None = None, validation: dict[str, Any] | None = None) -> Path:
    """critic.safetensors, then critic.json (architecture, encoder identity, vocabulary, facts, sha256) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if vocab != critic.vocab:
        raise ValueError("save_critic: vocab differs from the vocabulary the critic's heads were built for")
    state = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in critic.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS_FILE) as temporary:
        save_file(state, temporary, metadata={"format": CRITIC_FORMAT})
    info = {
        "format": CRITIC_FORMAT,
        "version": CRITIC_VERSION,
        "critic": critic.description(),
        "attribute_vocab": vocab,
        "text": {"encoder": config.text.encoder, "identity": encoder_identity, "max_length": config.text.max_length,
                 "normalize_pooled": config.text.normalize_pooled, "dtype": config.text.dtype, "dim": critic.text_dim},
        "data": {"source": config.data.source, "split": config.data.split, "caption_mode": config.data.caption_mode,
                 "caption_template": config.data.caption_template, "resize_mode": config.data.resize_mode},
        "training": training or {},
        "validation": validation or {},
        "config": config_to_dict(config),
        "weights": {"file": WEIGHTS_FILE, "dtype": "float32", "sha256": sha256_of(out_dir / WEIGHTS_FILE),
                    "parameters": sum(p.numel() for p in critic.parameters())},
    }
    atomic_write_text(out_dir / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return out_dir


def load_critic(path: str | Path, device: str | torch.device = "cpu",
                encoder: CaptionEncoder | str | None = None) -> tuple[Critic, dict[str, Any]]:
    """A saved critic (its directory or critic.json) on `device`, frozen; `encoder` (or its identity) must be its own."""
    path = Path(path)
    directory = path.parent if path.is_file() else path
    info_path = directory / INFO_FILE
    if not info_path.is_file():
        raise ModelFileError(f"{path} is not a saved critic (no {INFO_FILE}); "
                             "train one with `python -m fashiongen.train critic configs/critic.yaml`")
    info = read_versioned_json(info_path, {CRITIC_FORMAT: CRITIC_VERSION})
    weights = directory / info["weights"]["file"]
    if not weights.is_file() or sha256_of(weights) != info["weights"]["sha256"]:
        raise ModelFileError(f"{weights}: missing, or its checksum does not match {INFO_FILE} (corrupted or replaced)")
    try:
        description = dict(info["critic"])
        count = parameters_of(lambda: Critic.from_description(description))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{info_path}: critic: not a valid critic description ({error})") from None
    if count > MAX_PARAMETERS:
        raise ModelFileError(f"{info_path}: critic: describes {count / 1e9:.1f}B parameters, more than the "
                             f"{MAX_PARAMETERS / 1e9:.0f}B a model file may (edited or corrupted?)")
    critic = Critic.from_description(description)
    state = load_weights(weights)
    try:
        critic.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelFileError(f"{weights}: weights do not fit the architecture in {INFO_FILE} ({error})") from None
    critic.encoder_identity = info["text"]["identity"]
    if encoder is not None:
        check_encoder(critic, encoder if isinstance(encoder, str) else encoder.identity)
    return critic.to(device).eval().requires_grad_(False), info


__all__ = [
    "CRITIC_FORMAT", "CRITIC_VERSION", "Critic", "EncoderMismatchError", "attribute_accuracy", "attribute_probabilities",
    "check_encoder", "critic_inception_score", "critic_score", "embed_captions", "embed_images", "inception_score",
    "load_critic", "predict_attributes", "r_precision", "r_precision_draws", "save_critic",
]
