"""The few-step student family ("student"): a consistency-distilled copy of a diffusion teacher that takes the guidance
scale as an input, so an image costs 1-8 forwards instead of the teacher's 2 x 20 (train/distill.py makes one).

Its files are small: model.json names the teacher (a folder path relative to the student's, and the teacher weights'
sha256) and the weights file holds only the low-rank adapters and the guidance embedding. Loading rebuilds the
teacher's network, adds the adapters and merges them, so a student forward costs what a teacher forward does.

    student = load_generator("fashiongen/pretrained/student")      # its teacher: "..", checked by sha256
    images = student.generate(inputs, SamplingSettings(num_inference_steps=4, scheduler="lcm"), generators)
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from ..config import Config
from ..generators import ATTRIBUTES, TEXT, GenerationInputs, StepCallback, attribute_ids
from ..models import FashionUNet
from ..models.files import (
    ModelFileError,
    ModelFiles,
    ModelInfo,
    copy_unchanged,
    read_model_files,
    training_description,
    write_model_files,
)
from ..models.lora import LORA_KEYS, add_lora, lora_state, merge_lora
from ..models.student import StudentUNet
from ..settings import PipelineInputError, SamplingSettings
from .consistency import StartFrom, consistency_sample, sampling_timesteps
from .generator import DiffusionGenerator
from .sampling import noise_from
from .schedule import alphas_cumprod_of

STUDENT_SAMPLER = "lcm"  # the consistency models' multistep sampler (predict the end, re-noise, repeat)
STUDENT_DEFAULT_STEPS = 4


def student_description(teacher: Any, config: Config, teacher_path: str, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.json without its weights entry: the teacher's network and process, and how the student was made."""
    distill = config.distill
    return {"family": "student", "model": teacher.model.description(), "diffusion": dict(teacher.diffusion),
            "student": {"teacher": {"path": teacher_path, "sha256": teacher.sha256,
                                    "description": teacher.model.spec.description},
                        "method": "latent consistency distillation (pixel space), guidance scale as input",
                        "lora_rank": distill.lora_rank, "guidance_features": distill.guidance_features,
                        "grid_size": distill.grid_size, "guidance_range": [distill.guidance_min, distill.guidance_max],
                        "default_steps": STUDENT_DEFAULT_STEPS},
            **training_description(config, teacher.info.text.identity, teacher.model.description()["text_dim"], training)}


def _section(info: ModelInfo, where: Any) -> dict[str, Any]:
    student = info.section("student")
    teacher = student.get("teacher") if isinstance(student, dict) else None
    if not isinstance(teacher, dict) or not isinstance(teacher.get("path"), str) or not isinstance(teacher.get("sha256"), str):
        raise ModelFileError(f"{where}: student.teacher: expected {{path, sha256}} naming the teacher's folder")
    for key in ("lora_rank", "guidance_features", "grid_size"):
        value = student.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
            raise ModelFileError(f"{where}: student.{key}: expected an integer in 1..4096, got {value!r:.40}")
    return student


def _teacher_files(directory: Path, teacher: dict[str, Any], where: Any, verify: bool = True) -> ModelFiles:
    folder = (directory / teacher["path"]).resolve()
    try:
        files = read_model_files(folder, verify)
    except ModelFileError as error:
        raise ModelFileError(f"{where}: its teacher ({teacher['path']}): {error}") from None
    if files.info is None or files.info.sha256 != teacher["sha256"]:
        found = files.info.sha256[:12] if files.info is not None else "a checkpoint"
        raise ModelFileError(f"{where}: its teacher at {folder} is not the model it was distilled from "
                             f"(weights sha256 {found}, expected {teacher['sha256'][:12]})")
    return files


class StudentGenerator(DiffusionGenerator):
    """A consistency student: 1-8 forwards an image, guidance as an input (no unconditional branch, so no negative
    prompt); edits a photo by starting part-way, as the teacher's SDEdit."""

    family: ClassVar[str] = "student"
    conditioning: ClassVar[frozenset[str]] = frozenset({TEXT, ATTRIBUTES})
    samplers: ClassVar[tuple[str, ...]] = (STUDENT_SAMPLER,)
    deterministic_samplers: ClassVar[tuple[str, ...]] = (STUDENT_SAMPLER,)  # its noise comes from the per-image seeds
    can_edit: ClassVar[bool] = True
    settings_used: ClassVar[frozenset[str]] = frozenset({"num_inference_steps", "guidance_scale", "scheduler"})
    default_steps: ClassVar[int] = STUDENT_DEFAULT_STEPS

    def __init__(self, model: StudentUNet, info: ModelInfo, source: str, adapter: dict[str, Tensor],
                 teacher_dir: Path) -> None:
        super().__init__(model, info, source)  # type: ignore[arg-type]
        self.student = _section(info, source)
        self.adapter = adapter  # what `write` saves: the adapters' factors and the guidance embedding
        self.teacher_dir = teacher_dir  # where its teacher was loaded from (absolute)
        self.alphas_cumprod = alphas_cumprod_of(self.diffusion)

    @classmethod
    def from_files(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> StudentGenerator:
        if files.info is None:
            return cls._from_checkpoint(files, device, dtype)
        info, where = files.info, files.where
        student = _section(info, where)
        teacher = _teacher_files(files.directory, student["teacher"], where)
        try:
            unet = FashionUNet.from_description(info.network)
            unet.load_state_dict({k: v.float() for k, v in teacher.state_dict.items()}, strict=True)
        except (ValueError, TypeError, KeyError, RuntimeError) as error:
            raise ModelFileError(f"{where}: the teacher's weights do not fit model.json's network ({error})") from None
        model = StudentUNet(unet, student["guidance_features"])
        add_lora(model.unet, student["lora_rank"])
        adapter = {k: v.float() for k, v in files.state_dict.items()}
        expected = {k for k in model.state_dict() if k.rsplit(".", 1)[-1] in LORA_KEYS or k.startswith("guidance.")}
        if missing := sorted(expected - set(adapter)):
            raise ModelFileError(f"{where}: weights lack {len(missing)} of the student's tensors (first: {missing[0]})")
        if unknown := sorted(set(adapter) - expected):
            raise ModelFileError(f"{where}: weights hold {len(unknown)} tensors the student does not have (first: {unknown[0]})")
        try:
            model.load_state_dict(adapter, strict=False)
        except RuntimeError as error:
            raise ModelFileError(f"{where}: weights do not fit the student in model.json ({error})") from None
        merge_lora(model)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(model, info, str(files.directory), adapter, teacher.directory.resolve())

    @classmethod
    def _from_checkpoint(cls, files: ModelFiles, device: str | torch.device, dtype: torch.dtype) -> StudentGenerator:
        """A distillation checkpoint: its EMA student (adapters unmerged) over the teacher its config names
        (train.init_from), described as the run's export would be."""
        config, where = files.config, files.where
        assert config is not None
        teacher = DiffusionGenerator.from_files(read_model_files(config.train.init_from), "cpu", torch.float32)
        facts = files.state.get("initialised_from") or {}
        if teacher.info.sha256 != facts.get("sha256"):
            raise ModelFileError(f"{where}: its teacher {config.train.init_from} is not the model it was distilled from "
                                 f"(weights sha256 {teacher.info.sha256[:12]}, expected {str(facts.get('sha256'))[:12]})")
        model = StudentUNet(copy.deepcopy(teacher.model).float(), config.distill.guidance_features)
        add_lora(model.unet, config.distill.lora_rank)
        try:
            model.load_state_dict({k: v.float() for k, v in files.state_dict.items()}, strict=True)
        except RuntimeError as error:
            raise ModelFileError(f"{where}: EMA weights do not fit the checkpoint's config ({error})") from None
        adapter = {**lora_state(model), **{f"guidance.{k}": v for k, v in model.guidance.state_dict().items()}}
        teacher_dir = Path(teacher.source).resolve()
        raw = student_description(teacher, config, os.path.relpath(teacher_dir, files.directory.resolve()),
                                  {**files.training, "initialised_from": facts})
        raw["weights"] = {"file": "ema.safetensors", "dtype": "float32", "sha256": files.weights_sha256}
        merge_lora(model)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(model, ModelInfo.from_dict(raw, where), str(files.directory), adapter, teacher_dir)

    # ------------------------------------------------------------------ facts

    @property
    def teacher_sha256(self) -> str:
        return str(self.student["teacher"]["sha256"])

    def steps_per_image(self, settings: SamplingSettings, strength: float = 1.0) -> int:
        steps = settings.num_inference_steps
        return max(1, min(steps, round(steps * strength))) if strength < 1.0 else steps

    def card_line(self) -> str:
        s = self.student
        return (f"student: consistency-distilled from {s['teacher'].get('description') or 'its teacher'} "
                f"(sha256 {self.teacher_sha256[:12]}), guidance as input, {s['default_steps']} steps by default "
                f"(1 to {s['grid_size']}), LoRA rank {s['lora_rank']} merged at load")

    @property
    def sha256(self) -> str:
        """Identifies what makes its images: its own weights and its teacher's (fingerprints, caches)."""
        return hashlib.sha256(f"{self.info.sha256}+{self.teacher_sha256}".encode()).hexdigest()

    def write(self, directory: Path, dtype: str, teacher_path: str | None = None) -> ModelInfo:
        """Its files, naming its teacher by `teacher_path` relative to `directory` (default: where the teacher it was
        loaded with is, seen from `directory`, which is a sibling of the final folder when written atomically)."""
        path = teacher_path or os.path.relpath(self.teacher_dir, Path(directory).resolve())
        raw = self.info.to_dict()
        raw["student"] = {**raw["student"], "teacher": {**raw["student"]["teacher"], "path": path}}
        return write_model_files(self.adapter, raw, directory, dtype)

    def save_beside_teacher(self, directory: Path, dtype: str) -> None:
        """Into `directory` inside its teacher's folder (naming ".." as its teacher): byte for byte when it was loaded
        from such a place unchanged."""
        if self.student["teacher"]["path"] != ".." or not copy_unchanged(self.info, Path(self.source), directory, dtype):
            self.write(directory, dtype, teacher_path="..")

    # ------------------------------------------------------------------ sampling

    def check_sampler(self, settings: SamplingSettings) -> None:
        super().check_sampler(settings)
        if settings.num_inference_steps > self.student["grid_size"]:
            raise PipelineInputError(f"steps: a student samples in 1 to {self.student['grid_size']} steps, "
                                     f"not {settings.num_inference_steps}")

    def generate(self, inputs: GenerationInputs, settings: SamplingSettings, generators: Sequence[torch.Generator],
                 stage: int = 0, low_res: Tensor | None = None, preview: StepCallback | None = None) -> Tensor:
        self.check_sampler(settings)
        if low_res is not None:
            raise PipelineInputError(f"{self.source}: a student model does not take a low-res image")
        device = next(self.model.parameters()).device
        text = inputs.text.to(device)
        noise = self.draw_latents(generators, settings).to(device)  # drawn even when replaced: later draws stay put
        if (latents := inputs.latents(stage)) is not None:
            noise = latents.to(device)
        timesteps = sampling_timesteps(settings.num_inference_steps, int(self.diffusion["num_train_timesteps"]),
                                       self.student["grid_size"])
        start = None
        if inputs.init_image is not None:
            steps = len(timesteps)
            first = steps - min(round(steps * inputs.strength), steps)
            kept = None if inputs.mask is None else noise_from(list(generators), self.latent_shape, device)
            start = StartFrom(inputs.init_image.to(device), first, None if inputs.mask is None else inputs.mask.to(device), kept)
        ids = attribute_ids(self.attribute_vocab, inputs.attributes, device)
        return consistency_sample(self.denoiser, self.alphas_cumprod, str(self.diffusion["prediction_type"]),
                                  text.token_states, text.mask, text.pooled, noise, timesteps, settings.guidance_scale,
                                  generators, ids, start, preview)


__all__ = ["STUDENT_DEFAULT_STEPS", "STUDENT_SAMPLER", "StudentGenerator", "student_description"]
