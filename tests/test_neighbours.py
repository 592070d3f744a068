"""Nearest-training-neighbour memorisation checks: faiss index, pixel L1 search, statistics, figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fashiongen.evaluation.neighbours import (
    FINGERPRINT_FILE,
    INDEX_FILE,
    NeighbourIndex,
    closest_pairs_grid,
    distance_histogram,
    downsample,
    memorisation_stats,
    pixel_neighbours,
)


def unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def random_embeddings(count: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)


def ids_for(count: int) -> list[str]:
    return [f"product-{i}" for i in range(count)]


@pytest.fixture(scope="module")
def large_set() -> tuple[np.ndarray, np.ndarray]:
    return random_embeddings(6000, seed=1), random_embeddings(200, seed=2)


def test_hnsw_agrees_with_brute_force(large_set):
    train, queries = large_set
    index = NeighbourIndex.build(train, ids_for(len(train)))
    assert index.kind == "hnsw" and len(index) == 6000 and index.dim == 32
    similarities, indices = index.search(queries, k=5)
    assert similarities.shape == indices.shape == (200, 5)
    exact = unit(queries) @ unit(train).T  # [Q, N] cosine
    truth = exact.argmax(axis=1)
    assert (indices[:, 0] == truth).mean() >= 0.95
    # reported similarities are true cosines of the returned rows, sorted closest first
    np.testing.assert_allclose(similarities, np.take_along_axis(exact, indices, axis=1), atol=1e-5)
    assert (np.diff(similarities, axis=1) <= 1e-6).all()
    assert index.ids_of(indices[:2, :1]) == [[f"product-{truth[0]}"], [f"product-{truth[1]}"]]


def test_flat_index_is_exact():
    train, queries = random_embeddings(500, seed=3) * 7.0, random_embeddings(40, seed=4)
    index = NeighbourIndex.build(train, ids_for(500))
    assert index.kind == "flat"
    similarities, indices = index.search(queries, k=3)
    exact = unit(queries) @ unit(train).T
    np.testing.assert_array_equal(indices, np.argsort(-exact, axis=1)[:, :3])
    np.testing.assert_allclose(similarities, np.sort(exact, axis=1)[:, ::-1][:, :3], atol=1e-5)
    # a planted (rescaled) copy of a training item is found with cosine 1
    similarities, indices = index.search(train[[123]] * 0.5, k=1)
    assert indices[0, 0] == 123 and similarities[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_save_load_and_cache(tmp_path, large_set):
    train, queries = large_set
    ids = ids_for(len(train))
    directory = tmp_path / "neighbours"
    built = NeighbourIndex.cached(directory, train, ids)
    index_file = directory / INDEX_FILE
    first_mtime = index_file.stat().st_mtime_ns
    fingerprint = json.loads((directory / FINGERPRINT_FILE).read_text())
    assert fingerprint["count"] == 6000 and fingerprint["dim"] == 32 and fingerprint["kind"] == "hnsw"
    assert len(fingerprint["sha256"]) == 64

    loaded = NeighbourIndex.load(directory)
    assert loaded.ids == ids and loaded.kind == "hnsw"
    np.testing.assert_array_equal(loaded.search(queries, 3)[1], built.search(queries, 3)[1])

    reused = NeighbourIndex.cached(directory, train, ids)  # same embeddings: no rebuild
    assert index_file.stat().st_mtime_ns == first_mtime
    np.testing.assert_array_equal(reused.search(queries, 1)[1], built.search(queries, 1)[1])

    changed = train.copy()
    changed[0, 0] += 1.0
    NeighbourIndex.cached(directory, changed, ids)  # other embeddings: rebuilt and saved again
    assert json.loads((directory / FINGERPRINT_FILE).read_text())["sha256"] != fingerprint["sha256"]
    assert NeighbourIndex.load(directory).fingerprint["sha256"] != fingerprint["sha256"]

    small = NeighbourIndex.cached(directory, train[:100], ids[:100])  # a different size switches to the flat index
    assert small.kind == "flat" and len(NeighbourIndex.load(directory)) == 100


def test_index_rejects_bad_input():
    good = random_embeddings(10)
    with pytest.raises(TypeError, match="numpy array"):
        NeighbourIndex.build(good.tolist(), ids_for(10))
    with pytest.raises(ValueError, match="float32"):
        NeighbourIndex.build(good.astype(np.float64), ids_for(10))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        NeighbourIndex.build(good[0], ids_for(1))
    with pytest.raises(ValueError, match="empty"):
        NeighbourIndex.build(np.zeros((0, 32), np.float32), [])
    with pytest.raises(ValueError, match="ids"):
        NeighbourIndex.build(good, ids_for(9))
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        NeighbourIndex.build(bad, ids_for(10))
    bad[3, 1] = 0.0
    bad[3] = 0.0
    with pytest.raises(ValueError, match="all-zero"):
        NeighbourIndex.build(bad, ids_for(10))
    index = NeighbourIndex.build(good, ids_for(10))
    with pytest.raises(ValueError, match="dimension 16"):
        index.search(random_embeddings(2, dim=16), k=1)
    with pytest.raises(ValueError, match="k=11"):
        index.search(good, k=11)
    with pytest.raises(FileNotFoundError):
        NeighbourIndex.load("/nonexistent/neighbours")


def brute_force_l1(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    difference = queries[:, None].astype(np.int64) - references[None].astype(np.int64)  # [Q, M, h, w, 3]
    return np.abs(difference).mean(axis=(2, 3, 4))  # [Q, M]


def test_pixel_neighbours_match_brute_force_and_find_copies():
    rng = np.random.default_rng(5)
    references = rng.integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)
    queries = rng.integers(0, 256, (11, 8, 8, 3), dtype=np.uint8)
    queries[4] = references[29]  # a planted copy
    distances, indices = pixel_neighbours(queries, references, k=3, chunk=5)  # chunks smaller than both sets
    expected = brute_force_l1(queries, references)
    np.testing.assert_array_equal(indices, np.argsort(expected, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(distances, np.sort(expected, axis=1)[:, :3], rtol=1e-6)
    assert indices[4, 0] == 29 and distances[4, 0] == 0.0
    assert distances.dtype == np.float32 and distances.shape == (11, 3)
    # chunk size does not change the answer
    np.testing.assert_array_equal(pixel_neighbours(queries, references, k=3, chunk=1000)[1], indices)


def test_pixel_neighbours_rejects_bad_input():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        pixel_neighbours(images.astype(np.float32), images)
    with pytest.raises(ValueError, match="differ in size"):
        pixel_neighbours(images, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        pixel_neighbours(images[:0], images)
    with pytest.raises(ValueError, match="k=3"):
        pixel_neighbours(images, images, k=3)


def test_downsample():
    images = [np.full((64, 48, 3), 200, np.uint8), np.zeros((32, 32, 3), np.uint8)]
    small = downsample(images, size=16)
    assert small.shape == (2, 16, 16, 3) and small.dtype == np.uint8
    assert (small[0] == 200).all() and (small[1] == 0).all()


def test_memorisation_stats_distances_and_similarities():
    baseline = np.linspace(10.0, 50.0, 101)  # p1 = 10.4
    generated = np.array([2.0, 10.1, 30.0, 40.0, 45.0])  # two closer than almost any real image
    stats = memorisation_stats(generated, baseline, higher_is_closer=False)
    assert stats["baseline_p1_threshold"] == pytest.approx(10.4)
    assert stats["generated_closer_count"] == 2 and stats["fraction_closer_than_baseline_p1"] == pytest.approx(0.4)
    assert stats["baseline_closer_count"] == 2  # 10.0 and the threshold itself (ties count)
    assert stats["generated"]["count"] == 5 and stats["baseline"]["p50"] == pytest.approx(30.0)
    assert {"p1", "p5", "p25", "p50", "p75", "p95"} <= stats["generated"].keys()
    json.dumps(stats)  # plain JSON types for the report

    # the same data as similarities: closer means higher, so the low values are no longer suspicious
    similarity_baseline = np.linspace(0.5, 0.9, 101)[:, None]  # [N, k] uses the nearest column
    similarity_generated = np.array([[0.999], [0.6], [0.7]])
    stats = memorisation_stats(similarity_generated, similarity_baseline, higher_is_closer=True)
    assert stats["baseline_p1_threshold"] == pytest.approx(0.896)
    assert stats["generated_closer_count"] == 1
    assert memorisation_stats(similarity_generated, similarity_baseline, higher_is_closer=False)["generated_closer_count"] == 0

    # a split with exact cross-split duplicates: the threshold is distance 0 and exact copies still count
    duplicates = np.concatenate([np.zeros(3), np.linspace(5.0, 30.0, 97)])
    assert memorisation_stats(np.array([0.0, 0.0, 12.0]), duplicates, higher_is_closer=False)["generated_closer_count"] == 2

    with pytest.raises(ValueError, match="non-empty"):
        memorisation_stats(np.array([]), baseline, higher_is_closer=False)
    with pytest.raises(ValueError, match="NaN"):
        memorisation_stats(np.array([np.nan]), baseline, higher_is_closer=False)


def test_pairs_grid_and_histogram_are_written(tmp_path):
    rng = np.random.default_rng(6)
    generated = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    neighbours = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(5)]
    scores = [0.5, 0.95, 0.7, 0.99, 0.1]
    grid = closest_pairs_grid(generated, neighbours, scores, [(str(i), f"10{i}") for i in range(5)], num_pairs=3,
                              pairs_per_row=1, tile=64)
    assert isinstance(grid, Image.Image) and grid.width == 2 * 64
    # the closest pair (score 0.99, generated 3) comes first, the generated image on the left
    top_left = np.asarray(grid)[:64, :64]  # tile-sized images are pasted unresized
    np.testing.assert_array_equal(top_left, generated[3])
    with pytest.raises(ValueError, match="one of each"):
        closest_pairs_grid(generated, neighbours[:4], scores, [("a", "b")] * 5)

    path = distance_histogram(rng.uniform(0, 40, 50), rng.uniform(10, 50, 200), tmp_path / "plots" / "pixel_l1.png",
                              xlabel="mean |difference| to nearest training image (0-255)")
    assert path.is_file() and Image.open(path).size[0] > 100
    assert [p.name for p in path.parent.iterdir()] == ["pixel_l1.png"]  # no temporary left behind
