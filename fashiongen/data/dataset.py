"""A torch Dataset over any source: records -> (pixels in [-1, 1], model caption, attributes)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from .captions import build_caption
from .records import DataError, RecordError, SkipLog, Source
from .sources import open_from_config
from .transforms import resize_square, to_tensor

logger = logging.getLogger("fashiongen.data")


class FashionDataset(Dataset):
    """Prepared examples for training: every random choice derives from (seed, epoch, index).

    A defective record (truncated image, empty caption) is skipped when `skip_bad_records` is
    on: the next good record takes its place and the defect is logged and counted in `skipped`.
    """

    def __init__(self, source: Source, config: DataConfig, seed: int = 0) -> None:
        self.source = source
        self.config = config
        self.seed = seed
        self.epoch = 0
        self.template = config.caption_template or source.caption_template
        self.skipped = SkipLog(skip=config.skip_bad_records)
        self._bad: set[int] = set()

    @classmethod
    def from_config(cls, config: DataConfig, seed: int = 0, split: str | None = None) -> "FashionDataset":
        return cls(open_from_config(config, split=split), config, seed)

    def set_epoch(self, epoch: int) -> None:
        """Change the random flips for a new epoch (deterministically)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def _flip(self, index: int) -> bool:
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{index}".encode(), digest_size=8).digest()
        return self.config.hflip and digest[0] & 1 == 1

    def caption(self, index: int) -> str:
        meta = self.source.meta(index)
        return build_caption(meta.caption, meta.attributes, self.config.caption_mode, self.template)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self._bad:
                continue
            try:
                return self._example(candidate)
            except RecordError as error:
                self.skipped.defect(error)
                self._bad.add(candidate)
        raise DataError(f"{self.source.path}: every record is defective ({self.skipped.summary()})")

    def _example(self, index: int) -> dict[str, Any]:
        record = self.source[index]
        image = resize_square(record.image, self.config.resolution, self.config.resize_mode, self.config.pad_value)
        if self._flip(index):
            image = np.ascontiguousarray(image[:, ::-1])
        caption = build_caption(record.caption, record.attributes, self.config.caption_mode, self.template)
        return {
            "pixel_values": to_tensor(image),  # [3, H, W] in [-1, 1]
            "caption": caption,
            "id": record.id,
            "index": index,
            "attributes": {k: str(v) for k, v in record.attributes.items()},
        }


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack pixels; keep captions, ids and attributes as lists."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),  # [B, 3, H, W]
        "caption": [e["caption"] for e in examples],
        "id": [e["id"] for e in examples],
        "index": torch.tensor([e["index"] for e in examples]),
        "attributes": [e["attributes"] for e in examples],
    }
