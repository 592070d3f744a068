"""Exported models: EMA weights in safetensors plus a JSON description that rebuilds them.

    export_model(ema_model, config, text_identity, "runs/001-small64/export")
    model, info = load_exported("runs/001-small64/export")

model.json holds the architecture (no YAML needed), the diffusion settings, the caption encoder's
identity (a model trained with one encoder is useless with another), the attribute vocabulary,
training facts, the full config, the sha256 of the weights and (version 2) the sha256 of model.json's
own canonical content, both checked at load; the architecture's parameter count is checked before
anything is built, so an edited model.json cannot make a loader allocate a network 100x too big.

Writing never touches what the user did not ask to replace: OUT must be new, empty, or a model
folder of ours (model.json / pipeline.json), `overwrite=True` for anything else, and the package's
shipped model only with `overwrite=True`. A replacement is built in a hidden sibling and swapped in
by one atomic rename (RENAME_EXCHANGE on Linux), so a kill at any point leaves the old folder or the
new one; leftovers of a killed write are cleared by the next write to the same OUT.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..config import Config, ConfigError, config_to_dict, load_config
from ..utils import disk_problem, first_line
from ..diffusion import diffusion_settings
from ..models import FashionUNet, build_model, check_description, get_spec
from .checkpoint import STATE_FILE, checkpoint_dirs, read_state
from .runs import MetricsLog, run_facts

EXPORT_FORMAT = "fashiongen-diffusion"
EXPORT_VERSION = 2  # 2: model.json carries DESCRIPTION_DIGEST (version 1 files, without it, still load)
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
PIPELINE_INFO_FILE = "pipeline.json"  # a saved pipeline's manifest (written by pipeline.py)
DESCRIPTION_DIGEST = "description_sha256"
MAX_INFO_BYTES = 16 * 2**20  # a model's JSON description is a few kB; refuse to parse a huge one
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelFileError(ValueError):
    """A path is not an exported FashionGen model, or its weights do not match their recorded checksum."""


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def description_digest(info: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a model description, without the digest itself."""
    content = {key: value for key, value in info.items() if key != DESCRIPTION_DIGEST}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or malformed file raises ModelFileError naming it."""
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises SafetensorError, OSError, or others on a damaged file
        reason = first_line(error)
        raise ModelFileError(f"{path}: not a readable safetensors file ({reason})") from None


def export_info(model: FashionUNet, config: Config, text_identity: str, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.json without its "weights" entry: everything that rebuilds and describes the model."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model": model.description(),
        "diffusion": diffusion_settings(config.model),
        "text": {"encoder": config.text.encoder, "identity": text_identity, "max_length": config.text.max_length,
                 "normalize_pooled": config.text.normalize_pooled, "dim": model.description()["text_dim"]},
        "data": {"source": config.data.source, "split": config.data.split, "resolution": config.data.resolution,
                 "caption_mode": config.data.caption_mode, "caption_template": config.data.caption_template},
        "training": training or {},
        "config": config_to_dict(config),
    }


def write_model_files(model: FashionUNet, info: dict[str, Any], directory: Path, dtype: str = "float32") -> dict[str, Any]:
    """model.safetensors + model.json into an existing (temporary) directory; returns the info written."""
    state = {name: tensor.detach().to("cpu", DTYPES[dtype]).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE, metadata={"format": EXPORT_FORMAT})
    info = {key: value for key, value in info.items() if key not in ("weights", DESCRIPTION_DIGEST)}
    info = {**info, "version": EXPORT_VERSION,
            "weights": {"file": WEIGHTS_FILE, "dtype": dtype, "sha256": sha256_of(directory / WEIGHTS_FILE)}}
    info[DESCRIPTION_DIGEST] = description_digest(info)
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (directory / WEIGHTS_FILE).chmod((directory / INFO_FILE).stat().st_mode)  # safetensors writes 0600
    return info


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
        raise ModelFileError(f"{out_dir}: is the package's shipped default model; pass --overwrite to replace it")
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


def export_model(model: FashionUNet, config: Config, text_identity: str, out_dir: str | Path, *,
                 dtype: str = "float32", training: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write model.safetensors + model.json into `out_dir`, replacing it only once both are complete."""
    with replacing_directory(out_dir, overwrite) as temporary:
        write_model_files(model, export_info(model, config, text_identity, training), temporary, dtype)
    return Path(out_dir)


def read_versioned_json(info_path: Path, expected_format: str, max_version: int) -> dict[str, Any]:
    """A model's JSON description, checked for its format name and a version this FashionGen reads."""
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
    if info.get("format") != expected_format:
        raise ModelFileError(f"{info_path}: format is {info.get('format')!r}, expected {expected_format!r}")
    if info.get("version", 0) > max_version:
        raise ModelFileError(f"{info_path}: version {info['version']} is newer than this FashionGen reads ({max_version})")
    return info


def read_info(path: str | Path) -> dict[str, Any]:
    """model.json of an export directory, with a clear error when `path` is not one."""
    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise ModelFileError(f"{path} is not an exported FashionGen model (no {INFO_FILE})")
    info = read_versioned_json(info_path, EXPORT_FORMAT, EXPORT_VERSION)
    recorded = info.get(DESCRIPTION_DIGEST)
    if recorded is None and info.get("version", 0) >= 2:
        raise ModelFileError(f"{info_path}: {DESCRIPTION_DIGEST}: missing (required from version 2)")
    if recorded is not None and recorded != description_digest(info):
        raise ModelFileError(f"{info_path}: {DESCRIPTION_DIGEST}: does not match the file's content (model.json edited "
                             "or corrupted); re-export or re-download the model")
    weights = info.get("weights")
    if not (isinstance(weights, dict) and isinstance(weights.get("file"), str) and isinstance(weights.get("sha256"), str)
            and weights["file"] == Path(weights["file"]).name and weights["file"].endswith(".safetensors")):
        raise ModelFileError(f"{info_path}: weights: expected {{file: NAME.safetensors in this folder, sha256, dtype}}")
    for key in ("model", "diffusion", "text"):
        if not isinstance(info.get(key), dict):
            raise ModelFileError(f"{info_path}: {key}: missing or not an object")
    return info


def model_from_info(info: dict[str, Any], info_path: Path) -> FashionUNet:
    """Build the network model.json describes, after checking every field and its parameter count."""
    try:
        return FashionUNet.from_description(info["model"])
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFileError(f"{info_path}: {error}") from None


def load_exported(path: str | Path, device: str | torch.device = "cpu", dtype: str | None = None,
                  verify: bool = True) -> tuple[FashionUNet, dict[str, Any]]:
    """Rebuild the model from model.json and load its weights (checksum verified) on `device` in `dtype`."""
    path = Path(path)
    info = read_info(path)
    weights = path / info["weights"]["file"]
    if not weights.is_file():
        raise ModelFileError(f"{path}: weights file {weights.name} is missing")
    if verify and sha256_of(weights) != info["weights"]["sha256"]:
        raise ModelFileError(f"{weights}: checksum does not match model.json (file corrupted or replaced); "
                             "re-export or re-download the model")
    model = model_from_info(info, path / INFO_FILE)
    state = load_weights(weights)
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (RuntimeError, OSError) as error:
        raise ModelFileError(f"{weights}: weights do not fit the architecture in model.json ({error})") from None
    target = DTYPES[dtype or "float32"]
    return model.to(device=device, dtype=target).eval().requires_grad_(False), info


def load_checkpoint_model(checkpoint: str | Path, device: str | torch.device = "cpu",
                          dtype: str | None = None) -> tuple[FashionUNet, dict[str, Any]]:
    """A checkpoint's EMA model, rebuilt from its config and state, with the model.json an export of it would have."""
    checkpoint = Path(checkpoint)
    try:
        config = load_config([checkpoint / "config.yaml"])
        state = read_state(checkpoint)
    except ConfigError as error:
        raise ModelFileError(str(error)) from None
    vocab = state.get("attribute_vocab") or {}
    try:
        spec = get_spec(config.model.name)
        check_description({"spec": {**spec.__dict__, "block_out_channels": list(spec.block_out_channels)},
                           "resolution": config.data.resolution, "text_dim": state.get("text_dim"),
                           "pooled_text": config.model.pooled_text, "attribute_vocab": vocab})
        model = build_model(config.model, config.data.resolution, state["text_dim"], vocab)
    except (ValueError, TypeError, KeyError) as error:
        raise ModelFileError(f"{checkpoint / STATE_FILE}: {error}") from None
    weights = checkpoint / "ema.safetensors"
    state_dict = load_weights(weights)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, OSError) as error:
        raise ModelFileError(f"{weights}: EMA weights do not fit the checkpoint's config ({error})") from None
    training = {"steps": state["step"], "images_seen": state.get("images_seen"), "run": checkpoint.parent.parent.name,
                "checkpoint": checkpoint.name, "num_processes": state.get("num_processes"),
                "images_per_step": state.get("images_per_step"), "mixed_precision": config.train.mixed_precision,
                "hardware": state.get("hardware"), "initialised_from": state.get("initialised_from")}
    metrics = checkpoint.parent.parent / "metrics.jsonl"
    if metrics.is_file():
        training.update(run_facts(MetricsLog(metrics).read(), state["step"]))
    info = export_info(model, config, state["text_identity"], training)
    info["weights"] = {"file": weights.name, "dtype": "float32", "sha256": sha256_of(weights)}
    return model.to(device=device, dtype=DTYPES[dtype or "float32"]).eval().requires_grad_(False), info


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | None = None,
               verify: bool = True) -> tuple[FashionUNet, dict[str, Any], Path]:
    """An exported model, a checkpoint (its EMA weights) or a run directory (its newest checkpoint, else its export).

    Returns the model, its model.json (exports) or the model.json an export would have (checkpoints), and the
    directory the weights came from.
    """
    path = Path(path)
    if (path / INFO_FILE).is_file():
        return (*load_exported(path, device, dtype, verify), path)
    if (path / STATE_FILE).is_file() and (path / "ema.safetensors").is_file():
        return (*load_checkpoint_model(path, device, dtype), path)
    if path.is_dir() and (checkpoints := checkpoint_dirs(path)):
        return load_model(checkpoints[-1], device, dtype, verify)
    if path.is_dir() and (path / "export" / INFO_FILE).is_file():
        return load_model(path / "export", device, dtype, verify)
    if not path.exists():
        raise ModelFileError(f"model path {path} does not exist")
    raise ModelFileError(f"{path} is not a FashionGen model: expected an exported model ({INFO_FILE}), a pipeline "
                         f"folder, a checkpoint directory ({STATE_FILE} + ema.safetensors) or a run directory "
                         "with checkpoints")
