import json
from pathlib import Path

import pytest
from conftest import write_jpeg

from fashiongen.data.folder import FolderReader
from fashiongen.data.records import DataError, RecordError, iter_records


def test_reads_jsonl_with_canonical_attributes(folder_dataset: Path) -> None:
    reader = FolderReader(folder_dataset)
    assert len(reader) == 6
    record = reader[1]
    assert record.id == "101" and record.caption == "Brand Navy Blue Shirt 1"
    assert record.image.shape == (64, 48, 3)
    assert record.attributes == {"gender": "Men", "category": "Shirts", "colour": "Navy Blue",
                                 "season": "Fall", "year": 2011, "usage": "Casual"}


def test_reads_csv(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg")
    write_jpeg(tmp_path / "b.jpg")
    (tmp_path / "metadata.csv").write_text('file_name,text,color\na.jpg,"red, floral dress",Red\nb.jpg,white sneakers,White\n')
    reader = FolderReader(tmp_path)
    assert [(r.id, r.caption, r.attributes) for r in iter_records(reader)] == [
        ("a", "red, floral dress", {"colour": "Red"}), ("b", "white sneakers", {"colour": "White"})]


def test_the_bundled_photos(products_path: Path) -> None:
    reader = FolderReader(products_path)
    assert len(reader) == 9583 and len(reader.skipped) == 0
    record = reader[0]
    assert record.image.shape == (224, 224, 3)
    assert {"gender", "category", "colour", "season", "usage", "year"} <= set(record.attributes)


def test_bad_rows_are_skipped_with_their_line(folder_dataset: Path) -> None:
    metadata = folder_dataset / "captions.jsonl"
    lines = metadata.read_text().splitlines()
    lines[1] = lines[1].replace('"caption": "Brand Navy Blue Shirt 1"', '"caption": "  "')
    lines[2] = "{not json"
    lines[3] = lines[3].replace("images/103.jpg", "images/missing.jpg")
    metadata.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": 9, "file": "images/100.jpg", "caption": "caf\xe9"}\n')
    reader = FolderReader(folder_dataset)
    assert [r.id for r in iter_records(reader)] == ["100", "104", "105"]
    reasons = dict(reader.skipped.entries)
    assert reasons[f"{metadata}:2:caption"] == "empty caption"
    assert reasons[f"{metadata}:3"].startswith("not valid JSON")
    assert "images/missing.jpg not found" in reasons[f"{metadata}:4"]
    assert reasons[f"{metadata}:7"].startswith("undecodable caption/metadata (not UTF-8")
    with pytest.raises(RecordError, match=r"captions.jsonl:2:caption: empty caption"):
        FolderReader(folder_dataset, skip_bad_records=False)


def test_mismatched_csv_row(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg")
    (tmp_path / "captions.csv").write_text("file,caption,colour\na.jpg,red dress\n")
    with pytest.raises(RecordError, match=r"captions.csv:2: row has 2 fields but the header has 3"):
        FolderReader(tmp_path, skip_bad_records=False)


def test_truncated_and_non_image_files(folder_dataset: Path) -> None:
    data = (folder_dataset / "images" / "100.jpg").read_bytes()
    (folder_dataset / "images" / "100.jpg").write_bytes(data[: len(data) // 2])
    (folder_dataset / "images" / "101.jpg").write_text("this is not a picture")
    reader = FolderReader(folder_dataset)
    with pytest.raises(RecordError, match=r"100.jpg: corrupt or truncated image"):
        reader[0]
    with pytest.raises(RecordError, match=r"101.jpg: not an image file"):
        reader[1]
    assert len(list(iter_records(reader))) == 4


def test_whole_source_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: no such file or directory"):
        FolderReader(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no metadata file"):
        FolderReader(tmp_path)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "a.jpg", "title": "x"}) + "\n")
    with pytest.raises(DataError, match=r"no caption column 'caption or text or description'; columns: \['file', 'title'\]"):
        FolderReader(tmp_path)
    with pytest.raises(DataError, match=r"no caption column 'name'"):
        FolderReader(tmp_path, caption_field="name")


def test_an_id_of_zero_is_kept(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "a.jpg")
    write_jpeg(tmp_path / "b.jpg")
    (tmp_path / "captions.jsonl").write_text('{"id": 0, "file": "a.jpg", "caption": "red dress"}\n'
                                             '{"id": "", "file": "b.jpg", "caption": "white sneakers"}\n')
    assert [record.id for record in iter_records(FolderReader(tmp_path))] == ["0", "b"]
