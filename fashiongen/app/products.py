"""Real training products searchable by look, for the app's "Nearest products" tab.

Every product photo of a dataset split is embedded once with the critic network's image tower
(fashiongen/evaluation/critic.py) and put in a faiss index (evaluation/neighbours.py). The
embeddings, ids and captions are cached on disk, so a restart reads no photos; a photo is read
back from the source only when it is shown.

    products = ProductIndex.build("../shared/data/fashion-products", cache_dir="~/.cache/fashiongen")
    for match in products.search(generated_image, k=6):
        print(match.similarity, match.caption)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data import RecordError, Source, open_source
from ..data.captions import build_caption
from ..data.transforms import resize_square
from ..evaluation.critic import Critic, embed_images, load_critic
from ..evaluation.neighbours import NeighbourIndex
from ..models.files import BUNDLED_CRITIC
from ..utils import atomic_path, atomic_write_text

logger = logging.getLogger("fashiongen.app")

EMBEDDINGS_FILE = "embeddings.npy"
BASELINE_FILE = "baseline.npy"  # nearest-training similarity of each held-out product, sorted
ROWS_FILE = "rows.json"  # written last: a cache directory with it is complete
CACHE_VERSION = 1
T = TypeVar("T")
# Called after each embedded batch with (photos done, photos in all): the app's Nearest tab shows how far a build is.
Progress = Callable[[int, int], None]
# Runs one batch's torch work and returns its result: the app passes its compute thread's `run` (app/compute.py), so a
# build in the background takes turns with the designers' requests instead of competing with them for the cores.
Runner = Callable[..., Any]


def _direct(function: Callable[..., T], *args: Any) -> T:
    return function(*args)


@dataclass(frozen=True)
class Product:
    """One real product found near a query image."""

    id: str
    caption: str  # the dataset's own caption (e.g. the product name)
    attributes: dict[str, Any]
    similarity: float  # cosine of critic image embeddings, in [-1, 1]
    image: np.ndarray  # uint8 [H, W, 3] as stored in the source

    @property
    def label(self) -> str:
        details = ", ".join(str(self.attributes[name]) for name in ("category", "colour", "gender", "season")
                            if self.attributes.get(name))
        return f"{self.caption}" + (f" ({details})" if details else "") + f" — similarity {self.similarity:.2f}"


def _cache_key(source: Path, split: str, val_fraction: float, limit: int | None, critic_sha: str) -> str:
    text = f"v{CACHE_VERSION}|{source.resolve()}|{split}|{val_fraction}|{limit}|{critic_sha}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


class ProductIndex:
    """Products of one dataset split, their critic embeddings in a faiss index, and their captions."""

    def __init__(self, critic: Critic, index: NeighbourIndex, source: Source, positions: Sequence[int],
                 rows: Sequence[dict[str, Any]], caption_mode: str = "raw", caption_template: str = "",
                 baseline: np.ndarray | None = None) -> None:
        if not (len(index) == len(positions) == len(rows)):
            raise ValueError(f"index ({len(index)}), positions ({len(positions)}) and rows ({len(rows)}) differ in length")
        self.critic = critic
        self.index = index
        self.source = source
        self.positions = list(positions)  # row i of the index is record positions[i] of the source
        self.rows = list(rows)  # {"id", "caption", "attributes"} per indexed product
        self.caption_mode = caption_mode
        self.caption_template = caption_template
        self.baseline = None if baseline is None or len(baseline) == 0 else np.sort(np.asarray(baseline, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(cls, source: str | Path, *, critic: str | Path = BUNDLED_CRITIC, split: str = "train", val_fraction: float = 0.05,
              limit: int | None = None, cache_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 256,
              caption_mode: str = "raw", caption_template: str = "", baseline_split: str | None = "validation",
              baseline_limit: int = 1000, show_progress: bool = True, progress: Progress | None = None,
              run: Runner = _direct) -> ProductIndex:
        """Embed every readable photo of `source`'s `split` (or the first `limit`); reuse `cache_dir`'s copy when it was
        made from the same source, split and critic weights.

        With `baseline_split`, up to `baseline_limit` held-out products are embedded too: how close real products the
        model never saw are to their nearest training product is the yardstick `novelty` judges a design by.
        `progress` hears of every embedded batch; `run` runs each batch's torch work (default: here, at once)."""
        source = Path(source).expanduser()
        opened = open_source(source, split=split, val_fraction=val_fraction)
        network, info = load_critic(critic, device=device)
        cache = None
        if cache_dir is not None:
            key = _cache_key(source, split, val_fraction, limit, info["weights"]["sha256"])
            cache = Path(cache_dir).expanduser() / f"products-{key}"
        loaded = cls._read_cache(cache) if cache is not None else None
        if loaded is not None:
            embeddings, positions, rows, baseline = loaded
            logger.info("product index: %d products of %s (%s) from the cache %s", len(rows), source, split, cache)
        else:
            embeddings, positions, rows = cls._embed(network, opened, limit, batch_size, show_progress, f"{source}",
                                                     progress, run)
            baseline = None
        ids = [row["id"] for row in rows]
        index = (NeighbourIndex.cached(cache / "index", embeddings, ids) if cache is not None
                 else NeighbourIndex.build(embeddings, ids))
        if loaded is None:
            if baseline_split is not None and baseline_split != split:
                held_out = open_source(source, split=baseline_split, val_fraction=val_fraction)
                if len(held_out):
                    found, _, _ = cls._embed(network, held_out, baseline_limit, batch_size, show_progress,
                                             f"{source} ({baseline_split})", None, run)
                    baseline = index.search(found, k=1)[0][:, 0]
            if cache is not None:
                cls._write_cache(cache, embeddings, positions, rows, baseline)
        return cls(network, index, opened, positions, rows, caption_mode, caption_template or opened.caption_template, baseline)

    @staticmethod
    def _embed(critic: Critic, opened: Source, limit: int | None, batch_size: int, show_progress: bool, name: str,
               progress: Progress | None = None, run: Runner = _direct) -> tuple[np.ndarray, list[int], list[dict[str, Any]]]:
        count = len(opened) if limit is None else min(limit, len(opened))
        if count == 0:
            raise ValueError(f"{name}: no products in this split to search")
        chunks: list[torch.Tensor] = []
        positions: list[int] = []
        rows: list[dict[str, Any]] = []
        pending: list[np.ndarray] = []
        skipped = 0
        for position in tqdm(range(count), desc="embedding products", unit="img", disable=not show_progress):
            try:
                record = opened[position]
            except RecordError as error:
                skipped += 1
                logger.warning("product index: skipping %s", error)
                continue
            pending.append(resize_square(record.image, critic.resolution, critic.resize_mode, critic.pad_value))
            positions.append(position)
            rows.append({"id": record.id, "caption": record.caption,
                         "attributes": {k: v for k, v in record.attributes.items() if isinstance(v, (str, int, float))}})
            if len(pending) == batch_size:
                chunks.append(run(embed_images, critic, pending, batch_size))
                pending = []
                if progress is not None:
                    progress(position + 1, count)
        if pending:
            chunks.append(run(embed_images, critic, pending, batch_size))
        if progress is not None:
            progress(count, count)
        if not rows:
            raise ValueError(f"{name}: none of its {count} photos could be read ({skipped} defective)")
        return torch.cat(chunks).numpy().astype(np.float32), positions, rows

    @staticmethod
    def _read_cache(directory: Path) -> tuple[np.ndarray, list[int], list[dict[str, Any]], np.ndarray | None] | None:
        if not (directory / ROWS_FILE).is_file():
            return None
        try:
            saved = json.loads((directory / ROWS_FILE).read_text(encoding="utf-8"))
            embeddings = np.load(directory / EMBEDDINGS_FILE)
            if saved.get("version") != CACHE_VERSION:
                raise ValueError(f"cache version {saved.get('version')}, expected {CACHE_VERSION}")
            if not len(saved["rows"]) == len(embeddings) == len(saved["positions"]):
                raise ValueError("row count differs from the embeddings")
            baseline = np.load(directory / BASELINE_FILE) if saved.get("baseline") else None
        except (OSError, ValueError, KeyError) as error:
            logger.warning("product cache %s is unreadable (%s); embedding the photos again", directory, error)
            return None
        return embeddings.astype(np.float32), [int(p) for p in saved["positions"]], saved["rows"], baseline

    @staticmethod
    def _write_cache(directory: Path, embeddings: np.ndarray, positions: list[int], rows: list[dict[str, Any]],
                     baseline: np.ndarray | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ROWS_FILE).unlink(missing_ok=True)  # never let an old rows file vouch for new embeddings
        arrays = {EMBEDDINGS_FILE: embeddings, **({BASELINE_FILE: baseline} if baseline is not None else {})}
        for name, array in arrays.items():
            with atomic_path(directory / name) as temporary:
                with open(temporary, "wb") as handle:
                    np.save(handle, array)
        atomic_write_text(directory / ROWS_FILE, json.dumps({"version": CACHE_VERSION, "positions": positions, "rows": rows,
                                                            "baseline": baseline is not None}) + "\n")

    # ------------------------------------------------------------------ queries

    def search(self, image: np.ndarray | Image.Image, k: int = 6) -> list[Product]:
        """The `k` products whose photos the critic finds most alike to `image` (any size, RGB), closest first."""
        array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {array.dtype} {array.shape}")
        query = embed_images(self.critic, [array]).numpy().astype(np.float32)  # [1, E]
        similarities, indices = self.index.search(query, k=min(k, len(self)))
        found = []
        for similarity, row in zip(similarities[0].tolist(), indices[0].tolist()):
            if row < 0:
                continue
            record = self.source[self.positions[row]]
            found.append(Product(self.rows[row]["id"], self.rows[row]["caption"], self.rows[row]["attributes"],
                                 float(similarity), record.image))
        return found

    def novelty(self, similarity: float) -> str:
        """How a design's closest-product similarity compares with real unseen products' (the held-out baseline)."""
        if self.baseline is None:
            return "(No held-out products to compare with.)"
        closer = float((self.baseline >= similarity).mean())  # share of real unseen products at least this close
        median = float(np.median(self.baseline))
        if closer < 0.05:
            return (f"Closer to a training product than {100 * (1 - closer):.0f}% of real unseen products are to theirs "
                    f"(median {median:.2f}): it may copy that product.")
        return (f"{100 * closer:.0f}% of real unseen products are at least this close to a training product (median {median:.2f}): "
                "no closer than real new products usually are.")

    def examples(self, count: int = 8, seed: int = 0) -> list[dict[str, Any]]:
        """`count` example captions (as the model saw them in training) from as many different categories as possible,
        each with its attributes: {"caption", "attributes"}."""
        by_category: dict[str, list[int]] = {}
        for row, item in enumerate(self.rows):
            by_category.setdefault(str(item["attributes"].get("category", "")), []).append(row)
        chooser = random.Random(seed)
        categories = sorted(by_category)
        chooser.shuffle(categories)
        picked = [chooser.choice(by_category[name]) for name in categories[:count]]
        while len(picked) < min(count, len(self.rows)):
            row = chooser.randrange(len(self.rows))
            if row not in picked:
                picked.append(row)
        return [{"caption": build_caption(self.rows[row]["caption"], self.rows[row]["attributes"], self.caption_mode,
                                          self.caption_template),
                 "attributes": self.rows[row]["attributes"]} for row in picked]


__all__ = ["Product", "ProductIndex"]
