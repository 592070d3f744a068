"""Model files for every generator family: safetensors weights plus model.json, the description that rebuilds them.

    write_model_files(model.state_dict(), info, directory)        # into a folder from replacing_directory(OUT)
    info = read_info("runs/001-small64/export")                     # ModelInfo: the typed view of model.json
    files = read_model_files("runs/001-small64")                   # an export, a checkpoint or a run directory

model.json holds the family (`diffusion`, `superres`, later `gan`), the network's description (no YAML needed),
the family's own settings (diffusion: its noise schedule), the caption encoder's identity (a model trained with one
encoder is useless with another), the attribute vocabulary, training facts, the full config, the sha256 of the
weights and the sha256 of model.json's own canonical content, both checked at load. Which network a description
builds, and its parameter count, is the family's business (fashiongen.families); nothing here needs torch.nn.

Writing never touches what the user did not ask to replace: OUT must be new, empty, or a model folder of ours
(model.json / pipeline.json), `overwrite=True` for anything else, and the package's shipped model only with
`overwrite=True`. A replacement is built in a hidden sibling and swapped in by one atomic rename (RENAME_EXCHANGE
on Linux), so a kill at any point leaves the old folder or the new one; leftovers of a killed write are cleared by
the next write to the same OUT.

Files written by earlier versions still load: format "fashiongen-diffusion" version 1 (no description digest) and 2
(family implied by the network: super-resolution or not); this version writes "fashiongen-model" version 3.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..config import Config, ConfigError, check_section, config_to_dict, load_config
from ..runs import EMA_FILE, STATE_FILE, MetricsLog, checkpoint_dirs, read_state, run_facts
from ..utils import disk_problem, first_line

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
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = PACKAGE_DIR / "pretrained"  # the shipped default model, inside the package
BUNDLED_CRITIC = DEFAULT_MODEL_DIR / "critic"  # the critic evaluate.py scores with by default, shipped beside it
# the shipped GAN (one forward an image), beside the diffusion default: a sibling, so republishing either folder
# (an atomic replace of the whole folder) never takes the other with it
BUNDLED_GAN = PACKAGE_DIR / "pretrained-gan"
BUNDLED_STUDENT = DEFAULT_MODEL_DIR / "student"  # the default model's few-step student (a base of its pipeline)
# what --model diffusion / student / gan mean
SHIPPED_MODELS = {"diffusion": DEFAULT_MODEL_DIR, "student": BUNDLED_STUDENT, "gan": BUNDLED_GAN}


class ModelFileError(ValueError):
    """A path is not a FashionGen model, or its weights do not match their recorded checksum."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def description_digest(info: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a model description, without the digest itself."""
    content = {key: value for key, value in info.items() if key != DESCRIPTION_DIGEST}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or malformed file, or one holding NaN or infinite values (a diverged
    model draws uniformly black images, and a recomputed checksum cannot tell), raises ModelFileError naming it."""
    try:
        state = load_file(path)
    except Exception as error:  # safetensors raises SafetensorError, OSError, or others on a damaged file
        reason = first_line(error)
        raise ModelFileError(f"{path}: not a readable safetensors file ({reason})") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: tensor {name} holds NaN or infinite values (a diverged or damaged model); "
                                 "export an earlier checkpoint or re-download the model")
    return state


# ---------------------------------------------------------------------------------------------- the typed view


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
        family = raw.get("family", _legacy_family(raw))
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


def _legacy_family(raw: Mapping[str, Any]) -> str:
    """Files written before "family" existed were diffusion models: super-resolution ones by their network's flag."""
    return "superres" if _section(raw, "model", "spec").get("super_resolution") else "diffusion"


# ---------------------------------------------------------------------------------------------- writing


def training_description(config: Config, text_identity: str, text_dim: int,
                         training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The part of model.json every family writes alike: caption encoder, training data, training facts, config."""
    return {
        "text": {"encoder": config.text.encoder, "identity": text_identity, "max_length": config.text.max_length,
                 "normalize_pooled": config.text.normalize_pooled, "dim": text_dim},
        "data": {"source": config.data.source, "split": config.data.split, "resolution": config.data.resolution,
                 "caption_mode": config.data.caption_mode, "caption_template": config.data.caption_template},
        "training": training or {},
        "config": config_to_dict(config),
    }



def write_model_files(state_dict: Mapping[str, torch.Tensor], info: Mapping[str, Any] | ModelInfo, directory: Path,
                      dtype: str = "float32") -> ModelInfo:
    """model.safetensors + model.json into an existing (temporary) directory; returns the description written.
    `info` is everything but the weights entry and the digest, which are computed here."""
    raw = info.to_dict() if isinstance(info, ModelInfo) else dict(info)
    state = {name: tensor.detach().to("cpu", DTYPES[dtype]).contiguous() for name, tensor in state_dict.items()}
    save_file(state, directory / WEIGHTS_FILE, metadata={"format": MODEL_FORMAT})
    raw = {key: value for key, value in raw.items() if key not in ("weights", DESCRIPTION_DIGEST)}
    raw = {"format": MODEL_FORMAT, **raw, "version": MODEL_VERSION, "family": raw.get("family", _legacy_family(raw))}
    raw["format"] = MODEL_FORMAT
    raw["weights"] = {"file": WEIGHTS_FILE, "dtype": dtype, "sha256": sha256_of(directory / WEIGHTS_FILE)}
    raw[DESCRIPTION_DIGEST] = description_digest(raw)
    (directory / INFO_FILE).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    (directory / WEIGHTS_FILE).chmod((directory / INFO_FILE).stat().st_mode)  # safetensors writes 0600
    return ModelInfo.from_dict(raw, directory / INFO_FILE)


def named_files(raw: Any) -> list[str]:
    """Every file a model.json names (its weights, a discriminator's weights...): the "file" of each entry that also
    records a sha256, at any depth."""
    if isinstance(raw, dict):
        own = [raw["file"]] if isinstance(raw.get("file"), str) and "sha256" in raw else []
        return own + [name for value in raw.values() for name in named_files(value)]
    if isinstance(raw, list):
        return [name for value in raw for name in named_files(value)]
    return []


def copy_unchanged(info: ModelInfo, source: Path, directory: Path, dtype: str) -> bool:
    """Copy `source`'s model.json and the files it names into `directory` byte for byte when they describe exactly
    `info` at `dtype`; False (nothing copied) otherwise. A model republished unchanged (a folder that gains a stage)
    then keeps its files: no second copy of its weights in git, every recorded sha256 still valid."""
    try:
        on_disk = read_info(source)
    except (ModelFileError, OSError):
        return False
    if on_disk.raw != info.raw or on_disk.weights is None or on_disk.weights.dtype != dtype:
        return False
    names = [INFO_FILE, *named_files(on_disk.raw)]
    if not all((source / name).is_file() and Path(name).name == name for name in names):
        return False
    for name in names:
        shutil.copyfile(source / name, directory / name)
    return sha256_of(directory / on_disk.weights.file) == on_disk.weights.sha256  # changed since it was loaded: rewrite


def _is_ours(path: Path) -> bool:
    """A folder holding a model of ours: model.json or pipeline.json with one of our format names."""
    for name in (INFO_FILE, PIPELINE_INFO_FILE):
        try:
            if (path / name).stat().st_size <= MAX_INFO_BYTES:
                info = json.loads((path / name).read_text(encoding="utf-8"))
                if isinstance(info, dict) and str(info.get("format", "")).startswith("fashiongen-"):
                    return True
        except (OSError, ValueError):
            continue
    return False


def check_output_dir(out_dir: Path, overwrite: bool = False, protected: Sequence[Path] = ()) -> None:
    """Refuse, before any work, an OUT whose replacement would lose something the user did not ask to replace:
    an existing file or link, a non-empty folder that is not a model of ours, or a `protected` folder (the
    package's shipped model) unless `overwrite`; and an OUT whose parent cannot be written."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise ModelFileError(f"{out_dir}: is a symbolic link; pass the folder it points to")
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelFileError(f"{out_dir}: exists and is not a folder; remove it or choose another output folder")
    if not overwrite and any(out_dir.resolve() == Path(p).resolve() for p in protected):
        raise ModelFileError(f"{out_dir}: is a model shipped in the package (the shipped default model or GAN); pass --overwrite to replace it")
    if out_dir.is_dir() and not overwrite and any(out_dir.iterdir()) and not _is_ours(out_dir):
        raise ModelFileError(f"{out_dir}: folder is not empty and holds no FashionGen model ({INFO_FILE} or "
                             f"{PIPELINE_INFO_FILE}); choose a new or empty folder, or pass --overwrite to replace it")
    parent = out_dir.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ModelFileError(f"{out_dir}: cannot write in {parent} (read-only or no permission)")


def temporary_directory(out_dir: Path) -> Path:
    """A fresh hidden sibling of `out_dir` to fill before `replace_directory` swaps it in. Leftovers of a killed
    write to the same `out_dir` are cleared first (and a previous folder stranded mid-swap is put back)."""
    out_dir = Path(out_dir)
    temporary = out_dir.with_name(f".tmp-{out_dir.name}")
    previous = out_dir.with_name(f".old-{out_dir.name}")
    if previous.is_dir() and not out_dir.exists():  # killed between the two renames of the fallback swap
        previous.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic rename (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_directory(temporary: Path, out_dir: Path) -> Path:
    """Put a complete directory in place of `out_dir` by renames, so no reader ever sees half of one."""
    if not out_dir.exists():
        temporary.rename(out_dir)
        return out_dir
    if _exchange(temporary, out_dir):  # `temporary` now holds the old folder
        shutil.rmtree(temporary, ignore_errors=True)
        return out_dir
    previous = out_dir.with_name(f".old-{out_dir.name}")
    shutil.rmtree(previous, ignore_errors=True)
    out_dir.rename(previous)
    temporary.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
    return out_dir


@contextmanager
def replacing_directory(out_dir: str | Path, overwrite: bool = False, protected: Sequence[Path] = ()) -> Iterator[Path]:
    """Check `out_dir` (see `check_output_dir`), yield an empty temporary folder to fill, and swap it in on success;
    on any failure the temporary folder is removed and `out_dir` is untouched."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite, protected)
    temporary = temporary_directory(out_dir)
    try:
        yield temporary
        replace_directory(temporary, out_dir)
    except Exception as error:  # safetensors and json report a full disk as their own exceptions
        problem = disk_problem(error, temporary)
        shutil.rmtree(temporary, ignore_errors=True)
        if problem is None:
            raise
        raise ModelFileError(f"{out_dir}: {problem}; nothing was replaced") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # still there only when something failed


# ---------------------------------------------------------------------------------------------- reading


def read_versioned_json(info_path: Path, formats: Mapping[str, int]) -> dict[str, Any]:
    """A JSON description, checked for one of our `formats` ({name: newest version this FashionGen reads})."""
    try:
        if info_path.stat().st_size > MAX_INFO_BYTES:
            raise ModelFileError(f"{info_path}: {info_path.stat().st_size} bytes, too large for a model description")
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{info_path}: not valid JSON ({error})") from None
    except OSError as error:
        raise ModelFileError(f"{info_path}: cannot be read ({error.strerror})") from None
    if not isinstance(info, dict):
        raise ModelFileError(f"{info_path}: expected a JSON object, got {type(info).__name__}")
    if not isinstance(info.get("version", 0), int):
        raise ModelFileError(f"{info_path}: version is {info.get('version')!r}, expected an integer")
    if info.get("format") not in formats:
        expected = " or ".join(repr(name) for name in formats)
        raise ModelFileError(f"{info_path}: format is {info.get('format')!r}, expected {expected}")
    if info.get("version", 0) > formats[info["format"]]:
        raise ModelFileError(f"{info_path}: version {info['version']} is newer than this FashionGen reads "
                             f"({formats[info['format']]})")
    return info


def read_info(path: str | Path) -> ModelInfo:
    """model.json of a model folder, checked (format, version, digest, fields), with a clear error when `path` is not one."""
    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise ModelFileError(f"{path} is not an exported FashionGen model (no {INFO_FILE})")
    raw = read_versioned_json(info_path, {MODEL_FORMAT: MODEL_VERSION, **LEGACY_FORMATS})
    recorded = raw.get(DESCRIPTION_DIGEST)
    if recorded is None and raw.get("version", 0) >= 2:
        raise ModelFileError(f"{info_path}: {DESCRIPTION_DIGEST}: missing (required from version 2)")
    if recorded is not None and recorded != description_digest(raw):
        raise ModelFileError(f"{info_path}: {DESCRIPTION_DIGEST}: does not match the file's content (model.json edited "
                             "or corrupted); re-export or re-download the model")
    if raw.get("weights") is None:
        raise ModelFileError(f"{info_path}: weights: expected {{file: NAME.safetensors in this folder, sha256, dtype}}")
    return ModelInfo.from_dict(raw, info_path)


@dataclass
class ModelFiles:
    """What a family needs to build a model for inference: its weights and either its model.json (an export) or,
    for a checkpoint, the resolved config and state.json it rebuilds the description from."""

    directory: Path  # where the weights came from
    state_dict: dict[str, torch.Tensor]
    info: ModelInfo | None = None  # exports
    config: Config | None = None  # checkpoints
    state: dict[str, Any] = field(default_factory=dict)  # checkpoints: state.json
    training: dict[str, Any] = field(default_factory=dict)  # checkpoints: the facts an export would record
    weights_sha256: str = ""

    @property
    def where(self) -> Path:
        return self.directory / (INFO_FILE if self.info is not None else STATE_FILE)


def _export_files(path: Path, verify: bool) -> ModelFiles:
    info = read_info(path)
    assert info.weights is not None
    weights = path / info.weights.file
    if not weights.is_file():
        raise ModelFileError(f"{path}: weights file {weights.name} is missing")
    if verify and sha256_of(weights) != info.weights.sha256:
        raise ModelFileError(f"{weights}: checksum does not match model.json (file corrupted or replaced); "
                             "re-export or re-download the model")
    return ModelFiles(path, load_weights(weights), info=info, weights_sha256=info.weights.sha256)


def _checkpoint_files(checkpoint: Path) -> ModelFiles:
    """A checkpoint's EMA weights with its resolved config and state (no Accelerate: inference needs neither
    optimizer nor RNG states), and the training facts an export of it would record."""
    try:
        config = load_config([checkpoint / "config.yaml"])
        state = read_state(checkpoint)
    except ConfigError as error:
        raise ModelFileError(str(error)) from None
    weights = checkpoint / EMA_FILE
    training = {"steps": state["step"], "images_seen": state.get("images_seen"), "run": checkpoint.parent.parent.name,
                "checkpoint": checkpoint.name, "num_processes": state.get("num_processes"),
                "images_per_step": state.get("images_per_step"), "mixed_precision": config.train.mixed_precision,
                "hardware": state.get("hardware"), "initialised_from": state.get("initialised_from")}
    metrics = checkpoint.parent.parent / "metrics.jsonl"
    if metrics.is_file():
        training.update(run_facts(MetricsLog(metrics).read(), state["step"]))
    return ModelFiles(checkpoint, load_weights(weights), config=config, state=state, training=training,
                      weights_sha256=sha256_of(weights))


def find_model_dir(path: str | Path) -> Path:
    """The folder whose weights `path` means: an exported model, a checkpoint, or a run directory (its newest
    checkpoint, else its export/)."""
    path = Path(path)
    if (path / INFO_FILE).is_file() or ((path / STATE_FILE).is_file() and (path / EMA_FILE).is_file()):
        return path
    if path.is_dir() and (checkpoints := checkpoint_dirs(path)):
        return find_model_dir(checkpoints[-1])
    if path.is_dir() and (path / "export" / INFO_FILE).is_file():
        return path / "export"
    if not path.exists():
        raise ModelFileError(f"model path {path} does not exist")
    raise ModelFileError(f"{path} is not a FashionGen model: expected an exported model ({INFO_FILE}), a pipeline "
                         f"folder, a checkpoint directory ({STATE_FILE} + {EMA_FILE}) or a run directory "
                         "with checkpoints")


def read_model_files(path: str | Path, verify: bool = True) -> ModelFiles:
    """The weights (checksum verified) and description of an exported model, a checkpoint or a run directory."""
    directory = find_model_dir(path)
    if (directory / INFO_FILE).is_file():
        return _export_files(directory, verify)
    return _checkpoint_files(directory)


__all__ = ["BUNDLED_CRITIC", "BUNDLED_GAN", "BUNDLED_STUDENT", "SHIPPED_MODELS", "DEFAULT_MODEL_DIR", "DTYPES", "DataInfo", "INFO_FILE", "MODEL_FORMAT", "MODEL_VERSION",
           "ModelFileError", "ModelFiles", "ModelInfo", "PIPELINE_INFO_FILE", "TextInfo", "WEIGHTS_FILE", "WeightsInfo",
           "check_output_dir", "copy_unchanged", "description_digest", "find_model_dir", "load_weights", "read_info", "read_model_files",
           "named_files", "read_versioned_json", "replacing_directory", "sha256_of", "write_model_files"]
