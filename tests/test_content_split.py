"""Splits by image content: a copy of a training photo under another id never counts as a validation photo."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.data.content import cache_dir, content_hashes
from fashiongen.data.__main__ import main as data_cli
from fashiongen.data.convert import convert_source
from fashiongen.data.sources import open_source, split_keys
from fashiongen.data.splits import join_identical, split_of

VAL_FRACTION = 0.5


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache"


def ids_in(split: str, count: int, start: int = 0) -> list[str]:
    found, number = [], start
    while len(found) < count:
        if split_of(str(number), VAL_FRACTION) == split:
            found.append(str(number))
        number += 1
    return found


def photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8))


@pytest.fixture()
def catalogue(tmp_path: Path, private_cache: Path) -> tuple[Path, list[str], list[str]]:
    """Six training and six validation ids (by hash); validation ids 0 and 1 are PNG copies of training photos
    (one re-saved under another file name, one under another format: same pixels, other bytes)."""
    train, validation = ids_in("train", 6), ids_in("validation", 6)
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    rows = []
    for number, record_id in enumerate(train + validation):
        seed = {validation[0]: 0, validation[1]: 1}.get(record_id, number)  # copies of train[0] and train[1]
        photo(seed).save(folder / "images" / f"{record_id}.png")
        rows.append({"id": record_id, "file": f"images/{record_id}.png", "caption": f"garment {record_id}"})
    (folder / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder, train, validation


def test_copies_of_training_photos_leave_validation(catalogue) -> None:
    folder, train, validation = catalogue
    held_out = open_source(folder, split="validation", val_fraction=VAL_FRACTION)
    training = open_source(folder, split="train", val_fraction=VAL_FRACTION)
    assert sorted(held_out.meta(i).id for i in range(len(held_out))) == sorted(validation[2:])
    assert sorted(training.meta(i).id for i in range(len(training))) == sorted(train + validation[:2])
    assert held_out.moved_to_train == training.moved_to_train == 2


def test_inspect_reports_how_many_moved(catalogue, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, _, validation = catalogue
    argv = ["inspect", str(folder), "--split", "validation", "--val-fraction", str(VAL_FRACTION), "--samples", "2",
            "--out", str(tmp_path / "report")]
    assert data_cli([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (report["num_records"], report["moved_to_train"]) == (len(validation) - 2, 2)
    assert data_cli(argv) == 0
    assert "2 row(s) moved to train: pixel-identical to training photos" in capsys.readouterr().out


def test_a_group_without_training_copies_stays_in_validation() -> None:
    first, second = ids_in("validation", 2)
    keys, moved = join_identical([first, second], ["same", "same"], VAL_FRACTION)
    assert (keys, moved) == ([first, second], 0)


def test_joins_through_products_and_undecodable_rows_stand_alone() -> None:
    (train,), (v1, v2, v3) = ids_in("train", 1), ids_in("validation", 3)
    # v1 shares a photo with train; v2 is another pose of v1's product (same key), so it goes too;
    # v3 shares nothing it can show (no hash) and keeps its key.
    keys, moved = join_identical([train, v1, v1, v3], ["a", "a", "b", None], VAL_FRACTION)
    assert keys == [train, train, train, v3] and moved == 2
    assert [split_of(key, VAL_FRACTION) for key in keys] == ["train", "train", "train", "validation"]
    assert v2  # a third validation id exists but is not in the data: nothing joins by accident


def test_converted_file_keeps_the_content_split(catalogue, tmp_path: Path) -> None:
    folder, train, validation = catalogue
    source = open_source(folder)
    converted = tmp_path / "shop.h5"
    convert_source(source, converted, resolution=16, progress=False)
    again = open_source(converted, split="validation", val_fraction=VAL_FRACTION)
    assert sorted(again.meta(i).id for i in range(len(again))) == sorted(validation[2:])
    assert split_keys(source, VAL_FRACTION) == split_keys(open_source(converted), VAL_FRACTION)


def test_hashes_are_cached_and_a_changed_file_is_hashed_again(catalogue, private_cache: Path) -> None:
    folder, train, _ = catalogue
    source = open_source(folder)
    first = content_hashes(source, progress=False)
    assert len(set(first)) == len(first) - 2 and len(list(cache_dir().glob("*.json"))) == 1
    photo(999).save(folder / "images" / f"{train[3]}.png")  # another photo under the same name: new size/mtime
    changed = content_hashes(open_source(folder), progress=False)
    assert changed[3] != first[3] and changed[:3] == first[:3]
    assert len(list(cache_dir().glob("*.json"))) == 2


def test_a_damaged_cache_is_recomputed(catalogue) -> None:
    folder, _, validation = catalogue
    expected = content_hashes(open_source(folder), progress=False)
    for cached in cache_dir().glob("*.json"):
        cached.write_bytes(b"\x00garbage{")
    assert content_hashes(open_source(folder), progress=False) == expected
    held_out = open_source(folder, split="validation", val_fraction=VAL_FRACTION)
    assert len(held_out) == len(validation) - 2


def test_a_truncated_photo_is_not_joined_and_is_skipped_when_read(catalogue) -> None:
    folder, _, validation = catalogue
    broken = folder / "images" / f"{validation[3]}.png"
    broken.write_bytes(broken.read_bytes()[:40])
    held_out = open_source(folder, split="validation", val_fraction=VAL_FRACTION)
    assert held_out.moved_to_train == 2 and len(held_out) == len(validation) - 2


def test_bundled_photos_clean_split(products_path: Path) -> None:
    """7 of the hash split's 474 validation photos are pixel copies of training photos under other ids."""
    held_out = open_source(products_path, split="validation")
    assert (len(held_out), held_out.moved_to_train) == (467, 7)
