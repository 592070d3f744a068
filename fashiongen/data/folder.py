"""An image folder plus a metadata file (JSONL or CSV) with a caption column and attribute columns.

The bundled `../shared/data/fashion-products` set is this format: `captions.jsonl` rows like
{"id": 15970, "file": "images/15970.jpg", "caption": "...", "gender": "Men", "baseColour": ...}.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from ..utils import NotRegularFile, file_inside, open_regular, regular_file
from .images import decode_image
from .records import DataError, Record, RecordError, RecordMeta, SkipLog, check_text, clean_caption, require_path

METADATA_NAMES = ("captions.jsonl", "metadata.jsonl", "captions.csv", "metadata.csv")
FILE_COLUMNS = ("file", "file_name", "image", "path", "filename")
CAPTION_COLUMNS = ("caption", "text", "description")
# A CSV field longer than this is a defective row (Python's csv stops at 128 KB with an exception instead): far above
# any caption or attribute, and the file is in memory anyway, so the csv module's own limit is the file's size.
MAX_CSV_FIELD = 1 << 20
# Column names (after snake_case) that mean a canonical attribute.
ALIASES = {
    "base_colour": "colour", "color": "colour", "base_color": "colour", "article_type": "category",
    "sub_category": "subcategory", "product_display_name": "name", "designer": "brand",
}


def snake_case(name: str) -> str:
    """'baseColour' -> 'base_colour', 'Sub Category' -> 'sub_category'."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip())
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


class FolderReader:
    """Reader for an image folder described by a JSONL or CSV metadata file."""

    format = "folder"
    caption_template = "{gender:possessive} {colour:lower} {category:lower}, {usage:lower}, {season:lower} {year}"

    @classmethod
    def detect(cls, path: Path) -> bool:
        if path.is_file():
            return path.suffix in (".jsonl", ".csv")
        return any((path / name).is_file() for name in METADATA_NAMES)

    @classmethod
    def splits_at(cls, path: Path) -> tuple[str, ...]:
        return ()

    def __init__(self, path: str | Path, *, split: str | None = None, skip_bad_records: bool = True,
                 caption_field: str = "") -> None:
        path = Path(path)
        require_path(path)
        if split is not None:
            raise DataError(f"{path}: a folder source has no split '{split}' of its own")
        self.metadata_path = self._find_metadata(path) if path.is_dir() else path
        self.path = self.metadata_path.parent
        self.caption_field = caption_field
        self.skipped = SkipLog(skip=skip_bad_records)
        self.rows: list[tuple[str, Path, str, dict[str, Any]]] = []  # (id, image path, caption, attributes)
        self._load_metadata()

    @staticmethod
    def _find_metadata(folder: Path) -> Path:
        for name in METADATA_NAMES:
            if (folder / name).is_file():
                return folder / name
        found = sorted(p.name for p in folder.iterdir() if p.suffix in (".jsonl", ".csv"))
        if len(found) == 1:
            return folder / found[0]
        raise DataError(f"{folder}: no metadata file (looked for {', '.join(METADATA_NAMES)}; found {found or 'none'})")

    def _raw_rows(self) -> tuple[set[str], list[tuple[int, dict[str, Any] | None, str]]]:
        """The columns, and (line number, row or None, problem) for every data line of the metadata file."""
        try:
            with open_regular(self.metadata_path) as handle:  # a FIFO would block forever
                data = handle.read()
        except NotRegularFile as error:
            raise DataError(str(error)) from None
        lines = data.split(b"\n")
        rows: list[tuple[int, dict[str, Any] | None, str]] = []
        if self.metadata_path.suffix == ".jsonl":
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    rows.append((number, None, f"undecodable caption/metadata (not UTF-8: {error.reason} at byte {error.start})"))
                    continue
                except json.JSONDecodeError as error:
                    rows.append((number, None, f"not valid JSON ({error.msg})"))
                    continue
                rows.append((number, row, "") if isinstance(row, dict) else (number, None, "row is not a JSON object"))
            return set().union(*(row.keys() for _, row, _ in rows if row)), rows
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise DataError(f"{self.metadata_path}:{line}: undecodable text (not UTF-8)") from None
        header, rows = self._csv_rows(text)
        return set(header), rows

    def _csv_rows(self, text: str) -> tuple[list[str], list[tuple[int, dict[str, Any] | None, str]]]:
        """The header and (line number, row or None, problem) of a CSV file; a field over MAX_CSV_FIELD is a bad row."""
        limit = csv.field_size_limit()
        csv.field_size_limit(max(limit, len(text) + 1))  # bounded by the file, already in memory; checked per field below
        try:
            reader = csv.reader(io.StringIO(text))
            header = next(reader, None)
            if not header:
                raise DataError(f"{self.metadata_path}: empty CSV file (no header)")
            if max(map(len, header)) > MAX_CSV_FIELD:
                raise DataError(f"{self.metadata_path}:1: a header field is over {MAX_CSV_FIELD // 1024} KB")
            rows: list[tuple[int, dict[str, Any] | None, str]] = []
            for values in reader:
                number = reader.line_num
                longest = max(range(len(values)), key=lambda i: len(values[i]), default=0)
                if not any(v.strip() for v in values):
                    continue
                if len(values[longest]) > MAX_CSV_FIELD:
                    column = header[longest] if longest < len(header) else f"field {longest + 1}"
                    rows.append((number, None, f"field '{column}' is {len(values[longest]) // 1024} KB, over the limit "
                                               f"of {MAX_CSV_FIELD // 1024} KB"))
                elif len(values) != len(header):
                    rows.append((number, None, f"row has {len(values)} fields but the header has {len(header)}"))
                else:
                    rows.append((number, dict(zip(header, values)), ""))
            return header, rows
        finally:
            csv.field_size_limit(limit)

    def _load_metadata(self) -> None:
        columns, raw_rows = self._raw_rows()
        file_column = next((c for c in FILE_COLUMNS if c in columns), None)
        caption_column = self.caption_field or next((c for c in CAPTION_COLUMNS if c in columns), None)
        if file_column is None:
            raise DataError(f"{self.metadata_path}: no image column (one of {', '.join(FILE_COLUMNS)}); columns: {sorted(columns)}")
        if caption_column is None or caption_column not in columns:
            wanted = caption_column or " or ".join(CAPTION_COLUMNS)
            raise DataError(f"{self.metadata_path}: no caption column '{wanted}'; columns: {sorted(columns)}")
        seen: set[str] = set()
        for number, row, problem in raw_rows:
            where = f"{self.metadata_path}:{number}"
            try:
                if row is None:
                    raise RecordError(where, problem)
                record_id, image_path, caption, attributes = self._row(row, where, file_column, caption_column)
                if record_id in seen:
                    raise RecordError(where, f"duplicate id '{record_id}'")
            except RecordError as error:
                self.skipped.defect(error)
                continue
            seen.add(record_id)
            self.rows.append((record_id, image_path, caption, attributes))
        if not self.rows:
            raise DataError(f"{self.metadata_path}: no usable rows ({self.skipped.summary()})")

    def _row(self, row: dict[str, Any], where: str, file_column: str,
             caption_column: str) -> tuple[str, Path, str, dict[str, Any]]:
        """One metadata row as (id, image path, caption, attributes); RecordError naming `where` for a defect. The image
        must be a regular file inside the dataset folder (`utils.file_inside`: no absolute path, no '..', no symlink out)."""
        if not row.get(file_column):
            raise RecordError(where, f"no '{file_column}' value")
        caption = clean_caption(str(row.get(caption_column) or ""), f"{where}:{caption_column}")
        file = check_text(str(row[file_column]), f"{where}:{file_column}", "the file name")
        try:
            image_path = file_inside(self.path, file)
        except ValueError as error:
            raise RecordError(where, f"'{file_column}': {error}; images must lie inside the dataset folder") from None
        if not image_path.exists():
            raise RecordError(where, f"image file {image_path} not found")
        try:
            regular_file(image_path)
        except NotRegularFile as error:
            raise RecordError(where, f"image {error}") from None
        given = row.get("id")
        record_id = str(given) if given not in (None, "") else Path(file).stem  # id 0 is an id
        check_text(record_id, f"{where}:id", "the id")
        attributes = {
            ALIASES.get(snake_case(key), snake_case(key)): value
            for key, value in row.items()
            if key not in (file_column, caption_column, "id") and value not in (None, "")
        }
        for key, value in attributes.items():
            if isinstance(value, str):
                check_text(value, f"{where}:{key}", "the value")
        return record_id, image_path, caption, attributes

    def __len__(self) -> int:
        return len(self.rows)

    def image_files(self) -> list[Path]:
        """The image file of every row (the content-hash cache checks their sizes and times)."""
        return [image_path for _, image_path, _, _ in self.rows]

    def meta(self, index: int) -> RecordMeta:
        record_id, _, caption, attributes = self.rows[index]
        return RecordMeta(id=record_id, caption=caption, attributes=dict(attributes))

    def __getitem__(self, index: int) -> Record:
        record_id, image_path, caption, attributes = self.rows[index]
        image = decode_image(image_path, str(image_path))
        return Record(id=record_id, image=image, caption=caption, attributes=dict(attributes))
