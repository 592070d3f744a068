"""The few-step student's test settings: a tiny distillation run's overrides."""

from __future__ import annotations

from pathlib import Path


def student_overrides(teacher: Path, **extra: object) -> dict[str, object]:
    return {"model.family": "student", "model.name": "unet-tiny", "train.init_from": teacher, "train.max_steps": 4,
            "train.checkpoint_every": 2, "train.validate_every": 4, "train.learning_rate": 1e-3,
            "train.caption_dropout_prob": 0.0, "distill.validation_steps": "[1, 2]", "distill.grid_size": 10,
            "distill.lora_rank": 2, **extra}
