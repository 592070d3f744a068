"""model.json, the description every generator family writes: the format's names and versions, its digest, and
ModelInfo, the typed and checked view of it (nothing here needs torch)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import ConfigError, check_section
from ..errors import UserError

MODEL_FORMAT = "fashiongen-model"
MODEL_VERSION = 3  # 3: format "fashiongen-model" with a "family" field; 2: "fashiongen-diffusion" with its digest
LEGACY_FORMATS = {"fashiongen-diffusion": 2}  # what earlier versions wrote, and the newest version of each
FAMILIES_WRITTEN = ("diffusion", "superres", "gan", "upsampler", "student")  # the families a model.json may name (fashiongen.families loads them)
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
PIPELINE_INFO_FILE = "pipeline.json"  # a saved pipeline's manifest (written by pipeline.py)
DESCRIPTION_DIGEST = "description_sha256"
MAX_INFO_BYTES = 16 * 2**20  # a model's JSON description is a few kB; refuse to parse a huge one
CONFIG_SECTIONS = ("data", "text", "model", "train", "critic", "gan", "upsampler", "distill")  # checked in model.json


class ModelFileError(UserError, ValueError):
    """A path is not a FashionGen model, or its weights do not match their recorded checksum."""


def description_digest(info: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a model description, without the digest itself."""
    content = {key: value for key, value in info.items() if key != DESCRIPTION_DIGEST}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _section(raw: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """raw[k1][k2]... as a dict ({} where a level is missing or not an object)."""
    node: Any = raw
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return dict(node) if isinstance(node, Mapping) else {}


@dataclass(frozen=True)
class TextInfo:
    """The caption encoder a model was trained with: the pipeline loads this one and checks its identity."""

    encoder: str
    identity: str
    max_length: int
    normalize_pooled: bool
    dim: int | None = None
    dtype: str = "float32"


@dataclass(frozen=True)
class DataInfo:
    """What the model was trained on, and how its photos were squared (edit inputs are squared the same way)."""

    source: str | None = None
    split: str | None = None
    resolution: int | None = None
    caption_mode: str = "raw"
    caption_template: str = ""
    resize_mode: str = "center-crop"


@dataclass(frozen=True)
class WeightsInfo:
    file: str
    sha256: str
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelInfo:
    """model.json, read once and checked: typed fields for what code reads, `raw` for what is written back."""

    family: str
    network: dict[str, Any]  # the network's description ("model" in model.json); the family builds it
    text: TextInfo
    data: DataInfo
    weights: WeightsInfo | None
    training: dict[str, Any] = field(default_factory=dict)  # steps, images_seen, run, initialised_from, ...
    metrics: dict[str, Any] = field(default_factory=dict)  # headline evaluation figures, for the model card
    config: dict[str, Any] = field(default_factory=dict)  # the full resolved training config
    raw: dict[str, Any] = field(default_factory=dict)  # the whole file (family sections such as "diffusion" included)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str | Path = "model.json") -> ModelInfo:
        """Check the fields every family needs; ModelFileError naming `where` and the field otherwise."""
        raw = dict(raw)
        for key in ("model", "text"):
            if not isinstance(raw.get(key), dict):
                raise ModelFileError(f"{where}: {key}: missing or not an object")
        family = raw.get("family", legacy_family(raw))
        if family not in FAMILIES_WRITTEN:
            raise ModelFileError(f"{where}: family: {family!r} is not one this FashionGen knows ({', '.join(FAMILIES_WRITTEN)})")
        text = raw["text"]
        try:
            text_info = TextInfo(str(text["encoder"]), str(text["identity"]), int(text["max_length"]),
                                 bool(text["normalize_pooled"]), text.get("dim"),
                                 str(_section(raw, "config", "text").get("dtype", "float32")))
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"{where}: text: expected encoder, identity, max_length and normalize_pooled ({error})") from None
        data = _section(raw, "data")
        data_info = DataInfo(data.get("source"), data.get("split"), data.get("resolution"), str(data.get("caption_mode", "raw")),
                             str(data.get("caption_template") or ""),
                             str(_section(raw, "config", "data").get("resize_mode", "center-crop")))
        weights = raw.get("weights")
        weights_info = None
        if weights is not None:
            if not (isinstance(weights, dict) and isinstance(weights.get("file"), str) and isinstance(weights.get("sha256"), str)
                    and weights["file"] == Path(weights["file"]).name and weights["file"].endswith(".safetensors")):
                raise ModelFileError(f"{where}: weights: expected {{file: NAME.safetensors in this folder, sha256, dtype}}")
            weights_info = WeightsInfo(weights["file"], weights["sha256"], str(weights.get("dtype", "float32")))
        _check_values(raw, where)
        return cls(family, dict(raw["model"]), text_info, data_info, weights_info, _section(raw, "training"),
                   _section(raw, "metrics"), _section(raw, "config"), raw)

    def section(self, name: str) -> dict[str, Any]:
        """A family's own part of model.json (e.g. "diffusion": its noise schedule); {} when absent."""
        return _section(self.raw, name)

    @property
    def model_name(self) -> str:
        """The registry name of the network (config.model.name), '?' when unknown."""
        return str(_section(self.config, "model").get("name", "?"))

    @property
    def validation_prompts(self) -> list[str]:
        return [str(prompt) for prompt in _section(self.config, "train").get("validation_prompts") or []]

    @property
    def sha256(self) -> str:
        return self.weights.sha256 if self.weights else ""

    def replace(self, **sections: Any) -> ModelInfo:
        """The same description with top-level entries replaced (e.g. metrics=...); weights are recomputed on write."""
        return ModelInfo.from_dict({**self.raw, **sections})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


def _check_values(raw: Mapping[str, Any], where: str | Path) -> None:
    """model.json's settings held to the ranges a config is (text.max_length 10^9 or 0 diffusion steps would fail
    deep inside the encoder or the scheduler): its "text", its "diffusion" schedule and its copy of the config."""
    try:
        check_section("text", raw["text"], where)
        check_section("model", _section(raw, "diffusion"), where, "diffusion")
        for name, values in _section(raw, "config").items():
            if name in CONFIG_SECTIONS:
                check_section(name, values, where, f"config.{name}")
    except ConfigError as error:
        raise ModelFileError(str(error)) from None


def legacy_family(raw: Mapping[str, Any]) -> str:
    """Files written before "family" existed were diffusion models: super-resolution ones by their network's flag."""
    return "superres" if _section(raw, "model", "spec").get("super_resolution") else "diffusion"
