"""Registry, splits, captions, transforms, the torch Dataset, convert and the CLI, on real files."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import write_fashiongen_h5
from PIL import Image

from fashiongen.config import DataConfig
from fashiongen.data.captions import build_caption, render_template
from fashiongen.data.convert import convert_source
from fashiongen.data.dataset import FashionDataset, collate
from fashiongen.data.records import DataError, RecordError
from fashiongen.data.sources import detect_format, open_source
from fashiongen.data.splits import split_of
from fashiongen.data.transforms import resize_square, to_tensor, to_uint8

REPO = Path(__file__).resolve().parents[1]


def test_detects_every_format(tmp_path: Path, folder_dataset: Path) -> None:
    assert detect_format(folder_dataset) == "folder"
    write_fashiongen_h5(folder_dataset / "converted.h5")
    assert detect_format(folder_dataset) == "folder"  # a converted file beside the metadata does not hide it
    assert detect_format(write_fashiongen_h5(tmp_path / "x.h5")) == "fashiongen-h5"
    with pytest.raises(DataError, match=r"empty: cannot tell its format; set data.format to one of fashiongen-h5"):
        (tmp_path / "empty").mkdir()
        detect_format(tmp_path / "empty")
    with pytest.raises(DataError, match=r"missing: no such file or directory"):
        open_source(tmp_path / "missing")


def test_hash_split_is_deterministic_disjoint_and_keeps_products_together(tmp_path: Path) -> None:
    path = write_fashiongen_h5(tmp_path / "poses.h5", num_rows=400, size=8, poses_per_product=4)
    train = open_source(path, split="train", val_fraction=0.2)
    validation = open_source(path, split="validation", val_fraction=0.2)
    assert len(train) + len(validation) == 400 and 40 <= len(validation) <= 120
    train_products = {train.meta(i).attributes["product_id"] for i in range(len(train))}
    val_products = {validation.meta(i).attributes["product_id"] for i in range(len(validation))}
    assert not train_products & val_products and len(val_products) * 4 == len(validation)
    assert split_of("15970", 0.05) == split_of("15970", 0.05)
    assert list(open_source(path, split="validation", val_fraction=0.2).indices) == list(validation.indices)


def test_bundled_split_sizes(products_path: Path) -> None:
    validation = open_source(products_path, split="validation")
    assert 400 < len(validation) < 560  # 5% of 9,583 by hash


def test_caption_templates() -> None:
    attributes = {"gender": "Men", "colour": "Navy Blue", "category": "Shirts", "usage": "NA", "season": "Fall"}
    template = "{gender:possessive} {colour:lower} {category:lower}, {usage:lower}, {season:lower}"
    assert render_template(template, attributes) == "Men's navy blue shirts, fall"
    assert render_template(template, {}) == ""
    assert build_caption("Turtle Check Men Navy Blue Shirt", attributes, "both", template) == \
        "Turtle Check Men Navy Blue Shirt. Men's navy blue shirts, fall"
    assert build_caption("raw", attributes, "raw", template) == "raw"
    assert build_caption("raw", {}, "attributes", template) == "raw"
    with pytest.raises(ValueError, match="unknown filter 'shout'"):
        render_template("{gender:shout}", attributes)


def test_resize_modes() -> None:
    image = np.zeros((100, 50, 3), np.uint8)
    image[:, :25] = 255
    cropped = resize_square(image, 32, "center-crop")
    padded = resize_square(image, 32, "pad", pad_value=255)
    assert cropped.shape == padded.shape == (32, 32, 3)
    assert (padded[:, :8] == 255).all() and (padded[:, -8:] == 255).all()  # white side bars
    # antialiased: a fine 1-px stripe pattern averages to grey instead of aliasing to black or white
    stripes = np.zeros((256, 256, 3), np.uint8)
    stripes[:, ::2] = 255
    assert abs(float(resize_square(stripes, 32).mean()) - 127.5) < 4
    tensor = to_tensor(cropped)
    assert tensor.shape == (3, 32, 32) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(to_uint8(tensor[None])[0], cropped)


def test_dataset_examples_flips_and_skips(folder_dataset: Path) -> None:
    (folder_dataset / "images" / "102.jpg").write_text("not an image")
    config = DataConfig(source=str(folder_dataset), split="all", resolution=16)
    dataset = FashionDataset.from_config(config, seed=3)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["pixel_values"].shape == (6, 3, 16, 16)
    assert batch["id"] == ["100", "101", "103", "103", "104", "105"]  # the defective record's slot is refilled
    assert len(dataset.skipped) == 1 and "102.jpg: not an image file" in dataset.skipped.summary()
    assert batch["caption"][1] == "Brand Navy Blue Shirt 1. Men's navy blue shirts, casual, fall 2011"
    again = FashionDataset.from_config(config, seed=3)
    assert torch.equal(again[4]["pixel_values"], dataset[4]["pixel_values"])
    flips = []
    for epoch in range(8):
        dataset.set_epoch(epoch)
        flips.append(dataset._flip(0))
    assert any(flips) and not all(flips)
    strict = FashionDataset.from_config(DataConfig(source=str(folder_dataset), split="all", skip_bad_records=False))
    with pytest.raises(RecordError, match="102.jpg: not an image file"):
        strict[2]


def test_dataset_in_dataloader_workers(tmp_path: Path) -> None:
    path = write_fashiongen_h5(tmp_path / "w.h5", num_rows=8, size=16)
    dataset = FashionDataset.from_config(DataConfig(source=str(path), split="all", resolution=16, hflip=False))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    ids = [i for batch in loader for i in batch["id"]]
    assert ids == [str(i) for i in range(8)]


def test_convert_round_trip(folder_dataset: Path, tmp_path: Path) -> None:
    source = open_source(folder_dataset)
    out = tmp_path / "converted.h5"
    result = convert_source(source, out, resolution=16, progress=False)
    assert result.num_records == 6 and result.num_skipped == 0
    converted = open_source(out)
    assert converted.format == "fashiongen-h5" and len(converted) == 6
    for index in range(6):
        original, copy = source[index], converted[index]
        assert copy.id == original.id and copy.caption == original.caption
        assert copy.attributes["colour"] == original.attributes["colour"]
        assert np.array_equal(copy.image, resize_square(original.image, 16))
    with h5py.File(out) as handle:
        assert handle["input_image"].chunks == (1, 16, 16, 3) and handle["input_image"].compression == "gzip"
        assert handle["input_description"].shape == (6, 1) and handle["input_description"].dtype.kind == "S"
        for key in ("input_name", "input_category", "input_gender", "input_season", "input_pose", "input_productID",
                    "input_msrpUSD", "index", "index_2", "input_concat_description"):
            assert key in handle
    config = DataConfig(source=str(folder_dataset), split="validation", val_fraction=0.5, resolution=16)
    after_source = open_source(out, split="validation", val_fraction=0.5)
    original_source = open_source(folder_dataset, split="validation", val_fraction=0.5)
    assert [after_source.meta(i).id for i in range(len(after_source))] == \
        [original_source.meta(i).id for i in range(len(original_source))]
    assert FashionDataset.from_config(config).caption(0) == FashionDataset.from_config(
        DataConfig(source=str(out), split="validation", val_fraction=0.5, resolution=16)).caption(0)


def test_convert_skips_bad_images_and_writes_nothing_on_failure(folder_dataset: Path, tmp_path: Path) -> None:
    (folder_dataset / "images" / "101.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = convert_source(open_source(folder_dataset), tmp_path / "ok.h5", resolution=8, progress=False)
    assert result.num_records == 5 and result.num_skipped == 1
    with pytest.raises(RecordError, match="101.jpg"):
        convert_source(open_source(folder_dataset), tmp_path / "strict.h5", resolution=8,
                       skip_bad_records=False, progress=False)
    assert not (tmp_path / "strict.h5").exists() and not list(tmp_path.glob(".strict.h5*"))


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashiongen.data", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_inspect_and_convert(folder_dataset: Path, tmp_path: Path) -> None:
    done = _run_cli("inspect", str(folder_dataset), "--json", "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["format"] == "folder" and report["num_records"] == 6
    assert report["attributes"]["colour"]["distinct"] == 6
    assert report["caption_words"]["max"] == 5
    grid = Image.open(report["grid"])
    assert grid.size[0] == 4 * 160 and np.asarray(grid).std() > 10  # pictures, not a blank canvas
    assert json.loads((tmp_path / "report" / "report.json").read_text())["num_records"] == 6
    done = _run_cli("convert", str(folder_dataset), str(tmp_path / "c.h5"), "--size", "16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["num_records"] == 6
    assert json.loads((tmp_path / "c.json").read_text())["num_records"] == 6


@pytest.mark.slow
def test_cli_errors_are_clear(tmp_path: Path) -> None:
    done = _run_cli("inspect", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert done.returncode == 2 and "nowhere: no such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_inspect_bundled_photos(products_path: Path, tmp_path: Path) -> None:
    done = _run_cli("inspect", str(products_path), "--json", "--out", str(tmp_path), cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["format"] == "folder" and report["num_records"] == 9583 and report["split"] == "all"
    assert report["attributes"]["gender"]["top"]["Men"] == 5964
    done = _run_cli("inspect", str(products_path), "--split", "validation", "--json", "--out", str(tmp_path), cwd=REPO)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["split"] == "validation" and 400 < report["num_records"] < 560
