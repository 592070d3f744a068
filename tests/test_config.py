from pathlib import Path

import pytest

from fashiongen.config import Config, ConfigError, dump_config, load_config, save_config, split_cli_args

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


def test_shipped_configs_load() -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config([path])


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
