"""Model folders: which folder a --model names (a path, a shipped model by name, the default model), loading a saved
pipeline, export, checkpoint or run directory as stages and their caption encoder, and saving a pipeline folder."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import TextConfig
from ..families import load_generator
from ..generators import ImageFamily
from ..models.files import (
    DEFAULT_MODEL_DIR,
    DTYPES,
    INFO_FILE,
    PIPELINE_INFO_FILE,
    SHIPPED_MODELS,
    ModelFileError,
    copy_unchanged,
    read_versioned_json,
    replacing_directory,
)
from ..models.runtime import RUNTIMES, cpu_support
from ..settings import PipelineInputError
from ..text import CaptionEncoder
from ..utils import file_inside
from .cascade import Cascade
from .publishing import model_card

logger = logging.getLogger(__name__)

PIPELINE_FILE = PIPELINE_INFO_FILE
PIPELINE_FORMAT = "fashiongen-pipeline"
CARD_FILE = "README.md"
CRITIC_DIR = "critic"
BASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def is_pipeline_dir(path: Path) -> bool:
    return (path / PIPELINE_FILE).is_file()


def default_model_path() -> Path:
    """The default model shipped with the package; a clear ModelFileError saying how to get a model when it is absent."""
    if is_pipeline_dir(DEFAULT_MODEL_DIR) or (DEFAULT_MODEL_DIR / INFO_FILE).is_file():
        return DEFAULT_MODEL_DIR
    raise ModelFileError(
        f"no default model is installed ({DEFAULT_MODEL_DIR} is missing). Train one and pass it with --model:\n"
        "    python train.py configs/small64.yaml            # or configs/tiny32.yaml for a few-minute CPU model\n"
        "    python app.py --model runs/NNN-small64/export")


def model_path(value: str | Path | None) -> Path:
    """What a --model option names: a folder, or a shipped model by name ("diffusion", "gan") when no folder of that
    name is here; None is the default model."""
    if value is None or value == "":
        return default_model_path()
    if str(value) in SHIPPED_MODELS and not Path(value).exists():
        shipped = SHIPPED_MODELS[str(value)]
        if not shipped.is_dir():
            raise ModelFileError(f"no {value} model is shipped with this installation ({shipped} is missing); pass a folder")
        return shipped
    return Path(value)


def base_paths(path: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """pipeline.json's "bases": other base models by name, each a folder inside the pipeline's."""
    bases = manifest.get("bases", {})
    if not isinstance(bases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in bases.items()):
        raise ModelFileError(f"{path / PIPELINE_FILE}: bases: expected an object of names and folders")
    try:
        return {name: file_inside(path, folder) for name, folder in bases.items()}
    except ValueError as error:
        raise ModelFileError(f"{path / PIPELINE_FILE}: bases: {error}") from None


def base_named(folder: Path) -> str | None:
    """The name under which the pipeline folder above `folder` offers it as a base model, or None."""
    try:
        bases = base_paths(folder.parent, read_versioned_json(folder.parent / PIPELINE_FILE, {PIPELINE_FORMAT: 1}))
    except (ModelFileError, OSError):
        return None
    return next((name for name, path in bases.items() if path.resolve() == folder.resolve()), None)


def encoder_for(stage: ImageFamily, device: str | torch.device = "cpu", text_encoder: str | None = None,
                cache_dir: str = "") -> CaptionEncoder:
    """The caption encoder a model was trained with (`text_encoder`: a local directory to load it from instead)."""
    text = stage.info.text
    return CaptionEncoder(TextConfig(encoder=text_encoder or text.encoder, max_length=text.max_length,
                                     normalize_pooled=text.normalize_pooled, device=str(device), dtype=text.dtype,
                                     cache_dir=cache_dir))


def stage_paths(path: Path, base: str | None) -> tuple[list[Path], dict[str, Path]]:
    """The stage folders `path` loads as (`base`: one of a saved pipeline's other base models in place of its first
    stage; a student's own folder loads its teacher's pipeline with it as the base), and the bases it offers."""
    if base is None and not is_pipeline_dir(path) and is_pipeline_dir(path.parent):
        base = base_named(path)  # a student's own folder: its teacher's pipeline with it as the base
        path = path.parent if base is not None else path
    if is_pipeline_dir(path):
        manifest = read_versioned_json(path / PIPELINE_FILE, {PIPELINE_FORMAT: 1})
        stage_names = manifest.get("stages")
        if not isinstance(stage_names, list) or not stage_names:
            raise ModelFileError(f"{path / PIPELINE_FILE}: stages: expected a list of the stages' folders")
        try:
            paths = [file_inside(path, stage) for stage in stage_names]  # a stage is a folder inside the pipeline's
        except ValueError as error:
            raise ModelFileError(f"{path / PIPELINE_FILE}: stages: {error}") from None
        bases = base_paths(path, manifest)
    else:
        paths, bases = [path], {}
    if base is not None:
        if base not in bases:
            offered = f"its other base models are {', '.join(bases)}" if bases else "it has no other base model"
            raise PipelineInputError(f"base '{base}': {path} offers no such base model ({offered})")
        paths[0] = bases[base]
    return paths, bases


def load_stages(path: str | Path, superres: Sequence[str | Path], device: str | torch.device, dtype: str, runtime: str,
                runtime_cache_dir: str | Path | None, verify: bool, base: str | None
                ) -> tuple[list[ImageFamily], dict[str, Path]]:
    """The stages from_pretrained loads (base first, then SR stages by resolution) and the bases the folder offers."""
    if dtype not in (*DTYPES, "auto"):
        raise PipelineInputError(f"dtype must be one of {', '.join(DTYPES)} or auto, got '{dtype}'")
    if runtime not in RUNTIMES:
        raise PipelineInputError(f"runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")
    # `runtime` other than eager, or dtype auto: every stage that can (the diffusion families) samples through
    # models.runtime (a copy with conv/linear weights in the low precision under autocast where the CPU has fast
    # kernels for it, or an exported graph cached in `runtime_cache_dir`); eager keeps the weights in `dtype`
    fast = runtime != "eager" or dtype == "auto"
    if not fast and dtype != "float32" and torch.device(device).type == "cpu" and not cpu_support().fast(dtype):
        logger.warning("%s on this CPU has no fast kernels and is very slow (unet-small: ~100x slower than float32 on "
                       "2 AVX2 cores); use float32, or dtype auto", dtype)
    paths, bases = stage_paths(Path(path), base)
    stages = [load_generator(p, device, "float32" if fast else dtype, verify) for p in [*paths, *map(Path, superres)]]
    stages = [stages[0], *sorted(stages[1:], key=lambda stage: stage.resolution)]
    for stage in stages if fast else []:
        if hasattr(stage, "use_runtime"):  # other families have no runtime choice and ignore it
            stage.use_runtime(runtime, dtype, runtime_cache_dir)
    return stages, bases


def _check_bases(pipe: Cascade, bases: Mapping[str, ImageFamily], dtype: str) -> None:
    """Only a student of the pipeline's first stage may be saved beside it, under a plain folder name, and only with
    the first stage's weights in the dtype the student's teacher checksum was taken of."""
    if pipe.stages[0].family == "student":
        raise ModelFileError("a student cannot be a saved pipeline's first stage: save its teacher's pipeline with "
                             "the student as one of its bases (python -m fashiongen.release ... --student RUN)")
    for name, other in bases.items():
        if not BASE_NAME.fullmatch(name) or name in (CRITIC_DIR, ".", ".."):
            raise ModelFileError(f"base '{name}': a base model's name is a folder name of letters, digits, - and _")
        if getattr(other, "teacher_sha256", None) != pipe.stages[0].info.sha256:
            raise ModelFileError(f"base '{name}' ({other.source}): only a student of this pipeline's first stage "
                                 f"(weights sha256 {pipe.stages[0].info.sha256[:12]}) can be saved beside it")
        weights = pipe.stages[0].info.weights
        if weights is not None and weights.dtype != dtype:
            raise ModelFileError(f"--dtype {dtype}: base '{name}' was distilled from the {weights.dtype} weights "
                                 f"(sha256 {weights.sha256[:12]}), which {dtype} would change: publish the teacher in "
                                 f"{dtype} first and distil from that folder, or keep --dtype {weights.dtype}")


def _critic_files(critic: str | Path | None) -> list[Path]:
    if critic is None:
        return []
    critic = Path(critic)
    if not (critic / "critic.json").is_file():
        raise ModelFileError(f"{critic} is not a saved critic (no critic.json)")
    return [file for file in sorted(critic.iterdir()) if file.is_file()]


def save(pipe: Cascade, path: str | Path, dtype: str | None = None, critic: str | Path | None = None, notes: str = "",
         overwrite: bool = False, bases: Mapping[str, ImageFamily] | None = None) -> Path:
    """FashionGenPipeline.save_pretrained: the base model at `path`, later stages in `path/<family>-<px>/`, bases in
    `path/<name>/`, the critic in `path/critic/`, pipeline.json and a model card, all at once (atomic)."""
    path = Path(path)
    bases = dict(bases or {})
    dtype = dtype or {v: k for k, v in DTYPES.items()}[pipe.dtype]
    _check_bases(pipe, bases, dtype)
    critic_files = _critic_files(critic)
    with replacing_directory(path, overwrite, protected=(DEFAULT_MODEL_DIR,)) as temporary:
        names = ["."] + [f"{stage.family}-{stage.resolution}" for stage in pipe.stages[1:]]  # superres-128, upsampler-256
        if clash := sorted(set(bases) & set(names)):
            raise ModelFileError(f"base '{clash[0]}': the name of one of the pipeline's stage folders")
        for name, other in bases.items():
            (temporary / name).mkdir()
            other.save_beside_teacher(temporary / name, dtype)  # type: ignore[attr-defined]
        for name, stage in zip(names, pipe.stages):
            directory = temporary / name
            directory.mkdir(exist_ok=True)
            if not copy_unchanged(stage.info, Path(stage.source), directory, dtype):  # an unchanged stage keeps its bytes
                stage.write(directory, dtype)
        manifest = {"format": PIPELINE_FORMAT, "version": 1, "stages": names, "text": pipe.stages[0].info.raw["text"],
                    "resolutions": [stage.resolution for stage in pipe.stages]}
        if bases:
            manifest["bases"] = {name: name for name in bases}
        if critic_files:
            (temporary / CRITIC_DIR).mkdir()
            for file in critic_files:
                shutil.copyfile(file, temporary / CRITIC_DIR / file.name)
            manifest["critic"] = CRITIC_DIR
        (temporary / PIPELINE_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (temporary / CARD_FILE).write_text(model_card(pipe.stages, notes, critic=CRITIC_DIR if critic_files else None,
                                                      bases=bases), encoding="utf-8")
    return path


__all__ = ["BASE_NAME", "CARD_FILE", "CRITIC_DIR", "PIPELINE_FILE", "PIPELINE_FORMAT", "base_named", "base_paths",
           "default_model_path", "encoder_for", "is_pipeline_dir", "load_stages", "model_path", "save", "stage_paths"]
