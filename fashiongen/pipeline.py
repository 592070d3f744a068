"""Text -> garment images: a trained model (plus optional super-resolution stages) and its caption encoder.

    pipe = FashionGenPipeline.from_pretrained("runs/001-small64/export")   # or a run dir, a checkpoint
    images = pipe(["a black leather biker jacket with silver zips"], num_images_per_prompt=4, seed=0)
    frames = pipe.interpolate("a red midi dress", "a navy wool coat", seed_a=0, seed_b=1, num_frames=8)
    edited = pipe.edit("shirt.jpg", "the same shirt in red silk", strength=0.6)
    pipe.save_pretrained("models/small64")

Every image has its own seed: its initial noise (and the noise of stochastic samplers and of later
stages) comes from a generator seeded with it, so an image is the same whatever else is in its batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .config import TextConfig
from .data.images import UPLOAD_MAX_PIXELS, check_aspect, decode_image, to_rgb
from .data.records import RecordError, as_rgb_uint8
from .data.transforms import resize_square, to_tensor, to_uint8
from .diffusion import lerp_text, slerp
from .families import load_generator
from .generators import LOW_RES, GenerationInputs, Generator
from .models.runtime import RUNTIMES, cpu_support
from .models.files import (
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
from .settings import (
    DEFAULT_SAMPLER,
    MAX_SEED,
    PipelineInputError,
    SamplingSettings,
    check_range,
    check_seeds,
    image_seeds,
)
from .text import CaptionEncoder, TextEncoding
from .utils import file_inside

logger = logging.getLogger(__name__)

PIPELINE_FILE = PIPELINE_INFO_FILE
PIPELINE_FORMAT = "fashiongen-pipeline"
CARD_FILE = "README.md"
CRITIC_DIR = "critic"

ImageInput = Union[str, Path, Image.Image, np.ndarray]
Attributes = Union[dict[str, str], Sequence[dict[str, str]], None]


@dataclass(frozen=True)
class StepPreview:
    """A live look at a batch mid-sampling: the model's current estimate of the finished images."""

    first: int  # index (in the call's output order) of the batch's first image
    images: Tensor  # [B, 3, R, R] float32 on the CPU, in [-1, 1], at the stage's resolution
    stage: int  # 0 = base model, then super-resolution stages
    step: int  # 1-based sampling step of this stage
    steps: int

    def pil(self) -> list[Image.Image]:
        return [Image.fromarray(array) for array in to_uint8(self.images)]


Preview = Callable[[StepPreview], None]


def default_model_path() -> Path:
    """The default model shipped with the package; a clear ModelFileError saying how to get a model when it is absent."""
    if _is_pipeline_dir(DEFAULT_MODEL_DIR) or (DEFAULT_MODEL_DIR / INFO_FILE).is_file():
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


def _start_models(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The models a run's weights came from (train.init_from), newest first."""
    chain, start = [], training.get("initialised_from")
    while start:
        chain.append(start)
        start = start.get("initialised_from")
    return chain


def _with_start(training: dict[str, Any], key: str) -> str:
    """A training count for the model card: this run's, plus its start models' (train.init_from) when it had one."""
    counts = [training.get(key)] + [start.get(key) for start in _start_models(training)]
    if any(count is None for count in counts):
        return str(counts[0] if counts[0] is not None else "?")
    return str(counts[0]) if len(counts) == 1 else f"{sum(counts)} ({' + '.join(map(str, reversed(counts)))})"


_BASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _base_paths(path: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """pipeline.json's "bases": other base models by name, each a folder inside the pipeline's."""
    bases = manifest.get("bases", {})
    if not isinstance(bases, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in bases.items()):
        raise ModelFileError(f"{path / PIPELINE_FILE}: bases: expected an object of names and folders")
    try:
        return {name: file_inside(path, folder) for name, folder in bases.items()}
    except ValueError as error:
        raise ModelFileError(f"{path / PIPELINE_FILE}: bases: {error}") from None


def _base_named(folder: Path) -> str | None:
    """The name under which the pipeline folder above `folder` offers it as a base model, or None."""
    try:
        bases = _base_paths(folder.parent, read_versioned_json(folder.parent / PIPELINE_FILE, {PIPELINE_FORMAT: 1}))
    except (ModelFileError, OSError):
        return None
    return next((name for name, path in bases.items() if path.resolve() == folder.resolve()), None)


def _is_pipeline_dir(path: Path) -> bool:
    return (path / PIPELINE_FILE).is_file()


def load_image(image: ImageInput, where: str = "image", max_pixels: int = UPLOAD_MAX_PIXELS,
               min_size: int | None = None) -> np.ndarray:
    """A path, PIL image or array -> uint8 [H, W, 3]; a missing, corrupt, non-image or oversized file raises PipelineInputError.

    A file over `max_pixels` or longer than MAX_ASPECT_RATIO times its short side is refused before it is decoded;
    with `min_size` a large JPEG is decoded at a reduced scale that keeps both sides >= min_size (data.images.open_image).
    A photo is turned upright by its EXIF orientation, as a viewer shows it. Modes, 16-bit values and
    transparency (composited on white) are converted as for training images (data.records.as_rgb_uint8).
    """
    try:
        if isinstance(image, (str, Path)):
            return decode_image(Path(image), str(image), max_pixels, min_size, upright=True)
        if isinstance(image, Image.Image):  # the pixel limit applies only if it is not decoded yet (Image.open is lazy)
            check_aspect(image.size, where)
            return to_rgb(image, where, max_pixels if getattr(image, "tile", None) else None, upright=True)
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:  # [H, W] or [H, W, C]; other shapes are refused by as_rgb_uint8
                check_aspect((image.shape[1], image.shape[0]), where)
            return as_rgb_uint8(image, where)
    except RecordError as error:
        raise PipelineInputError(f"{where}: {error}" if error.where != where else str(error)) from None
    raise PipelineInputError(f"{where}: expected a path, a PIL image or a uint8 array, got {type(image).__name__}")


def check_mask_shape(photo: tuple[int, ...], mask: tuple[int, ...]) -> None:
    """A mask must cover the photo: the same [H, W], or the same aspect ratio (to one pixel of the smaller),
    as when it was drawn on a resized copy; both are resized to the model's square alike. Else PipelineInputError."""
    (height, width), (mask_height, mask_width) = photo[:2], mask[:2]
    if abs(mask_width * height - width * mask_height) <= max(height, mask_height):
        return
    raise PipelineInputError(f"mask: its shape {mask_width}x{mask_height} (aspect {mask_width / mask_height:.2f}) does not "
                             f"match the photo's {width}x{height} (aspect {width / height:.2f}); draw the mask on the photo "
                             "itself or on a copy of the same proportions")


def encoder_for(stage: Generator, device: str | torch.device = "cpu", text_encoder: str | None = None,
                cache_dir: str = "") -> CaptionEncoder:
    """The caption encoder a model was trained with (`text_encoder`: a local directory to load it from instead)."""
    text = stage.info.text
    return CaptionEncoder(TextConfig(encoder=text_encoder or text.encoder, max_length=text.max_length,
                                     normalize_pooled=text.normalize_pooled, device=str(device), dtype=text.dtype,
                                     cache_dir=cache_dir))


class FashionGenPipeline:
    """A base model, its super-resolution stages (ascending resolution) and the caption encoder they were trained with."""

    def __init__(self, stages: Sequence[Generator], encoder: CaptionEncoder, batch_size: int | None = None) -> None:
        if not stages or LOW_RES in stages[0].conditioning:
            raise ModelFileError("a pipeline needs a base (text-to-image) model as its first stage")
        for previous, stage in zip(stages, stages[1:]):
            if LOW_RES not in stage.conditioning:
                raise ModelFileError(f"{stage.source}: only super-resolution stages may follow the base model")
            if stage.resolution <= previous.resolution:
                raise ModelFileError(f"{stage.source}: super-resolution stages must go up in size "
                                     f"({previous.resolution} px, then {stage.resolution} px)")
        for stage in stages:
            if stage.info.text.identity != encoder.identity:
                raise ModelFileError(f"{stage.source} was trained with caption encoder {stage.info.text.identity}, "
                                     f"but the encoder loaded is {encoder.identity}: the model would read other embeddings")
        self.stages = list(stages)
        self.encoder = encoder
        self.device = next(stages[0].model.parameters()).device
        self.dtype = next(stages[0].model.parameters()).dtype
        self.batch_size = batch_size or (32 if self.device.type == "cuda" else 8)
        self.show_progress = True
        self.bases: dict[str, Path] = {}  # a saved pipeline's other base models (pipeline.json "bases"), by name

    # ---------------------------------------------------------------- loading and saving

    @classmethod
    def from_pretrained(cls, path: str | Path, *, superres: Sequence[str | Path] = (), device: str | torch.device = "cpu",
                        dtype: str = "float32", runtime: str = "eager", runtime_cache_dir: str | Path | None = None,
                        text_encoder: str | None = None, cache_dir: str = "",
                        verify: bool = True, base: str | None = None) -> FashionGenPipeline:
        """Load a saved pipeline, an exported model, a checkpoint or a run directory, plus optional SR stages.

        `text_encoder` overrides where the caption encoder is loaded from (a local directory); its
        identity must still match the one the model was trained with. `base` picks one of a saved pipeline's other
        base models (pipeline.json's "bases", e.g. "student": the few-step student of the folder's model) in place of
        its first stage; the later stages stay.
        """
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
        path = Path(path)
        if base is None and not _is_pipeline_dir(path) and _is_pipeline_dir(path.parent):
            base = _base_named(path)  # a student's own folder: its teacher's pipeline with it as the base
            path = path.parent if base is not None else path
        if _is_pipeline_dir(path):
            manifest = read_versioned_json(path / PIPELINE_FILE, {PIPELINE_FORMAT: 1})
            stage_names = manifest.get("stages")
            if not isinstance(stage_names, list) or not stage_names:
                raise ModelFileError(f"{path / PIPELINE_FILE}: stages: expected a list of the stages' folders")
            try:
                paths = [file_inside(path, stage) for stage in stage_names]  # a stage is a folder inside the pipeline's
            except ValueError as error:
                raise ModelFileError(f"{path / PIPELINE_FILE}: stages: {error}") from None
            bases = _base_paths(path, manifest)
        else:
            paths, bases = [path], {}
        if base is not None:
            if base not in bases:
                offered = f"its other base models are {', '.join(bases)}" if bases else "it has no other base model"
                raise PipelineInputError(f"base '{base}': {path} offers no such base model ({offered})")
            paths[0] = bases[base]
        stages = [load_generator(p, device, "float32" if fast else dtype, verify) for p in [*paths, *map(Path, superres)]]
        stages = [stages[0], *sorted(stages[1:], key=lambda stage: stage.resolution)]
        for stage in stages if fast else []:
            if hasattr(stage, "use_runtime"):  # other families have no runtime choice and ignore it
                stage.use_runtime(runtime, dtype, runtime_cache_dir)
        pipe = cls(stages, encoder_for(stages[0], device, text_encoder, cache_dir))
        pipe.bases = bases
        return pipe

    def base_only(self) -> FashionGenPipeline:
        """The same base model and encoder without the stages after it (sizes above the base's become Lanczos resizes):
        what an upsampling stage is compared against."""
        pipe = FashionGenPipeline(self.stages[:1], self.encoder, self.batch_size)
        pipe.show_progress = self.show_progress
        return pipe

    def save_pretrained(self, path: str | Path, dtype: str | None = None, critic: str | Path | None = None,
                        notes: str = "", overwrite: bool = False, bases: dict[str, Generator] | None = None) -> Path:
        """The base model at `path`, later stages in `path/<family>-<px>/` (superres-128, upsampler-256), pipeline.json
        and a model card (atomic).
        `critic`: a saved critic directory copied into `path/critic/`, so model and judge travel together;
        `notes`: markdown added to the model card (what the model can and cannot do).
        `path` must be new, empty or a model folder of ours; anything else, and the package's own default model,
        is replaced only with `overwrite=True` (see models.files.check_output_dir).
        `bases`: other base models saved in `path/<name>/` and offered by name (`from_pretrained(path, base=name)`):
        a few-step student of the first stage, whose files name the folder above as its teacher."""
        path = Path(path)
        bases = dict(bases or {})
        if self.stages[0].family == "student":
            raise ModelFileError("a student cannot be a saved pipeline's first stage: save its teacher's pipeline with "
                                 "the student as one of its bases (python -m fashiongen.release ... --student RUN)")
        for name, other in bases.items():
            if not _BASE_NAME.fullmatch(name) or name in (CRITIC_DIR, ".", ".."):
                raise ModelFileError(f"base '{name}': a base model's name is a folder name of letters, digits, - and _")
            if getattr(other, "teacher_sha256", None) != self.stages[0].info.sha256:
                raise ModelFileError(f"base '{name}' ({other.source}): only a student of this pipeline's first stage "
                                     f"(weights sha256 {self.stages[0].info.sha256[:12]}) can be saved beside it")
        critic_files = []
        if critic is not None:
            critic = Path(critic)
            if not (critic / "critic.json").is_file():
                raise ModelFileError(f"{critic} is not a saved critic (no critic.json)")
            critic_files = [file for file in sorted(critic.iterdir()) if file.is_file()]
        dtype = dtype or {v: k for k, v in DTYPES.items()}[self.dtype]
        with replacing_directory(path, overwrite, protected=(DEFAULT_MODEL_DIR,)) as temporary:
            names = ["."] + [f"{stage.family}-{stage.resolution}" for stage in self.stages[1:]]  # superres-128, upsampler-256
            if clash := sorted(set(bases) & set(names)):
                raise ModelFileError(f"base '{clash[0]}': the name of one of the pipeline's stage folders")
            for name, other in bases.items():
                (temporary / name).mkdir()
                other.save_beside_teacher(temporary / name, dtype)  # type: ignore[attr-defined]
            for name, stage in zip(names, self.stages):
                directory = temporary / name
                directory.mkdir(exist_ok=True)
                if not copy_unchanged(stage.info, Path(stage.source), directory, dtype):  # an unchanged stage keeps its bytes
                    stage.write(directory, dtype)
            manifest = {"format": PIPELINE_FORMAT, "version": 1, "stages": names, "text": self.stages[0].info.raw["text"],
                        "resolutions": [stage.resolution for stage in self.stages]}
            if bases:
                manifest["bases"] = {name: name for name in bases}
            if critic_files:
                (temporary / CRITIC_DIR).mkdir()
                for file in critic_files:
                    shutil.copyfile(file, temporary / CRITIC_DIR / file.name)
                manifest["critic"] = CRITIC_DIR
            (temporary / PIPELINE_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            (temporary / CARD_FILE).write_text(self.model_card(notes, critic=CRITIC_DIR if critic_files else None,
                                                               bases=bases), encoding="utf-8")
        return path

    def model_card(self, notes: str = "", critic: str | None = None, bases: dict[str, Generator] | None = None) -> str:
        """A README for the saved model: what it is, what it was trained on, how long, and known metrics."""
        base = self.stages[0].info
        lines = ["# FashionGen text-to-image model", "",
                 f"Caption-conditioned {base.family} model trained with [FashionGen](https://github.com/fashiongen/fashiongen).", "",
                 "```python", "from fashiongen.pipeline import FashionGenPipeline",
                 'pipe = FashionGenPipeline.from_pretrained("PATH")',
                 'images = pipe(["a black leather biker jacket with silver zips"], num_images_per_prompt=4, seed=0)',
                 "```", "", "## Stages", "", "| stage | model | resolution | parameters | training steps | images seen |",
                 "|---|---|---|---|---|---|"]
        for number, stage in enumerate(self.stages):
            training = stage.info.training
            kind = "super-resolution" if LOW_RES in stage.conditioning else "base"
            parameters = sum(p.numel() for p in stage.model.parameters()) / 1e6
            lines.append(f"| {number} ({kind}) | {stage.info.model_name} | {stage.resolution} px | {parameters:.1f}M | "
                         f"{_with_start(training, 'steps')} | {_with_start(training, 'images_seen')} |")
        data = base.data
        lines += ["", "## Training data", "",
                  f"- source: `{data.source or '?'}` (split `{data.split or '?'}`, {data.resolution or '?'} px)",
                  f"- captions: {data.caption_mode}", f"- caption encoder: `{base.text.identity}`",
                  f"- attributes: {', '.join(self.stages[0].attribute_vocab) or 'none'}",
                  f"- {self.stages[0].card_line()}"]
        training = base.training
        if training:
            lines += ["", "## Training run", ""] + [f"- {key}: {value}" for key, value in training.items()
                                                    if value is not None and key != "initialised_from"]
            for depth, start in enumerate(_start_models(training)):  # started from another model's weights: what it had seen
                facts = ", ".join(f"{key} {start[key]}" for key in ("steps", "images_seen", "wall_time", "hardware", "final_loss")
                                  if start.get(key) is not None)
                lead = "initialised from" if depth == 0 else "which was itself initialised from"
                lines.append(f"- {lead} `{start['path']}` (sha256 {start['sha256'][:16]}: {facts})")
        train = base.config.get("train") or {}
        if train:
            own = base.config.get(base.family) or {}  # a family with two optimisers (a GAN) sets their rates in its section
            rate = (f"G {own['generator_lr']}, D {own['discriminator_lr']} (two optimisers)"
                    if "generator_lr" in own and "discriminator_lr" in own else train.get("learning_rate"))
            lines += [f"- batch size {train.get('batch_size')}, learning rate {rate}, "
                      f"EMA decay {train.get('ema_decay')}, mixed precision {train.get('mixed_precision')}"]
        for name, other in (bases or {}).items():
            training = other.info.training
            facts = ", ".join(f"{key} {training[key]}" for key in ("steps", "images_seen", "wall_time", "hardware", "final_loss")
                              if training.get(key) is not None)
            lines += ["", f"## Base model `{name}`", "",
                      f"`FashionGenPipeline.from_pretrained(\"PATH\", base=\"{name}\")` (or `--base {name}`) makes images "
                      f"with `{name}/` in place of the model above; the later stages stay.", "",
                      f"- {other.card_line()}",
                      f"- teacher: this folder's model (weights sha256 {self.stages[0].info.sha256[:16]}), checked at load",
                      f"- distillation run: {facts or 'no facts recorded'}"]
            lines += [f"- {key}: {value}" for key, value in other.info.metrics.items()]
        metrics = base.metrics
        lines += ["", "## Metrics", ""]
        lines += [f"- {key}: {value}" for key, value in metrics.items()] if metrics else ["No evaluation recorded with this model."]
        if critic:
            lines += ["", "## Critic", "", f"`{critic}/` holds the text-image critic network `evaluate.py` scores with "
                      "(trained on the same photos; see its README)."]
        if notes.strip():
            lines += ["", notes.strip()]
        lines += ["", "## Limitations", "",
                  "Trained on studio product photos: one garment, centred, on a plain background. Prompts far from the "
                  "training captions (people, scenes, text) give poor images. Generated images may resemble training photos; "
                  "check memorisation before publishing them.", ""]
        return "\n".join(lines)

    # ---------------------------------------------------------------- sizes, seeds, attributes

    @property
    def resolution(self) -> int:
        """The largest size the cascade generates natively."""
        return self.stages[-1].resolution

    @property
    def fingerprint(self) -> str:
        """Identifies the weights of every stage and the text encoder (submissions refuse to mix models)."""
        return "+".join(stage.sha256[:16] for stage in self.stages) + "/" + self.encoder.identity

    def stages_for(self, size: int | None) -> list[Generator]:
        """The stages needed for `size`: up to the first that reaches it (all of them when none does)."""
        if size is None:
            return self.stages
        for number, stage in enumerate(self.stages):
            if stage.resolution >= size:
                return self.stages[: number + 1]
        return self.stages

    @property
    def samplers(self) -> tuple[str, ...]:
        """The scheduler names the base model's family takes (every stage is sampled with the same one)."""
        return self.stages[0].samplers

    @property
    def deterministic_samplers(self) -> tuple[str, ...]:
        """Samplers whose images depend on the starting draw only (interpolation needs one)."""
        return tuple(getattr(self.stages[0], "deterministic_samplers", self.samplers))

    @property
    def attribute_vocab(self) -> dict[str, list[str]]:
        """The attributes (and their values) the base model conditions on; {} for a model trained without."""
        return self.stages[0].attribute_vocab

    def known_attributes(self, attributes: dict[str, Any]) -> dict[str, str]:
        """The part of a dataset record's attributes the base model conditions on: its attribute names with values
        in its vocabulary (anything else is left to 'none', as in training)."""
        vocab = self.attribute_vocab
        known = {}
        for name, values in vocab.items():
            value = str(attributes.get(name, "")).strip()
            if value.lower() in {v.lower() for v in values}:
                known[name] = value
        return known

    # ---------------------------------------------------------------- text to image

    def encode_prompts(self, prompts: Sequence[str], what: str = "prompt", allow_empty: bool = False) -> TextEncoding:
        if isinstance(prompts, str):
            prompts = [prompts]
        for number, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise PipelineInputError(f"{what} {number}: expected a string, got {type(prompt).__name__}")
            if not allow_empty and not prompt.strip():
                raise PipelineInputError(f"{what} {number} is empty; describe the garment (use guidance_scale=0 for "
                                         "unconditional samples)")
        before = self.encoder.num_truncated
        text = self.encoder.encode([p.strip() for p in prompts])
        if self.encoder.num_truncated > before:
            logger.warning("%d %s(s) longer than the caption encoder's %d tokens were truncated",
                           self.encoder.num_truncated - before, what, self.encoder.max_length)
        return text

    @staticmethod
    def seeds_for(count: int, seed: int | Sequence[int] | None) -> list[int]:
        """`seed` (image i gets seed + i), one seed per image, or fresh random seeds (recorded, so still reproducible)."""
        if seed is None:
            seed = secrets.randbelow(2**31 - count)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return image_seeds(seed, count)
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise PipelineInputError(f"got {len(seeds)} seeds for {count} images")
        for number, one in enumerate(seeds):
            check_seeds(f"seed {number}", one)
        return seeds

    @staticmethod
    def seeds_from(generator: torch.Generator | Sequence[torch.Generator], count: int) -> list[int]:
        """One seed per image drawn from a generator (or from each of `count` generators)."""
        generators = [generator] * count if isinstance(generator, torch.Generator) else list(generator)
        if len(generators) != count:
            raise PipelineInputError(f"got {len(generators)} generators for {count} images")
        return [int(torch.randint(0, 2**31 - 1, (1,), generator=g, device=g.device).item()) for g in generators]

    @staticmethod
    def _per_prompt(value: Any, count: int, name: str) -> list[Any]:
        if value is None or isinstance(value, (str, dict)):
            return [value] * count
        values = list(value)
        if len(values) != count:
            raise PipelineInputError(f"{name}: got {len(values)} values for {count} prompts")
        return values

    @property
    def default_sampler(self) -> str:
        """DEFAULT_SAMPLER where the base model's family has it, else the family's first."""
        return DEFAULT_SAMPLER if DEFAULT_SAMPLER in self.samplers else self.samplers[0]

    def settings_for_model(self, settings: SamplingSettings, given: set[str] | frozenset[str],
                           names: dict[str, str] | None = None) -> SamplingSettings:
        """Settings an edge built before the model was loaded, fitted to it: a setting the caller `given` explicitly
        that the model's family does not use is refused (naming it as the caller knows it), and an unset scheduler
        becomes the family's default."""
        names, family = names or {}, self.stages[0]
        unused = sorted(set(given) - set(family.settings_used) - {"size"})
        if unused:
            takes = ", ".join(names.get(f, f) for f in sorted(family.settings_used)) or "no sampling settings"
            raise PipelineInputError(f"{', '.join(names.get(f, f) for f in unused)}: this model ({family.family}) does not use "
                                     f"{'it' if len(unused) == 1 else 'them'}; it takes {takes}")
        if "scheduler" not in given:
            settings = dataclasses.replace(settings, scheduler=self.default_sampler)
        if "num_inference_steps" not in given:
            settings = dataclasses.replace(settings, num_inference_steps=family.default_steps)
        return self.sampling_settings(settings)

    def settings_record(self, settings: SamplingSettings) -> dict[str, Any]:
        """What a report records of `settings`: the fields the base model's family reads, its defaults filled in."""
        return self.stages[0].settings_record(settings)

    def sampling_settings(self, settings: SamplingSettings | None = None, **values: Any) -> SamplingSettings:
        """The settings of a keyword call: `settings` as built at an edge, or the keywords given (None = default),
        checked once here against the library's bounds and the base model's samplers; not both."""
        given = {key: value for key, value in values.items() if value is not None}
        if settings is not None:
            if given:
                raise PipelineInputError(f"give settings or {', '.join(sorted(given))}, not both")
            if settings.scheduler not in self.samplers:
                raise PipelineInputError(f"scheduler '{settings.scheduler}' is not one of {', '.join(self.samplers)}")
            return settings
        if "scheduler" not in given:
            given["scheduler"] = self.default_sampler
        if "num_inference_steps" not in given:
            given["num_inference_steps"] = self.stages[0].default_steps
        return SamplingSettings.parse(samplers=self.samplers, **given)

    def __call__(self, prompts: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None,
                 num_images_per_prompt: int = 1, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 seed: int | Sequence[int] | None = None, scheduler: str | None = None, attributes: Attributes = None,
                 size: int | None = None, progress: Callable[[int, int], None] | None = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 preview: Preview | None = None, settings: SamplingSettings | None = None,
                 truncation: float | None = None) -> list[Image.Image]:
        """Images for prompts, prompt-major (all images of prompt 0 first); image i has seed `seed + i`.

        Sampling settings come as keywords (None = the default) or as one `settings`. `generator` (one, or one per
        image) is the diffusers-style alternative to `seed`: each image's seed is drawn from it, so the same
        generator state gives the same images. `preview` is called after every sampling step with the current
        estimate of the batch's images (live previews; raising in it stops the call).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise PipelineInputError("no prompts given")
        if num_images_per_prompt < 1:
            raise PipelineInputError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        settings = self.sampling_settings(settings, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          scheduler=scheduler, size=size, truncation=truncation)
        negatives = self._per_prompt(negative_prompt, len(prompts), "negative_prompt")
        wanted = self._per_prompt(attributes, len(prompts), "attributes")
        expand = [i for i in range(len(prompts)) for _ in range(num_images_per_prompt)]
        text = self.encode_prompts([prompts[i] for i in expand])
        unconditional = self.encode_prompts([negatives[i] or settings.negative_prompt for i in expand], "negative prompt",
                                            allow_empty=True)
        if generator is not None:
            if seed is not None:
                raise PipelineInputError("give seed or generator, not both")
            seed = self.seeds_from(generator, len(expand))
        inputs = GenerationInputs(text, unconditional, self.seeds_for(len(expand), seed), [dict(wanted[i] or {}) for i in expand])
        return self._to_pil(self._generate(inputs, settings, progress, preview), settings.size)

    def generate_images(self, prompts: Sequence[str], seeds: Sequence[int], settings: SamplingSettings,
                        attributes: Sequence[dict[str, str]] | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        preview: Preview | None = None) -> list[Image.Image]:
        """One image per (prompt, seed) pair with settings built at the edge: what sample.py, submissions and the app call."""
        settings = self.sampling_settings(settings)
        if len(seeds) != len(prompts) or (attributes is not None and len(attributes) != len(prompts)):
            raise PipelineInputError(f"{len(prompts)} prompts need as many seeds (got {len(seeds)}) and attribute sets "
                                     f"(got {'none' if attributes is None else len(attributes)})")
        for number, seed in enumerate(seeds):
            check_seeds(f"seed {number}", seed)
        text = self.encode_prompts(list(prompts))
        unconditional = self.encode_prompts([settings.negative_prompt] * len(prompts), "negative prompt", allow_empty=True)
        inputs = GenerationInputs(text, unconditional, list(seeds), [dict(a) for a in (attributes or [{}] * len(prompts))])
        return self._to_pil(self._generate(inputs, settings, progress, preview), settings.size)

    # ---------------------------------------------------------------- interpolation

    def interpolate(self, prompt_a: str, prompt_b: str, seed_a: int = 0, seed_b: int = 1, num_frames: int = 8,
                    num_inference_steps: int | None = None, guidance_scale: float | None = None, scheduler: str | None = None,
                    negative_prompt: str | None = None, attributes: dict[str, str] | None = None, size: int | None = None,
                    progress: Callable[[int, int], None] | None = None, preview: Preview | None = None,
                    settings: SamplingSettings | None = None, truncation: float | None = None) -> list[Image.Image]:
        """Frames from (prompt_a, seed_a) to (prompt_b, seed_b): slerp of every stage's starting draw, lerp of the caption
        embeddings, one deterministic sampler; frame 0 and the last frame equal the two single samples."""
        if num_frames < 2:
            raise PipelineInputError(f"num_frames must be >= 2, got {num_frames}")
        settings = self.sampling_settings(settings, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          scheduler=scheduler, negative_prompt=negative_prompt, size=size,
                                          truncation=truncation)
        if settings.scheduler not in self.deterministic_samplers:
            raise PipelineInputError(f"interpolation needs a deterministic sampler ({', '.join(self.deterministic_samplers)}), "
                                     f"not {settings.scheduler}")
        check_seeds("seed_a", seed_a)
        check_seeds("seed_b", seed_b)
        both = self.encode_prompts([prompt_a, prompt_b])
        ends = [TextEncoding(both.token_states[i : i + 1], both.mask[i : i + 1], both.pooled[i : i + 1]) for i in (0, 1)]
        fractions = [i / (num_frames - 1) for i in range(num_frames)]
        texts = [lerp_text(ends[0], ends[1], t) for t in fractions]
        text = TextEncoding(torch.cat([t.token_states for t in texts]), torch.cat([t.mask for t in texts]),
                            torch.cat([t.pooled for t in texts]))
        generators = [torch.Generator().manual_seed(seed) for seed in (seed_a, seed_b)]
        stage_latents = []
        for stage in self.stages_for(settings.size):
            latent_a, latent_b = stage.draw_latents(generators, settings)
            stage_latents.append(torch.stack([slerp(latent_a, latent_b, t) for t in fractions]))
        unconditional = self.encode_prompts([settings.negative_prompt] * num_frames, "negative prompt", allow_empty=True)
        seeds = [seed_a if t < 0.5 else seed_b for t in fractions]  # only for the record: every draw is given
        inputs = GenerationInputs(text, unconditional, seeds, [dict(attributes or {})] * num_frames, stage_latents=stage_latents)
        return self._to_pil(self._generate(inputs, settings, progress, preview), settings.size)

    # ---------------------------------------------------------------- editing

    @property
    def input_size(self) -> int:
        """Edit inputs need only this many pixels a side (4x the model's), so large JPEGs are decoded reduced."""
        return 4 * self.stages[0].resolution

    def prepare_image(self, image: ImageInput, where: str = "image") -> Tensor:
        """An input photo as the base model sees training images: [3, R, R] in [-1, 1]."""
        return self._square_photo(load_image(image, where, min_size=self.input_size))

    def prepare_mask(self, mask: ImageInput, where: str = "mask") -> Tensor:
        """A mask image (white = repaint) -> [1, R, R] of 0/1, resized like the photo."""
        return self._square_mask(load_image(mask, where, min_size=self.input_size), where)

    def _resize_mode(self) -> str:
        return self.stages[0].info.data.resize_mode

    def _square_photo(self, array: np.ndarray) -> Tensor:
        return to_tensor(resize_square(array, self.stages[0].resolution, self._resize_mode()))  # [3, R, R]

    def _square_mask(self, array: np.ndarray, where: str = "mask") -> Tensor:
        resized = resize_square(array, self.stages[0].resolution, self._resize_mode(), pad_value=0)
        binary = torch.from_numpy((resized.mean(axis=-1) >= 127.5).astype(np.float32))[None]  # [1, R, R]
        if not binary.any():
            logger.warning("%s is black everywhere: nothing will be repainted", where)
        return binary

    def edit(self, image: ImageInput, prompt: str, strength: float = 0.6, mask: ImageInput | None = None,
             num_images: int = 1, seed: int | Sequence[int] | None = 0, num_inference_steps: int | None = None,
             guidance_scale: float | None = None, scheduler: str | None = None, negative_prompt: str | None = None,
             attributes: dict[str, str] | None = None, size: int | None = None,
             progress: Callable[[int, int], None] | None = None, preview: Preview | None = None,
             settings: SamplingSettings | None = None) -> list[Image.Image]:
        """Text-guided editing: SDEdit (noise the photo to `strength`, denoise with the new caption); with a
        mask, only the white region is repainted and the rest is kept (RePaint-style). strength 0 returns the input.
        A model whose family cannot edit is refused before any work."""
        if not self.stages[0].can_edit:
            raise PipelineInputError(f"this model ({self.stages[0].family}) cannot edit photos; generate from a description instead")
        if not (isinstance(strength, (int, float)) and 0.0 <= strength <= 1.0):
            raise PipelineInputError(f"strength must be between 0 (keep the photo) and 1 (ignore it), got {strength}")
        if num_images < 1:
            raise PipelineInputError(f"num_images must be >= 1, got {num_images}")
        settings = self.sampling_settings(settings, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                          scheduler=scheduler, negative_prompt=negative_prompt, size=size)
        photo_pixels = load_image(image, "image", min_size=self.input_size)
        photo, repaint = self._square_photo(photo_pixels), None
        if mask is not None:
            mask_pixels = load_image(mask, "mask", min_size=self.input_size)
            check_mask_shape(photo_pixels.shape, mask_pixels.shape)
            repaint = self._square_mask(mask_pixels)
        text = self.encode_prompts([prompt] * num_images)
        unconditional = self.encode_prompts([settings.negative_prompt] * num_images, "negative prompt", allow_empty=True)
        inputs = GenerationInputs(text, unconditional, self.seeds_for(num_images, seed), [dict(attributes or {})] * num_images,
                                  init_image=photo.expand(num_images, -1, -1, -1).clone(),
                                  mask=None if repaint is None else repaint.expand(num_images, -1, -1, -1).clone(),
                                  strength=float(strength))
        return self._to_pil(self._generate(inputs, settings, progress, preview), settings.size)

    # ---------------------------------------------------------------- the cascade

    def _generate(self, inputs: GenerationInputs, settings: SamplingSettings, progress: Callable[[int, int], None] | None,
                  preview: Preview | None = None) -> Tensor:
        """All rows through the cascade in batches of self.batch_size: [N, 3, R, R] in [-1, 1]. On GPU out-of-memory the
        batch is halved and retried, and the smaller batch size is kept for later calls."""
        if not self.attribute_vocab and any(inputs.attributes):
            logger.warning("this model was trained without attributes; ignoring %s", inputs.attributes[0] or inputs.attributes[-1])
        total, done, outputs = len(inputs.seeds), 0, []
        bar = tqdm(total=total, desc="sampling", unit="img", disable=not self.show_progress or total == 0, leave=False)
        try:
            while done < total:
                size = min(self.batch_size, total - done)
                try:
                    outputs.append(self._generate_batch(inputs.take(slice(done, done + size)), settings, preview, done))
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise
                    torch.cuda.empty_cache()
                    self.batch_size = max(1, size // 2)
                    logger.warning("out of GPU memory at batch size %d; continuing with %d", size, self.batch_size)
                    continue
                done += size
                bar.update(size)
                if progress is not None:
                    progress(done, total)
        finally:
            bar.close()
        return torch.cat(outputs)

    def _generate_batch(self, inputs: GenerationInputs, settings: SamplingSettings, preview: Preview | None = None,
                        first: int = 0) -> Tensor:
        """One batch through every stage `settings.size` needs; each stage draws from the images' own generators in turn."""
        generators = [torch.Generator().manual_seed(seed) for seed in inputs.seeds]
        images: Tensor | None = None
        for number, stage in enumerate(self.stages_for(settings.size)):
            images = stage.generate(inputs, settings, generators, stage=number, low_res=images,
                                    preview=None if preview is None else self._stage_preview(preview, first, number))
        assert images is not None
        return images.float().cpu()

    @staticmethod
    def _stage_preview(preview: Preview, first: int, stage: int) -> Callable[[int, int, Tensor], None]:
        def report(step: int, steps: int, images: Tensor) -> None:
            preview(StepPreview(first, images.float().cpu(), stage, step, steps))

        return report

    @staticmethod
    def _to_pil(images: Tensor, size: int | None) -> list[Image.Image]:
        pictures = [Image.fromarray(array) for array in to_uint8(images)]
        if size is not None and pictures and pictures[0].width != size:
            pictures = [p.resize((size, size), Image.Resampling.LANCZOS) for p in pictures]
        return pictures

    @property
    def runtime(self) -> str:
        """How the base stage's network runs, after any fallback: 'eager float32', 'onnxruntime float32', ..."""
        used = getattr(self.stages[0], "runtime", None) or {"runtime": "eager", "dtype": str(self.dtype).replace("torch.", "")}
        return f"{used['runtime']} {used['dtype']}"

    def describe(self) -> dict[str, Any]:
        """The facts a manifest records about the model that made an image."""
        return {"fingerprint": self.fingerprint, "stages": [stage.source for stage in self.stages],
                "resolutions": [stage.resolution for stage in self.stages], "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "runtime": self.runtime}


Stage = Generator  # a stage of the cascade is a loaded generator (the name earlier versions used)

__all__ = ["DEFAULT_MODEL_DIR", "MAX_SEED", "FashionGenPipeline", "Generator", "ImageInput", "ModelFileError", "PipelineInputError",
           "Preview", "SamplingSettings", "Stage", "StepPreview", "check_mask_shape", "check_range", "check_seeds",
           "default_model_path", "encoder_for", "load_image", "model_path"]
