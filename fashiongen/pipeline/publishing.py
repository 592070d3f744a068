"""What a published model folder says about itself: the model card (stages, training data, the training run and the
models its weights started from, base models, metrics, critic) and the base models it carries. Used by
save_pretrained and by `python -m fashiongen.release`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..families import load_generator
from ..generators import LOW_RES, ImageFamily
from ..models.files import ModelFileError

RUN_FACTS = ("steps", "images_seen", "wall_time", "hardware", "final_loss")  # what a card says of a run it started from

USAGE = ["```python", "from fashiongen.pipeline import FashionGenPipeline",
         'pipe = FashionGenPipeline.from_pretrained("PATH")',
         'images = pipe(["a black leather biker jacket with silver zips"], num_images_per_prompt=4, seed=0)', "```"]

LIMITATIONS = ("Trained on studio product photos: one garment, centred, on a plain background. Prompts far from the "
               "training captions (people, scenes, text) give poor images. Generated images may resemble training photos; "
               "check memorisation before publishing them.")


def start_models(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The models a run's weights came from (train.init_from), newest first."""
    chain, start = [], training.get("initialised_from")
    while start:
        chain.append(start)
        start = start.get("initialised_from")
    return chain


def with_start(training: dict[str, Any], key: str) -> str:
    """A training count for the model card: this run's, plus its start models' (train.init_from) when it had one."""
    counts = [training.get(key)] + [start.get(key) for start in start_models(training)]
    if any(count is None for count in counts):
        return str(counts[0] if counts[0] is not None else "?")
    return str(counts[0]) if len(counts) == 1 else f"{sum(counts)} ({' + '.join(map(str, reversed(counts)))})"


def _student_summary(training: dict[str, Any]) -> str:
    teacher = training.get("initialised_from") or {}
    start = teacher.get("student") if isinstance(teacher.get("student"), dict) else {}
    runs = [training] + ([start] if start.get("steps") is not None else [])
    steps = sum(int(run["steps"]) for run in runs)
    images = (f"{sum(int(run['images_seen']) for run in runs):,} images"
              if all(run.get("images_seen") is not None for run in runs) else "")
    if len(runs) == 1:
        return f"{steps:,} distillation steps" + (f" ({images})" if images else "") + " from its teacher"
    facts = f" ({images})" if images else ""
    if start.get("teacher_sha256") and start["teacher_sha256"] != teacher.get("sha256"):
        return (f"{steps:,} distillation steps over 2 runs{facts}, the last {int(training['steps']):,} from this teacher "
                "and the first from the model it was continued from")
    return f"{steps:,} distillation steps over 2 runs{facts} from its teacher"


def training_summary(family: str, training: dict[str, Any]) -> str:
    """One line of a model's whole training, for the app's header: every run its weights went through (train.init_from
    chains), e.g. "11,300 training steps over 3 runs (90,400 images, 4.3 h)". A student's start model is its teacher,
    whose training is not the student's: "813 distillation steps (6,504 images) from its teacher"; a student started
    from an earlier student's adapters (distill.init_student) counts both runs, and says when the earlier one learnt
    from another teacher (the one this teacher was continued from)."""
    if training.get("steps") is None:
        return ""
    if family == "student":
        return _student_summary(training)
    runs = [training, *start_models(training)]
    steps = sum(int(run.get("steps") or 0) for run in runs)
    facts = []
    if all(run.get("images_seen") is not None for run in runs):
        facts.append(f"{sum(int(run['images_seen']) for run in runs):,} images")
    if all(run.get("wall_time_s") is not None for run in runs):
        facts.append(f"{sum(float(run['wall_time_s']) for run in runs) / 3600:.1f} h")
    over = f" over {len(runs)} runs" if len(runs) > 1 else ""
    return f"{steps:,} training steps{over}" + (f" ({', '.join(facts)})" if facts else "")


def carried_bases(offered: Mapping[str, Path], student: Path | None = None) -> dict[str, ImageFamily]:
    """The base models a published folder carries: those the model's own folder offers, plus a few-step student of it
    (a distillation run or its export) as "student"; anything but a student there is refused."""
    bases = {name: load_generator(path) for name, path in offered.items()}
    if student is not None:
        bases["student"] = load_generator(student)
        if bases["student"].family != "student":
            raise ModelFileError(f"--student {student}: a {bases['student'].family} model, not a distilled student")
    return bases


def _stage_rows(stages: Sequence[ImageFamily]) -> list[str]:
    lines = ["## Stages", "", "| stage | model | resolution | parameters | training steps | images seen |",
             "|---|---|---|---|---|---|"]
    for number, stage in enumerate(stages):
        training = stage.info.training
        kind = "super-resolution" if LOW_RES in stage.conditioning else "base"
        parameters = sum(p.numel() for p in stage.model.parameters()) / 1e6
        lines.append(f"| {number} ({kind}) | {stage.info.model_name} | {stage.resolution} px | {parameters:.1f}M | "
                     f"{with_start(training, 'steps')} | {with_start(training, 'images_seen')} |")
    return lines


def _data_lines(base: ImageFamily) -> list[str]:
    data = base.info.data
    return ["", "## Training data", "",
            f"- source: `{data.source or '?'}` (split `{data.split or '?'}`, {data.resolution or '?'} px)",
            f"- captions: {data.caption_mode}", f"- caption encoder: `{base.info.text.identity}`",
            f"- attributes: {', '.join(base.attribute_vocab) or 'none'}",
            f"- {base.card_line()}"]


def _training_lines(base: ImageFamily) -> list[str]:
    """The training run: its facts, the models it started from and what they had seen, its optimiser settings."""
    info, lines = base.info, []
    training = info.training
    if training:
        lines += ["", "## Training run", ""] + [f"- {key}: {value}" for key, value in training.items()
                                                if value is not None and key != "initialised_from"]
        for depth, start in enumerate(start_models(training)):  # started from another model's weights: what it had seen
            facts = ", ".join(f"{key} {start[key]}" for key in RUN_FACTS if start.get(key) is not None)
            lead = "initialised from" if depth == 0 else "which was itself initialised from"
            lines.append(f"- {lead} `{start['path']}` (sha256 {start['sha256'][:16]}: {facts})")
    train = info.config.get("train") or {}
    if train:
        own = info.config.get(info.family) or {}  # a family with two optimisers (a GAN) sets their rates in its section
        rate = (f"G {own['generator_lr']}, D {own['discriminator_lr']} (two optimisers)"
                if "generator_lr" in own and "discriminator_lr" in own else train.get("learning_rate"))
        lines += [f"- batch size {train.get('batch_size')}, learning rate {rate}, "
                  f"EMA decay {train.get('ema_decay')}, mixed precision {train.get('mixed_precision')}"]
    return lines


def _base_lines(base: ImageFamily, name: str, other: ImageFamily) -> list[str]:
    training = other.info.training
    facts = ", ".join(f"{key} {training[key]}" for key in RUN_FACTS if training.get(key) is not None)
    lines = ["", f"## Base model `{name}`", "",
             f"`FashionGenPipeline.from_pretrained(\"PATH\", base=\"{name}\")` (or `--base {name}`) makes images "
             f"with `{name}/` in place of the model above; the later stages stay.", "",
             f"- {other.card_line()}",
             f"- teacher: this folder's model (weights sha256 {base.info.sha256[:16]}), checked at load",
             f"- distillation run: {facts or 'no facts recorded'}"]
    if training.get("steps") is not None:
        lines.append(f"- in all: {_student_summary(training)}")
    return lines + [f"- {key}: {value}" for key, value in other.info.metrics.items()]


def model_card(stages: Sequence[ImageFamily], notes: str = "", critic: str | None = None,
               bases: Mapping[str, ImageFamily] | None = None) -> str:
    """A README for the saved model: what it is, what it was trained on, how long, and known metrics."""
    base = stages[0]
    lines = ["# FashionGen text-to-image model", "",
             f"Caption-conditioned {base.info.family} model trained with [FashionGen](https://github.com/fashiongen/fashiongen).", "",
             *USAGE, "", *_stage_rows(stages), *_data_lines(base), *_training_lines(base)]
    for name, other in (bases or {}).items():
        lines += _base_lines(base, name, other)
    metrics = base.info.metrics
    lines += ["", "## Metrics", ""]
    lines += [f"- {key}: {value}" for key, value in metrics.items()] if metrics else ["No evaluation recorded with this model."]
    if critic:
        lines += ["", "## Critic", "", f"`{critic}/` holds the text-image critic network `evaluate.py` scores with "
                  "(trained on the same photos; see its README)."]
    if notes.strip():
        lines += ["", notes.strip()]
    lines += ["", "## Limitations", "", LIMITATIONS, ""]
    return "\n".join(lines)


__all__ = ["carried_bases", "model_card", "start_models", "with_start"]
