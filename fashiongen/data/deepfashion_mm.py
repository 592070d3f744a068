"""DeepFashion-MultiModal (Text2Human): full-body photos with one caption each and shape/texture labels.

A root folder holds `images/` (or `image/`, as the release names it), `captions.json`
({image name: caption}) and optional label files under `labels/`. The records are the images
that have a caption; gender, category, product id and pose come from the image name, and the
integer labels are decoded to words (NA, 'not visible', is dropped).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from ..utils import NotRegularFile, file_inside, open_regular, regular_file
from .images import decode_image
from .records import AttributeValue, DataError, Record, RecordError, RecordMeta, SkipLog, clean_caption, require_path

IMAGE_DIRS = ("images", "image")
CAPTIONS_FILE = "captions.json"
NA = "NA"
# Label file -> the attribute each column after the image name becomes, with its value names
# (index = the integer in the file; the last name of every column is NA). Neckline follows the
# released data (7 values, 6 = NA); the dataset README skips a 3 there by a typo.
_FABRIC = ("denim", "cotton", "leather", "furry", "knitted", "chiffon", "other", NA)
_PATTERN = ("floral", "graphic", "striped", "pure color", "lattice", "other", "color block", NA)
LABEL_FILES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "labels/shape/shape_anno_all.txt": (
        ("sleeve_length", ("sleeveless", "short-sleeve", "medium-sleeve", "long-sleeve", "not long-sleeve", NA)),
        ("lower_clothing_length", ("three-point", "medium short", "three-quarter", "long", NA)),
        ("socks", ("no", "socks", "leggings", NA)),
        ("hat", ("no", "yes", NA)),
        ("glasses", ("no", "eyeglasses", "sunglasses", "glasses in hand or on clothes", NA)),
        ("neckwear", ("no", "yes", NA)),
        ("wrist_wearing", ("no", "yes", NA)),
        ("ring", ("no", "yes", NA)),
        ("waist_accessories", ("no", "belt", "clothing", "hidden", NA)),
        ("neckline", ("V-shape", "square", "round", "standing", "lapel", "suspenders", NA)),
        ("cardigan", ("yes", "no", NA)),
        ("navel_covered", ("no", "yes", NA)),
    ),
    "labels/texture/fabric_ann.txt": (
        ("upper_fabric", _FABRIC), ("lower_fabric", _FABRIC), ("outer_fabric", _FABRIC),
    ),
    "labels/texture/pattern_ann.txt": (
        ("upper_pattern", _PATTERN), ("lower_pattern", _PATTERN), ("outer_pattern", _PATTERN),
    ),
}
# e.g. WOMEN-Dresses-id_00000002-02_1_front.jpg: gender, category, product, outfit, shot, pose.
NAME_PATTERN = re.compile(r"^(MEN|WOMEN)-([A-Za-z_]+)-(id_\d+)-(\d+)_(\d+)_([A-Za-z]+)\.\w+$")
GENDERS = {"MEN": "Men", "WOMEN": "Women"}
# DeepFashion joins alternatives with '_' ("Jackets_Vests"); these names are one phrase instead.
CATEGORY_PHRASES = {"Graphic_Tees": "Graphic Tees"}


def attributes_from_name(name: str) -> dict[str, AttributeValue]:
    """Gender, category, product id and pose encoded in a DeepFashion image name (empty if it does not match)."""
    match = NAME_PATTERN.match(name)
    if not match:
        return {}
    gender, category, product_id, _, _, pose = match.groups()
    category = CATEGORY_PHRASES.get(category, " & ".join(category.split("_")))
    return {"gender": GENDERS[gender], "category": category, "product_id": product_id, "pose": pose.lower()}


class DeepFashionMMReader:
    """Reader for a DeepFashion-MultiModal root folder."""

    format = "deepfashion-mm"
    native_splits: tuple[str, ...] = ()  # none: the registry splits by product id
    # The captions already describe shapes, fabrics and patterns; the template adds who and what.
    caption_template = "{gender:possessive} {category:lower}, {pose} view"

    @classmethod
    def splits_at(cls, path: Path) -> tuple[str, ...]:
        """Splits a path defines itself."""
        return ()

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        return (path / CAPTIONS_FILE).is_file() and any((path / name).is_dir() for name in IMAGE_DIRS)

    def __init__(self, path: str | Path, *, split: str | None = None, skip_bad_records: bool = True,
                 caption_field: str = "") -> None:
        self.path = Path(path)
        if split is not None:
            raise DataError(f"DeepFashion-MultiModal has no split '{split}' (it defines no splits; "
                            "open it with split=None and split by product id)")
        if caption_field:
            raise DataError(f"DeepFashion-MultiModal has one caption per image ({CAPTIONS_FILE}); "
                            f"caption_field '{caption_field}' cannot be used (leave it empty)")
        require_path(self.path)
        self.skipped = SkipLog(skip=skip_bad_records)
        self.image_dir = self._image_dir()
        labels = self._read_labels()
        self.image_names: list[str] = []  # file name under image_dir of every kept record
        self.rows: list[RecordMeta] = []
        self._read_captions(labels)

    # -- opening ---------------------------------------------------------------------------
    def _image_dir(self) -> Path:
        for name in IMAGE_DIRS:
            if (self.path / name).is_dir():
                return self.path / name
        raise DataError(f"{self.path}: no image folder ({' or '.join(f'{n}/' for n in IMAGE_DIRS)})")

    def _read_labels(self) -> dict[str, dict[str, AttributeValue]]:
        """Image name -> decoded labels from every label file present; bad lines are defects."""
        labels: dict[str, dict[str, AttributeValue]] = {}
        for relative, columns in LABEL_FILES.items():
            label_path = self.path / relative
            if not label_path.is_file():
                continue
            with io.TextIOWrapper(open_regular(label_path), encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    fields = line.split()
                    if not fields:
                        continue
                    try:
                        decoded = self._decode_line(fields, columns, f"{label_path}:{number}")
                    except RecordError as error:
                        self.skipped.defect(error)
                        continue
                    labels.setdefault(fields[0], {}).update(decoded)
        return labels

    @staticmethod
    def _decode_line(fields: list[str], columns: tuple[tuple[str, tuple[str, ...]], ...],
                     where: str) -> dict[str, AttributeValue]:
        if len(fields) != len(columns) + 1:
            raise RecordError(where, f"expected an image name and {len(columns)} labels, found {len(fields)} fields")
        decoded: dict[str, AttributeValue] = {}
        for (attribute, names), text in zip(columns, fields[1:]):
            try:
                value = int(text)
            except ValueError:
                raise RecordError(where, f"{attribute} label '{text}' is not an integer") from None
            if not 0 <= value < len(names):
                raise RecordError(where, f"{attribute} label {value} is out of range 0-{len(names) - 1}")
            if names[value] != NA:
                decoded[attribute] = names[value]
        return decoded

    def _read_captions(self, labels: dict[str, dict[str, AttributeValue]]) -> None:
        captions_path = self.path / CAPTIONS_FILE
        if not captions_path.exists():
            raise DataError(f"{captions_path}: no such file (DeepFashion-MultiModal needs its captions)")
        try:
            with open_regular(captions_path) as handle:  # a FIFO would block forever
                captions = json.loads(handle.read().decode("utf-8"))
        except NotRegularFile as error:
            raise DataError(str(error)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{captions_path}: not valid JSON ({error})") from None
        if not isinstance(captions, dict):
            raise DataError(f"{captions_path}: expected an object mapping image names to captions, "
                            f"found {type(captions).__name__}")
        present = {entry.name for entry in self.image_dir.iterdir()}
        ids: set[str] = set()
        for name in sorted(captions):
            where, text, record_id = f"{captions_path}:{name}", captions[name], Path(name).stem
            try:
                if not isinstance(text, str):
                    raise RecordError(where, f"caption is {type(text).__name__}, expected text")
                caption = clean_caption(text, where)
                if name not in present:
                    raise RecordError(where, f"image file {self.image_dir / name} not found")
                self._check_image(name, where)
                if record_id in ids:
                    raise RecordError(where, f"another image already has the id '{record_id}'")
            except RecordError as error:
                self.skipped.defect(error)
                continue
            ids.add(record_id)
            attributes = attributes_from_name(name) | labels.get(name, {})
            self.image_names.append(name)
            self.rows.append(RecordMeta(id=record_id, caption=caption, attributes=attributes))

    def _check_image(self, name: str, where: str) -> None:
        """A listed image must be a regular file inside the image folder (`utils.file_inside`: no '..', no symlink out)."""
        try:
            regular_file(file_inside(self.image_dir, name))
        except NotRegularFile as error:
            raise RecordError(where, f"image {error}") from None
        except ValueError as error:
            raise RecordError(where, f"{error}; images must lie inside the dataset folder") from None

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def meta(self, index: int) -> RecordMeta:
        return self.rows[index]

    def __getitem__(self, index: int) -> Record:
        meta = self.rows[index]
        image_path = self.image_dir / self.image_names[index]
        image = decode_image(image_path, str(image_path))  # [H, W, 3]
        return Record(id=meta.id, image=image, caption=meta.caption, attributes=dict(meta.attributes))

    def image_files(self) -> list[Path]:
        """The image file of every row (the content-hash cache checks their sizes and times)."""
        return [self.image_dir / name for name in self.image_names]

    def split_keys(self) -> list[str]:
        """Per-row keys for a hash split: the product id, so every view of a product lands together."""
        return [str(meta.attributes.get("product_id", meta.id)) for meta in self.rows]
