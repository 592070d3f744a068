"""The default model shipped inside the package: it loads without any path, generates, describes itself
completely, and its weights are checked against the recorded checksum."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from fashiongen.pipeline import DEFAULT_MODEL_DIR, FashionGenPipeline, ModelFileError, default_model_path


@pytest.fixture(scope="module")
def shipped() -> FashionGenPipeline:
    pipe = FashionGenPipeline.from_pretrained(default_model_path())
    pipe.show_progress = False
    return pipe


def test_the_default_model_is_inside_the_package_and_generates_at_8_steps(shipped: FashionGenPipeline) -> None:
    assert default_model_path() == DEFAULT_MODEL_DIR and DEFAULT_MODEL_DIR.parent.name == "fashiongen"
    assert [stage.family for stage in shipped.stages] == ["diffusion", "upsampler"]
    image, again = shipped(["red floral summer dress", "red floral summer dress"], seed=[0, 0], num_inference_steps=8)
    assert image.size == (256, 256) and image.mode == "RGB"  # the base at 64 px, then the shipped upsampling stage
    pixels = np.asarray(image, dtype=np.float32)
    assert pixels.std() > 5  # a picture, not a flat field
    assert np.abs(pixels - np.asarray(again, dtype=np.float32)).max() <= 1  # batch independence: same seed, same image


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
def test_the_shipped_stage_adds_detail_that_box_downsamples_to_the_design(shipped: FashionGenPipeline) -> None:
    from fashiongen.data.transforms import to_uint8
    from fashiongen.evaluation.restoration import consistency, to_float

    prompts = ["white sneakers", "black leather jacket", "red floral summer dress", "navy blue shirt"]
    designs = shipped(prompts, seed=[1, 2, 3, 4], num_inference_steps=8, size=64)
    large = shipped(prompts, seed=[1, 2, 3, 4], num_inference_steps=8)
    low, high = to_float([np.asarray(i) for i in designs]), to_float([np.asarray(i) for i in large])
    measured = consistency(high, low)
    assert measured["mean"] <= 0.1 and measured["p99"] <= 1, measured  # the tolerance of tests/test_upsampler.py
    lanczos = to_float([np.asarray(i.resize((256, 256), Image.Resampling.LANCZOS)) for i in designs])
    detail = (high - lanczos).abs().mean() * 127.5  # what the stage adds over a resize, in 8-bit levels
    assert 0.5 < float(detail) < 12, float(detail)
    assert to_uint8(high).shape == (4, 256, 256, 3)


def test_the_shipped_files_are_small_and_their_checksum_is_recorded(shipped: FashionGenPipeline) -> None:
    info = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    weights = DEFAULT_MODEL_DIR / info["weights"]["file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == info["weights"]["sha256"]
    shipped_files = [path for model in (DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR.parent / "pretrained-gan")
                     for path in model.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in shipped_files) < 60 * 2**20  # everything the package ships, both models
    stage = json.loads((DEFAULT_MODEL_DIR / "upsampler-256" / "model.json").read_text())
    assert hashlib.sha256((DEFAULT_MODEL_DIR / "upsampler-256" / stage["weights"]["file"]).read_bytes()).hexdigest() == \
        stage["weights"]["sha256"] and stage["weights"]["dtype"] == "float16"
    assert json.loads((DEFAULT_MODEL_DIR / "pipeline.json").read_text())["stages"] == [".", "upsampler-256"]
    assert info["weights"]["dtype"] == "float16" and info["config"]["model"]["name"] == "unet-compact"
    assert (DEFAULT_MODEL_DIR / "critic" / "critic.safetensors").is_file()  # the judge ships with the model


def test_the_model_card_and_config_say_how_it_was_trained(shipped: FashionGenPipeline) -> None:
    training = shipped.stages[0].info.training
    for key in ("steps", "images_seen", "hardware", "wall_time", "final_loss", "images_per_step"):
        assert training.get(key) not in (None, ""), key
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    for fact in ("fashion-products", f"steps: {training['steps']}", "batch size", "hardware", "wall_time", "final_loss",
                 "FID", "category accuracy", "colour accuracy", "## What it can and cannot do"):
        assert fact in card, fact
    assert set(shipped.stages[0].model.attribute_vocab) == {"category", "gender", "colour", "season"}


def test_a_corrupted_copy_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    copy = shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        FashionGenPipeline.from_pretrained(copy)


@pytest.mark.slow
def test_the_readme_main_job_samples_from_the_shipped_model_without_a_model_argument(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(repo / "sample.py"), "white sneakers", "--num-images", "2", "--steps", "8",
                             "--out", str(tmp_path), "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "grid.png").is_file() and len(list((tmp_path / "images").glob("*.png"))) == 2


# ---------------------------------------------------------------- the shipped GAN, beside the default model


def test_the_shipped_gan_is_small_checksummed_and_says_how_it_was_trained() -> None:
    from fashiongen.models.files import BUNDLED_GAN, read_info, sha256_of

    info = read_info(BUNDLED_GAN)
    assert info.family == "gan" and info.weights is not None and info.weights.dtype == "float16"
    assert sha256_of(BUNDLED_GAN / info.weights.file) == info.weights.sha256
    discriminator = info.section("gan")["discriminator"]  # shipped so train.init_from can continue it
    assert sha256_of(BUNDLED_GAN / discriminator["file"]) == discriminator["sha256"]
    assert sum(path.stat().st_size for path in BUNDLED_GAN.iterdir()) < 20 * 2**20
    for key in ("steps", "images_seen", "hardware", "wall_time"):
        assert info.training.get(key) not in (None, ""), key
    card = (BUNDLED_GAN / "README.md").read_text()
    for fact in ("gan", "fashion-products", "FID", "R-precision", "train.init_from"):
        assert fact in card, fact


@pytest.mark.slow
def test_the_shipped_gan_draws_garments_by_name_through_sample_py(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(repo / "sample.py"), "white sneakers", "red floral summer dress", "--model", "gan",
                             "--num-images", "4", "--truncation", "0.8", "--out", str(tmp_path), "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    images = sorted((tmp_path / "images").glob("*.png"))
    assert len(images) == 8
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) for path in images])
    assert pixels.std() > 20 and np.abs(pixels[0] - pixels[1]).mean() > 2  # pictures, and seeds differ


@pytest.fixture(scope="module")
def student() -> FashionGenPipeline:
    pipe = FashionGenPipeline.from_pretrained(DEFAULT_MODEL_DIR / "student")
    pipe.show_progress = False
    return pipe


def test_the_shipped_student_names_its_teacher_and_is_small(student: FashionGenPipeline) -> None:
    info = json.loads((DEFAULT_MODEL_DIR / "student" / "model.json").read_text())
    teacher = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    assert info["family"] == "student" and info["student"]["teacher"] == {**info["student"]["teacher"], "path": "..",
                                                                         "sha256": teacher["weights"]["sha256"]}
    weights = DEFAULT_MODEL_DIR / "student" / info["weights"]["file"]
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == info["weights"]["sha256"] and info["weights"]["dtype"] == "float16"
    assert weights.stat().st_size < 4 * 2**20  # adapters and guidance embedding only: the teacher's weights are shared
    assert info["training"]["steps"] > 0 and info["training"]["initialised_from"]["sha256"] == teacher["weights"]["sha256"]
    assert json.loads((DEFAULT_MODEL_DIR / "pipeline.json").read_text())["bases"] == {"student": "student"}
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "## Base model `student`" in card and teacher["weights"]["sha256"][:16] in card
    assert [stage.family for stage in student.stages] == ["student", "upsampler"] and student.samplers == ("lcm",)


@pytest.mark.slow  # among the slowest of the fast tier (shipped models or a training run): full run only
def test_the_shipped_student_is_deterministic_batch_independent_and_near_its_teacher(student: FashionGenPipeline,
                                                                                    shipped: FashionGenPipeline) -> None:
    prompts = ["red floral summer dress", "black leather ankle boots", "white sneakers"]

    def pixels(pipe: FashionGenPipeline, chosen: list[str], seeds: list[int], **settings: object) -> np.ndarray:
        return np.stack([np.asarray(image, dtype=np.int16) for image in pipe(chosen, seed=seeds, size=64, **settings)])

    images = pixels(student, prompts, [0, 1, 2])
    assert student.sampling_settings().num_inference_steps == 4
    assert np.array_equal(images, pixels(student, prompts, [0, 1, 2]))
    assert np.abs(images[1:2] - pixels(student, prompts[1:2], [1])).max() <= 1
    assert images.std() > 20  # pictures, not flat fields
    teacher = pixels(shipped, prompts, [0, 1, 2])
    unrelated = pixels(shipped, prompts, [7, 8, 9])
    # the same seed's student image is closer to the teacher's than the teacher's own image of another seed
    assert np.abs(images - teacher).mean() < np.abs(unrelated - teacher).mean()
