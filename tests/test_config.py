from pathlib import Path

import pytest

from fashiongen.config import Config, ConfigError, ModelConfig, dump_config, load_config, save_config, split_cli_args
from fashiongen.models import check_model_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_come_from_dataclasses() -> None:
    config = load_config()
    assert config == Config()
    assert config.data.resolution == 64 and config.text.encoder == "minilm"


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: tiny\ndata:\n  resolution: 32\n  hflip: false\ntext:\n  max_length: 48\n")
    config = load_config([path], ["data.resolution=16", "data.poses=[id_gridfs_1, id_gridfs_2]", "seed=7"])
    assert config.name == "tiny" and config.seed == 7
    assert config.data.resolution == 16 and config.data.hflip is False
    assert config.data.poses == ["id_gridfs_1", "id_gridfs_2"]
    assert config.text.max_length == 48


def test_dump_and_load_back_identical(tmp_path: Path) -> None:
    config = load_config([], ["data.poses=a,b", "data.val_fraction=0.1", "text.cache_dir=", "name=round trip"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config([tmp_path / "config.yaml"]) == config
    assert dump_config(load_config([tmp_path / "config.yaml"])) == dump_config(config)


def test_shipped_configs_load_and_their_models_fit_their_resolution() -> None:
    paths = sorted((REPO / "configs").glob("*.yaml"))
    assert {"fashiongen64.yaml", "fashiongen256.yaml", "default64.yaml"} <= {path.name for path in paths}
    for path in paths:
        config = load_config([path])
        if config.model.family == "diffusion":  # the UNet registry's checks (levels, attention size, low-res input)
            check_model_config(config.model, config.data.resolution)


@pytest.mark.parametrize("name, resolution, model", [("fashiongen64", 64, "unet-base"), ("fashiongen256", 256, "unet-sr256")])
def test_release_configs_train_at_their_resolution_on_a_gpu(name: str, resolution: int, model: str) -> None:
    config = load_config([REPO / "configs" / f"{name}.yaml"])
    assert config.name == name and config.data.resolution == resolution and config.model.name == model
    assert config.train.mixed_precision == "bf16" and config.train.batch_size >= 64 and config.train.num_workers >= 8
    assert config.data.format == "fashiongen-h5" and config.text.max_length == 128
    with pytest.raises(ConfigError, match="attention limit"):  # why 256 px takes the super-resolution UNet
        check_model_config(ModelConfig(name="unet-base"), 256)


def test_unknown_key_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'data.reslution' \(did you mean 'resolution'\?\); valid keys: source, format"):
        load_config([], ["data.reslution=32"])
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  colour_jitter: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'data.colour_jitter'"):
        load_config([path])
    with pytest.raises(ConfigError, match=r"unknown key 'sampler' \(did you mean 'upsampler'\?\); valid keys: name, seed, data, text, model, train"):
        load_config([], ["sampler.steps=20"])


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'data.resolution' must be int, got 'big'"):
        load_config([], ["data.resolution=big"])
    with pytest.raises(ConfigError, match=r"'data.hflip' must be true or false"):
        load_config([], ["data.hflip=maybe"])
    with pytest.raises(ConfigError, match=r"data.resize_mode: 'stretch' is not one of center-crop, pad"):
        load_config([], ["data.resize_mode=stretch"])
    with pytest.raises(ConfigError, match=r"not of the form key.sub=value"):
        load_config([], ["=3"])
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config([tmp_path / "missing.yaml"])


def test_split_cli_args() -> None:
    assert split_cli_args(["configs/a.yaml", "data.resolution=32"]) == (["configs/a.yaml"], ["data.resolution=32"])
