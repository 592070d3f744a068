"""DeepFashion2 reader on small real split folders and roots built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.data.deepfashion2 import DeepFashion2Reader
from fashiongen.data.records import DataError, RecordError

TOP = {"category_name": "short sleeve top", "category_id": 1, "bounding_box": [10, 5, 40, 25], "style": 1,
       "scale": 2, "occlusion": 1, "zoom_in": 1, "viewpoint": 2, "landmarks": [0] * 75, "segmentation": [[1, 2, 3]]}
TROUSERS = {"category_name": "trousers", "category_id": 8, "bounding_box": [0, 20, 30, 40], "style": 0,
            "scale": 3, "occlusion": 3, "zoom_in": 1, "viewpoint": 1}
DRESS = {"category_name": "vest dress", "category_id": 12, "bounding_box": [2.4, 3.6, 20.2, 30.5], "style": 2,
         "scale": 1, "occlusion": 2, "zoom_in": 3, "viewpoint": 3}


def write_split(folder: Path, annos: dict[str, dict | str], images: tuple[str, ...] | None = None) -> Path:
    """A split folder: `annos` maps a stem to its annotation (a str is written verbatim); each gets a 64x48 JPEG."""
    (folder / "image").mkdir(parents=True)
    (folder / "annos").mkdir()
    for number, stem in enumerate(annos if images is None else images):
        Image.new("RGB", (64, 48), (30 * number, 60, 90)).save(folder / "image" / f"{stem}.jpg")
    for stem, anno in annos.items():
        text = anno if isinstance(anno, str) else json.dumps(anno)
        (folder / "annos" / f"{stem}.json").write_text(text, encoding="utf-8")
    return folder


def good_annos() -> dict[str, dict | str]:
    return {
        "000001": {"source": "shop", "pair_id": 1, "item1": TOP, "item2": TROUSERS},
        "000002": {"source": "user", "pair_id": 1, "item1": DRESS},
    }


def test_items_become_cropped_records(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "mini", good_annos())
    assert DeepFashion2Reader.detect(folder)
    reader = DeepFashion2Reader(folder)
    assert reader.native_splits == () and len(reader.skipped) == 0
    assert [reader.meta(i).id for i in range(len(reader))] == ["000001-item1", "000001-item2", "000002-item1"]
    top, trousers, dress = reader[0], reader[1], reader[2]
    assert top.image.shape == (20, 30, 3) and top.image.dtype == np.uint8  # box [10, 5, 40, 25]
    assert trousers.image.shape == (20, 30, 3)  # box [0, 20, 30, 40]
    assert dress.image.shape == (26, 18, 3)  # box [2.4, 3.6, 20.2, 30.5] rounds to [2, 4, 20, 30]
    assert abs(int(dress.image[0, 0, 0]) - 30) <= 3  # pixels come from the second image


def test_captions_and_attributes(tmp_path: Path) -> None:
    reader = DeepFashion2Reader(write_split(tmp_path / "mini", good_annos()))
    assert [reader.meta(i).caption for i in range(3)] == [
        "Short sleeve top, worn, frontal view, shop photo",
        "Trousers, not worn, large scale, heavy occlusion, shop photo",
        "Vest dress, worn, side or back view, small scale, medium occlusion, large zoom-in, consumer photo",
    ]
    assert reader.meta(0).attributes == {
        "category": "short sleeve top", "source": "shop", "pair_id": 1, "style": 1,
        "scale": "modest", "occlusion": "slight", "zoom_in": "none", "viewpoint": "frontal",
    }
    assert reader[2].attributes == {
        "category": "vest dress", "source": "user", "pair_id": 1, "style": 2,
        "scale": "small", "occlusion": "medium", "zoom_in": "large", "viewpoint": "side or back",
    }
    assert reader.split_keys() == ["pair-1", "pair-1", "pair-1"]


def test_root_with_native_splits(tmp_path: Path) -> None:
    root = tmp_path / "deepfashion2"
    write_split(root / "train", good_annos())
    write_split(root / "validation", {"000001": {"source": "user", "pair_id": 7, "item1": TROUSERS}})
    assert DeepFashion2Reader.detect(root)
    train = DeepFashion2Reader(root, split="train")
    validation = DeepFashion2Reader(root, split="validation")
    everything = DeepFashion2Reader(root)
    assert train.native_splits == ("train", "validation")
    assert [train.meta(i).id for i in range(len(train))] == ["train-000001-item1", "train-000001-item2", "train-000002-item1"]
    assert [validation.meta(i).id for i in range(len(validation))] == ["validation-000001-item1"]
    assert len(everything) == 4 and everything.meta(3) == validation.meta(0)
    assert validation[0].image.shape == (20, 30, 3)
    # A split folder opened directly keeps its split's ids.
    direct = DeepFashion2Reader(root / "validation", split="validation")
    assert direct.native_splits == ("validation",) and direct.meta(0).id == "validation-000001-item1"
    with pytest.raises(DataError, match=r"no DeepFashion2 split 'test' \(valid: train, validation\)"):
        DeepFashion2Reader(root, split="test")


def test_split_folder_rejects_a_split(tmp_path: Path) -> None:
    folder = write_split(tmp_path / "mini", good_annos())
    with pytest.raises(DataError, match="no DeepFashion2 split 'train' \\(valid: none; this is a single split folder"):
        DeepFashion2Reader(folder, split="train")


def test_malformed_json_is_skipped_or_raised(tmp_path: Path) -> None:
    annos = good_annos() | {"000003": '{"source": "shop", "item1": '}
    folder = write_split(tmp_path / "mini", annos)
    anno_path = folder / "annos" / "000003.json"
    reader = DeepFashion2Reader(folder)
    assert len(reader) == 3 and len(reader.skipped) == 1
    where, reason = reader.skipped.entries[0]
    assert where == str(anno_path) and reason.startswith("not valid JSON")
    with pytest.raises(RecordError, match=r"annos/000003\.json: not valid JSON"):
        DeepFashion2Reader(folder, skip_bad_records=False)


@pytest.mark.parametrize(("item", "reason"), [
    ({k: v for k, v in TOP.items() if k != "category_name"}, "item has no category_name"),
    ({k: v for k, v in TOP.items() if k != "bounding_box"}, r"item has no bounding_box \[x1, y1, x2, y2\] \(found None\)"),
    (TOP | {"bounding_box": [1, 2, 3]}, r"item has no bounding_box \[x1, y1, x2, y2\] \(found \[1, 2, 3\]\)"),
])
def test_bad_item_is_skipped_or_raised(tmp_path: Path, item: dict, reason: str) -> None:
    annos = good_annos() | {"000003": {"source": "shop", "pair_id": 2, "item1": TROUSERS, "item2": item}}
    folder = write_split(tmp_path / "mini", annos)
    reader = DeepFashion2Reader(folder)
    assert [reader.meta(i).id for i in range(len(reader))][-1] == "000003-item1"  # its good sibling stays
    assert len(reader.skipped) == 1 and reader.skipped.entries[0][0] == f"{folder / 'annos' / '000003.json'}:item2"
    with pytest.raises(RecordError, match=rf"000003\.json:item2: {reason}"):
        DeepFashion2Reader(folder, skip_bad_records=False)


def test_anno_without_image_is_skipped_or_raised(tmp_path: Path) -> None:
    annos = good_annos() | {"000003": {"source": "shop", "pair_id": 2, "item1": TOP}}
    folder = write_split(tmp_path / "mini", annos, images=("000001", "000002"))
    reader = DeepFashion2Reader(folder)
    assert len(reader) == 3
    assert reader.skipped.entries == [(str(folder / "annos" / "000003.json"), f"image {folder / 'image' / '000003'}.jpg not found")]
    with pytest.raises(RecordError, match=r"000003\.json: image .*image/000003\.jpg not found"):
        DeepFashion2Reader(folder, skip_bad_records=False)


def test_empty_box_and_truncated_image_fail_per_record(tmp_path: Path) -> None:
    annos = {"000001": {"source": "shop", "pair_id": 1, "item1": TOP | {"bounding_box": [70, 5, 90, 25]}, "item2": TROUSERS}}
    folder = write_split(tmp_path / "mini", annos)
    reader = DeepFashion2Reader(folder)
    image_path = folder / "image" / "000001.jpg"
    with pytest.raises(RecordError, match=r"bounding box \[70, 5, 90, 25\] is empty inside a 64x48 image") as caught:
        reader[0]
    assert caught.value.where == f"{image_path}:item1"
    assert reader[1].image.shape == (20, 30, 3)
    image_path.write_bytes(image_path.read_bytes()[:50])
    with pytest.raises(RecordError, match="corrupt or truncated image") as caught:
        reader[1]
    assert caught.value.where == str(image_path)


def test_bad_paths_and_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        DeepFashion2Reader(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    assert not DeepFashion2Reader.detect(tmp_path / "plain")
    with pytest.raises(DataError, match="plain: not a DeepFashion2 folder"):
        DeepFashion2Reader(tmp_path / "plain")
    folder = write_split(tmp_path / "mini", good_annos())
    with pytest.raises(DataError, match="caption_field 'caption' cannot be used"):
        DeepFashion2Reader(folder, caption_field="caption")
