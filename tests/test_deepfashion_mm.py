"""DeepFashion-MultiModal reader on small real datasets built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.data.captions import render_template
from fashiongen.data.deepfashion_mm import DeepFashionMMReader, attributes_from_name
from fashiongen.data.records import DataError, RecordError

DRESS = "WOMEN-Dresses-id_00000002-02_1_front.jpg"
DENIM = "MEN-Denim-id_00000080-01_7_additional.jpg"
JACKET = "MEN-Jackets_Vests-id_00000080-01_2_side.jpg"
TEES = "WOMEN-Graphic_Tees-id_00000300-03_4_full.jpg"
CAPTIONS = {
    DRESS: "The lady wears a short-sleeve dress with floral patterns.",
    DENIM: "  This man wears   long denim trousers. ",
    JACKET: "The man wears a long-sleeve jacket.",
    TEES: "A woman in a graphic tee.",
}
SHAPE_LINES = [
    f"{DRESS} 1 3 0 0 2 0 1 0 4 2 1 1",
    f"{DENIM} 5 4 3 2 4 2 2 2 4 6 2 2",  # everything NA
    "WOMEN-Skirts-id_00009999-01_1_front.jpg 0 0 0 0 0 0 0 0 0 0 0 0",  # labels for an uncaptioned image
]
FABRIC_LINES = [f"{DRESS} 5 7 7", f"{DENIM} 7 0 7"]
PATTERN_LINES = [f"{DRESS} 0 7 7", f"{DENIM} 7 3 7"]


def write_dataset(root: Path, captions: dict | str = CAPTIONS, shape: list[str] | None = SHAPE_LINES,
                  fabric: list[str] | None = FABRIC_LINES, pattern: list[str] | None = PATTERN_LINES,
                  images: tuple[str, ...] = (DRESS, DENIM, JACKET, TEES)) -> Path:
    """A DeepFashion-MultiModal root with real JPEGs (each a different size), captions and label files."""
    (root / "images").mkdir(parents=True)
    for number, name in enumerate(images):
        Image.new("RGB", (10 + number, 20 + number), (40 * number, 100, 200)).save(root / "images" / name)
    text = captions if isinstance(captions, str) else json.dumps(captions)
    (root / "captions.json").write_text(text, encoding="utf-8")
    for relative, lines in (("labels/shape/shape_anno_all.txt", shape), ("labels/texture/fabric_ann.txt", fabric),
                            ("labels/texture/pattern_ann.txt", pattern)):
        if lines is not None:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_records_ids_captions_and_images(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "dfmm")
    assert DeepFashionMMReader.detect(root) and not DeepFashionMMReader.detect(tmp_path)
    reader = DeepFashionMMReader(root)
    assert len(reader) == 4 and len(reader.skipped) == 0
    ids = [reader.meta(i).id for i in range(len(reader))]
    assert ids == sorted(Path(name).stem for name in CAPTIONS)
    denim = reader[ids.index("MEN-Denim-id_00000080-01_7_additional")]
    assert denim.caption == "This man wears long denim trousers."
    assert denim.image.shape == (21, 11, 3) and denim.image.dtype == np.uint8  # the second image written: 11x21
    assert abs(int(denim.image[0, 0, 0]) - 40) <= 3


def test_attributes_from_name_and_labels(tmp_path: Path) -> None:
    reader = DeepFashionMMReader(write_dataset(tmp_path / "dfmm"))
    by_id = {reader.meta(i).id: reader.meta(i).attributes for i in range(len(reader))}
    assert by_id["WOMEN-Dresses-id_00000002-02_1_front"] == {
        "gender": "Women", "category": "Dresses", "product_id": "id_00000002", "pose": "front",
        "sleeve_length": "short-sleeve", "lower_clothing_length": "long", "socks": "no", "hat": "no",
        "glasses": "sunglasses", "neckwear": "no", "wrist_wearing": "yes", "ring": "no", "neckline": "round",
        "cardigan": "no", "navel_covered": "yes",  # waist_accessories 4 is NA: dropped
        "upper_fabric": "chiffon", "upper_pattern": "floral",
    }
    assert by_id["MEN-Denim-id_00000080-01_7_additional"] == {
        "gender": "Men", "category": "Denim", "product_id": "id_00000080", "pose": "additional",
        "lower_fabric": "denim", "lower_pattern": "pure color",
    }
    assert by_id["MEN-Jackets_Vests-id_00000080-01_2_side"]["category"] == "Jackets & Vests"
    assert by_id["WOMEN-Graphic_Tees-id_00000300-03_4_full"]["category"] == "Graphic Tees"
    assert attributes_from_name("holiday-snap.jpg") == {}
    # Views of one product share a split key.
    assert sorted(reader.split_keys()) == ["id_00000002", "id_00000080", "id_00000080", "id_00000300"]


def test_template_renders_from_attributes(tmp_path: Path) -> None:
    reader = DeepFashionMMReader(write_dataset(tmp_path / "dfmm"))
    texts = sorted(render_template(reader.caption_template, reader.meta(i).attributes) for i in range(len(reader)))
    assert texts == ["Men's denim, additional view", "Men's jackets & vests, side view",
                     "Women's dresses, front view", "Women's graphic tees, full view"]


def test_label_files_are_optional(tmp_path: Path) -> None:
    reader = DeepFashionMMReader(write_dataset(tmp_path / "dfmm", shape=None, fabric=None, pattern=None))
    assert len(reader) == 4
    assert set(reader.meta(0).attributes) == {"gender", "category", "product_id", "pose"}


def test_image_folder_named_image_as_released(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "dfmm")
    (root / "images").rename(root / "image")
    reader = DeepFashionMMReader(root)
    assert reader[0].image.shape[2] == 3 and DeepFashionMMReader.detect(root)


@pytest.mark.parametrize(("line", "reason"), [
    (f"{DRESS} 1 3 0", "expected an image name and 12 labels, found 4 fields"),
    (f"{DRESS} 1 3 x 0 2 0 1 0 4 2 1 1", "socks label 'x' is not an integer"),
    (f"{DRESS} 1 3 0 0 2 0 1 0 4 7 1 1", "neckline label 7 is out of range 0-6"),
])
def test_bad_label_line_is_skipped_or_raised(tmp_path: Path, line: str, reason: str) -> None:
    root = write_dataset(tmp_path / "dfmm", shape=[SHAPE_LINES[1], line])
    shape_file = root / "labels" / "shape" / "shape_anno_all.txt"
    reader = DeepFashionMMReader(root)
    assert reader.skipped.entries == [(f"{shape_file}:2", reason)]
    dress = next(reader.meta(i) for i in range(len(reader)) if reader.meta(i).id.startswith("WOMEN-Dresses"))
    assert "sleeve_length" not in dress.attributes and dress.attributes["upper_fabric"] == "chiffon"
    with pytest.raises(RecordError, match=f"shape_anno_all.txt:2: {reason}"):
        DeepFashionMMReader(root, skip_bad_records=False)


def test_bad_fabric_value_names_file_and_line(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "dfmm", fabric=[FABRIC_LINES[0], f"{DENIM} 7 8 7"])
    with pytest.raises(RecordError, match=r"fabric_ann\.txt:2: lower_fabric label 8 is out of range 0-7"):
        DeepFashionMMReader(root, skip_bad_records=False)


def test_caption_defects_are_skipped_or_raised(tmp_path: Path) -> None:
    captions = dict(CAPTIONS, **{"MEN-Pants-id_00000005-01_1_front.jpg": "Trousers with no photo.",
                                 DRESS: "   ", JACKET: 42})
    root = write_dataset(tmp_path / "dfmm", captions=captions)
    captions_file = root / "captions.json"
    reader = DeepFashionMMReader(root)
    assert [reader.meta(i).id for i in range(len(reader))] == [
        "MEN-Denim-id_00000080-01_7_additional", "WOMEN-Graphic_Tees-id_00000300-03_4_full"]
    assert sorted(reader.skipped.entries) == sorted([
        (f"{captions_file}:{JACKET}", "caption is int, expected text"),
        (f"{captions_file}:MEN-Pants-id_00000005-01_1_front.jpg",
         f"image file {root / 'images' / 'MEN-Pants-id_00000005-01_1_front.jpg'} not found"),
        (f"{captions_file}:{DRESS}", "empty caption"),
    ])
    with pytest.raises(RecordError, match="MEN-Jackets_Vests-id_00000080-01_2_side.jpg: caption is int"):
        DeepFashionMMReader(root, skip_bad_records=False)


def test_malformed_captions_json(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "broken", captions='{"a.jpg": "unterminated')
    with pytest.raises(DataError, match=r"broken/captions\.json: not valid JSON"):
        DeepFashionMMReader(root)
    root = write_dataset(tmp_path / "listed", captions='["a caption"]')
    with pytest.raises(DataError, match=r"listed/captions\.json: expected an object mapping image names"):
        DeepFashionMMReader(root)


def test_truncated_image_is_a_record_error(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "dfmm")
    image_path = root / "images" / DENIM
    image_path.write_bytes(image_path.read_bytes()[:40])
    reader = DeepFashionMMReader(root)
    index = [reader.meta(i).id for i in range(len(reader))].index(Path(DENIM).stem)
    with pytest.raises(RecordError, match=f"{image_path.name}: corrupt or truncated image") as caught:
        reader[index]
    assert caught.value.where == str(image_path)


def test_bad_paths_and_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        DeepFashionMMReader(tmp_path / "nowhere")
    root = write_dataset(tmp_path / "dfmm")
    with pytest.raises(DataError, match="no split 'train'"):
        DeepFashionMMReader(root, split="train")
    with pytest.raises(DataError, match="caption_field 'text' cannot be used"):
        DeepFashionMMReader(root, caption_field="text")
    (root / "captions.json").unlink()
    with pytest.raises(DataError, match=r"captions\.json: no such file"):
        DeepFashionMMReader(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no image folder \(images/ or image/\)"):
        DeepFashionMMReader(empty)
