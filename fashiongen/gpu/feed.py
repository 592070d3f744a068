"""Training batches drawn from data resident on the device: no loader, no host copies, no per-example queries.

The photos are one uint8 tensor on the device [N, H, W, 3] (9,583 photos at 64 px: 118 MB), the distinct captions'
states are padded once to one length [C, L, D] (one shape: torch.compile never recompiles), and each batch's
randomness (flips, noise, timesteps, caption and attribute dropout) is drawn on the device from a generator seeded
by (seed, epoch). It stands in for a diffusion trainer's DataLoader: same keys, same epoch order as EpochSampler
(a seeded permutation per epoch, cut to whole batches), so the one loop (fashiongen.train) runs it unchanged.

    feed = ResidentBatches.of(run)          # run: a diffusion TrainingRun from fashiongen.train.prepare
    run.train_loader = feed
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import torch
from torch import Tensor

from ..data import FashionDataset
from ..models import NONE_ATTRIBUTE
from ..train.data import TOKEN_MULTIPLE, attribute_ids


@dataclasses.dataclass
class ResidentBatches:
    """Batches of a training split whose photos and caption states live on `device`."""

    photos: Tensor  # [N, H, W, 3] uint8
    caption_index: Tensor  # [N] long: row of each example's caption in the states
    attributes: Tensor  # [N, K] long
    states: Tensor  # [C, L, D] float32; row `empty` is the empty caption
    masks: Tensor  # [C, L] bool
    pooled: Tensor  # [C, D] float32
    empty: int
    batch_size: int
    seed: int
    num_train_timesteps: int
    hflip: bool
    caption_dropout_prob: float = 0.0
    attribute_dropout_prob: float = 0.0
    epoch: int = 0

    @classmethod
    def of(cls, run: Any, device: torch.device | None = None) -> ResidentBatches:
        """The resident data of a diffusion run's training split (flips off while reading: drawn per batch)."""
        config, examples = run.config, run.train_examples
        if config.model.low_res_resolution:
            raise ValueError("resident batches are for base diffusion models, not super-resolution stages")
        dataset: FashionDataset = examples.dataset
        plain = FashionDataset(dataset.source, dataclasses.replace(dataset.config, hflip=False), dataset.seed)
        photos, captions, ids = [], [], []
        for index in range(len(plain)):
            example = plain[index]
            photos.append(example["pixel_values"].add(1.0).mul(127.5).round().to(torch.uint8).permute(1, 2, 0))
            captions.append(example["caption"])
            ids.append(attribute_ids(example["attributes"], run.vocab))
        distinct = list(dict.fromkeys(["", *captions]))
        row = {caption: i for i, caption in enumerate(distinct)}
        states, masks, pooled = _padded_states(run.encoder.cache, distinct)
        device = device or run.accelerator.device
        return cls(torch.stack(photos).to(device), torch.tensor([row[c] for c in captions], device=device),
                   torch.tensor(ids, dtype=torch.long, device=device).view(len(ids), -1), states.to(device),
                   masks.to(device), pooled.to(device), row[""], config.train.batch_size, config.seed,
                   config.model.num_train_timesteps, dataset.config.hflip, config.train.caption_dropout_prob,
                   config.train.attribute_dropout_prob)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.photos.shape[0] // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        device = self.photos.device
        order = torch.randperm(self.photos.shape[0], generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        order = order[: len(self) * self.batch_size].to(device).view(len(self), self.batch_size)
        generator = torch.Generator(device=device).manual_seed(self.seed * 7_919 + self.epoch)
        for indices in order:
            yield self.batch(indices, generator)

    def batch(self, indices: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One batch of the examples `indices` [B], with its own noise, timesteps, flips and dropout."""
        size, device = indices.shape[0], indices.device
        pixels = self.photos[indices].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # [B, 3, H, W] in [-1, 1]
        if self.hflip:
            flip = torch.rand(size, device=device, generator=generator) < 0.5  # [B]
            pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
        noise = torch.randn(pixels.shape, device=device, generator=generator)  # [B, 3, H, W]
        timestep = torch.randint(0, self.num_train_timesteps, (size,), device=device, generator=generator)  # [B]
        drop_caption = torch.rand(size, device=device, generator=generator) < self.caption_dropout_prob  # [B]
        drop_attribute = torch.rand(size, self.attributes.shape[1], device=device,
                                    generator=generator) < self.attribute_dropout_prob  # [B, K]
        rows = torch.where(drop_caption, self.empty, self.caption_index[indices])  # [B]
        attribute = self.attributes[indices].masked_fill(drop_attribute | drop_caption[:, None], NONE_ATTRIBUTE)
        return {"pixel_values": pixels, "noise": noise, "timestep": timestep, "text_states": self.states[rows],
                "text_mask": self.masks[rows], "text_pooled": self.pooled[rows], "attribute_ids": attribute,
                "index": indices}


def _padded_states(cache: Any, captions: list[str]) -> tuple[Tensor, Tensor, Tensor]:
    """Every caption's cached states padded to the longest (a multiple of TOKEN_MULTIPLE): [C, L, D], [C, L], [C, D]."""
    found = cache.get_many(captions)
    missing = [caption for caption, item in zip(captions, found) if item is None]
    if missing:
        raise RuntimeError(f"{len(missing)} captions are not in the embedding cache {cache.path} (e.g. {missing[0]!r})")
    longest = max(item.token_states.shape[0] for item in found)
    longest = -(-longest // TOKEN_MULTIPLE) * TOKEN_MULTIPLE
    dim = found[0].token_states.shape[1]
    states = torch.zeros(len(found), longest, dim)
    masks = torch.zeros(len(found), longest, dtype=torch.bool)
    for row, item in enumerate(found):
        states[row, : item.token_states.shape[0]] = item.token_states
        masks[row, : item.token_states.shape[0]] = True
    return states, masks, torch.stack([item.pooled for item in found])


__all__ = ["ResidentBatches"]
