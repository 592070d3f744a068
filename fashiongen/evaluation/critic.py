"""Text-image critic: a small CNN and a caption projection trained CLIP-style on our training split.

The FashionGen challenge scored how well images agree with their captions with a pretrained
critic; with no CLIP offline we train our own (InfoNCE on image/caption pairs plus attribute heads
on the image embedding) and score with it:

    path = train_critic(load_config(["configs/critic.yaml"]))        # runs/critic-products64/
    critic, info = load_critic(path, encoder=encoder)                 # raises if encoder differs
    image_emb = embed_images(critic, images)                          # uint8 [H, W, 3] arrays -> [N, E]
    text_emb = embed_captions(critic, encoder, captions)              # [N, E]
    score, per_item = critic_score(image_emb, text_emb)               # mean cosine image <-> own caption
    mean, std = r_precision(image_emb, text_emb, caption_ids=captions)  # AttnGAN protocol, 1 of 100
    accuracy = attribute_accuracy(critic, image_emb, [{"colour": "Red", "category": "Dresses"}, ...])
    mean, std = critic_inception_score(critic, image_emb)             # IS formula on the category head

Embeddings are L2-normalised, so scores are cosines in [-1, 1] (not x100, not clipped at 0 as
CLIP-score is). The critic's caption side reads the frozen caption encoder, so a critic is only
valid with the encoder it was trained with; its identity is stored and checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

from ..config import Config, ConfigError, config_to_dict, load_config, save_config
from ..data import FashionDataset, RecordError, SkipLog, Source, open_from_config
from ..data.captions import build_caption
from ..data.transforms import resize_square, to_tensor
from ..models import MAX_PARAMETERS, parameters_of
from ..text import CaptionEncoder
from ..train.checkpoint import checkpoint_dirs, read_state, save_checkpoint
from ..train.data import MISSING_VALUES, EpochSampler, attribute_vocabulary, example_seed, precompute_captions
from ..train.export import ModelFileError, load_weights, read_versioned_json, sha256_of
from ..train.loop import lr_at
from ..train.runs import MetricsLog
from ..utils import atomic_path, atomic_write_text

logger = logging.getLogger("fashiongen.critic")

CRITIC_FORMAT = "fashiongen-critic"
CRITIC_VERSION = 1
WEIGHTS_FILE = "critic.safetensors"
INFO_FILE = "critic.json"
IGNORE_INDEX = -100  # attribute label of an example whose value is missing
# Settings a resumed critic run must share with its checkpoint (anything else may change, e.g. max_steps).
_FROZEN_KEYS = ("seed", "text", "data.source", "data.format", "data.split", "data.val_fraction", "data.resize_mode",
                "data.pad_value", "data.caption_mode", "data.caption_template", "data.caption_field", "critic.resolution",
                "critic.channels", "critic.embed_dim", "critic.text_hidden", "critic.token_attention", "critic.attributes")


class EncoderMismatchError(ValueError):
    """A critic was given captions from another caption encoder than the one it was trained with."""


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


def build_critic(config: Config, text_dim: int, vocab: dict[str, list[str]]) -> Critic:
    c = config.critic
    return Critic(resolution=c.resolution, channels=c.channels, embed_dim=c.embed_dim, text_dim=text_dim, text_hidden=c.text_hidden,
                  token_attention=c.token_attention, vocab=vocab, resize_mode=config.data.resize_mode, pad_value=config.data.pad_value)


# ------------------------------------------------------------------------------------------------ loss


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, caption_ids: Tensor) -> Tensor:
    """Symmetric InfoNCE per example [B]; other examples with the same caption are not negatives (masked out)."""
    logits = logit_scale * image_emb @ text_emb.T  # [B, B] image i vs caption j
    same = caption_ids[:, None] == caption_ids[None, :]  # [B, B]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets, reduction="none") + F.cross_entropy(logits.T, targets, reduction="none"))


def attribute_loss(logits: dict[str, Tensor], attribute_ids: Tensor) -> Tensor:
    """Mean over heads of the cross-entropy on examples whose value is known (attribute_ids [B, K], IGNORE_INDEX missing)."""
    losses = [F.cross_entropy(head_logits, attribute_ids[:, k], ignore_index=IGNORE_INDEX)
              for k, head_logits in enumerate(logits.values()) if (attribute_ids[:, k] != IGNORE_INDEX).any()]
    return torch.stack(losses).mean() if losses else attribute_ids.new_zeros((), dtype=torch.float32)


def critic_loss(critic: nn.Module, batch: dict[str, Any], text: Any, attribute_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """InfoNCE + attribute_weight * attribute cross-entropy for one batch; also the two parts (detached)."""
    image_emb, text_emb, scale, logits = critic(batch["pixel_values"], text.token_states, text.mask, text.pooled)
    contrastive = contrastive_loss(image_emb, text_emb, scale, batch["caption_id"]).mean()
    attribute = attribute_loss(logits, batch["attribute_ids"])
    return contrastive + attribute_weight * attribute, {"contrastive": contrastive.detach(), "attribute": attribute.detach()}


def _unwrap(module: nn.Module) -> Critic:
    while not isinstance(module, Critic) and hasattr(module, "module"):
        module = module.module
    return module  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- scoring


def _device_batches(critic: Critic, images: Sequence[np.ndarray] | np.ndarray, batch_size: int):
    for start in range(0, len(images), batch_size):
        chunk = [image if image.shape[:2] == (critic.resolution, critic.resolution)
                 else resize_square(image, critic.resolution, critic.resize_mode, critic.pad_value)
                 for image in images[start : start + batch_size]]
        yield torch.stack([to_tensor(np.ascontiguousarray(image)) for image in chunk]).to(critic.device)  # [b, 3, R, R]


@torch.no_grad()
def embed_images(critic: Critic, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = 256) -> Tensor:
    """uint8 [H, W, 3] images (any size: resized like training) -> L2-normalised embeddings [N, E] (float32, cpu)."""
    found = [critic.encode_image(pixels).float().cpu() for pixels in _device_batches(critic, images, batch_size)]
    return torch.cat(found) if found else torch.zeros(0, critic.embed_dim)


def check_encoder(critic: Critic, encoder_identity: str) -> None:
    if critic.encoder_identity and critic.encoder_identity != encoder_identity:
        raise EncoderMismatchError(f"critic trained with encoder {critic.encoder_identity}, got {encoder_identity}; "
                                   "set text.* to the critic's encoder (see its critic.json) or train a critic for this one")


@torch.no_grad()
def embed_captions(critic: Critic, encoder: CaptionEncoder, captions: Sequence[str], batch_size: int = 256) -> Tensor:
    """Captions -> L2-normalised embeddings [N, E] (float32, cpu) through the critic's own caption encoder."""
    check_encoder(critic, encoder.identity)
    found = []
    for start in range(0, len(captions), batch_size):
        text = encoder.encode(list(captions[start : start + batch_size])).to(critic.device)
        found.append(critic.encode_text(text.token_states, text.mask, text.pooled).float().cpu())
    return torch.cat(found) if found else torch.zeros(0, critic.embed_dim)


def critic_score(image_emb: Tensor, text_emb: Tensor) -> tuple[float, Tensor]:
    """Cosine of each image with its own caption [N] and their mean (x100 gives CLIP-score-like numbers)."""
    per_item = (F.normalize(image_emb.float(), dim=-1) * F.normalize(text_emb.float(), dim=-1)).sum(dim=-1)  # [N]
    return float(per_item.mean()) if len(per_item) else float("nan"), per_item


def _caption_groups(caption_ids: Sequence[Hashable] | Tensor | None, count: int) -> Tensor:
    """Integer group per item: items with equal ids (identical caption texts) share one; None: all distinct."""
    if caption_ids is None:
        return torch.arange(count)
    if isinstance(caption_ids, Tensor):
        caption_ids = caption_ids.tolist()
    if len(caption_ids) != count:
        raise ValueError(f"caption_ids has {len(caption_ids)} entries for {count} items")
    numbers: dict[Hashable, int] = {}
    return torch.tensor([numbers.setdefault(key, len(numbers)) for key in caption_ids])


def _draw_distractors(rows: Tensor, groups: Tensor, eligible_counts: Tensor, k: int,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """For each row, k distinct items of other caption groups, uniformly at random: indices [n, k] and validity [n, k].

    Rows with plenty of eligible items redraw rejected picks (same group, repeats) until none is left,
    O(n k); the others order all items by random keys and take the first k eligible ones (invalid past the last).
    """
    count = len(groups)
    picks = torch.zeros(len(rows), k, dtype=torch.long)
    valid = torch.ones(len(rows), k, dtype=torch.bool)
    few = eligible_counts[rows] <= 2 * k
    if few.any():
        some = rows[few]
        keys = torch.rand(len(some), count, generator=generator)  # [m, N]
        keys = keys.masked_fill(groups[some][:, None] == groups[None, :], -1.0)
        top_keys, picks[few] = keys.topk(k, dim=1)
        valid[few] = top_keys >= 0
    if (~few).any():
        many = rows[~few]
        drawn = torch.randint(0, count, (len(many), k), generator=generator)  # [m, k]
        while True:
            rejected = groups[drawn] == groups[many][:, None]  # [m, k] a caption like the true one
            ordered, order = drawn.sort(dim=1)
            repeated = torch.zeros_like(rejected)
            repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
            rejected |= torch.zeros_like(rejected).scatter(1, order, repeated)  # all but the first of repeated picks
            if not rejected.any():
                break
            drawn[rejected] = torch.randint(0, count, (int(rejected.sum()),), generator=generator)
        picks[~few] = drawn
    return picks, valid


def r_precision_draws(image_emb: Tensor, text_emb: Tensor, num_distractors: int = 99, seed: int = 0,
                      caption_ids: Sequence[Hashable] | Tensor | None = None, num_draws: int = 10) -> tuple[Tensor, int]:
    """R-precision (R=1) of each draw [num_draws], and the fewest distractors any image was ranked against.

    Each image ranks its own caption against `num_distractors` captions of other items drawn without
    replacement (never one with the same text, per `caption_ids`); a hit is the true caption scoring
    strictly highest. With fewer eligible items, all of them are used.
    """
    count = len(image_emb)
    if count != len(text_emb):
        raise ValueError(f"{count} image embeddings but {len(text_emb)} caption embeddings")
    if count < 2:
        raise ValueError("r_precision needs at least two items")
    groups = _caption_groups(caption_ids, count)  # [N]
    eligible_counts = count - torch.bincount(groups)[groups]  # [N] items with another caption
    k = min(num_distractors, count - 1)
    image_emb, text_emb = F.normalize(image_emb.float().cpu(), dim=-1), F.normalize(text_emb.float().cpu(), dim=-1)
    generator = torch.Generator().manual_seed(seed)
    hits = torch.zeros(num_draws)
    chunk = max(1, (1 << 22) // count)  # rows per chunk: [chunk, N] similarities, ~16 MB
    for start in range(0, count, chunk):
        rows = torch.arange(start, min(start + chunk, count))
        similarity = image_emb[rows] @ text_emb.T  # [n, N] image of row i vs every caption
        true_scores = similarity[torch.arange(len(rows)), rows]  # [n]
        for draw in range(num_draws):
            picks, valid = _draw_distractors(rows, groups, eligible_counts, k, generator)  # [n, k]
            scores = similarity.gather(1, picks).masked_fill(~valid, float("-inf"))  # [n, k]
            hits[draw] += (true_scores > scores.max(dim=1).values).sum()
    return hits / count, min(k, int(eligible_counts.min()))


def r_precision(image_emb: Tensor, text_emb: Tensor, num_distractors: int = 99, seed: int = 0,
                caption_ids: Sequence[Hashable] | Tensor | None = None, num_draws: int = 10) -> tuple[float, float]:
    """AttnGAN's R-precision (R=1): mean and std over `num_draws` random draws of distractor captions.

    Chance is 1 / (num_distractors + 1). `caption_ids` (e.g. the caption strings) marks items with
    identical captions, which are never drawn as each other's distractors. With fewer than
    num_distractors + 1 usable items every other item is used, and a warning names how many.
    """
    per_draw, fewest = r_precision_draws(image_emb, text_emb, num_distractors, seed, caption_ids, num_draws)
    if fewest < num_distractors:
        logger.warning("r_precision: some images were ranked against only %d distractors (asked %d); chance there is 1/%d",
                       fewest, num_distractors, fewest + 1)
    return float(per_draw.mean()), float(per_draw.std(unbiased=False))


def _image_embeddings(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray, batch_size: int) -> Tensor:
    if isinstance(images_or_emb, Tensor) and images_or_emb.ndim == 2:
        return images_or_emb.float()
    return embed_images(critic, images_or_emb, batch_size)


@torch.no_grad()
def attribute_probabilities(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray,
                            batch_size: int = 256) -> dict[str, Tensor]:
    """Softmax of each attribute head: name -> [N, K_name] (columns follow critic.vocab[name])."""
    image_emb = _image_embeddings(critic, images_or_emb, batch_size).to(critic.device)
    return {name: logits.float().softmax(dim=-1).cpu() for name, logits in critic.attribute_logits(image_emb).items()}


def predict_attributes(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray,
                       batch_size: int = 256) -> list[dict[str, str]]:
    """The most likely value of each attribute for each image."""
    probabilities = attribute_probabilities(critic, images_or_emb, batch_size)
    count = len(next(iter(probabilities.values()))) if probabilities else 0
    return [{name: critic.vocab[name][int(p[i].argmax())] for name, p in probabilities.items()} for i in range(count)]


def attribute_accuracy(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray,
                       wanted_attributes: Sequence[dict[str, Any]], batch_size: int = 256) -> dict[str, tuple[float, int]]:
    """name -> (share of images whose predicted value is the wanted one, images counted), for the critic's heads.

    Values are compared case-insensitively. An image is skipped for an attribute when its wanted value is
    missing, or unknown to the critic's vocabulary (it could never be predicted; a warning counts them).
    Attributes counted on no image are left out.
    """
    predicted = predict_attributes(critic, images_or_emb, batch_size)
    if len(predicted) != len(wanted_attributes):
        raise ValueError(f"{len(predicted)} images but {len(wanted_attributes)} attribute dicts")
    results: dict[str, tuple[float, int]] = {}
    for name, values in critic.vocab.items():
        known = {value.lower() for value in values}
        correct = counted = unknown = 0
        for guess, wanted in zip(predicted, wanted_attributes):
            value = str(wanted.get(name, "")).strip().lower()
            if value in MISSING_VALUES:
                continue
            if value not in known:
                unknown += 1
                continue
            counted += 1
            correct += guess[name].lower() == value
        if unknown:
            logger.warning("attribute_accuracy: skipped %d images whose %s is not in the critic's vocabulary", unknown, name)
        if counted:
            results[name] = (correct / counted, counted)
    return results


def inception_score(probabilities: Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of [N, K] class probabilities; mean and std over splits."""
    probabilities = probabilities.double()
    scores = []
    for part in torch.tensor_split(probabilities, min(splits, len(probabilities))):
        marginal = part.mean(dim=0, keepdim=True)  # [1, K]
        kl = (part * (torch.log(part.clamp_min(1e-12)) - torch.log(marginal.clamp_min(1e-12)))).sum(dim=1)  # [n]
        scores.append(float(torch.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def critic_inception_score(critic: Critic, images_or_emb: Tensor | Sequence[np.ndarray] | np.ndarray, splits: int = 10,
                           attribute: str = "category", batch_size: int = 256) -> tuple[float, float]:
    """"critic_is": the Inception-score formula on the critic's category head (not Inception's IS, not comparable to it).

    Between 1 (every image gets the same class distribution) and the number of categories (confident,
    evenly spread predictions).
    """
    if attribute not in critic.heads:
        raise ValueError(f"critic_inception_score: the critic has no '{attribute}' head (heads: {', '.join(critic.heads) or 'none'})")
    image_emb = _image_embeddings(critic, images_or_emb, batch_size)
    return inception_score(attribute_probabilities(critic, image_emb, batch_size)[attribute], splits)


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
        raise ModelFileError(f"{path} is not a saved critic (no {INFO_FILE}); train one with `python -m fashiongen.evaluation.critic`")
    info = read_versioned_json(info_path, CRITIC_FORMAT, CRITIC_VERSION)
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


# ---------------------------------------------------------------------------------------------- data


class CriticExamples(Dataset):
    """Pre-resized images in memory with captions and attribute labels; flips drawn per (seed, epoch, index)."""

    def __init__(self, images: np.ndarray, captions: list[str], attribute_ids: np.ndarray, seed: int, hflip: bool) -> None:
        self.images = images  # [N, R, R, 3] uint8
        self.captions = captions
        numbers: dict[str, int] = {}
        self.caption_ids = np.array([numbers.setdefault(c, len(numbers)) for c in captions], dtype=np.int64)  # [N]
        self.attribute_ids = attribute_ids  # [N, K] int64, IGNORE_INDEX where missing
        self.seed, self.hflip, self.epoch = seed, hflip, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.images[index]
        if self.hflip and example_seed(self.seed, self.epoch, index) & 1:
            image = image[:, ::-1]
        return {"pixel_values": to_tensor(np.ascontiguousarray(image)), "caption": self.captions[index],
                "caption_id": int(self.caption_ids[index]), "attribute_ids": torch.from_numpy(self.attribute_ids[index]),
                "index": index}


def load_examples(source: Source, config: Config, vocab: dict[str, list[str]], limit: int = 0,
                  show_progress: bool = True, hflip: bool = False) -> CriticExamples:
    """Read, resize (to critic.resolution) and caption every record of `source` (or `limit`, evenly spaced) into memory."""
    indices = range(len(source))
    if limit and limit < len(source):
        indices = np.linspace(0, len(source) - 1, limit).round().astype(int).tolist()
    template = config.data.caption_template or source.caption_template
    resolution = config.critic.resolution
    images, captions, labels = [], [], []
    skipped = SkipLog(skip=config.data.skip_bad_records)
    for index in tqdm(indices, desc=f"loading {getattr(source, 'split_name', 'images')}", unit="img", disable=not show_progress):
        try:
            record = source[index]
            caption = build_caption(record.caption, record.attributes, config.data.caption_mode, template)
        except RecordError as error:
            skipped.defect(error)
            continue
        images.append(resize_square(record.image, resolution, config.data.resize_mode, config.data.pad_value))
        captions.append(caption)
        labels.append([_label(record.attributes.get(name), values) for name, values in vocab.items()])
    if skipped:
        logger.warning("%s", skipped.summary())
    images_array = np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8)
    return CriticExamples(images_array, captions, np.array(labels, dtype=np.int64).reshape(len(images), len(vocab)),
                          config.seed, hflip)


def _label(value: Any, values: list[str]) -> int:
    value = str(value if value is not None else "").strip()
    return values.index(value) if value in values else IGNORE_INDEX


# ------------------------------------------------------------------------------------------ training


@dataclass
class CriticRun:
    """Everything the training steps share; built by `prepare_critic`."""

    config: Config
    accelerator: Accelerator
    out_dir: Path
    critic: nn.Module  # prepared (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    encoder: CaptionEncoder
    vocab: dict[str, list[str]]
    train_examples: CriticExamples
    train_loader: DataLoader
    val_examples: CriticExamples | None
    metrics: MetricsLog
    steps_per_epoch: int
    step: int = 0

    @property
    def images_per_step(self) -> int:
        return self.config.critic.batch_size * self.accelerator.num_processes

    @property
    def model(self) -> Critic:
        return _unwrap(self.critic)


def _flat(config: Config, dotted: str) -> Any:
    value: Any = config_to_dict(config)
    for part in dotted.split("."):
        value = value[part]
    return value


def _check_resume(saved: Config, config: Config, checkpoint: Path) -> None:
    problems = [f"{key}: checkpoint has {_flat(saved, key)!r}, now {_flat(config, key)!r}"
                for key in _FROZEN_KEYS if _flat(saved, key) != _flat(config, key)]
    if problems:
        raise ConfigError(f"critic.output_dir holds {checkpoint} of a different critic ({'; '.join(problems)}); "
                          "choose another critic.output_dir or delete that directory")


def prepare_critic(config: Config, show_progress: bool = True) -> CriticRun:
    """Open data, pre-resize images into memory, precompute caption embeddings, build critic and optimizer,
    and restore the newest checkpoint in critic.output_dir if there is one."""
    c = config.critic
    out_dir = Path(c.output_dir)
    checkpoints = checkpoint_dirs(out_dir)
    latest = checkpoints[-1] if checkpoints else None
    if latest is not None:
        _check_resume(load_config([latest / "config.yaml"]), config, latest)
    AcceleratorState._reset_state(reset_partial_state=False)  # a second run in one process may pick another precision
    accelerator = Accelerator(mixed_precision=c.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    is_main = accelerator.is_main_process
    out_dir.mkdir(parents=True, exist_ok=True)

    train_source = open_from_config(config.data)
    val_source = None
    if config.data.split == "train" and config.data.val_fraction > 0:
        val_source = open_from_config(config.data, split="validation")
    if latest is not None:
        vocab = read_state(latest)["attribute_vocab"]
    else:
        try:
            vocab = attribute_vocabulary(train_source, c.attributes)
        except ConfigError as error:
            raise ConfigError(str(error).replace("model.attributes", "critic.attributes")) from None
    train_examples = load_examples(train_source, config, vocab, show_progress=show_progress and is_main, hflip=c.hflip)
    val_examples = None
    if val_source is not None and len(val_source):
        val_examples = load_examples(val_source, config, vocab, limit=c.validation_items, show_progress=show_progress and is_main)

    text_config = config.text
    if not text_config.cache_dir:  # training reads embeddings from a cache; keep it inside the output directory
        text_config = dataclasses.replace(text_config, cache_dir=str(out_dir / "text-cache"))
    with accelerator.main_process_first():
        encoder = CaptionEncoder(text_config)
        datasets = [FashionDataset(s, config.data, config.seed) for s in (train_source, val_source) if s is not None]
        precompute_captions(encoder, datasets, show_progress=show_progress and is_main)

    critic = build_critic(config, encoder.dim, vocab)
    critic.encoder_identity = encoder.identity
    decay = [p for p in critic.parameters() if p.ndim >= 2]
    no_decay = [p for p in critic.parameters() if p.ndim < 2]  # norms, biases, the logit scale
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=c.learning_rate)
    global_batch = c.batch_size * accelerator.num_processes
    sampler = EpochSampler(len(train_examples), config.seed, global_batch)
    loader = DataLoader(train_examples, batch_size=c.batch_size, sampler=sampler, drop_last=True, num_workers=0,
                        collate_fn=default_collate)
    critic, optimizer, loader = accelerator.prepare(critic, optimizer, loader)
    run = CriticRun(config=config, accelerator=accelerator, out_dir=out_dir, critic=critic, optimizer=optimizer, encoder=encoder,
                    vocab=vocab, train_examples=train_examples, train_loader=loader, val_examples=val_examples,
                    metrics=MetricsLog(out_dir / "metrics.jsonl"), steps_per_epoch=len(sampler) // global_batch)
    if latest is not None:
        accelerator.load_state(str(latest))
        run.step = int(read_state(latest)["step"])
    if is_main:
        save_config(config, out_dir / "config.yaml")
        run.metrics.truncate_after(run.step)  # a resumed run repeats the steps after its checkpoint
        logger.info("critic %s: %.2fM parameters, %d training / %d validation images, %d steps per epoch%s", out_dir,
                    sum(p.numel() for p in run.model.parameters()) / 1e6, len(train_examples),
                    len(val_examples) if val_examples is not None else 0, run.steps_per_epoch,
                    f", resumed at step {run.step} from {latest.name}" if latest is not None else "")
    return run


def critic_train_step(run: CriticRun, batch: dict[str, Any]) -> dict[str, float]:
    """One optimizer step on one batch: caption embeddings from the cache, forward, backward, clip, step.

    With several processes each contrasts its own batch (negatives are not gathered across processes).
    """
    c, accelerator = run.config.critic, run.accelerator
    text = run.encoder.encode(batch["caption"]).to(accelerator.device)  # cached: no encoder forward pass
    for group in run.optimizer.param_groups:
        group["lr"] = lr_at(run.step, c)
    with accelerator.autocast():
        loss, parts = critic_loss(run.critic, batch, text, c.attribute_loss_weight)
    accelerator.backward(loss)
    grad_norm = accelerator.clip_grad_norm_(run.critic.parameters(), c.max_grad_norm or float("inf"))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}, "grad_norm": float(grad_norm)}


@torch.no_grad()
def validate_critic(run: CriticRun) -> dict[str, float]:
    """On the validation images: contrastive loss, critic score, R-precision (1 of num_distractors + 1), attribute accuracy."""
    examples = run.val_examples
    if examples is None or len(examples) < 2:
        return {}
    critic, c = run.model, run.config.critic
    image_emb = embed_images(critic, examples.images, batch_size=256)  # [N, E]
    text_emb = embed_captions(critic, run.encoder, examples.captions, batch_size=256)  # [N, E]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(run.config.seed))  # mixed batches
    scale = critic.scale().cpu()
    caption_ids = torch.from_numpy(examples.caption_ids)
    losses = [contrastive_loss(image_emb[part], text_emb[part], scale, caption_ids[part])
              for part in order.split(c.batch_size) if len(part) > 1]
    r_mean, r_std = r_precision(image_emb, text_emb, c.num_distractors, seed=run.config.seed, caption_ids=examples.captions)
    results = {"val_loss": float(torch.cat(losses).mean()), "val_critic_score": critic_score(image_emb, text_emb)[0],
               "val_r_precision": r_mean, "val_r_precision_std": r_std,
               "val_r_precision_chance": 1.0 / (min(c.num_distractors, len(examples) - 1) + 1)}
    labels = torch.from_numpy(examples.attribute_ids)  # [N, K]
    accuracies = []
    for k, (name, probabilities) in enumerate(attribute_probabilities(critic, image_emb).items()):
        known = labels[:, k] != IGNORE_INDEX
        if known.any():
            results[f"val_{name}_accuracy"] = float((probabilities[known].argmax(dim=1) == labels[known, k]).float().mean())
            accuracies.append(results[f"val_{name}_accuracy"])
    if accuracies:
        results["val_attribute_accuracy"] = float(np.mean(accuracies))
    return results


def save_critic_checkpoint(run: CriticRun) -> Path:
    """Accelerate state + config + state.json into checkpoints/step_N, atomically (the generator's checkpoint code)."""
    state = {"epoch": run.step // run.steps_per_epoch, "attribute_vocab": run.vocab, "text_identity": run.encoder.identity,
             "text_dim": run.encoder.dim, "num_processes": run.accelerator.num_processes,
             "images_per_step": run.images_per_step, "time": time.time()}
    return save_checkpoint(run.accelerator, run.out_dir, run.step, None, run.config, state, run.config.critic.keep_checkpoints)


def _log(run: CriticRun, record: dict[str, Any]) -> None:
    if run.accelerator.is_main_process and record:
        run.metrics.write({"step": run.step, **record, "time": time.time()})


def train_critic(config: Config, show_progress: bool = True) -> Path:
    """Train (or resume, from the newest checkpoint in critic.output_dir) and save critic.safetensors + critic.json there."""
    run = prepare_critic(config, show_progress)
    c, accelerator = config.critic, run.accelerator
    is_main = accelerator.is_main_process
    progress = tqdm(total=c.max_steps, initial=min(run.step, c.max_steps), desc="critic", unit="step", dynamic_ncols=True,
                    disable=not (show_progress and is_main))
    sums: dict[str, float] = {}
    interval_start, interval_steps, started = time.perf_counter(), 0, time.perf_counter()
    try:
        while run.step < c.max_steps:
            epoch, offset = divmod(run.step, run.steps_per_epoch)
            run.train_loader.set_epoch(epoch)
            run.train_examples.set_epoch(epoch)
            loader = accelerator.skip_first_batches(run.train_loader, offset) if offset else run.train_loader
            for batch in loader:
                values = critic_train_step(run, batch)
                if not math.isfinite(values["loss"]):
                    raise RuntimeError(f"critic loss became {values['loss']} at step {run.step}; lower critic.learning_rate")
                run.step += 1
                interval_steps += 1
                progress.update(1)
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value
                if run.step % c.log_every == 0 or run.step == c.max_steps:
                    elapsed = time.perf_counter() - interval_start
                    record = {key: value / interval_steps for key, value in sums.items()}
                    record.update(epoch=epoch, lr=lr_at(run.step - 1, c), logit_scale=float(run.model.scale().detach()),
                                  images_per_s=interval_steps * run.images_per_step / max(elapsed, 1e-9))
                    _log(run, record)
                    progress.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}")
                    sums, interval_start, interval_steps = {}, time.perf_counter(), 0
                paused = time.perf_counter()
                if c.validate_every and run.step % c.validate_every == 0 and run.step < c.max_steps:
                    if is_main:
                        _log(run, validate_critic(run))
                    accelerator.wait_for_everyone()
                if run.step % c.checkpoint_every == 0 and run.step < c.max_steps:
                    save_critic_checkpoint(run)
                interval_start += time.perf_counter() - paused  # images/s counts training time only
                if run.step >= c.max_steps:
                    break
        if not checkpoint_dirs(run.out_dir) or checkpoint_dirs(run.out_dir)[-1].name != f"step_{run.step:06d}":
            save_critic_checkpoint(run)
        if is_main:
            validation = validate_critic(run)
            _log(run, validation)
            training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "batch_size": c.batch_size,
                        "num_processes": accelerator.num_processes, "train_images": len(run.train_examples),
                        "val_images": len(run.val_examples) if run.val_examples is not None else 0,
                        "device": str(accelerator.device), "seconds_this_session": round(time.perf_counter() - started, 1)}
            save_critic(run.model, run.encoder.identity, run.vocab, config, run.out_dir, training=training, validation=validation)
            logger.info("critic saved to %s: %s", run.out_dir, json.dumps(validation))
        accelerator.wait_for_everyone()
    finally:
        progress.close()
        accelerator.end_training()
    return run.out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """python -m fashiongen.evaluation.critic configs/critic.yaml [key=value ...]"""
    import sys

    from ..config import split_cli_args

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if args else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    paths, overrides = split_cli_args(args)
    print(train_critic(load_config(paths, overrides)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "Critic", "CriticExamples", "CriticRun", "EncoderMismatchError", "attribute_accuracy", "attribute_loss",
    "attribute_probabilities", "build_critic", "check_encoder", "contrastive_loss", "critic_inception_score", "critic_loss",
    "critic_score", "critic_train_step", "embed_captions", "embed_images", "inception_score", "load_critic", "load_examples",
    "predict_attributes", "prepare_critic", "r_precision", "r_precision_draws", "save_critic", "save_critic_checkpoint",
    "train_critic", "validate_critic",
]
