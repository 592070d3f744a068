"""Typed configuration: dataclasses hold every default; YAML files and `key.sub=value` overrides change them.

    cfg = load_config(["configs/small64.yaml"], ["data.resolution=32", "text.max_length=48"])
    save_config(cfg, run_dir / "config.yaml")   # loads back identical with load_config([that file])

sections.py holds the dataclasses (each checks its own values with checks.py), merging.py applies nested values to
them key by key (and holds a model.json's saved values to the same types and ranges), loading.py reads YAML files
and overrides, saving.py writes a config back.
"""

from .checks import ConfigError
from .loading import MAX_CONFIG_BYTES, load_config, read_yaml_mapping, split_cli_args
from .merging import check_section, parse_override
from .saving import config_to_dict, dump_config, save_config
from .sections import (
    Config,
    CriticConfig,
    DataConfig,
    DistillConfig,
    GANConfig,
    ModelConfig,
    TextConfig,
    TrainConfig,
    UpsamplerConfig,
)

__all__ = ["MAX_CONFIG_BYTES", "Config", "ConfigError", "CriticConfig", "DataConfig", "DistillConfig", "GANConfig",
           "ModelConfig", "TextConfig", "TrainConfig", "UpsamplerConfig", "check_section", "config_to_dict",
           "dump_config", "load_config", "parse_override", "read_yaml_mapping", "save_config", "split_cli_args"]
