"""Memorisation checks: how close each generated garment is to its nearest training product.

Two views of "close": cosine similarity of embeddings (an approximate faiss index that is cached on
disk, so evaluating twice reuses it) and exact mean absolute pixel difference at low resolution.
Generated images are judged against a baseline, real validation images' distances to the training
set: a generated image closer to its training neighbour than almost any real unseen image is to
its own is a likely copy.

    index = NeighbourIndex.cached("runs/007/neighbours", train_embeddings, train_ids)
    similarities, indices = index.search(generated_embeddings, k=1)
    stats = memorisation_stats(similarities[:, 0], baseline_similarities[:, 0], higher_is_closer=True)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.transforms import resize_square
from ..grid import captioned_grid
from ..extras import require
from ..utils import atomic_path, atomic_write_text

faiss = require("faiss", "eval", "the nearest-neighbour index (faiss)")  # also in the 'app' extra

logger = logging.getLogger("fashiongen.evaluation")

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.json"
FINGERPRINT_FILE = "fingerprint.json"  # written last: a directory with it holds a complete index
HNSW_THRESHOLD = 5_000  # above this many items an HNSW graph, at or below it exact search
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def _as_embeddings(array: np.ndarray, name: str) -> np.ndarray:
    """Check a float32 [N, D] array of finite, non-zero vectors; return it C-contiguous."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return np.ascontiguousarray(array)


def _normalise(array: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)  # [N, 1]
    if (norms == 0).any():
        raise ValueError(f"{name} has {int((norms == 0).sum())} all-zero vectors (no direction to compare)")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def fingerprint(embeddings: np.ndarray, ids: Sequence[str], kind: str, hnsw_m: int, ef_construction: int) -> dict[str, Any]:
    """What an index was built from; a saved index is reused only when this matches exactly."""
    embeddings = _as_embeddings(embeddings, "embeddings")
    ids_bytes = json.dumps([str(i) for i in ids]).encode("utf-8")
    settings = {"hnsw_m": hnsw_m, "ef_construction": ef_construction} if kind == "hnsw" else {}
    return {"count": int(embeddings.shape[0]), "dim": int(embeddings.shape[1]), "kind": kind,
            "sha256": hashlib.sha256(embeddings.tobytes()).hexdigest(),
            "ids_sha256": hashlib.sha256(ids_bytes).hexdigest(), **settings}


def index_kind(count: int, hnsw_threshold: int = HNSW_THRESHOLD) -> str:
    return "hnsw" if count > hnsw_threshold else "flat"


class NeighbourIndex:
    """Nearest training items by cosine similarity (inner product of L2-normalised embeddings).

    Exact `IndexFlatIP` for small sets, `IndexHNSWFlat` (M=32) above `hnsw_threshold` items.
    Embeddings and queries are normalised here, so callers pass raw features.
    """

    def __init__(self, index: faiss.Index, ids: Sequence[str], fingerprint: dict[str, Any], ef_search: int = 128):
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index = index
        self.ids = [str(i) for i in ids]
        self.fingerprint = fingerprint
        self.ef_search = ef_search

    @property
    def kind(self) -> str:
        return self.fingerprint["kind"]

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"NeighbourIndex(kind={self.kind!r}, count={len(self)}, dim={self.dim})"

    @classmethod
    def build(cls, embeddings: np.ndarray, ids: Sequence[str], hnsw_threshold: int = HNSW_THRESHOLD, hnsw_m: int = 32,
              ef_construction: int = 80, ef_search: int = 128) -> NeighbourIndex:
        """embeddings float32 [N, D], ids one per row (e.g. product ids)."""
        embeddings = _as_embeddings(embeddings, "embeddings")
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(ids)} ids")
        vectors = _normalise(embeddings, "embeddings")  # [N, D]
        kind = index_kind(len(vectors), hnsw_threshold)
        dim = vectors.shape[1]
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        else:
            index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return cls(index, ids, fingerprint(embeddings, ids, kind, hnsw_m, ef_construction), ef_search)

    def search(self, queries: np.ndarray, k: int = 1, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 [Q, D] -> (cosine similarities float32 [Q, k], row indices int64 [Q, k]), closest first.

        An HNSW search may miss the true neighbour (approximate); index -1 marks a slot it could not fill.
        """
        queries = _as_embeddings(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]} but the index has {self.dim}")
        if not 1 <= k <= len(self):
            raise ValueError(f"k={k} must be between 1 and the index size {len(self)}")
        vectors = _normalise(queries, "queries")
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(k, ef_search or self.ef_search))
            similarities, indices = self.index.search(vectors, k, params=params)
        else:
            similarities, indices = self.index.search(vectors, k)
        return similarities, indices

    def ids_of(self, indices: np.ndarray) -> list[list[str | None]]:
        """Row indices [Q, k] from `search` -> ids, None where the search returned -1."""
        return [[self.ids[i] if i >= 0 else None for i in row] for row in np.asarray(indices).reshape(len(indices), -1).tolist()]

    def save(self, directory: str | Path) -> Path:
        """index.faiss, ids.json, then fingerprint.json, each replaced atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / FINGERPRINT_FILE).unlink(missing_ok=True)  # an old fingerprint must never vouch for a half-new index
        with atomic_path(directory / INDEX_FILE) as temporary:
            faiss.write_index(self.index, str(temporary))
        atomic_write_text(directory / IDS_FILE, json.dumps(self.ids) + "\n")
        atomic_write_text(directory / FINGERPRINT_FILE, json.dumps({**self.fingerprint, "ef_search": self.ef_search}, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> NeighbourIndex:
        directory = Path(directory)
        if not (directory / FINGERPRINT_FILE).is_file():
            raise FileNotFoundError(f"{directory}: no saved neighbour index ({FINGERPRINT_FILE} missing)")
        saved = json.loads((directory / FINGERPRINT_FILE).read_text(encoding="utf-8"))
        ef_search = saved.pop("ef_search", 128)
        ids = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
        index = faiss.read_index(str(directory / INDEX_FILE))
        if index.ntotal != saved["count"] or index.d != saved["dim"] or len(ids) != saved["count"]:
            raise ValueError(f"{directory}: index ({index.ntotal} x {index.d}, {len(ids)} ids) does not match its "
                             f"fingerprint ({saved['count']} x {saved['dim']})")
        return cls(index, ids, saved, ef_search)

    @classmethod
    def cached(cls, directory: str | Path, embeddings: np.ndarray, ids: Sequence[str], hnsw_threshold: int = HNSW_THRESHOLD,
               hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128) -> NeighbourIndex:
        """Load the index saved in `directory` if it was built from exactly these embeddings and ids; else build and save."""
        embeddings = _as_embeddings(embeddings, "embeddings")
        if len(ids) != embeddings.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(ids)} ids")
        wanted = fingerprint(embeddings, ids, index_kind(len(embeddings), hnsw_threshold), hnsw_m, ef_construction)
        directory = Path(directory)
        if (directory / FINGERPRINT_FILE).is_file():
            try:
                saved = cls.load(directory)
            except (OSError, ValueError, KeyError, RuntimeError) as error:  # faiss raises RuntimeError on a bad file
                logger.warning("neighbour index in %s is unreadable (%s); rebuilding", directory, error)
            else:
                if saved.fingerprint == wanted:
                    saved.ef_search = ef_search
                    logger.info("reusing neighbour index in %s (%d items)", directory, len(saved))
                    return saved
                logger.info("neighbour index in %s was built from other embeddings; rebuilding", directory)
        index = cls.build(embeddings, ids, hnsw_threshold, hnsw_m, ef_construction, ef_search)
        index.save(directory)
        return index


def downsample(images: np.ndarray | Sequence[np.ndarray], size: int = 32, mode: str = "center-crop") -> np.ndarray:
    """uint8 images [N, H, W, 3] (or a list of any sizes) -> uint8 [N, size, size, 3], antialiased, for pixel comparisons."""
    if len(images) == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack([resize_square(np.asarray(image), size, mode) for image in images])


def _as_pixels(array: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {array.dtype}")
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{name} must be [N, H, W, 3], got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return array


def pixel_neighbours(queries: np.ndarray, references: np.ndarray, k: int = 1, chunk: int = 1024,
                     device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest references by mean absolute pixel difference (0-255 scale).

    queries uint8 [Q, h, w, 3], references uint8 [M, h, w, 3] (downsample both first, e.g. to 32 px)
    -> (distances float32 [Q, k], indices int64 [Q, k]), closest first. Works through
    `chunk` x `chunk` blocks, so memory stays bounded however many references there are.
    """
    queries, references = _as_pixels(queries, "queries"), _as_pixels(references, "references")
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"queries {queries.shape[1:]} and references {references.shape[1:]} differ in size; downsample both")
    if not 1 <= k <= len(references):
        raise ValueError(f"k={k} must be between 1 and the number of references {len(references)}")
    pixels = int(np.prod(queries.shape[1:]))
    flat_queries = torch.from_numpy(queries.reshape(len(queries), pixels))  # [Q, P] uint8
    flat_references = torch.from_numpy(references.reshape(len(references), pixels))  # [M, P] uint8
    all_distances, all_indices = [], []
    for q_start in range(0, len(queries), chunk):
        block = flat_queries[q_start : q_start + chunk].to(device, torch.float32)  # [q, P]
        best = torch.full((len(block), 0), float("inf"), device=device)  # [q, <=k]
        best_indices = torch.zeros((len(block), 0), dtype=torch.int64, device=device)
        for r_start in range(0, len(references), chunk):
            refs = flat_references[r_start : r_start + chunk].to(device, torch.float32)  # [r, P]
            # sums of integers below 2**24 are exact in float32, so distances match a brute force exactly
            distances = torch.cdist(block, refs, p=1)  # [q, r]
            candidates = torch.cat([best, distances], dim=1)
            chunk_indices = torch.arange(r_start, r_start + len(refs), device=device).expand(len(block), -1)  # [q, r]
            candidate_indices = torch.cat([best_indices, chunk_indices], dim=1)
            best, order = torch.topk(candidates, min(k, candidates.shape[1]), dim=1, largest=False, sorted=True)
            best_indices = torch.gather(candidate_indices, 1, order)
        all_distances.append(best.div_(pixels).cpu())
        all_indices.append(best_indices.cpu())
    return torch.cat(all_distances).numpy(), torch.cat(all_indices).numpy()


def _nearest_column(values: np.ndarray, name: str) -> np.ndarray:
    """[N] or [N, k] (closest first) -> float64 [N] of the nearest neighbour's score."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, 0]
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty [N] or [N, k] array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return values


def baseline_threshold(baseline: np.ndarray, higher_is_closer: bool) -> float:
    """The score only the closest 1% of real baseline images reach: the 1st percentile of distances,
    the 99th of similarities."""
    return float(np.percentile(_nearest_column(baseline, "baseline"), 99 if higher_is_closer else 1))


def memorisation_stats(generated_distances: np.ndarray, baseline_distances: np.ndarray, higher_is_closer: bool) -> dict[str, Any]:
    """Compare generated images' nearest-training scores with real validation images' (the baseline).

    Scores are distances (`higher_is_closer=False`, e.g. pixel L1) or similarities (True, e.g. cosine);
    [N, k] arrays use their first (nearest) column. `fraction_closer_than_baseline_p1` is the share of
    generated images at least as close to the training set as the closest 1% of real unseen images (ties
    count: a split with exact cross-split duplicates has a threshold of distance 0); well above
    0.01 suggests copying.
    """
    generated = _nearest_column(generated_distances, "generated_distances")
    baseline = _nearest_column(baseline_distances, "baseline_distances")
    threshold = baseline_threshold(baseline, higher_is_closer)
    closer = (generated >= threshold) if higher_is_closer else (generated <= threshold)  # as close as the closest 1% or closer
    baseline_closer = (baseline >= threshold) if higher_is_closer else (baseline <= threshold)

    def summary(values: np.ndarray) -> dict[str, float]:
        points = np.percentile(values, PERCENTILES)
        return {"count": int(values.size), "mean": float(values.mean()),
                **{f"p{p}": float(v) for p, v in zip(PERCENTILES, points)}}

    return {
        "higher_is_closer": bool(higher_is_closer),
        "generated": summary(generated),
        "baseline": summary(baseline),
        "baseline_p1_threshold": threshold,  # closest-1% cut-off: p1 of distances, p99 of similarities
        "generated_closer_count": int(closer.sum()),
        "fraction_closer_than_baseline_p1": float(closer.mean()),
        "baseline_closer_count": int(baseline_closer.sum()),
        "baseline_fraction_closer": float(baseline_closer.mean()),
    }


def closest_pairs_grid(generated: Sequence[np.ndarray], neighbours: Sequence[np.ndarray], scores: Sequence[float],
                       labels: Sequence[tuple[str, str]], num_pairs: int = 8, higher_is_closer: bool = True,
                       metric: str = "cos", pairs_per_row: int = 2, tile: int = 128) -> Image.Image:
    """The `num_pairs` generated images closest to the training set, each followed by its nearest training image.

    generated[i], neighbours[i] uint8 [H, W, 3]; scores[i] its nearest-neighbour score; labels[i] =
    (generated name, training id), captioned as "generated 12 / train 1234: cos 0.930".
    """
    if not len(generated) == len(neighbours) == len(scores) == len(labels):
        raise ValueError(f"{len(generated)} generated images, {len(neighbours)} neighbours, {len(scores)} scores and "
                         f"{len(labels)} labels; need one of each per pair")
    if len(generated) == 0:
        raise ValueError("no pairs to show")
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    order = order[::-1] if higher_is_closer else order
    images, captions = [], []
    for position in order[:num_pairs]:
        generated_name, train_id = labels[position]
        images += [generated[position], neighbours[position]]
        captions += [f"generated {generated_name} / train {train_id}: {metric} {scores[position]:.3f}",
                     f"nearest: train {train_id}"]
    return captioned_grid(images, captions, columns=2 * pairs_per_row, tile=tile, caption_lines=3)


def distance_histogram(generated: np.ndarray, baseline: np.ndarray, path: str | Path, xlabel: str,
                       higher_is_closer: bool = False, bins: int = 50, title: str = "") -> Path:
    """Histogram of generated and baseline nearest-training scores with the closest-1% baseline line; PNG, atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    stats = memorisation_stats(generated, baseline, higher_is_closer)
    generated_values, baseline_values = _nearest_column(generated, "generated"), _nearest_column(baseline, "baseline")
    low = min(generated_values.min(), baseline_values.min())
    high = max(generated_values.max(), baseline_values.max())
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    axis.hist(baseline_values, bins=edges, density=True, alpha=0.5, color="tab:blue", label=f"real validation -> train (n={baseline_values.size})")
    axis.hist(generated_values, bins=edges, density=True, alpha=0.5, color="tab:orange", label=f"generated -> train (n={generated_values.size})")
    axis.axvline(stats["baseline_p1_threshold"], color="black", linestyle="--", linewidth=1,
                 label=f"closest 1% of real ({stats['fraction_closer_than_baseline_p1']:.1%} of generated beyond)")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("density")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return path
