"""Scores with our evaluation code: at `init`, the hidden photos' statistics (Inception features of each half, the
critic's scores of the photos themselves, and FID's real-vs-real floor at the submissions' image counts) are computed
once and stored in the database; a worker then scores a submission's public and private halves against them.

    write_reference(challenge, "../shared/data/fashion-products", "validation", limit=None)   # at init
    scorer = Scorer(challenge)                                                                # per worker
    scores = scorer.score(folder)      # {"public": (leaderboard value, metrics), "private": (...)}

Every score is shown beside the real photos' score on the same captions, and FID beside its floor: FID of as many
real photos from the source's train split as a half has generated images, against the same hidden photos.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data import iter_records, open_source
from ..data.records import DataError, RecordError
from ..data.transforms import resize_square
from ..evaluation.critic_scores import embed_images
from ..evaluation.fid import FeatureStats, fid_and_kid
from ..evaluation.images import ImageSet, read_image_folder
from ..evaluation.inception import extract_features, load_inception
from ..evaluation.suite import critic_and_encoder, text_scores
from ..models.files import BUNDLED_CRITIC
from ..submission import CaptionItem
from .config import ChallengeConfig
from .layout import ScoringError
from .store import HALVES, Challenge

logger = logging.getLogger(__name__)


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _stats(data: bytes) -> FeatureStats:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return FeatureStats.from_features(arrays["features"])


def split_halves(ids: list[str], seed: int, public_fraction: float) -> dict[str, str]:
    """caption id -> 'public' | 'private': a fixed-seed permutation, the first public_fraction public."""
    order = np.random.default_rng(seed).permutation(len(ids))
    cut = max(1, min(len(ids) - 1, round(len(ids) * public_fraction)))
    return {ids[index]: ("public" if rank < cut else "private") for rank, index in enumerate(order)}


def read_photos(source: str, split: str, resolution: int, limit: int | None) -> tuple[list[CaptionItem], list[np.ndarray]]:
    """Captions and photos (square, at `resolution`) of a dataset source's split; defective rows are skipped."""
    try:
        opened = open_source(source, split=split)
    except (DataError, OSError) as error:
        raise ScoringError(f"cannot read {source} (split {split}): {error}") from None
    captions, photos, seen = [], [], set()
    for record in iter_records(opened):
        if str(record.id) in seen:
            continue
        seen.add(str(record.id))
        captions.append(CaptionItem(str(record.id), " ".join(record.caption.split()), dict(record.attributes)))
        photos.append(resize_square(record.image, resolution))
        if limit is not None and len(captions) >= limit:
            break
    if len(captions) < 4:
        raise ScoringError(f"{source} (split {split}) has {len(captions)} readable captions with photos; a challenge needs at least 4")
    return captions, photos


def _real_floor(source: str, train_split: str, resolution: int, count: int, reference: FeatureStats, inception: Any,
                config: ChallengeConfig, show_progress: bool) -> dict[str, Any]:
    """FID/KID of `count` real photos of the train split (a seeded draw, like evaluate.py's floor) against a half's
    hidden photos: what a generator indistinguishable from the data would score at this count."""
    try:
        opened = open_source(source, split=train_split)
    except (DataError, OSError) as error:
        return {"note": f"no real-vs-real floor: cannot read {source} (split {train_split}): {error}"}
    order = np.random.default_rng(config.split_seed).permutation(len(opened))
    photos = []
    for index in order:
        try:
            photos.append(resize_square(opened[int(index)].image, resolution))
        except RecordError:
            continue
        if len(photos) >= count:
            break
    if len(photos) < 2:
        return {"note": f"no real-vs-real floor: {source} (split {train_split}) has {len(photos)} readable photos"}
    stats = FeatureStats.from_features(extract_features(photos, inception=inception, show_progress=show_progress))
    floor = fid_and_kid(reference, stats, subset_size=config.kid_subset_size)
    return {"fid": floor["fid"], "kid": 1000 * floor["kid_mean"], "count": stats.count, "split": train_split}


def write_reference(challenge: Challenge, source: str, split: str, limit: int | None = None, train_split: str = "train",
                    device: str = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Read the captions and hidden photos, split them into halves and store each half's statistics; returns counts."""
    config = challenge.config
    captions, photos = read_photos(source, split, config.resolution, limit)
    halves = split_halves([c.id for c in captions], config.split_seed, config.public_fraction)
    inception, critic, encoder, info = load_networks(config.critic, device)
    stored: dict[str, dict[str, Any]] = {}
    rows: dict[str, bytes] = {}
    for half in HALVES:
        picked = [i for i, c in enumerate(captions) if halves[c.id] == half]
        half_photos = [photos[i] for i in picked]
        features = extract_features(half_photos, inception=inception, show_progress=show_progress)
        reference = FeatureStats.from_features(features)
        real = ImageSet(half_photos, [captions[i].caption for i in picked], [captions[i].attributes for i in picked],
                        [captions[i].id for i in picked], source)
        scores = text_scores(critic, encoder, real, embed_images(critic, half_photos))
        scores.pop("per_item", None)
        floor = _real_floor(source, train_split, config.resolution, len(picked) * config.per_caption, reference, inception,
                            config, show_progress)
        stored[half] = {"captions": len(picked), "scores": scores, "floor": floor}
        rows[f"{half}/inception"] = _npz(features=features.astype(np.float32))
        rows[f"{half}/real"] = json.dumps(stored[half], default=float).encode("utf-8")
    with challenge.db.transaction() as tx:
        for position, caption in enumerate(captions):
            tx.execute("INSERT INTO captions (id, caption, attributes, half, position) VALUES (?, ?, ?, ?, ?)",
                       (caption.id, caption.caption, json.dumps(caption.attributes), halves[caption.id], position))
        for key, data in rows.items():
            half, name = key.split("/")
            tx.execute("INSERT INTO reference (half, name, data) VALUES (?, ?, ?)", (half, name, data))
        challenge.write_config(replace(config, critic_sha256=info["weights"]["sha256"]), tx)
        challenge.audit(tx, "organiser", "reference.stored", source=source, split=split, captions=len(captions),
                        critic=info["weights"]["sha256"])
    return {half: {"captions": stored[half]["captions"], "floor": stored[half]["floor"]} for half in HALVES}


def _subset(images: ImageSet, keep: list[int]) -> ImageSet:
    return ImageSet([images.images[i] for i in keep], [images.captions[i] for i in keep] if images.captions else None,
                    [images.attributes[i] for i in keep], [images.ids[i] for i in keep], images.source, images.info)


@functools.lru_cache(maxsize=2)
def load_networks(critic: str, device: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(Inception, critic, its text encoder, the critic's info), loaded once per process: a worker scores many jobs.
    `critic` "" is the bundled one."""
    return (load_inception(device), *critic_and_encoder(critic or str(BUNDLED_CRITIC), device))


class Scorer:
    """A worker's networks (Inception, the challenge's critic and its text encoder) and the stored statistics, loaded once."""

    def __init__(self, challenge: Challenge, device: str = "cpu") -> None:
        self.challenge, self.config, self.device = challenge, challenge.config, device
        self.captions = challenge.captions()
        self.inception, self.critic, self.encoder, info = load_networks(self.config.critic, device)
        if self.config.critic_sha256 and info["weights"]["sha256"] != self.config.critic_sha256:
            raise ScoringError(f"critic {self.config.critic or 'bundled'} is not the one this challenge was set up with "
                               f"(sha256 {self.config.critic_sha256[:12]}...)")
        self.reference = {half: _stats(challenge.reference(half, "inception")) for half in HALVES}
        self.real = {half: json.loads(challenge.reference(half, "real")) for half in HALVES}

    def score(self, folder: Path) -> dict[str, tuple[float | None, dict[str, Any]]]:
        """{half: (leaderboard value, every metric beside the real photos')} of a checked submission folder."""
        attributes = {c.id: c.attributes for c in self.captions}
        halves = {c.id: c.half for c in self.captions}
        images = read_image_folder(folder, caption_attributes=attributes)
        if images.resolution != self.config.resolution:
            raise ScoringError(f"images are {images.resolution} px, the challenge scores {self.config.resolution} px")
        results = {}
        for half in HALVES:
            keep = [i for i, caption_id in enumerate(images.ids) if halves.get(caption_id) == half]
            if len(keep) < 2:
                raise ScoringError(f"the {half} half has {len(keep)} image(s); scoring needs at least 2")
            results[half] = self._score_half(_subset(images, keep), half)
        return results

    def _score_half(self, images: ImageSet, half: str) -> tuple[float | None, dict[str, Any]]:
        features = extract_features(images.images, device=self.device, inception=self.inception, show_progress=False)
        quality = fid_and_kid(self.reference[half], FeatureStats.from_features(features), subset_size=self.config.kid_subset_size)
        scores = text_scores(self.critic, self.encoder, images, embed_images(self.critic, images.images))
        real = self.real[half]
        metrics: dict[str, Any] = {
            "images": len(images), "captions": real["captions"],
            "fid": quality["fid"], "fid_floor": real["floor"].get("fid"),
            "kid": 1000 * quality["kid_mean"], "kid_std": 1000 * quality["kid_std"], "kid_floor": real["floor"].get("kid"),
            "fid_floor_count": real["floor"].get("count"),
            "critic_score": scores["critic_score"]["mean"], "critic_score_real": real["scores"]["critic_score"]["mean"],
            "r_precision": scores["r_precision"]["mean"], "r_precision_real": real["scores"]["r_precision"]["mean"],
            "attribute_accuracy": {name: entry["accuracy"] for name, entry in scores["attribute_accuracy"].items()},
            "attribute_accuracy_real": {name: entry["accuracy"] for name, entry in real["scores"]["attribute_accuracy"].items()},
        }
        value = metrics[self.config.metric]
        return (None if value is None or not np.isfinite(value) else float(value)), metrics
