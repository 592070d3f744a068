"""Generator architectures: a registry of named UNet specs and one builder from a config.

    model = build_model(config.model, resolution=64, text_dim=384, attribute_vocab={"colour": [...]})
"""

from __future__ import annotations

from ..config import ConfigError, ModelConfig
from .unet import (
    MAX_PARAMETERS,
    NONE_ATTRIBUTE,
    ConditionEmbedding,
    FashionUNet,
    UNetSpec,
    check_description,
    count_parameters,
    parameters_of,
)

MODELS: dict[str, UNetSpec] = {
    "unet-tiny": UNetSpec((32, 64), layers_per_block=1, head_channels=32, native_resolution=32, norm_num_groups=8,
                          description="32 px, ~1M parameters: tests and smoke runs"),
    "unet-tiny-sr": UNetSpec((32, 64), layers_per_block=1, head_channels=32, native_resolution=32, norm_num_groups=8,
                             super_resolution=True, description="super-resolution to 32 px: tests"),
    "unet-small": UNetSpec((64, 128, 192, 256), layers_per_block=2, head_channels=64, native_resolution=64,
                           description="64 px, the default; trains on CPU, better on a GPU"),
    "unet-compact": UNetSpec((32, 64, 128, 192), layers_per_block=2, head_channels=32, native_resolution=64,
                             norm_num_groups=16, description="64 px, 17M parameters: the shipped default model "
                             "(2.4x unet-small's CPU training speed; 34 MB in float16)"),
    "unet-base": UNetSpec((128, 256, 320, 448), layers_per_block=2, head_channels=64, native_resolution=64,
                          description="64 px, 100M parameters, for GPUs"),
    "unet-sr128": UNetSpec((64, 128, 192, 256), layers_per_block=2, head_channels=64, native_resolution=128,
                           super_resolution=True, description="super-resolution stage 64 -> 128 px"),
    "unet-sr256": UNetSpec((64, 96, 128, 192, 256), layers_per_block=2, head_channels=64, native_resolution=256,
                           super_resolution=True, description="super-resolution stage 64/128 -> 256 px"),
}


def get_spec(name: str) -> UNetSpec:
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model '{name}'; known models: {', '.join(MODELS)}")
    return MODELS[name]


def check_model_config(config: ModelConfig, resolution: int) -> UNetSpec:
    """Fail before training, naming the key, when the model cannot run at this resolution."""
    spec = get_spec(config.name)
    try:
        spec.check_resolution(resolution)
    except ValueError as error:
        raise ConfigError(f"data.resolution: {error}; model {config.name} is meant for {spec.native_resolution} px") from None
    if spec.super_resolution:
        if not 0 < config.low_res_resolution < resolution:
            raise ConfigError(f"model.low_res_resolution: super-resolution model {config.name} needs a low-res size "
                              f"between 1 and data.resolution={resolution}, got {config.low_res_resolution}")
    elif config.low_res_resolution:
        raise ConfigError(f"model.low_res_resolution: {config.name} is not a super-resolution model; leave it 0")
    return spec


def build_model(config: ModelConfig, resolution: int, text_dim: int,
                attribute_vocab: dict[str, list[str]] | None = None) -> FashionUNet:
    spec = check_model_config(config, resolution)
    return FashionUNet(spec, resolution, text_dim, config.pooled_text, attribute_vocab)


__all__ = ["MAX_PARAMETERS", "MODELS", "NONE_ATTRIBUTE", "ConditionEmbedding", "FashionUNet", "UNetSpec", "build_model", "check_description",
           "check_model_config", "count_parameters", "get_spec", "parameters_of"]
