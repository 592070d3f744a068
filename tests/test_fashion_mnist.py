"""Fashion-MNIST reader on the bundled npz and on tiny npz files written here."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from fashiongen.data.fashion_mnist import CLASS_NAMES, FashionMnistReader
from fashiongen.data.records import DataError, RecordError

SHARED_NPZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist" / "fashion-mnist.npz"


def write_npz(path: Path, num_train: int = 4, num_test: int = 2, **overrides: np.ndarray | None) -> Path:
    """A small Fashion-MNIST-shaped npz; pixel value = row index so rows are recognisable."""
    arrays: dict[str, np.ndarray | None] = {
        "x_train": np.arange(num_train, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8),
        "y_train": np.arange(num_train, dtype=np.uint8) % 10,
        "x_test": (100 + np.arange(num_test, dtype=np.uint8))[:, None, None] * np.ones((1, 28, 28), np.uint8),
        "y_test": np.full(num_test, 9, dtype=np.uint8),
    }
    arrays.update(overrides)
    np.savez_compressed(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


@pytest.fixture
def shared_npz() -> Path:
    if not SHARED_NPZ.is_file():
        pytest.skip(f"bundled data not found at {SHARED_NPZ}")
    return SHARED_NPZ


def test_bundled_npz_splits_and_records(shared_npz: Path) -> None:
    with np.load(shared_npz) as archive:
        y_train, x_test, y_test = archive["y_train"], archive["x_test"], archive["y_test"]
    train = FashionMnistReader(shared_npz, split="train")
    validation = FashionMnistReader(shared_npz.parent, split="validation")  # the folder works too
    everything = FashionMnistReader(shared_npz)
    assert (len(train), len(validation), len(everything)) == (60000, 10000, 70000)
    assert FashionMnistReader.detect(shared_npz) and FashionMnistReader.detect(shared_npz.parent)

    meta = train.meta(123)
    assert meta.id == "train-000123"
    assert meta.attributes == {"category": CLASS_NAMES[y_train[123]]}
    record = validation[7]
    assert record.id == "validation-000007"
    assert record.image.shape == (28, 28, 3) and record.image.dtype == np.uint8
    assert np.array_equal(record.image[:, :, 0], x_test[7]) and np.array_equal(record.image[:, :, 2], x_test[7])
    assert record.attributes["category"] == CLASS_NAMES[y_test[7]]
    assert everything.meta(60007) == validation.meta(7)
    assert len({everything.meta(i).id for i in range(0, 70000, 97)}) == len(range(0, 70000, 97))


def test_captions_read_naturally(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    path = write_npz(tmp_path / "f.npz", num_train=10, y_train=labels)
    reader = FashionMnistReader(path, split="train")
    captions = [reader.meta(i).caption for i in range(10)]
    assert captions[0] == "A grey-scale photo of a T-shirt or top"
    assert captions[1] == "A grey-scale photo of a pair of trousers"
    assert captions[2] == "A grey-scale photo of a pullover"
    assert captions[9] == "A grey-scale photo of an ankle boot"
    assert [reader.meta(i).attributes["category"] for i in range(10)] == list(CLASS_NAMES)


def test_tiny_npz_images_ids_and_negative_index(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "tiny.npz")
    reader = FashionMnistReader(path)
    assert [reader.meta(i).id for i in range(len(reader))] == [
        "train-000000", "train-000001", "train-000002", "train-000003", "validation-000000", "validation-000001"]
    assert reader[2].image.shape == (28, 28, 3) and (reader[2].image == 2).all()
    assert (reader[-1].image == 101).all() and reader[-1].attributes == {"category": "Ankle boot"}
    assert reader.split_keys()[-1] == "validation-000001"
    with pytest.raises(IndexError):
        reader[6]
    clone = pickle.loads(pickle.dumps(reader))  # images are reloaded by the receiving process
    assert (clone[3].image == 3).all()


def test_missing_key_names_file_and_key(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "broken.npz", y_test=None)
    with pytest.raises(DataError, match=r"broken\.npz: no 'y_test' array"):
        FashionMnistReader(path)
    assert len(FashionMnistReader(path, split="train")) == 4  # the train split alone is intact


def test_bad_image_array_shape(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "shape.npz", x_train=np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"shape\.npz: 'x_train' is \(4, 32, 32\) uint8, expected \(N, 28, 28\) uint8"):
        FashionMnistReader(path, split="train")
    path = write_npz(tmp_path / "count.npz", y_train=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="'x_train' has 4 images but 'y_train' has 3 labels"):
        FashionMnistReader(path, split="train")


def test_out_of_range_label_is_skipped_or_raised(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "labels.npz", y_train=np.array([0, 12, 2, 3], np.uint8))
    reader = FashionMnistReader(path, split="train")
    assert len(reader) == 3 and [reader.meta(i).id for i in range(3)] == ["train-000000", "train-000002", "train-000003"]
    assert reader.skipped.entries == [(f"{path}:y_train[1]", "label 12 is not a Fashion-MNIST class (0-9)")]
    with pytest.raises(RecordError, match=r"labels\.npz:y_train\[1\]: label 12 is not a Fashion-MNIST class"):
        FashionMnistReader(path, split="train", skip_bad_records=False)


def test_bad_paths_splits_and_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.npz: no such file or directory"):
        FashionMnistReader(tmp_path / "nowhere.npz")
    path = write_npz(tmp_path / "tiny.npz")
    with pytest.raises(DataError, match="no split 'test' \\(valid: train, validation"):
        FashionMnistReader(path, split="test")
    with pytest.raises(DataError, match="caption_field 'label' cannot be used"):
        FashionMnistReader(path, caption_field="label")
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(DataError, match="not a readable npz file"):
        FashionMnistReader(tmp_path / "notes.txt")
    assert not FashionMnistReader.detect(tmp_path / "notes.txt")
    write_npz(tmp_path / "second.npz")
    with pytest.raises(DataError, match=r"expected one Fashion-MNIST \.npz file, found \['second\.npz', 'tiny\.npz'\]"):
        FashionMnistReader(tmp_path)
