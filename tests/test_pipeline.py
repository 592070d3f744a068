"""FashionGenPipeline on tiny exported models: seeds, batching, guidance inputs, cascade, interpolation,
editing, save/load and the messages for bad input."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fashiongen.config import TextConfig
from fashiongen.pipeline import FashionGenPipeline, ModelFileError, PipelineInputError
from fashiongen.text import CaptionEncoder
from fashiongen.train import prepare, train
from fashiongen.models.files import DESCRIPTION_DIGEST, description_digest
from pipeline_helpers import export_tiny
from training_helpers import tiny_config

FAST = dict(num_inference_steps=3, guidance_scale=2.0)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def max_difference(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


@pytest.fixture(scope="module")
def encoder() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, encoder: CaptionEncoder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"base": export_tiny(root / "base", encoder, attributes=True),
            "base16": export_tiny(root / "base16", encoder, resolution=16, seed=1),
            "sr32": export_tiny(root / "sr32", encoder, super_resolution=True, seed=2)}


@pytest.fixture(scope="module")
def pipe(models: dict[str, Path]) -> FashionGenPipeline:
    pipeline = FashionGenPipeline.from_pretrained(models["base"])
    pipeline.show_progress = False
    return pipeline


def test_images_are_pil_at_the_model_resolution_in_prompt_order(pipe: FashionGenPipeline) -> None:
    images = pipe(["a red silk dress", "navy blue shirt"], num_images_per_prompt=2, seed=0, **FAST)
    assert len(images) == 4 and all(i.size == (32, 32) and i.mode == "RGB" for i in images)
    alone = pipe(["navy blue shirt"], seed=[3], **FAST)[0]  # prompt 1, image 1 had seed 0 + 3
    assert max_difference(images[3], alone) <= 1


def test_same_seed_same_pixels_whatever_the_batch(pipe: FashionGenPipeline) -> None:
    prompts = ["a red silk dress", "black leather boots", "white sneakers", "green tshirt"]
    seeds = [10, 11, 12, 13]
    together = pipe(prompts, seed=seeds, **FAST)
    assert all(max_difference(a, b) == 0 for a, b in zip(together, pipe(prompts, seed=seeds, **FAST)))  # rerun: exact
    pipe.batch_size = 1
    try:
        one_by_one = pipe(prompts, seed=seeds, **FAST)
    finally:
        pipe.batch_size = 8
    reordered = pipe(prompts[::-1], seed=seeds[::-1], **FAST)[::-1]
    for a, b, c in zip(together, one_by_one, reordered):
        assert max_difference(a, b) <= 1 and max_difference(a, c) <= 1  # float sums may round one level apart


def test_a_generator_gives_reproducible_seeds(pipe: FashionGenPipeline) -> None:
    first = pipe(["a red silk dress"] * 2, generator=torch.Generator().manual_seed(42), **FAST)
    again = pipe(["a red silk dress"] * 2, generator=torch.Generator().manual_seed(42), **FAST)
    assert all(max_difference(a, b) == 0 for a, b in zip(first, again))
    assert np.abs(pixels(first[0]) - pixels(first[1])).mean() > 5  # one generator, a different seed per image
    seeds = FashionGenPipeline.seeds_from(torch.Generator().manual_seed(42), 2)
    assert max_difference(pipe(["a red silk dress"], seed=[seeds[1]], **FAST)[0], first[1]) <= 1
    with pytest.raises(PipelineInputError, match="seed or generator"):
        pipe(["a dress"], seed=0, generator=torch.Generator())


def test_different_seeds_differ_for_every_sampler(pipe: FashionGenPipeline) -> None:
    for scheduler in ("dpm++", "ddim", "euler", "ddpm"):
        a, b = pipe(["a red silk dress"] * 2, seed=[1, 2], scheduler=scheduler, **FAST)
        assert np.abs(pixels(a) - pixels(b)).mean() > 5, scheduler
        again = pipe(["a red silk dress"], seed=[2], scheduler=scheduler, **FAST)[0]
        assert max_difference(b, again) <= 1, scheduler


def test_negative_prompt_replaces_the_empty_caption(pipe: FashionGenPipeline) -> None:
    plain = pipe(["a red silk dress"], seed=5, **FAST)[0]
    assert max_difference(plain, pipe(["a red silk dress"], negative_prompt="", seed=5, **FAST)[0]) == 0
    negative = pipe(["a red silk dress"], negative_prompt="blurry, low quality", seed=5, **FAST)[0]
    assert np.abs(pixels(plain) - pixels(negative)).mean() > 0.5
    unguided = dict(num_inference_steps=3, guidance_scale=1.0)  # without guidance the negative prompt is unused
    assert max_difference(pipe(["a red silk dress"], seed=5, **unguided)[0],
                          pipe(["a red silk dress"], negative_prompt="blurry", seed=5, **unguided)[0]) == 0


def test_attributes_condition_and_unknown_values_name_the_vocabulary(pipe: FashionGenPipeline) -> None:
    plain = pipe(["a dress"], seed=0, **FAST)[0]
    dress = pipe(["a dress"], seed=0, attributes={"category": "dresses", "colour": "Red"}, **FAST)[0]
    assert np.abs(pixels(plain) - pixels(dress)).mean() > 0.5
    per_prompt = pipe(["a dress", "a dress"], seed=[0, 0], attributes=[{}, {"category": "Dresses", "colour": "red"}], **FAST)
    assert max_difference(per_prompt[0], plain) <= 1 and max_difference(per_prompt[1], dress) <= 1
    with pytest.raises(PipelineInputError, match=r"category='Hats'.*Dresses, Shirts, Sneakers"):
        pipe(["a hat"], attributes={"category": "Hats"}, **FAST)
    with pytest.raises(PipelineInputError, match="attribute 'season' is not one this model knows"):
        pipe(["a hat"], attributes={"season": "Fall"}, **FAST)


def test_bad_settings_and_prompts_are_refused_with_the_reason(pipe: FashionGenPipeline) -> None:
    cases = [(dict(prompts=["ok"], num_inference_steps=0), "num_inference_steps"),
             (dict(prompts=["ok"], guidance_scale=-1.0), "guidance_scale"),
             (dict(prompts=["ok"], guidance_scale=float("nan")), "guidance_scale"),
             (dict(prompts=["ok"], scheduler="plms"), "scheduler 'plms'"),
             (dict(prompts=["ok", "  "]), "prompt 1 is empty"),
             (dict(prompts=[]), "no prompts"),
             (dict(prompts=["ok"], seed=[1, 2]), "2 seeds for 1 images"),
             (dict(prompts=["ok"], num_images_per_prompt=0), "num_images_per_prompt")]
    for kwargs, message in cases:
        with pytest.raises(PipelineInputError, match=message):
            pipe(**kwargs)


def test_over_long_prompts_are_truncated_with_a_warning(pipe: FashionGenPipeline, caplog: pytest.LogCaptureFixture) -> None:
    long_prompt = "a long flowing red silk evening dress with " + "hand embroidered beads and " * 30 + "a train"
    with caplog.at_level(logging.WARNING):
        image = pipe([long_prompt], seed=0, **FAST)[0]
    assert image.size == (32, 32)
    assert "truncated" in caplog.text


def test_interpolation_ends_equal_the_single_samples(pipe: FashionGenPipeline) -> None:
    settings = dict(num_inference_steps=3, guidance_scale=2.0, scheduler="ddim")
    frames = pipe.interpolate("a red silk dress", "black leather boots", seed_a=4, seed_b=9, num_frames=5, **settings)
    assert len(frames) == 5
    first = pipe(["a red silk dress"], seed=4, **settings)[0]
    last = pipe(["black leather boots"], seed=9, **settings)[0]
    assert max_difference(frames[0], first) <= 1 and max_difference(frames[-1], last) <= 1
    middle = pixels(frames[2])
    assert np.abs(middle - pixels(first)).mean() > 1 and np.abs(middle - pixels(last)).mean() > 1
    with pytest.raises(PipelineInputError, match="deterministic sampler"):
        pipe.interpolate("a", "b", num_frames=3, scheduler="ddpm")
    with pytest.raises(PipelineInputError, match="num_frames"):
        pipe.interpolate("a", "b", num_frames=1)


def test_editing_with_strength_zero_returns_the_input(pipe: FashionGenPipeline) -> None:
    photo = pipe(["a red silk dress"], seed=0, **FAST)[0]
    assert max_difference(pipe.edit(photo, "the same dress in blue", strength=0.0, **FAST)[0], photo) == 0
    edited = pipe.edit(photo, "the same dress in blue", strength=0.6, seed=1, **FAST)[0]
    assert np.abs(pixels(edited) - pixels(photo)).mean() > 1
    assert max_difference(edited, pipe.edit(np.asarray(photo), "the same dress in blue", strength=0.6, seed=1, **FAST)[0]) == 0


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim", "euler", "ddpm"])
def test_inpainting_repaints_only_the_masked_region(pipe: FashionGenPipeline, scheduler: str) -> None:
    photo = pipe(["a red silk dress"], seed=0, **FAST)[0]
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, :16] = 255  # repaint the left half
    edited = pixels(pipe.edit(photo, "a blue dress", strength=1.0, mask=mask, scheduler=scheduler, **FAST)[0])
    assert np.abs(edited[:, 16:] - pixels(photo)[:, 16:]).max() == 0
    assert np.abs(edited[:, :16] - pixels(photo)[:, :16]).mean() > 1
    nothing = pixels(pipe.edit(photo, "a blue dress", strength=1.0, mask=np.zeros((32, 32), np.uint8), scheduler=scheduler, **FAST)[0])
    assert np.abs(nothing - pixels(photo)).max() == 0


def test_edit_inputs_are_checked(pipe: FashionGenPipeline, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    photo = np.full((40, 30, 3), 200, np.uint8)
    with pytest.raises(PipelineInputError, match=r"notes.txt.*not an image"):
        pipe.edit(tmp_path / "notes.txt", "a dress")
    with pytest.raises(PipelineInputError, match=r"cut.png.*(corrupt|not an image)"):
        pipe.edit(tmp_path / "cut.png", "a dress")
    with pytest.raises(PipelineInputError, match="not found"):
        pipe.edit(tmp_path / "missing.jpg", "a dress")
    with pytest.raises(PipelineInputError, match="strength"):
        pipe.edit(photo, "a dress", strength=1.5)
    with pytest.raises(PipelineInputError, match="mask"):
        pipe.edit(photo, "a dress", mask=tmp_path / "notes.txt")
    assert pipe.edit(photo, "a dress", strength=0.5, **FAST)[0].size == (32, 32)  # any shape is resized like training photos


def test_save_and_load_give_identical_images(pipe: FashionGenPipeline, tmp_path: Path) -> None:
    saved = pipe.save_pretrained(tmp_path / "saved")
    assert {p.name for p in saved.iterdir()} == {"model.safetensors", "model.json", "pipeline.json", "README.md"}
    card = (saved / "README.md").read_text()
    assert "unet-tiny" in card and "32 px" in card and "category, colour" in card
    loaded = FashionGenPipeline.from_pretrained(saved)
    loaded.show_progress = False
    for a, b in zip(pipe(["a red silk dress", "white sneakers"], seed=7, **FAST),
                    loaded(["a red silk dress", "white sneakers"], seed=7, **FAST)):
        assert max_difference(a, b) == 0
    assert loaded.fingerprint == pipe.fingerprint


def test_cascade_runs_super_resolution_up_to_the_requested_size(models: dict[str, Path], encoder: CaptionEncoder,
                                                                tmp_path: Path) -> None:
    cascade = FashionGenPipeline.from_pretrained(models["base16"], superres=[models["sr32"]])
    cascade.show_progress = False
    assert [s.resolution for s in cascade.stages] == [16, 32] and cascade.resolution == 32
    full = cascade(["a red silk dress"], seed=3, **FAST)[0]
    base = cascade(["a red silk dress"], seed=3, size=16, **FAST)[0]
    assert full.size == (32, 32) and base.size == (16, 16)
    # the SR stage reads the base stage's output: another base model under the same SR stage and seed changes it
    other_base = export_tiny(tmp_path / "other-base", encoder, resolution=16, seed=5)
    other = FashionGenPipeline.from_pretrained(other_base, superres=[models["sr32"]])
    other.show_progress = False
    assert np.abs(pixels(other(["a red silk dress"], seed=3, **FAST)[0]) - pixels(full)).mean() > 1
    assert cascade(["a red silk dress"], seed=3, size=48, **FAST)[0].size == (48, 48)  # above the last stage: resized
    saved = cascade.save_pretrained(tmp_path / "cascade")
    assert (saved / "superres-32" / "model.json").is_file()
    again = FashionGenPipeline.from_pretrained(saved)
    again.show_progress = False
    assert max_difference(again(["a red silk dress"], seed=3, **FAST)[0], full) == 0
    with pytest.raises(ModelFileError, match="base"):
        FashionGenPipeline.from_pretrained(models["sr32"])


def test_bf16_weights_on_cpu_give_close_images(models: dict[str, Path]) -> None:
    half = FashionGenPipeline.from_pretrained(models["base"], dtype="bfloat16")
    full = FashionGenPipeline.from_pretrained(models["base"])
    half.show_progress = full.show_progress = False
    assert half.dtype == torch.bfloat16
    a, b = half(["a red silk dress"], seed=0, **FAST)[0], full(["a red silk dress"], seed=0, **FAST)[0]
    assert np.abs(pixels(a) - pixels(b)).mean() < 12


def test_model_paths_that_are_not_models(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        FashionGenPipeline.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="is not a FashionGen model"):
        FashionGenPipeline.from_pretrained(tmp_path / "empty")
    corrupt = shutil.copytree(models["base"], tmp_path / "corrupt")
    with (corrupt / "model.safetensors").open("r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\xff" * 8)
    with pytest.raises(ModelFileError, match="checksum"):
        FashionGenPipeline.from_pretrained(corrupt)
    other = shutil.copytree(models["base"], tmp_path / "other-encoder")
    info = json.loads((other / "model.json").read_text())
    info["text"]["identity"] = "minilm-000000000000-L64-float32-norm"
    info[DESCRIPTION_DIGEST] = description_digest(info)  # a model really trained with another encoder: a valid file
    (other / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelFileError, match="trained with caption encoder minilm-000000000000"):
        FashionGenPipeline.from_pretrained(other)


def test_a_run_directory_and_its_checkpoint_load_the_ema_weights(garments16: Path, text_cache_dir: Path, tmp_path: Path) -> None:
    run = prepare(tiny_config(garments16, tmp_path / "runs", text_cache_dir, **{"train.max_steps": 4, "train.checkpoint_every": 4}),
                  show_progress=False)
    run_dir = train(run, show_progress=False)
    images = []
    for path in (run_dir / "export", run_dir / "checkpoints" / "step_000004", run_dir):
        loaded = FashionGenPipeline.from_pretrained(path)
        loaded.show_progress = False
        assert loaded.stages[0].info.training["steps"] == 4
        images.append(loaded(["a red dress"], seed=1, **FAST)[0])
    assert max_difference(images[0], images[1]) == 0 and max_difference(images[0], images[2]) == 0


def test_previews_come_after_every_step_and_end_near_the_final_image(pipe: FashionGenPipeline) -> None:
    seen = []
    images = pipe(["a red silk dress", "navy blue shirt"], seed=0, preview=seen.append, num_inference_steps=4, guidance_scale=2.0)
    assert [(p.first, p.stage, p.step, p.steps) for p in seen] == [(0, 0, step, 4) for step in (1, 2, 3, 4)]
    assert all(p.images.shape == (2, 3, 32, 32) and p.images.abs().max() <= 1.0 for p in seen)
    last = np.stack([np.asarray(image, dtype=np.float32) for image in seen[-1].pil()])
    final = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    first = np.stack([np.asarray(image, dtype=np.float32) for image in seen[0].pil()])
    assert np.abs(last - final).mean() < np.abs(first - final).mean()  # previews converge on the result


def test_an_exception_in_preview_stops_sampling(pipe: FashionGenPipeline) -> None:
    class Stop(Exception):
        pass

    calls = []

    def preview(step) -> None:
        calls.append(step.step)
        if step.step == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe("a red silk dress", seed=0, preview=preview, num_inference_steps=5)
    assert calls == [1, 2]


def test_token_count_flags_descriptions_the_encoder_will_truncate(encoder: CaptionEncoder) -> None:
    assert encoder.token_count("red dress") <= 5
    assert encoder.token_count("red dress " * 100) > encoder.max_length


def test_publish_ships_float16_weights_the_evaluation_and_the_critic_in_one_folder(models: dict[str, Path],
                                                                                    tmp_path: Path) -> None:
    from fashiongen.models.files import BUNDLED_CRITIC
    from fashiongen.train.__main__ import main as train_cli

    report = {"meta": {"num_generated": 40, "reference": {"count": 474},
                       "settings": {"scheduler": "dpm++", "num_inference_steps": 15, "guidance_scale": 3.0}},
              "metrics": {"fid": {"value": 123.456}, "kid": {"mean": 0.0123, "std": 0.0011},
                          "attribute_accuracy": {"category": {"generated": {"accuracy": 0.6}, "real": {"accuracy": 0.8}}}}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "notes.md").write_text("## What it can do\n\nColours and silhouettes.\n")
    out = tmp_path / "published"
    assert train_cli(["publish", str(models["base"]), str(out), "--report", str(tmp_path / "report.json"),
                      "--notes", str(tmp_path / "notes.md")]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["weights"]["dtype"] == "float16" and info["metrics"]["FID"] == "123.46"
    assert info["metrics"]["category accuracy"] == "0.600 (real photos 0.800; 75% of real)"
    card = (out / "README.md").read_text()
    assert "- FID: 123.46" in card and "## What it can do" in card and "`critic/`" in card
    assert sorted(p.name for p in (out / "critic").iterdir()) == sorted(p.name for p in BUNDLED_CRITIC.iterdir())
    assert json.loads((out / "pipeline.json").read_text())["critic"] == "critic"
    published = FashionGenPipeline.from_pretrained(out)  # float16 on disk, float32 in memory: equal to float16 rounding
    original = FashionGenPipeline.from_pretrained(models["base"])
    for name, weight in published.stages[0].model.state_dict().items():
        assert torch.allclose(weight, original.stages[0].model.state_dict()[name], rtol=1e-3, atol=1e-4), name
    assert train_cli(["publish", str(models["base"]), str(tmp_path / "bad"), "--critic", str(tmp_path)]) == 2
    assert not (tmp_path / "bad").exists()
