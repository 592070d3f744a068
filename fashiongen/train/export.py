"""A training run's model as files the pipeline loads: EMA weights in safetensors plus model.json.

    export_model(ema_model, config, text_identity, "runs/001-small64/export")
    export_checkpoint(Path("runs/001-small64/checkpoints/step_004000"), Path("my-model"))

The file format, its checks and the atomic folder replacement live in fashiongen.models.files; what a diffusion
model's model.json holds is fashiongen.diffusion.generator.model_description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from ..diffusion.generator import model_description
from ..families import load_generator
from ..models import FashionUNet
from ..models.files import check_output_dir, replacing_directory, write_model_files


def export_model(model: FashionUNet, config: Config, text_identity: str, out_dir: str | Path, *,
                 dtype: str = "float32", training: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write model.safetensors + model.json into `out_dir`, replacing it only once both are complete."""
    with replacing_directory(out_dir, overwrite) as temporary:
        write_model_files(model.state_dict(), model_description(model, config, text_identity, training), temporary, dtype)
    return Path(out_dir)


def export_checkpoint(checkpoint: Path, out: Path, dtype: str = "float32", overwrite: bool = False,
                      protected: tuple[Path, ...] = ()) -> Path:
    """Export a checkpoint's EMA weights with the same model.json a finished run writes."""
    check_output_dir(out, overwrite, protected)  # before loading anything
    generator = load_generator(checkpoint)
    with replacing_directory(out, overwrite, protected) as temporary:
        generator.write(temporary, dtype)
    return out


__all__ = ["export_checkpoint", "export_model"]
