"""DeepFashion2: photos with several annotated clothing items each; every item, cropped to its box, is a record.

A split folder holds `image/NNNNNN.jpg` and `annos/NNNNNN.json`; a root holds `train/` and
`validation/` split folders. All annotations are read once at open to index the items
(landmarks and segmentation are ignored); captions are written from the item's labels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..utils import NotRegularFile, file_inside, open_regular, regular_file
from .images import crop_box, decode_image
from .records import AttributeValue, DataError, Record, RecordError, RecordMeta, SkipLog, clean_caption, require_path

SPLIT_NAMES = ("train", "validation")
IMAGE_DIR, ANNO_DIR = "image", "annos"
ITEM_KEY = re.compile(r"^item(\d+)$")
# Integer codes of the item labels, as words (attributes) ...
SCALES = {1: "small", 2: "modest", 3: "large"}
OCCLUSIONS = {1: "slight", 2: "medium", 3: "heavy"}
ZOOM_INS = {1: "none", 2: "medium", 3: "large"}
VIEWPOINTS = {1: "not worn", 2: "frontal", 3: "side or back"}
# ... and as caption phrases; typical values (modest scale, slight occlusion, no zoom) go unsaid.
VIEWPOINT_PHRASES = {1: "not worn", 2: "worn, frontal view", 3: "worn, side or back view"}
SCALE_PHRASES = {1: "small scale", 3: "large scale"}
OCCLUSION_PHRASES = {2: "medium occlusion", 3: "heavy occlusion"}
ZOOM_IN_PHRASES = {2: "medium zoom-in", 3: "large zoom-in"}
SOURCE_PHRASES = {"shop": "shop photo", "user": "consumer photo"}


@dataclass(frozen=True)
class Item:
    """One indexed clothing item: where its pixels are and what its record says."""

    image_path: Path
    key: str  # "item1", "item2", ... inside the annotation
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    meta: RecordMeta


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _word(table: dict[int, str], value: object) -> str | None:
    """The word for an integer code, or None for a missing or unknown code."""
    return table.get(value) if _is_int(value) else None  # type: ignore[arg-type]


def item_caption(category: str, item: dict, source: str | None) -> str:
    """A short sentence from the item's labels, e.g. 'Trousers, not worn, large scale, heavy occlusion'."""
    phrases = [category[:1].upper() + category[1:]]
    for table, key in ((VIEWPOINT_PHRASES, "viewpoint"), (SCALE_PHRASES, "scale"),
                       (OCCLUSION_PHRASES, "occlusion"), (ZOOM_IN_PHRASES, "zoom_in")):
        phrase = _word(table, item.get(key))
        if phrase:
            phrases.append(phrase)
    if source in SOURCE_PHRASES:
        phrases.append(SOURCE_PHRASES[source])
    return ", ".join(phrases)


def item_attributes(category: str, item: dict, anno: dict) -> dict[str, AttributeValue]:
    """Category, photo source, pair and style ids, and the item's labels as words (unknown codes left out)."""
    attributes: dict[str, AttributeValue] = {"category": category}
    if isinstance(anno.get("source"), str):
        attributes["source"] = anno["source"]
    if _is_int(anno.get("pair_id")):
        attributes["pair_id"] = anno["pair_id"]
    if _is_int(item.get("style")):
        attributes["style"] = item["style"]
    for table, key in ((SCALES, "scale"), (OCCLUSIONS, "occlusion"), (ZOOM_INS, "zoom_in"), (VIEWPOINTS, "viewpoint")):
        word = _word(table, item.get(key))
        if word:
            attributes[key] = word
    return attributes


class DeepFashion2Reader:
    """Reader for a DeepFashion2 split folder (image/, annos/) or a root with train/ and validation/."""

    format = "deepfashion2"
    # What a root defines; an instance lists what it found (a lone split folder: its own name, if any).
    native_splits: tuple[str, ...] = SPLIT_NAMES
    caption_template = ""  # captions are already written from the item's labels: nothing to add

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        return cls._is_split_folder(path) or any(cls._is_split_folder(path / name) for name in SPLIT_NAMES)

    @classmethod
    def splits_at(cls, path: Path) -> tuple[str, ...]:
        """Splits a path defines itself: a root's train/ and validation/, or a split folder's own name."""
        if cls._is_split_folder(path):
            return (path.name,) if path.name in SPLIT_NAMES else ()
        return tuple(name for name in SPLIT_NAMES if cls._is_split_folder(path / name))

    @staticmethod
    def _is_split_folder(path: Path) -> bool:
        return (path / IMAGE_DIR).is_dir() and (path / ANNO_DIR).is_dir()

    def __init__(self, path: str | Path, *, split: str | None = None, skip_bad_records: bool = True,
                 caption_field: str = "") -> None:
        self.path = Path(path)
        if caption_field:
            raise DataError(f"DeepFashion2 captions are written from item labels; caption_field "
                            f"'{caption_field}' cannot be used (leave it empty)")
        require_path(self.path)
        self.skipped = SkipLog(skip=skip_bad_records)
        folders = self._split_folders()
        self.native_splits = tuple(name for name in folders if name)
        if split is not None and split not in self.native_splits:
            valid = ", ".join(self.native_splits) or "none; this is a single split folder, open it with split=None"
            raise DataError(f"{self.path}: no DeepFashion2 split '{split}' (valid: {valid})")
        self.items: list[Item] = []
        for name, folder in folders.items():
            if split is None or name == split:
                self._index(folder, f"{name}-" if name else "")

    # -- opening ---------------------------------------------------------------------------
    def _split_folders(self) -> dict[str, Path]:
        """Split name ('' if unknown) -> folder holding image/ and annos/."""
        if self._is_split_folder(self.path):
            own = self.path.name if self.path.name in SPLIT_NAMES else ""
            return {own: self.path}
        found = {name: self.path / name for name in SPLIT_NAMES if self._is_split_folder(self.path / name)}
        if not found:
            raise DataError(f"{self.path}: not a DeepFashion2 folder (needs {IMAGE_DIR}/ and {ANNO_DIR}/, "
                            f"or split folders {' and '.join(f'{n}/' for n in SPLIT_NAMES)} holding them)")
        return found

    def _index(self, folder: Path, id_prefix: str) -> None:
        images = {entry.stem: entry for entry in (folder / IMAGE_DIR).iterdir()}
        for anno_path in sorted((folder / ANNO_DIR).glob("*.json")):
            try:
                anno = self._load_anno(anno_path, images)
            except RecordError as error:
                self.skipped.defect(error)
                continue
            item_keys = sorted((key for key in anno if ITEM_KEY.match(key)), key=lambda k: int(k[4:]))
            for key in item_keys:
                try:
                    self.items.append(self._item(anno_path, anno, key, images[anno_path.stem], id_prefix))
                except RecordError as error:
                    self.skipped.defect(error)

    @staticmethod
    def _load_anno(anno_path: Path, images: dict[str, Path]) -> dict:
        try:
            with open_regular(anno_path) as handle:  # a FIFO would block forever
                anno = json.loads(handle.read().decode("utf-8"))
        except NotRegularFile as error:
            raise RecordError(str(anno_path), f"annotation {error}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RecordError(str(anno_path), f"not valid JSON ({error})") from None
        if not isinstance(anno, dict):
            raise RecordError(str(anno_path), f"expected a JSON object, found {type(anno).__name__}")
        if anno_path.stem not in images:
            raise RecordError(str(anno_path), f"image {anno_path.parent.parent / IMAGE_DIR / anno_path.stem}.jpg not found")
        image = images[anno_path.stem]
        try:  # a regular file inside image/ (`utils.file_inside`: no symlink out)
            regular_file(file_inside(image.parent, image.name))
        except NotRegularFile as error:
            raise RecordError(str(anno_path), f"image {error}") from None
        except ValueError as error:
            raise RecordError(str(anno_path), f"{error}; images must lie inside the dataset folder") from None
        return anno

    @staticmethod
    def _item(anno_path: Path, anno: dict, key: str, image_path: Path, id_prefix: str) -> Item:
        where = f"{anno_path}:{key}"
        item = anno[key]
        if not isinstance(item, dict):
            raise RecordError(where, f"item is {type(item).__name__}, expected an object")
        category = item.get("category_name")
        if not isinstance(category, str) or not category.strip():
            raise RecordError(where, "item has no category_name")
        box = item.get("bounding_box")
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise RecordError(where, f"item has no bounding_box [x1, y1, x2, y2] (found {box!r})")
        category = " ".join(category.split())
        source = anno.get("source") if isinstance(anno.get("source"), str) else None
        caption = clean_caption(item_caption(category, item, source), where)
        meta = RecordMeta(id=f"{id_prefix}{anno_path.stem}-{key}", caption=caption,
                          attributes=item_attributes(category, item, anno))
        return Item(image_path=image_path, key=key, box=(box[0], box[1], box[2], box[3]), meta=meta)

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def meta(self, index: int) -> RecordMeta:
        return self.items[index].meta

    def __getitem__(self, index: int) -> Record:
        item = self.items[index]
        image = decode_image(item.image_path, str(item.image_path))  # [H, W, 3]
        crop = crop_box(image, item.box, f"{item.image_path}:{item.key}")  # [h, w, 3]
        return Record(id=item.meta.id, image=crop, caption=item.meta.caption, attributes=dict(item.meta.attributes))

    def split_keys(self) -> list[str]:
        """Per-row keys for a hash split: the pair id (shop and consumer photos of one garment stay together)."""
        keys = []
        for item in self.items:
            pair_id = item.meta.attributes.get("pair_id")
            keys.append(f"pair-{pair_id}" if pair_id is not None else item.image_path.stem)
        return keys
