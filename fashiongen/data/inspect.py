"""A look at a source: counts, attribute histograms, caption lengths, and a captioned grid of samples."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..grid import captioned_grid, save_image
from .captions import build_caption
from .records import Record, RecordError, SkipLog, Source, iter_meta

TOP_VALUES = 15  # values listed per attribute; the rest are counted as 'other'


def _length_stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0], "mean": round(statistics.fmean(ordered), 2), "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1],
    }


def inspect_source(source: Source, split: str = "all", caption_mode: str = "both", caption_template: str = "",
                   progress: bool = True) -> dict[str, Any]:
    """Statistics over every row's metadata (no pixels are decoded)."""
    template = caption_template or source.caption_template
    histograms: dict[str, Counter] = {}
    raw_words, raw_chars, model_words = [], [], []
    skipped = SkipLog()
    count = 0
    for item in tqdm(iter_meta(source), total=len(source), desc="inspect", unit="rec", disable=not progress):
        if isinstance(item, RecordError):
            skipped.add(item)
            continue
        count += 1
        raw_words.append(len(item.caption.split()))
        raw_chars.append(len(item.caption))
        model_words.append(len(build_caption(item.caption, item.attributes, caption_mode, template).split()))
        for name, value in item.attributes.items():
            histograms.setdefault(name, Counter())[str(value)] += 1
    attributes = {}
    for name, counter in sorted(histograms.items()):
        top = dict(counter.most_common(TOP_VALUES))
        other = sum(counter.values()) - sum(top.values())
        attributes[name] = {"distinct": len(counter), "present": sum(counter.values()), "top": top,
                            **({"other": other} if other else {})}
    skipped_all = len(source.skipped) + len(skipped)
    return {
        "format": source.format,
        "path": str(source.path),
        "split": split,
        "num_records": count,
        "moved_to_train": getattr(source, "moved_to_train", 0),  # pixel copies of training photos (sources.split_keys)
        "num_skipped": skipped_all,
        "skipped_by_reason": {**source.skipped.by_reason(), **skipped.by_reason()},
        "caption_template": template,
        "caption_words": _length_stats(raw_words),
        "caption_chars": _length_stats(raw_chars),
        "model_caption_words": _length_stats(model_words),
        "attributes": attributes,
    }


def sample_grid(source: Source, path: Path, num_samples: int = 16, tile: int = 160, seed: int = 0,
                caption_mode: str = "both", caption_template: str = "") -> list[str]:
    """Save a grid of `num_samples` records (chosen with `seed`) with wrapped captions; return their ids."""
    template = caption_template or source.caption_template
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(source))
    records: list[Record] = []
    for index in order:
        if len(records) == num_samples:
            break
        try:
            records.append(source[int(index)])
        except RecordError:
            continue
    captions = [f"[{r.id}] {build_caption(r.caption, r.attributes, caption_mode, template)}" for r in records]
    save_image(captioned_grid([r.image for r in records], captions, columns=4, tile=tile), path)
    return [r.id for r in records]
