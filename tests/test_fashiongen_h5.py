import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_fashiongen_h5

from fashiongen.data.fashiongen_h5 import FashionGenH5Reader, decode_text
from fashiongen.data.records import DataError, RecordError, iter_meta, iter_records
from fashiongen.data.sources import open_source


def test_reads_rows_lazily_and_decodes_cp1252(tmp_path: Path) -> None:
    path = write_fashiongen_h5(tmp_path / "fashiongen_256_256_train.h5")
    reader = FashionGenH5Reader(path)
    assert len(reader) == 6
    record = reader[1]
    assert record.image.shape == (32, 32, 3) and record.image.dtype == np.uint8
    assert record.caption == "Long sleeve wool sweater in beige. Caf\xe9 cr\xe8me tone, row 1."
    assert record.attributes["brand"] == "Acn\xe9 Studios"
    assert record.attributes["gender"] == "MEN" and record.attributes["pose"] == "id_gridfs_2"
    assert record.attributes["product_id"] == 1000 and record.attributes["msrp"] == 450.0
    assert record.id == "1"
    with h5py.File(path) as handle:
        assert np.array_equal(record.image, handle["input_image"][1])
    assert [m.id for m in iter_meta(reader)] == [reader.meta(i).id for i in range(6)]


def test_handle_is_reopened_per_process(tmp_path: Path) -> None:
    reader = FashionGenH5Reader(write_fashiongen_h5(tmp_path / "a.h5"))
    reader[0]
    clone = pickle.loads(pickle.dumps(reader))  # what a spawned DataLoader worker receives
    assert clone._handle is None
    assert clone[2].caption == reader[2].caption


def test_pose_selection(tmp_path: Path) -> None:
    path = write_fashiongen_h5(tmp_path / "a.h5", num_rows=6, poses_per_product=2)
    front = FashionGenH5Reader(path, poses=["id_gridfs_1"])
    assert [r.attributes["pose"] for r in iter_records(front)] == ["id_gridfs_1"] * 3
    one = FashionGenH5Reader(path, one_pose_per_product=True)
    assert [r.attributes["product_id"] for r in iter_records(one)] == [1000, 1001, 1002]
    with pytest.raises(DataError, match=r"poses \['id_gridfs_9'\] not in the file"):
        FashionGenH5Reader(path, poses=["id_gridfs_9"])


def test_decode_text_is_robust() -> None:
    assert decode_text(np.array([b"Caf\xe9\x00\x00"]), "auto", "x") == "Caf\xe9"
    assert decode_text(b"\xe2\x80\x99quoted\xe2\x80\x99", "auto", "x") == "\u2019quoted\u2019"  # utf-8 first
    assert decode_text(b"smart \x93quotes\x94", "auto", "x") == "smart \u201cquotes\u201d"  # then cp1252
    with pytest.raises(RecordError, match=r"row 3:input_description: text is not decodable as ascii"):
        decode_text(b"Caf\xe9", "ascii", "f.h5:row 3:input_description")
    with pytest.raises(RecordError, match="undecodable"):
        decode_text(bytes(range(1, 32)) * 2, "auto", "f.h5:row 0:input_description")


def test_missing_image_or_caption_key(tmp_path: Path) -> None:
    path = tmp_path / "no_images.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("input_description", data=np.array([[b"a"]]))
    with pytest.raises(DataError, match=r"no_images.h5: no 'input_image' dataset \(keys: input_description\)"):
        FashionGenH5Reader(path)
    path = tmp_path / "no_caption.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("input_image", data=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"no_caption.h5: no caption field 'input_description'"):
        FashionGenH5Reader(path)


def test_mismatched_lengths_and_bad_shape(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("input_image", data=np.zeros((3, 8, 8, 3), np.uint8))
        handle.create_dataset("input_description", data=np.array([[b"a"], [b"b"]]))
    with pytest.raises(DataError, match=r"'input_description' has 2 rows but 'input_image' has 3"):
        FashionGenH5Reader(path)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("input_image", data=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"expected \(N, H, W, 3\) uint8"):
        FashionGenH5Reader(path)


def test_empty_caption_is_skipped_and_reported(tmp_path: Path) -> None:
    path = write_fashiongen_h5(tmp_path / "a.h5")
    with h5py.File(path, "r+") as handle:
        handle["input_description"][2] = b"   \x00\x00"
    reader = FashionGenH5Reader(path)
    with pytest.raises(RecordError, match=r"a.h5:row 2:input_description: empty caption"):
        reader[2]
    kept = list(iter_records(reader))
    assert [r.id for r in kept] == ["0", "1", "3", "4", "5"]


def test_split_files_in_a_folder(tmp_path: Path) -> None:
    write_fashiongen_h5(tmp_path / "fashiongen_256_256_train.h5", num_rows=6)
    write_fashiongen_h5(tmp_path / "fashiongen_256_256_validation.h5", num_rows=4)
    assert len(open_source(tmp_path, split="train")) == 6
    assert len(open_source(tmp_path, split="validation")) == 4
    assert len(open_source(tmp_path / "fashiongen_256_256_train.h5", split="validation")) == 4  # from its sibling
    assert len(open_source(tmp_path / "fashiongen_256_256_validation.h5", split="train")) == 6
    assert len(open_source(tmp_path / "fashiongen_256_256_train.h5", split="all")) == 6  # a file alone: itself
    with pytest.raises(DataError, match=r"2 .h5 files; name one of"):
        open_source(tmp_path, split="all")
