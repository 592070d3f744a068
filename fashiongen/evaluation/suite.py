"""Score a set of generated images the way the report shows them: FID/KID against real validation
images, the critic's scores for generated and real images side by side, and nearest training
neighbours (critic space and pixels) against the real-validation-to-train baseline.

    setup = EvaluationSetup(reference="../shared/data/fashion-products", critic="fashiongen/pretrained/critic")
    report = evaluate_set(read_image_folder("submission/"), setup, out_dir="report/")
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TextConfig
from ..grid import captioned_grid, save_image
from ..models.files import BUNDLED_CRITIC
from ..text import CaptionEncoder
from .critic import load_critic
from .critic_scores import (
    attribute_accuracy,
    check_encoder,
    critic_inception_score,
    critic_score,
    embed_captions,
    embed_images,
    predict_attributes,
    r_precision,
)
from .fid import MIN_FID_IMAGES, FeatureStats, fid_and_kid, reference_stats
from .images import EvaluationInputError, ImageSet, read_dataset_images
from .inception import extract_features, load_inception
from .neighbours import (
    NeighbourIndex,
    closest_pairs_grid,
    distance_histogram,
    downsample,
    memorisation_stats,
    pixel_neighbours,
)
from .report import category_bars, write_report

logger = logging.getLogger(__name__)


@dataclass
class EvaluationSetup:
    """What a generated set is judged against."""

    reference: str  # dataset source: its validation split is the real side, its train split the memorisation base
    critic: str | None = str(BUNDLED_CRITIC)  # a saved critic; None or "" skips the critic scores
    reference_split: str = "validation"
    train_split: str = "train"
    num_real: int | None = None  # real validation images (None: all)
    val_fraction: float = 0.05  # for sources without their own split (as in data.val_fraction)
    kid_subset_size: int = 1000
    memorisation: bool = True
    pixel_size: int = 32  # memorisation in pixel space compares images at this size (L1)
    device: str = "cpu"
    cache_dir: str = ".cache/fashiongen/eval"
    show_progress: bool = True


def critic_and_encoder(path: str, device: str) -> tuple[Any, CaptionEncoder, dict[str, Any]]:
    critic, info = load_critic(path, device)
    text = info["text"]
    encoder = CaptionEncoder(TextConfig(encoder=text["encoder"], max_length=text["max_length"],
                                        normalize_pooled=text["normalize_pooled"], dtype=text.get("dtype", "float32"),
                                        device=device, cache_dir=""))
    check_encoder(critic, encoder.identity)  # before any work: a critic reads only its own encoder's embeddings
    return critic, encoder, info


def text_scores(critic: Any, encoder: CaptionEncoder, images: ImageSet, embeddings: torch.Tensor) -> dict[str, Any]:
    """Critic score, R-precision and attribute accuracy of a captioned set; critic_is needs no captions."""
    scores: dict[str, Any] = {"count": len(images)}
    if "category" in critic.heads:
        mean, std = critic_inception_score(critic, embeddings)
        scores["critic_is"] = {"mean": mean, "std": std}
    if images.captions is None:
        return scores
    text = embed_captions(critic, encoder, images.captions)
    mean, per_item = critic_score(embeddings, text)
    scores["critic_score"] = {"mean": mean, "std": float(per_item.std()) if len(per_item) > 1 else 0.0}
    scores["per_item"] = per_item.tolist()
    r_mean, r_std = r_precision(embeddings, text, caption_ids=images.captions)
    scores["r_precision"] = {"mean": r_mean, "std": r_std, "distractors": min(99, len(set(images.captions)) - 1)}
    scores["attribute_accuracy"] = {name: {"accuracy": accuracy, "count": count}
                                    for name, (accuracy, count) in attribute_accuracy(critic, embeddings, images.attributes).items()}
    return scores


def _per_category(critic: Any, images: ImageSet, embeddings: torch.Tensor, per_item: list[float]) -> dict[str, list[float]]:
    """Critic scores grouped by the asked category (or, where none was asked, the critic's predicted one)."""
    predicted = predict_attributes(critic, embeddings) if "category" in critic.heads else [{} for _ in per_item]
    groups: dict[str, list[float]] = defaultdict(list)
    for wanted, guess, score in zip(images.attributes, predicted, per_item):
        groups[str(wanted.get("category") or guess.get("category") or "unknown")].append(score)
    return groups


def _train_cache_key(setup: EvaluationSetup, resolution: int, critic_sha: str) -> str:
    text = f"{Path(setup.reference).resolve()}|{setup.train_split}|{resolution}|{critic_sha}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _fid_floor(setup: EvaluationSetup, train: ImageSet, real_stats: FeatureStats, count: int, inception: Any) -> dict[str, Any]:
    """FID and KID of `count` real training photos (a seeded draw) against the same validation photos: what a
    generator indistinguishable from the data would score at this count, since FID is biased upward at small counts."""
    chosen = np.sort(np.random.default_rng(0).choice(len(train), size=min(count, len(train)), replace=False))
    features = extract_features([train.images[i] for i in chosen], device=setup.device, inception=inception,
                                show_progress=setup.show_progress)
    quality = fid_and_kid(real_stats, FeatureStats.from_features(features), subset_size=setup.kid_subset_size)
    return {"fid": quality["fid"], "kid_mean": quality["kid_mean"], "kid_std": quality["kid_std"],
            "num_train": quality["num_fake"], "num_real": quality["num_real"], "split": setup.train_split}


def _memorisation(setup: EvaluationSetup, train: ImageSet, generated: ImageSet, real: ImageSet, critic: Any,
                  critic_info: dict[str, Any] | None, generated_emb: torch.Tensor | None, real_emb: torch.Tensor | None,
                  out_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Nearest training images of generated and of real validation images, in critic space and in pixels."""
    results: dict[str, Any] = {}
    figures: dict[str, str] = {}
    if critic is not None and generated_emb is not None and real_emb is not None:
        train_emb = embed_images(critic, train.images).numpy().astype(np.float32)
        key = _train_cache_key(setup, generated.resolution, critic_info["weights"]["sha256"] if critic_info else "")
        index = NeighbourIndex.cached(Path(setup.cache_dir) / f"train-index-{key}", train_emb, train.ids)
        generated_sim, generated_idx = index.search(generated_emb.numpy().astype(np.float32), k=1)
        real_sim, _ = index.search(real_emb.numpy().astype(np.float32), k=1)
        stats = memorisation_stats(generated_sim[:, 0], real_sim[:, 0], higher_is_closer=True)
        results["critic_cosine"] = {**stats, "index": index.kind, "train_count": len(train)}
        distance_histogram(generated_sim[:, 0], real_sim[:, 0], out_dir / "neighbours_critic.png",
                           "cosine similarity to the nearest training image (critic space)", higher_is_closer=True)
        figures["nearest training neighbour, critic space"] = "neighbours_critic.png"
        pairs = closest_pairs_grid(generated.images, [train.images[i] for i in generated_idx[:, 0]], generated_sim[:, 0].tolist(),
                                   [(generated.ids[i], train.ids[j]) for i, j in enumerate(generated_idx[:, 0])])
        save_image(pairs, out_dir / "closest_pairs.png")
        figures["closest generated-training pairs"] = "closest_pairs.png"
    small_train = downsample(train.images, setup.pixel_size)
    generated_l1, _ = pixel_neighbours(downsample(generated.images, setup.pixel_size), small_train)
    real_l1, _ = pixel_neighbours(downsample(real.images, setup.pixel_size), small_train)
    results["pixel_l1"] = {**memorisation_stats(generated_l1[:, 0], real_l1[:, 0], higher_is_closer=False),
                           "size": setup.pixel_size, "train_count": len(train)}
    distance_histogram(generated_l1[:, 0], real_l1[:, 0], out_dir / "neighbours_pixels.png",
                       f"mean |pixel difference| to the nearest training image at {setup.pixel_size} px", higher_is_closer=False)
    figures["nearest training neighbour, pixels"] = "neighbours_pixels.png"
    return results, figures


def evaluate_set(generated: ImageSet, setup: EvaluationSetup, out_dir: str | Path,
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric for `generated` and, where it applies, for real validation images; writes the report."""
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(generated) < 2:
        raise EvaluationInputError(f"{generated.source}: {len(generated)} image(s); FID/KID need at least 2 (hundreds to be meaningful)")
    resolution = generated.resolution
    real = read_dataset_images(setup.reference, setup.reference_split, resolution, setup.num_real, setup.val_fraction,
                               minimum=MIN_FID_IMAGES)
    inception = load_inception(setup.device)
    real_stats = reference_stats(setup.reference, setup.reference_split, resolution, setup.num_real,
                                 cache_dir=str(Path(setup.cache_dir) / "fid"), device=setup.device,
                                 show_progress=setup.show_progress, val_fraction=setup.val_fraction, inception=inception)
    fake_stats = FeatureStats.from_features(extract_features(generated.images, device=setup.device, inception=inception,
                                                             show_progress=setup.show_progress))
    quality = fid_and_kid(real_stats, fake_stats, subset_size=setup.kid_subset_size)
    train = read_dataset_images(setup.reference, setup.train_split, resolution, val_fraction=setup.val_fraction,
                                minimum=MIN_FID_IMAGES)  # the real-vs-real floor is FID/KID too
    floor = _fid_floor(setup, train, real_stats, len(generated), inception)
    metrics: dict[str, Any] = {
        "fid": {"value": quality["fid"], "num_generated": quality["num_fake"], "num_real": quality["num_real"],
                "real_vs_real": floor["fid"], "warning": quality.get("warning")},
        "kid": {"mean": quality["kid_mean"], "std": quality["kid_std"], "subset_size": quality["kid_subset_size"],
                "num_generated": quality["num_fake"], "num_real": quality["num_real"],
                "real_vs_real": {"mean": floor["kid_mean"], "std": floor["kid_std"]}},
        "real_vs_real": floor,
    }
    figures: dict[str, str] = {}
    per_category: dict[str, Any] = {}
    critic = critic_info = encoder = generated_emb = real_emb = None
    if setup.critic:
        critic, encoder, critic_info = critic_and_encoder(setup.critic, setup.device)
        generated_emb, real_emb = embed_images(critic, generated.images), embed_images(critic, real.images)
        ours, theirs = text_scores(critic, encoder, generated, generated_emb), text_scores(critic, encoder, real, real_emb)
        for key in ("critic_score", "r_precision", "critic_is"):
            if key in ours or key in theirs:
                metrics[key] = {"generated": ours.get(key), "real": theirs.get(key), "count_generated": len(generated),
                                "count_real": len(real)}
        names = set(ours.get("attribute_accuracy", {})) | set(theirs.get("attribute_accuracy", {}))
        metrics["attribute_accuracy"] = {name: {"generated": ours.get("attribute_accuracy", {}).get(name),
                                                "real": theirs.get("attribute_accuracy", {}).get(name)} for name in sorted(names)}
        if "per_item" in ours:
            generated_groups = _per_category(critic, generated, generated_emb, ours["per_item"])
            real_groups = _per_category(critic, real, real_emb, theirs["per_item"])
            per_category = {name: {"generated": float(np.mean(scores)), "count_generated": len(scores),
                                   "real": float(np.mean(real_groups[name])) if real_groups.get(name) else None,
                                   "count_real": len(real_groups.get(name, []))} for name, scores in generated_groups.items()}
            category_bars(per_category, out_dir / "critic_per_category.png")
            figures["critic score per category"] = "critic_per_category.png"
    memorisation: dict[str, Any] = {}
    if setup.memorisation:
        memorisation, memorisation_figures = _memorisation(setup, train, generated, real, critic, critic_info, generated_emb,
                                                           real_emb, out_dir)
        figures.update(memorisation_figures)
    shown = list(range(min(32, len(generated))))
    captions = [generated.captions[i] if generated.captions else generated.ids[i] for i in shown]
    save_image(captioned_grid([generated.images[i] for i in shown], captions, columns=8, tile=max(96, resolution), caption_lines=3),
               out_dir / "samples.png")
    figures["generated samples"] = "samples.png"
    report = {
        "meta": {**(meta or {}), "images": generated.source, "num_generated": len(generated), "resolution": resolution,
                 "set": generated.info, "setup": asdict(setup),
                 "reference": {"source": setup.reference, "split": setup.reference_split, "count": len(real),
                               "moved_to_train": real.info.get("moved_to_train", 0)},
                 "critic": {"path": setup.critic, "sha256": critic_info["weights"]["sha256"]} if critic_info else None,
                 "seconds": round(time.time() - started, 1)},
        "metrics": metrics,
        "per_category": per_category,
        "memorisation": memorisation,
        "figures": figures,
    }
    write_report(report, out_dir)
    return report
