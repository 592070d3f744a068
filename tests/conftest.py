"""Shared test fixtures: the bundled data (../shared/data, present in CI) and small real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n 2`, the README's test command) each worker computes on one thread, and so do the
    processes its tests start: two workers on two cores instead of four threads fighting over them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA GPU: without one they are skipped, so plain `pytest` and the README's command
    pass here; `python -m fashiongen.gpu run` runs them (-m cuda) on a lent GPU."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PRODUCTS = SHARED_DATA / "fashion-products"


@pytest.fixture(scope="session")
def products_path() -> Path:
    if not (PRODUCTS / "captions.jsonl").is_file():
        pytest.skip(f"bundled photos not found at {PRODUCTS}")
    return PRODUCTS


def write_jpeg(path: Path, size: tuple[int, int] = (48, 64), colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)


@pytest.fixture()
def folder_dataset(tmp_path: Path) -> Path:
    """A folder+JSONL set of 6 real JPEGs with attribute columns like the bundled photos."""
    rows = []
    colours = ["Red", "Navy Blue", "White", "Black", "Green", "Grey"]
    for i, colour in enumerate(colours):
        write_jpeg(tmp_path / "images" / f"{100 + i}.jpg", colour=(40 * i, 20, 255 - 40 * i))
        rows.append({"id": 100 + i, "file": f"images/{100 + i}.jpg", "caption": f"Brand {colour} Shirt {i}",
                     "gender": "Men" if i % 2 else "Women", "articleType": "Shirts", "baseColour": colour,
                     "season": "Fall", "year": 2011, "usage": "Casual" if i else "NA"})
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


def write_fashiongen_h5(path: Path, num_rows: int = 6, size: int = 32, poses_per_product: int = 2) -> Path:
    """A FashionGen-schema h5 like the challenge release: (N, 1) fixed-length cp1252 bytes, NUL padded."""
    rng = np.random.default_rng(0)
    descriptions = [f"Long sleeve wool sweater in beige. Caf\xe9 cr\xe8me tone, row {i}." for i in range(num_rows)]
    poses = [f"id_gridfs_{1 + i % poses_per_product}" for i in range(num_rows)]
    text = {
        "input_description": descriptions,
        "input_concat_description": [f"Sweater {d}" for d in descriptions],
        "input_name": [f"Sweater {i}" for i in range(num_rows)],
        "input_brand": ["Acn\xe9 Studios"] * num_rows,
        "input_category": ["SWEATERS"] * num_rows,
        "input_subcategory": ["CREWNECKS"] * num_rows,
        "input_gender": ["MEN" if i % 2 else "WOMEN" for i in range(num_rows)],
        "input_season": ["FW2016"] * num_rows,
        "input_department": ["CLOTHING"] * num_rows,
        "input_composition": ["100% wool"] * num_rows,
        "input_pose": poses,
    }
    with h5py.File(path, "w") as handle:
        handle.create_dataset("input_image", data=rng.integers(0, 256, (num_rows, size, size, 3), dtype=np.uint8))
        for key, values in text.items():
            handle.create_dataset(key, data=np.array([v.encode("cp1252") for v in values], dtype="S120").reshape(-1, 1))
        handle.create_dataset("input_productID", data=np.array([1000 + i // poses_per_product for i in range(num_rows)], dtype=np.int32).reshape(-1, 1))
        handle.create_dataset("input_msrpUSD", data=np.full((num_rows, 1), 450.0, dtype=np.float32))
        handle.create_dataset("index", data=np.arange(num_rows).reshape(-1, 1))
        handle.create_dataset("index_2", data=np.arange(num_rows).reshape(-1, 1))
    return path


GARMENTS = [("Red", "Dresses", "Women", (200, 30, 40)), ("Navy Blue", "Shirts", "Men", (30, 40, 120)),
            ("White", "Sneakers", "Men", (235, 235, 235)), ("Black", "Boots", "Women", (20, 20, 20)),
            ("Green", "Tshirts", "Men", (40, 160, 60)), ("Yellow", "Skirts", "Women", (230, 200, 40)),
            ("Grey", "Sweaters", "Men", (128, 128, 128)), ("Pink", "Tops", "Women", (240, 150, 180))]


def write_garment_set(root: Path, count: int, size: int = 32) -> Path:
    """`count` product photos of coloured garment shapes on white, with captions and attributes (folder+JSONL)."""
    rows = []
    for i in range(count):
        colour, category, gender, rgb = GARMENTS[i % len(GARMENTS)]
        image = np.full((size, size, 3), 255, dtype=np.uint8)
        inset = 3 + (i // len(GARMENTS)) % 4
        if category in ("Dresses", "Skirts"):  # a trapezoid
            for y in range(inset, size - inset):
                half = (size // 6) + (y - inset) * (size // 3) // (size - 2 * inset)
                image[y, size // 2 - half : size // 2 + half] = rgb
        else:  # a body with sleeves
            image[inset : size - inset, size // 4 : 3 * size // 4] = rgb
            image[inset : size // 2, inset : size - inset] = rgb
        image[-1, -1] = (255 - i % 64, 255 - i // 64 % 64, 255)  # no two products are pixel copies (the content split joins those)
        path = root / "images" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        rows.append({"id": i, "file": f"images/{i}.png", "caption": f"{colour} {category.lower()} {i}", "gender": gender,
                     "articleType": category, "baseColour": colour, "season": "Summer" if i % 2 else "Winter"})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def garments16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_garment_set(tmp_path_factory.mktemp("garments16"), 16)


@pytest.fixture(scope="session")
def text_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One caption-embedding cache for the whole session (every test encodes the same few captions)."""
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="session")
def challenge_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hidden photos of the challenge-server tests' tiny challenge (tests/challenge_helpers.py)."""
    return write_garment_set(tmp_path_factory.mktemp("challenge-source"), 24, size=48)


@pytest.fixture(scope="session")
def challenge_templates(tmp_path_factory: pytest.TempPathFactory, challenge_source: Path):
    """backend -> an initialised tiny challenge to clone (init loads the evaluation networks: once per test process)."""
    from challenge_helpers import drop_clones, drop_template, make_template

    made = {}

    def get(backend: str):
        if backend not in made:
            made[backend] = make_template(backend, tmp_path_factory.mktemp(f"challenge-{backend}"), challenge_source)
        return made[backend]

    yield get
    if "postgresql" in made:
        drop_clones()
    for template in made.values():
        drop_template(template)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def challenge_template(request: pytest.FixtureRequest, challenge_templates):
    """The challenge-server tests run once on SQLite and once on PostgreSQL (skipped without one, except in CI; slow:
    the full run only)."""
    return challenge_templates(request.param)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory, garments16: Path, text_cache_dir: Path) -> dict[str, Path]:
    """(test_student*.py) A tiny teacher (32 px, attributes), a student distilled from it for 4 steps, and a folder
    carrying both."""
    from fashiongen.config import TextConfig
    from fashiongen.release import publish
    from fashiongen.text import CaptionEncoder
    from fashiongen.train import prepare, train
    from pipeline_helpers import export_tiny
    from student_helpers import student_overrides
    from training_helpers import tiny_config

    root = tmp_path_factory.mktemp("student")
    teacher = export_tiny(root / "teacher", CaptionEncoder(TextConfig(cache_dir="")), attributes=True)
    config = tiny_config(garments16, root / "runs", text_cache_dir, **student_overrides(teacher))
    run_dir = train(prepare(config, show_progress=False), show_progress=False)
    folder = publish(teacher, root / "folder", dtype="float32", critic=None, student=run_dir / "export")
    return {"teacher": teacher, "run": run_dir, "export": run_dir / "export", "folder": folder, "root": root}
