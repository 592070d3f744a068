"""The trainer registry (fashiongen/train/trainers.py): every family trains through the one engine; the family a config
names picks its trainer, and a family without one is a one-line config error."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import tiny_config

from fashiongen.config import ConfigError, TextConfig, load_config
from fashiongen.runs import MetricsLog, checkpoint_dirs
from fashiongen.text import CaptionEncoder
from fashiongen.train import TRAINERS, prepare, train
from fashiongen.train.trainers import trainer_class
from pipeline_helpers import export_tiny


def family_overrides(family: str, root: Path) -> dict[str, object]:
    """One step of `family`, tiny, as its own tests configure it."""
    if family == "gan":
        return {"model.family": "gan", "model.name": "gan-tiny", "model.attributes": "[colour]"}
    if family == "upsampler":
        return {"model.family": "upsampler", "model.name": "upsampler-tiny", "data.resolution": 64,
                "model.low_res_resolution": 16, "upsampler.patch_size": 32, "upsampler.adversarial_start": 0,
                "upsampler.validation_images": 2, "data.val_fraction": 0.25}
    if family == "student":
        teacher = export_tiny(root / "teacher", CaptionEncoder(TextConfig(cache_dir="")))
        return {"model.family": "student", "model.name": "unet-tiny", "train.init_from": teacher,
                "distill.validation_steps": "[1]", "distill.grid_size": 10, "distill.lora_rank": 2}
    return {}


def critic_config(source: Path, root: Path, cache_dir: Path) -> object:
    settings: dict[str, object] = {
        "data.source": source, "data.val_fraction": 0.25, "text.cache_dir": cache_dir, "critic.resolution": 32,
        "critic.channels": "[8, 16, 16]", "critic.embed_dim": 32, "critic.text_hidden": 64, "critic.attributes": "[colour]",
        "critic.batch_size": 8, "critic.max_steps": 1, "critic.log_every": 1, "critic.validate_every": 0,
        "critic.checkpoint_every": 1, "critic.num_distractors": 3, "critic.output_dir": root / "critic"}
    return load_config([], [f"{key}={value}" for key, value in settings.items()])


@pytest.mark.parametrize("family", sorted(TRAINERS))
def test_every_registered_family_trains_a_step_through_the_one_engine(family: str, tmp_path: Path, garments16: Path,
                                                                      text_cache_dir: Path) -> None:
    if family == "critic":  # trained from the critic.* section (`python -m fashiongen.train critic`), not model.family
        run = trainer_class("critic").build(critic_config(garments16, tmp_path, text_cache_dir), None, False)
    else:
        config = tiny_config(garments16, tmp_path / "runs", text_cache_dir, **{
            "train.max_steps": 1, "train.checkpoint_every": 1, **family_overrides(family, tmp_path)})
        run = prepare(config, show_progress=False)
    assert type(run) is TRAINERS[family]
    run_dir = train(run, show_progress=False)
    assert run.step == 1 and [p.name for p in checkpoint_dirs(run_dir)] == ["step_000001"]
    logged = [r for r in MetricsLog(run_dir / "metrics.jsonl").read() if "images_per_s" in r]
    assert [r["step"] for r in logged] == [1] and logged[0]["epoch"] == 0
    assert (run_dir / ("critic.safetensors" if family == "critic" else "export/model.json")).is_file()


def test_a_family_without_a_trainer_is_one_config_error(tmp_path: Path, garments16: Path, text_cache_dir: Path) -> None:
    config = tiny_config(garments16, tmp_path, text_cache_dir)
    config.model.family = "vae"  # past the config's own check of the name: what a family added there but not here meets
    with pytest.raises(ConfigError, match=r"^model.family: 'vae' has no trainer; one of diffusion, gan, upsampler") as raised:
        prepare(config, show_progress=False)
    assert "\n" not in str(raised.value)
    assert not any(tmp_path.iterdir())  # refused before any folder is made
