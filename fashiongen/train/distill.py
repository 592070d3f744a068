"""Distilling a few-step student (model.family: student) from a guided diffusion teacher (train.init_from):

    python train.py configs/distill64.yaml [key=value ...] [--resume latest]

Latent consistency distillation (Luo et al. 2023; Song et al. 2023's consistency distillation) in pixel space, with the
guidance scale as the student's input (so one student forward replaces the teacher's two). Per example: a training
photo noised to a timestep t_n of a `distill.grid_size`-point grid, a guidance scale w ~ U[guidance_min, guidance_max],
the teacher's guided DDIM step from t_n to the grid point below, and a pseudo-Huber loss between the student's
answer at t_n and the EMA student's at the point the teacher reached (diffusion/consistency.py). The student is the
teacher's network with low-rank adapters (models/lora.py) and a guidance embedding (models/student.py), so its export
is a few MB beside its teacher. The loop, checkpoints, SIGTERM saves and resume are the one engine's (engine.py) with
one update per step; validation draws the teacher's 20-step images beside the student's at
distill.validation_steps steps, same prompts and seeds.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor, nn

from ..config import Config, ConfigError
from ..data.transforms import to_uint8
from ..diffusion import add_noise, alphas_cumprod_of, concat_text, initial_noise, make_sampler, sample
from ..diffusion.consistency import (
    clean_and_noise,
    consistency_output,
    consistency_sample,
    ddim_step,
    pseudo_huber,
    sampling_timesteps,
    skip_grid,
)
from ..diffusion.generator import DiffusionGenerator
from ..diffusion.student import student_description
from ..grid import captioned_grid, save_image
from ..models.files import ModelFileError, replacing_directory, write_model_files
from ..models.lora import add_lora, lora_state
from ..models.student import StudentUNet
from ..families import load_generator
from ..plots import training_curves
from ..runs import MetricsLog, hardware_name, run_facts
from ..text import CaptionEncoder, TextEncoding
from .checkpoint import save_checkpoint
from .data import DiffusionExamples
from .device import fused, to_device
from .ema import EMA
from .engine import Trainer
from .loader import make_loader
from .setup import announce, open_data, open_run, parameters_m, restore

logger = logging.getLogger("fashiongen.train")


@dataclass
class DistillRun(Trainer):
    """Everything the distillation steps share; built by `DistillRun.build` (`prepare`)."""

    name: ClassVar[str] = "student"
    hint: ClassVar[str] = "Lower train.learning_rate or raise train.warmup_steps"
    postfix: ClassVar[tuple[str, ...]] = ("loss", "teacher_gap")
    logged: ClassVar[tuple[str, ...]] = ("loss", "grad_norm", "lr", "teacher_gap")

    config: Config
    accelerator: Accelerator
    run_dir: Path
    generator: nn.Module  # the prepared StudentUNet (adapters and guidance embedding train)
    teacher: DiffusionGenerator  # frozen
    ema: EMA  # the target network, and what is exported
    optimizer: torch.optim.Optimizer
    train_examples: DiffusionExamples
    train_loader: Any
    encoder: CaptionEncoder
    empty: TextEncoding  # the empty caption: the teacher's unconditional branch
    alphas_cumprod: Tensor
    grid: Tensor  # [grid_size] ascending solver timesteps
    metrics: MetricsLog
    steps_per_epoch: int
    teacher_facts: dict[str, Any]
    step: int = 0
    teacher_images: Tensor | None = None  # validation: the teacher's images, drawn once

    @property
    def images_per_step(self) -> int:
        return self.config.train.batch_size * self.accelerator.num_processes

    @property
    def prediction_type(self) -> str:
        return str(self.teacher.diffusion["prediction_type"])

    @classmethod
    def build(cls, config: Config, resume: Path | None = None, show_progress: bool = True) -> DistillRun:
        return prepare_distill(config, resume, show_progress)

    def averaged(self) -> tuple[EMA, nn.Module]:
        return self.ema, self.generator

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        return train_step(self, batch)

    def validate(self) -> dict[str, Any]:
        return validate_distill(self)

    def curves(self, records: list[dict[str, Any]], path: Path, title: str) -> Any:
        return training_curves(records, path, title)

    def save(self) -> Path:
        return save_distill(self)

    def export(self) -> Path:
        return export_distill(self)


def load_teacher(config: Config) -> DiffusionGenerator:
    """train.init_from as a teacher: a text-to-image diffusion model at data.resolution."""
    if not config.train.init_from:
        raise ConfigError("train.init_from: a student needs its teacher (a diffusion model folder, e.g. fashiongen/pretrained)")
    try:
        teacher = load_generator(config.train.init_from)
    except ModelFileError as error:
        raise ConfigError(f"train.init_from: {error}") from None
    if type(teacher) is not DiffusionGenerator:
        raise ConfigError(f"train.init_from {config.train.init_from}: a {teacher.family} model cannot teach a student "
                          "(a text-to-image diffusion model can)")
    if teacher.resolution != config.data.resolution:
        raise ConfigError(f"data.resolution: the teacher makes {teacher.resolution} px images, not {config.data.resolution}")
    return teacher


def build_student(teacher: DiffusionGenerator, config: Config) -> StudentUNet:
    """The teacher's network (copied) with adapters, plus a guidance embedding: at the start, the teacher's
    conditional branch exactly."""
    student = StudentUNet(copy.deepcopy(teacher.model).float().train(), config.distill.guidance_features)
    add_lora(student.unet, config.distill.lora_rank)
    return student


def start_student(student: StudentUNet, path: str, teacher: DiffusionGenerator) -> dict[str, Any]:
    """distill.init_student: load a saved student's adapters and guidance embedding into `student` (a run on another
    machine continues a shipped student this way, as train.init_from continues other families); returns its facts."""
    try:
        start = load_generator(path)
    except ModelFileError as error:
        raise ConfigError(f"distill.init_student: {error}") from None
    if start.family != "student":
        raise ConfigError(f"distill.init_student {path}: a {start.family} model, not a student")
    its_teacher = str(start.teacher_sha256)  # type: ignore[attr-defined]
    if its_teacher not in teacher_lineage(teacher):
        raise ConfigError(f"distill.init_student {path}: a student of another teacher (sha256 {its_teacher[:12]}, "
                          f"neither train.init_from's {teacher.sha256[:12]} nor a model it was continued from)")
    adapter = start.adapter  # type: ignore[attr-defined]
    mine = adapter_state(student)
    if set(adapter) != set(mine) or any(adapter[k].shape != mine[k].shape for k in mine):
        raise ConfigError(f"distill.init_student {path}: its adapters do not fit this config (distill.lora_rank, "
                          "distill.guidance_features must match the student's)")
    student.load_state_dict({k: v.float() for k, v in adapter.items()}, strict=False)
    training = start.info.training
    return {"path": start.source, "sha256": start.info.sha256, "steps": training.get("steps"),
            "images_seen": training.get("images_seen"), "teacher_sha256": its_teacher}


def teacher_lineage(teacher: DiffusionGenerator) -> list[str]:
    """The teacher's sha256, then that of each model it was continued from with train.init_from, newest first: a
    student of any of them may start a re-distillation from the continued teacher (its adapters are a warm start)."""
    lineage, facts = [teacher.sha256], teacher.info.training.get("initialised_from")
    while isinstance(facts, dict) and len(lineage) < 100:
        lineage.append(str(facts.get("sha256")))
        facts = facts.get("initialised_from")
    return lineage


def teacher_facts(teacher: DiffusionGenerator) -> dict[str, Any]:
    training = teacher.info.training
    return {"path": teacher.source, "sha256": teacher.sha256, "text_identity": teacher.info.text.identity,
            "steps": training.get("steps"), "images_seen": training.get("images_seen")}


def prepare_distill(config: Config, resume: Path | None = None, show_progress: bool = True) -> DistillRun:
    """Load the teacher, build the student, its EMA and optimiser, open the data, restore a checkpoint, make the run dir."""
    train, distill = config.train, config.distill
    teacher = load_teacher(config)
    if teacher.info.section("diffusion")["num_train_timesteps"] % distill.grid_size:
        raise ConfigError(f"distill.grid_size: {distill.grid_size} does not divide the teacher's "
                          f"{teacher.diffusion['num_train_timesteps']} training timesteps")
    data = open_data(config, resume)
    run_dir, accelerator, encoder = open_run(config, resume, data, [data.train_set], show_progress)
    if encoder.identity != teacher.info.text.identity:
        raise ConfigError(f"text: the teacher was trained with caption encoder {teacher.info.text.identity}, "
                          f"this config loads {encoder.identity}")
    facts = data.saved.get("initialised_from") or teacher_facts(teacher)
    if resume is not None and facts.get("sha256") != teacher.sha256:
        raise ConfigError(f"train.init_from {config.train.init_from}: not the teacher this run started from "
                          f"(sha256 {teacher.sha256[:12]}, the run's {str(facts.get('sha256'))[:12]})")
    teacher.model.to(accelerator.device, memory_format=torch.channels_last)  # its forwards: ~1.3x faster on CPU
    student = build_student(teacher, config)
    if distill.init_student and resume is None:
        facts = {**facts, "student": start_student(student, distill.init_student, teacher)}
    ema = EMA(student, distill.target_ema_decay, train.ema_power)
    ema.module.to(accelerator.device)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                                  eps=train.adam_epsilon, weight_decay=train.weight_decay,
                                  fused=fused(accelerator.device, train.fused_adam))
    examples = DiffusionExamples(data.train_set, encoder.cache, teacher.attribute_vocab, seed=config.seed,
                                 num_train_timesteps=int(teacher.diffusion["num_train_timesteps"]),
                                 caption_dropout_prob=train.caption_dropout_prob,
                                 attribute_dropout_prob=train.attribute_dropout_prob)
    loader = make_loader(examples, train.batch_size, train, data.sampler)
    student, optimizer, loader = accelerator.prepare(student, optimizer, loader)
    (empty,) = encoder.cache.get_many([""])
    assert empty is not None  # precompute_captions always adds it
    run = DistillRun(config=config, accelerator=accelerator, run_dir=run_dir, generator=student, teacher=teacher, ema=ema,
                     optimizer=optimizer, train_examples=examples, train_loader=loader, encoder=encoder,
                     empty=TextEncoding(empty.token_states[None], torch.ones(1, empty.token_states.shape[0], dtype=torch.bool),
                                        empty.pooled[None]),
                     alphas_cumprod=alphas_cumprod_of(teacher.diffusion).to(accelerator.device),
                     grid=skip_grid(int(teacher.diffusion["num_train_timesteps"]), distill.grid_size).to(accelerator.device),
                     metrics=MetricsLog(run_dir / "metrics.jsonl"), steps_per_epoch=data.steps_per_epoch,
                     teacher_facts=facts)
    restore(run, resume, ema)
    announce(run, resume, f"student of {teacher.source} ({sum(p.numel() for p in trainable) / 1e6:.2f}M trainable of "
                          f"{parameters_m(ema.module):.1f}M parameters), {len(examples)} examples")
    return run


def _learning_rate(run: DistillRun) -> float:
    train = run.config.train
    return train.learning_rate * min(1.0, (run.step + 1) / max(1, train.warmup_steps))


def _guidance(run: DistillRun, batch: int) -> Tensor:
    """Each example's guidance scale, drawn from a generator seeded by the step (a resumed run draws the same)."""
    distill = run.config.distill
    generator = torch.Generator().manual_seed(run.config.seed * 1_000_003 + run.step)
    draw = torch.rand(batch, generator=generator)
    return to_device(distill.guidance_min + (distill.guidance_max - distill.guidance_min) * draw, run.accelerator.device)


def train_step(run: DistillRun, batch: dict[str, Any]) -> dict[str, Any]:
    """One consistency-distillation update (see the module's docstring); its numbers stay on the device."""
    distill = run.config.distill
    clean, noise = batch["pixel_values"], batch["noise"]
    size = clean.shape[0]
    skip = int(run.teacher.diffusion["num_train_timesteps"]) // distill.grid_size  # run.grid's spacing (skip_grid)
    t_n = run.grid[batch["timestep"] % distill.grid_size]  # the example's timestep picks its grid point
    t_prev = (t_n - skip).clamp(min=0)
    w = _guidance(run, size)
    ids = batch.get("attribute_ids")
    x_t = add_noise(run.alphas_cumprod, clean, noise, t_n)
    text = TextEncoding(batch["text_states"], batch["text_mask"], batch["text_pooled"])
    # the teacher's guided DDIM step t_n -> t_prev; under train.mixed_precision=bf16 its forwards (and the EMA
    # target's) run in bf16 like the student's: 2.0 s a step against 2.25 on a 2-core AVX-512 BF16 CPU. Two
    # continuations of the shipped student, bf16 and float32, tracked each other (4-step validation distance from the
    # teacher 31.44 / 31.41 levels at step 200, 35.66 / 35.61 at step 400)
    with torch.no_grad(), run.accelerator.autocast():
        empty = TextEncoding(run.empty.token_states.expand(size, -1, -1), run.empty.mask.expand(size, -1),
                             run.empty.pooled.expand(size, -1))
        both = concat_text(text, empty)
        both_ids = None if ids is None else torch.cat([ids, torch.zeros_like(ids)])
        output = run.teacher.model(torch.cat([x_t, x_t]).contiguous(memory_format=torch.channels_last),
                                   torch.cat([t_n, t_n]), both.token_states, both.mask, both.pooled, both_ids).float()
        conditional, unconditional = output.chunk(2)
        guided = unconditional + w.view(-1, 1, 1, 1) * (conditional - unconditional)
        teacher_clean, teacher_noise = clean_and_noise(run.prediction_type, run.alphas_cumprod, x_t, guided, t_n)
        x_prev = ddim_step(run.alphas_cumprod, teacher_clean, teacher_noise, t_prev)
        target_output = run.ema.module(x_prev, t_prev, text.token_states, text.mask, text.pooled, ids, None, w)
        target = consistency_output(run.prediction_type, run.alphas_cumprod, x_prev, target_output, t_prev)
    student_output = run.generator(x_t, t_n, text.token_states, text.mask, text.pooled, ids, None, w)
    prediction = consistency_output(run.prediction_type, run.alphas_cumprod, x_t, student_output, t_n)
    loss = pseudo_huber(prediction, target, distill.huber_c).mean()
    lr = _learning_rate(run)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(loss)
    norm = run.accelerator.clip_grad_norm_([p for p in run.generator.parameters() if p.requires_grad],
                                           run.config.train.max_grad_norm)
    run.optimizer.step()
    return {"loss": loss.detach(), "grad_norm": norm, "lr": lr,
            "teacher_gap": (prediction.detach() - teacher_clean).abs().mean()}


# ---------------------------------------------------------------------------------------------- validation


def _validation_inputs(run: DistillRun) -> tuple[list[str], list[int], TextEncoding]:
    train = run.config.train
    prompts = [p for p in train.validation_prompts for _ in train.validation_seeds]
    seeds = [s for _ in train.validation_prompts for s in train.validation_seeds]
    return prompts, seeds, run.encoder.encode(prompts)


@torch.no_grad()
def validate_distill(run: DistillRun) -> dict[str, float]:
    """samples/step_N.png: per prompt and seed, the teacher's 20-step image then the EMA student's at each of
    distill.validation_steps steps (guidance train.validation_guidance), and each student column's mean absolute
    difference from the teacher's images in 8-bit levels."""
    if not run.accelerator.is_main_process or not run.config.train.validation_prompts:
        return {}
    train, distill = run.config.train, run.config.distill
    prompts, seeds, text = _validation_inputs(run)
    device = run.accelerator.device
    text = TextEncoding(text.token_states.to(device), text.mask.to(device), text.pooled.to(device))
    noise = initial_noise(seeds, (3, run.teacher.resolution, run.teacher.resolution), device)
    if run.teacher_images is None:
        empty = run.encoder.encode([""] * len(prompts))
        scheduler = make_sampler("dpm++", run.teacher.diffusion)
        run.teacher_images = sample(run.teacher.model, scheduler, text, TextEncoding(
            empty.token_states.to(device), empty.mask.to(device), empty.pooled.to(device)), noise,
            num_inference_steps=20, guidance_scale=train.validation_guidance,
            attribute_ids=_no_attributes(run, len(prompts))).cpu()
    columns = {"teacher, 20 steps": run.teacher_images}
    results: dict[str, float] = {}
    timesteps_total = int(run.teacher.diffusion["num_train_timesteps"])
    for steps in distill.validation_steps:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        for g in generators:  # the first draw is the starting noise, as the pipeline does
            torch.randn((3, run.teacher.resolution, run.teacher.resolution), generator=g)
        images = consistency_sample(run.ema.module, run.alphas_cumprod, run.prediction_type, text.token_states,
                                    text.mask, text.pooled, noise,
                                    sampling_timesteps(steps, timesteps_total, distill.grid_size), train.validation_guidance,
                                    generators, _no_attributes(run, len(prompts))).cpu()
        columns[f"student, {steps} step{'s' if steps > 1 else ''}"] = images
        difference = np.abs(to_uint8(images).astype(np.float32) - to_uint8(run.teacher_images).astype(np.float32)).mean()
        results[f"val_diff_{steps}"] = float(difference)
    pictures, captions = [], []
    for row, prompt in enumerate(prompts):
        for name, images in columns.items():
            pictures.append(to_uint8(images[row : row + 1])[0])
            captions.append(f"{prompt[:28]} / {name}" if name.startswith("teacher") else name)
    size = max(128, run.teacher.resolution)
    save_image(captioned_grid(pictures, captions, columns=len(columns), tile=size, caption_lines=2),
               run.run_dir / "samples" / f"step_{run.step:06d}.png")
    return results


def _no_attributes(run: DistillRun, count: int) -> Tensor | None:
    vocab = run.teacher.attribute_vocab
    return torch.zeros(count, len(vocab), dtype=torch.long, device=run.accelerator.device) if vocab else None


# ---------------------------------------------------------------------------------------------- checkpoints, export


def save_distill(run: DistillRun) -> Path:
    state = {"num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
             "images_seen": run.step * run.images_per_step, "text_identity": run.encoder.identity,
             "text_dim": run.encoder.dim, "hardware": hardware_name(run.accelerator.device),
             "initialised_from": run.teacher_facts, "time": time.time()}
    return save_checkpoint(run.accelerator, run.run_dir, run.step, run.ema, run.config, state,
                           run.config.train.keep_checkpoints)


def adapter_state(student: StudentUNet) -> dict[str, Tensor]:
    """What a student's files hold: its adapters' factors and its guidance embedding (the rest is its teacher's)."""
    return {**lora_state(student), **{f"guidance.{k}": v for k, v in student.guidance.state_dict().items()}}


def export_distill(run: DistillRun, dtype: str = "float32") -> Path:
    """The EMA student as model files under run_dir/export; model.json names its teacher by a path relative to the
    export and by its weights' sha256."""
    path = run.run_dir / "export"
    if run.accelerator.is_main_process:
        training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "run": run.run_dir.name,
                    "num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
                    "device": str(run.accelerator.device), "hardware": hardware_name(run.accelerator.device),
                    **run_facts(run.metrics.read(), run.step), "initialised_from": run.teacher_facts}
        with replacing_directory(path, overwrite=True) as temporary:
            teacher_path = os.path.relpath(Path(run.teacher.source).resolve(), path.resolve())
            description = student_description(run.teacher, run.config, teacher_path, training)
            write_model_files(adapter_state(run.ema.module), description, temporary, dtype)
    run.accelerator.wait_for_everyone()
    return path


__all__ = ["DistillRun", "adapter_state", "build_student", "export_distill", "load_teacher", "prepare_distill",
           "save_distill", "train_step", "validate_distill"]
