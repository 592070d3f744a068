"""What the adversarial families' trainers share (the GAN's, the upsampler's): a start model from train.init_from with
its discriminator, checked against the config, and an export that writes the discriminator beside the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from ..config import ConfigError
from ..families import load_generator
from ..models.adversarial import write_discriminator
from ..models.files import ModelFileError, replacing_directory, write_model_files
from ..runs import hardware_name, run_facts
from .setup import INHERITED_FACTS


@dataclass(frozen=True)
class StartModel:
    """train.init_from for an adversarial family, loaded and checked (see `start_model`)."""

    model: Any  # the family's generator class (its EMA weights)
    discriminator: dict[str, Tensor] | None  # its discriminator's float32 weights; None when its folder has none
    facts: dict[str, Any]  # what the run records as training.initialised_from


def start_model(config: Any, encoder: Any, family: type, spec: Any, what: str,
                more_problems: Callable[[Any, dict[str, Tensor] | None], list[str]] = lambda start, d: []) -> StartModel:
    """The model train.init_from names, as the start of a `family` run making `what` ("a GAN (model.family: gan)"):
    its family, architecture (`spec`) and caption encoder must match the config's, and `more_problems` may name
    others; every mismatch is one ConfigError naming the keys."""
    path = config.train.init_from
    try:
        start = load_generator(path)
        discriminator = start.discriminator_state() if isinstance(start, family) else None
    except ModelFileError as error:
        raise ConfigError(f"train.init_from: {error}") from None
    if not isinstance(start, family):
        raise ConfigError(f"train.init_from {path}: a {start.family} model cannot start {what}")
    problems = []
    if start.model.spec != spec:
        problems.append(f"model.name: init_from is {start.model.spec.description!r}, not {config.model.name}")
    if start.info.text.identity != encoder.identity:
        problems.append(f"text: init_from was trained with caption encoder {start.info.text.identity}, now {encoder.identity}")
    problems += more_problems(start, discriminator)
    if problems:
        raise ConfigError(f"train.init_from {path}: " + "; ".join(problems))
    training = start.info.training
    facts = {"path": start.source, "sha256": start.info.sha256, "text_identity": start.info.text.identity,
             **{key: training[key] for key in INHERITED_FACTS if training.get(key) is not None}}
    return StartModel(start, discriminator, facts)


def export_adversarial(run: Any, loss_key: str, section: str,
                       describe: Callable[[dict[str, Any]], dict[str, Any]], dtype: str = "float32") -> Path:
    """The EMA generator and the discriminator (so init_from can continue both) as model files under run_dir/export
    (rank 0): `describe(training facts)` gives model.json, whose `section` records the discriminator; `loss_key` is
    the metrics.jsonl loss the card reports."""
    path = run.run_dir / "export"
    if run.accelerator.is_main_process:
        training = {"steps": run.step, "images_seen": run.step * run.images_per_step, "run": run.run_dir.name,
                    "num_processes": run.accelerator.num_processes, "images_per_step": run.images_per_step,
                    "device": str(run.accelerator.device), "hardware": hardware_name(run.accelerator.device),
                    **run_facts([{**r, "loss": r[loss_key]} for r in run.metrics.read() if loss_key in r], run.step),
                    "initialised_from": run.initialised_from}
        description = describe(training)
        with replacing_directory(path, overwrite=True) as temporary:
            discriminator = run.accelerator.unwrap_model(run.discriminator).state_dict()
            description[section]["discriminator"] = write_discriminator(discriminator, temporary, dtype)
            write_model_files(run.ema.module.state_dict(), description, temporary, dtype)
    run.accelerator.wait_for_everyone()
    return path


__all__ = ["StartModel", "export_adversarial", "start_model"]
