"""Tiny exported models (random weights, real files) for pipeline, sampling-CLI and submission tests."""

from __future__ import annotations

from pathlib import Path

import torch

from fashiongen.config import load_config
from fashiongen.models import build_model
from fashiongen.text import CaptionEncoder
from fashiongen.train import export_model

VOCAB = {"category": ["Dresses", "Shirts", "Sneakers"], "colour": ["Black", "Navy Blue", "Red"]}


def export_tiny(out: Path, encoder: CaptionEncoder, *, seed: int = 0, resolution: int = 32, attributes: bool = False,
                super_resolution: bool = False) -> Path:
    """unet-tiny at `resolution` (or unet-tiny-sr from resolution / 2 up to it) with the caption encoder's width, exported."""
    overrides = [f"model.name=unet-tiny{'-sr' if super_resolution else ''}", f"data.resolution={resolution}"]
    if super_resolution:
        overrides.append(f"model.low_res_resolution={resolution // 2}")
    if attributes:
        overrides.append("model.attributes=[category, colour]")
    config = load_config([], overrides + ["name=tiny-test"])
    torch.manual_seed(seed)
    model = build_model(config.model, config.data.resolution, encoder.dim, VOCAB if attributes else {})
    return export_model(model, config, encoder.identity, out, training={"steps": 0, "images_seen": 0})


def export_tiny_gan(out: Path, encoder: CaptionEncoder, *, seed: int = 0, attributes: bool = False) -> Path:
    """gan-tiny (32 px, random weights) with the caption encoder's width, written as model files."""
    from fashiongen.gan import GANS, TextGenerator
    from fashiongen.gan.generator import gan_description
    from fashiongen.models.files import replacing_directory, write_model_files

    overrides = ["model.family=gan", "model.name=gan-tiny", "data.resolution=32", "name=tiny-gan-test"]
    if attributes:
        overrides.append("model.attributes=[category, colour]")
    config = load_config([], overrides)
    torch.manual_seed(seed)
    model = TextGenerator(GANS["gan-tiny"], encoder.dim, VOCAB if attributes else {})
    with replacing_directory(out) as temporary:
        write_model_files(model.state_dict(), gan_description(model, config, encoder.identity, {"steps": 0}), temporary)
    return out


def export_tiny_upsampler(out: Path, encoder: CaptionEncoder, *, seed: int = 0, input_resolution: int = 32) -> Path:
    """upsampler-tiny (4x from `input_resolution`, random weights: bicubic plus a random detail layer) with the caption
    encoder's width, written as model files."""
    from fashiongen.models.files import replacing_directory, write_model_files
    from fashiongen.upsampler import UPSAMPLERS, Upsampler
    from fashiongen.upsampler.generator import upsampler_description

    config = load_config([], ["model.family=upsampler", "model.name=upsampler-tiny", f"data.resolution={4 * input_resolution}",
                              f"model.low_res_resolution={input_resolution}", "name=tiny-upsampler-test"])
    torch.manual_seed(seed)
    model = Upsampler(UPSAMPLERS["upsampler-tiny"], encoder.dim)
    torch.nn.init.normal_(model.conv_out.weight, std=0.05)  # not the bicubic start: a stage that changes images
    with replacing_directory(out) as temporary:
        write_model_files(model.state_dict(), upsampler_description(model, config, encoder.identity, input_resolution,
                                                                    {"steps": 0}), temporary)
    return out
