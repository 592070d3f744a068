"""The registry of generator families: model.json's "family" names the class that loads and runs the model.

    generator = load_generator("runs/001-small64")   # an export, a checkpoint (its EMA weights) or a run directory

A new family is a folder (fashiongen/gan/) implementing fashiongen.generators.ImageFamily and one line here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import Config
from .diffusion.generator import DiffusionGenerator, SuperResolutionGenerator
from .diffusion.student import StudentGenerator
from .gan.generator import GANGenerator
from .generators import ImageFamily
from .models import get_spec
from .models.files import DTYPES, ModelFileError, read_model_files
from .upsampler.generator import UpsamplerGenerator

FAMILIES: dict[str, type[ImageFamily]] = {
    "diffusion": DiffusionGenerator,
    "superres": SuperResolutionGenerator,
    "gan": GANGenerator,
    "upsampler": UpsamplerGenerator,
    "student": StudentGenerator,
}


def family_of_config(config: Config) -> str:
    """The family a training config makes (checkpoints carry a config, not a model.json)."""
    if config.model.family != "diffusion":
        return config.model.family
    try:
        return "superres" if get_spec(config.model.name).super_resolution else "diffusion"
    except ValueError as error:
        raise ModelFileError(str(error)) from None


def sampler_names() -> tuple[str, ...]:
    """Every sampler name some family takes (a CLI's choices before a model is loaded), in registry order."""
    names: dict[str, None] = {}
    for family in FAMILIES.values():
        names.update(dict.fromkeys(family.samplers))
    return tuple(names)


def load_generator(path: str | Path, device: str | torch.device = "cpu", dtype: str = "float32",
                   verify: bool = True) -> ImageFamily:
    """The model at `path` (an exported model, a checkpoint or a run directory), built by its family's class."""
    files = read_model_files(path, verify)
    family = files.info.family if files.info is not None else family_of_config(files.config)  # type: ignore[arg-type]
    if family not in FAMILIES:
        raise ModelFileError(f"{files.where}: family '{family}' is not installed in this FashionGen "
                             f"({', '.join(FAMILIES)})")
    return FAMILIES[family].from_files(files, device, DTYPES[dtype])


__all__ = ["FAMILIES", "family_of_config", "load_generator", "sampler_names"]
