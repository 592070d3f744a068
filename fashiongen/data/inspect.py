"""A look at a source: counts, attribute histograms, caption lengths, and a captioned grid of samples."""

from __future__ import annotations

import statistics
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .captions import build_caption
from .records import Record, RecordError, SkipLog, Source, iter_meta
from .transforms import resize_square

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
    columns = min(4, max(1, len(records)))
    rows = max(1, -(-len(records) // columns))
    text_height = 58
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (columns * tile, rows * (tile + text_height)), "white")
    draw = ImageDraw.Draw(canvas)
    for position, record in enumerate(records):
        x, y = (position % columns) * tile, (position // columns) * (tile + text_height)
        canvas.paste(Image.fromarray(resize_square(record.image, tile, "pad")), (x, y))
        caption = build_caption(record.caption, record.attributes, caption_mode, template)
        lines = textwrap.wrap(f"[{record.id}] {caption}", width=tile // 6)[:4]
        for line_number, line in enumerate(lines):
            draw.text((x + 3, y + tile + 2 + 13 * line_number), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return [r.id for r in records]
