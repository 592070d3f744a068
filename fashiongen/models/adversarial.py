"""What the adversarial families share (the GAN, the upsampler): the discriminator's file beside a model's files, and
the hinge and feature-matching losses, as pure functions of logits and features.

    entry = write_discriminator(state_dict, folder, "float16")   # what model.json records for it
    d_loss = discriminator_hinge(real_logits, fake_logits)        # per-sample [B]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from .files import DTYPES, ModelFileError, ModelFiles, load_weights, sha256_of

DISCRIMINATOR_FILE = "discriminator.safetensors"  # beside an exported GAN, so train.init_from can continue it
CHECKPOINT_DISCRIMINATOR = "model_1.safetensors"  # Accelerate's name for the second model a checkpoint saves


def write_discriminator(state_dict: dict[str, Tensor], directory: Path, dtype: str) -> dict[str, str]:
    """The discriminator's weights beside a GAN's model files; the entry model.json records (its checksum included)."""
    state = {name: tensor.detach().to("cpu", DTYPES[dtype]).contiguous() for name, tensor in state_dict.items()}
    save_file(state, directory / DISCRIMINATOR_FILE, metadata={"format": "fashiongen-gan-discriminator"})
    (directory / DISCRIMINATOR_FILE).chmod(0o644)  # safetensors writes 0600; a shipped folder is read by everyone
    return {"file": DISCRIMINATOR_FILE, "dtype": dtype, "sha256": sha256_of(directory / DISCRIMINATOR_FILE)}


def read_discriminator(file: Path | None, recorded: Any) -> dict[str, Tensor] | None:
    """A discriminator's float32 weights beside a model's files, checked against the checksum model.json records for
    it (`recorded`: its entry); None when the model has none."""
    if file is None:
        return None
    if not file.is_file():
        raise ModelFileError(f"{file}: missing (model.json lists it)")
    recorded = recorded if isinstance(recorded, dict) else {}
    if recorded.get("sha256") and sha256_of(file) != recorded["sha256"]:
        raise ModelFileError(f"{file}: checksum does not match model.json (file corrupted or replaced)")
    return {name: tensor.float() for name, tensor in load_weights(file).items()}


def discriminator_file(files: ModelFiles, section: str) -> Path | None:
    """Where a model's discriminator is: the file model.json's `section`.discriminator names in its folder (an export),
    Accelerate's second model (a checkpoint); None when there is none."""
    if files.info is not None:
        recorded = files.info.section(section).get("discriminator")
        name = recorded.get("file") if isinstance(recorded, dict) else None
        if name is not None and (not isinstance(name, str) or name != Path(name).name or not name.endswith(".safetensors")):
            raise ModelFileError(f"{files.where}: {section}.discriminator.file: expected NAME.safetensors in this folder")
        return files.directory / name if name else None
    file = files.directory / CHECKPOINT_DISCRIMINATOR
    return file if file.is_file() else None


def discriminator_hinge(real: Tensor, fake: Tensor, mismatched: Tensor | None = None) -> Tensor:
    """Per-sample hinge loss [B]: real images with their captions above +1, generated images and real images with
    another garment's caption below -1 (the two negatives weighted half each, as in DF-GAN)."""
    loss = F.relu(1.0 - real)
    if mismatched is None:
        return loss + F.relu(1.0 + fake)
    return loss + 0.5 * (F.relu(1.0 + fake) + F.relu(1.0 + mismatched))


def generator_hinge(fake: Tensor) -> Tensor:
    """Per-sample generator loss [B]: raise the discriminator's logit on generated images with their captions."""
    return -fake


def feature_matching(fake: Sequence[Tensor], real: Sequence[Tensor]) -> Tensor:
    """Mean L1 between the discriminator's features of the generated image and of the photo, layer by layer (pix2pixHD);
    the photo's features are constants."""
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake, real)) / max(len(fake), 1)


__all__ = ["CHECKPOINT_DISCRIMINATOR", "DISCRIMINATOR_FILE", "discriminator_file", "discriminator_hinge", "feature_matching",
           "generator_hinge", "read_discriminator", "write_discriminator"]
