"""The critic's training data and losses: pre-resized images with captions and attribute labels in memory, InfoNCE on
image/caption pairs and cross-entropy of the attribute heads (the trainer: critic.py).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ..config import Config
from ..data import RecordError, SkipLog, Source
from ..data.captions import build_caption
from ..data.transforms import resize_square, to_tensor
from ..evaluation.critic import Critic
from .data import example_seed

logger = logging.getLogger("fashiongen.critic")

IGNORE_INDEX = -100  # attribute label of an example whose value is missing


def build_critic(config: Config, text_dim: int, vocab: dict[str, list[str]]) -> Critic:
    """The critic network critic.* describes, for captions of `text_dim` and the attribute vocabulary `vocab`."""
    critic = config.critic
    return Critic(resolution=critic.resolution, channels=critic.channels, embed_dim=critic.embed_dim, text_dim=text_dim,
                  text_hidden=critic.text_hidden, token_attention=critic.token_attention, vocab=vocab,
                  resize_mode=config.data.resize_mode, pad_value=config.data.pad_value)


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
    """Mean over heads of the cross-entropy on examples whose value is known (attribute_ids [B, K], IGNORE_INDEX
    missing); a head with no known value in the batch is left out. Chosen on the device: no branch waits for it."""
    if not logits:
        return attribute_ids.new_zeros((), dtype=torch.float32)
    known = (attribute_ids != IGNORE_INDEX).any(dim=0)  # [K]
    losses = torch.stack([F.cross_entropy(head_logits, attribute_ids[:, k], ignore_index=IGNORE_INDEX)
                          for k, head_logits in enumerate(logits.values())])  # [K]; NaN where no value is known
    return torch.where(known, losses, 0.0).sum() / known.sum().clamp(min=1)  # = the known heads' mean


def critic_loss(critic: nn.Module, batch: dict[str, Any], text: Any, attribute_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """InfoNCE + attribute_weight * attribute cross-entropy for one batch; also the two parts (detached)."""
    image_emb, text_emb, scale, logits = critic(batch["pixel_values"], text.token_states, text.mask, text.pooled)
    contrastive = contrastive_loss(image_emb, text_emb, scale, batch["caption_id"]).mean()
    attribute = attribute_loss(logits, batch["attribute_ids"])
    return contrastive + attribute_weight * attribute, {"contrastive": contrastive.detach(), "attribute": attribute.detach()}


def unwrap(module: nn.Module) -> Critic:
    """The Critic inside a prepared (DDP-wrapped) module."""
    while not isinstance(module, Critic) and hasattr(module, "module"):
        module = module.module
    return module  # type: ignore[return-value]


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


__all__ = ["CriticExamples", "IGNORE_INDEX", "attribute_loss", "build_critic", "contrastive_loss", "critic_loss",
           "load_examples", "unwrap"]
