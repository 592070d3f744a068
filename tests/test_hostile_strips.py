"""Long strips and turned photos (issue 33): a 143-byte 20000x1 PNG is refused from its header, naming the file and
both sides, through every entry (decode_image, pipeline.load_image, the app's read_upload, a folder dataset in
`data convert`, sample.py --edit); resize_square's memory follows the output, not the input's long side; a phone
photo stored sideways with an EXIF orientation tag is edited upright; ordinary images resize as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.app.service import Studio
from fashiongen.config import TextConfig
from fashiongen.data import RecordError, open_source
from fashiongen.data.__main__ import main as data_main
from fashiongen.data.images import MAX_ASPECT_RATIO, decode_image
from fashiongen.data.transforms import resize_square
from fashiongen.pipeline import FashionGenPipeline, PipelineInputError, load_image
from fashiongen.text import CaptionEncoder
from hostile_files import write_png_bomb
from pipeline_helpers import export_tiny
from script_helpers import REPO

RED, WHITE = (200, 20, 20), (255, 255, 255)
STRIPS = [(20000, 1, "wide"), (1, 20000, "tall"), (300000, 1, "wide")]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "export", CaptionEncoder(TextConfig(cache_dir="")), resolution=16)


@pytest.fixture(scope="module")
def studio(model: Path):
    studio = Studio(FashionGenPipeline.from_pretrained(model))
    yield studio
    studio.close()


def sideways_jpeg(path: Path) -> Path:
    """A portrait photo (red top half, white bottom) as a phone stores it: landscape pixels, EXIF orientation 6."""
    upright = Image.new("RGB", (60, 80), WHITE)
    upright.paste(RED, (0, 0, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def assert_upright(pixels: np.ndarray) -> None:
    height, width = pixels.shape[:2]
    assert height > width, pixels.shape
    top, bottom = pixels[: height // 4].reshape(-1, 3).mean(0), pixels[-height // 4 :].reshape(-1, 3).mean(0)
    assert np.abs(top - RED).max() < 40 and np.abs(bottom - WHITE).max() < 40, (top, bottom)


# ------------------------------------------------------------------ strips refused from the header


@pytest.mark.parametrize(("width", "height", "shape"), STRIPS)
def test_a_strip_is_refused_naming_the_file_and_both_sides_in_every_reader(studio: Studio, tmp_path: Path,
                                                                          width: int, height: int, shape: str) -> None:
    path = write_png_bomb(tmp_path / "strip.png", width, height)
    assert path.stat().st_size < 1024
    sides = f"image is {width}x{height}, over {MAX_ASPECT_RATIO} times as {shape}"
    with pytest.raises(RecordError, match=f"^{path}: {sides}"):
        decode_image(path, str(path))
    with pytest.raises(PipelineInputError) as refused:
        load_image(path, "image")
    assert str(refused.value).startswith(f"image: {path}: {sides}") and "\n" not in str(refused.value)
    with pytest.raises(PipelineInputError) as refused:
        studio.read_upload(path, "photo")
    assert str(refused.value).startswith(f"The photo 'strip.png' cannot be used: {sides}") and "\n" not in str(refused.value)
    with pytest.raises(PipelineInputError, match=f"^The photo cannot be used: {sides}"):
        studio.read_upload(path.read_bytes(), "photo")


def test_a_strip_given_as_an_array_or_a_pil_image_is_refused_too() -> None:
    with pytest.raises(PipelineInputError, match=r"^image: image is 4000x40, over 20 times as wide"):
        load_image(np.zeros((40, 4000, 3), np.uint8))
    with pytest.raises(PipelineInputError, match=r"^mask: image is 1x21, over 20 times as tall"):
        load_image(Image.new("L", (1, 21)), "mask")
    assert load_image(np.zeros((1, 20, 3), np.uint8)).shape == (1, 20, 3)  # 20:1 is still a picture


@pytest.mark.slow
def test_data_convert_skips_a_strip_in_a_folder_dataset_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "garments"
    (root / "images").mkdir(parents=True)
    rows = []
    for number in range(3):
        Image.new("RGB", (48, 64), RED).save(root / "images" / f"{number}.png")
        rows.append({"id": number, "file": f"images/{number}.png", "caption": f"red shirt {number}"})
    write_png_bomb(root / "images" / "strip.png", 30000, 1)
    rows.append({"id": 9, "file": "images/strip.png", "caption": "a strip"})
    (root / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert data_main(["convert", str(root), str(tmp_path / "out.h5"), "--size", "16"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_records"] == 3 and result["num_skipped"] == 1
    assert any(reason.startswith("image is 30000x1, over 20 times as wide") for reason in result["skipped_by_reason"])
    skipped = [line for line in caplog.text.splitlines() if "skipping record" in line]
    assert len(skipped) == 1 and "strip.png: image is 30000x1" in skipped[0]
    strict = subprocess.run([sys.executable, "-m", "fashiongen.data", "convert", str(root), str(tmp_path / "strict.h5"),
                             "--size", "16", "--strict"], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert strict.returncode == 2 and len(errors) == 1 and "Traceback" not in strict.stderr, strict.stderr
    assert "strip.png: image is 30000x1" in errors[0] and not (tmp_path / "strict.h5").exists()
    assert [record.id for record in open_source(tmp_path / "out.h5")] == ["0", "1", "2"]


@pytest.mark.slow
def test_sample_edit_of_a_strip_exits_2_with_one_error_line(model: Path, tmp_path: Path) -> None:
    strip = write_png_bomb(tmp_path / "strip.png", 20000, 1)  # 143 bytes; 1.4 GB at peak before issue 33
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(REPO / "sample.py"), "--model", str(model), "--edit", str(strip),
                             "a red shirt", "--out", str(out), "--steps", "2", "--quiet"], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith(f"error: --edit: {strip}: image is 20000x1, over 20 times as wide")
    assert "Loading weights" not in result.stderr and not out.exists()  # refused before the model loads


# ------------------------------------------------------------------ memory follows the output


@pytest.mark.slow
def test_resize_square_of_a_long_strip_costs_about_the_output(tmp_path: Path) -> None:
    """A 100000x1 strip to 16 px used to pass through a 1,600,000x16 image (~180 MB at peak); now a few pixels."""
    script = ("import resource, numpy as np\n"
              "from fashiongen.data.transforms import resize_square\n"
              "strips = [np.full((1, 100000, 3), 9, np.uint8), np.full((100000, 1, 3), 9, np.uint8), np.zeros((40, 4000, 3), np.uint8)]\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "shapes = [resize_square(strip, 16, mode).shape for strip in strips for mode in ('center-crop', 'pad')]\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, set(shapes))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    grown_mb, shapes = result.stdout.split(maxsplit=1)
    assert shapes.strip() == "{(16, 16, 3)}", result.stderr
    assert int(grown_mb) < 8, f"peak RSS grew {grown_mb} MB"


# ------------------------------------------------------------------ ordinary images, EXIF orientation


def scaled_then_cropped(image: np.ndarray, resolution: int) -> np.ndarray:
    """The centre crop as it was before issue 33: the short side scaled to `resolution`, then the middle kept."""
    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0))
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    return resized[top : top + resolution, left : left + resolution]


def scaled_then_padded(image: np.ndarray, resolution: int) -> np.ndarray:
    """Padding as it was before issue 33 (and is still, byte for byte): the long side scaled, white around it."""
    height, width = image.shape[:2]
    scale = resolution / max(height, width)
    new_w, new_h = min(resolution, max(1, round(width * scale))), min(resolution, max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0))
    canvas = np.full((resolution, resolution, 3), 255, np.uint8)
    top, left = (resolution - new_h) // 2, (resolution - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


@pytest.mark.parametrize(("height", "width", "resolution"), [(800, 600, 64), (2560, 1920, 64), (1500, 1100, 256),
                                                              (333, 517, 64), (90, 70, 128), (64, 64, 64)])
def test_ordinary_photos_resize_as_before(height: int, width: int, resolution: int) -> None:
    rng = np.random.default_rng(height)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8))
    photo = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC))  # [H, W, 3], photo-like detail
    cropped = resize_square(photo, resolution)
    assert np.array_equal(cropped, scaled_then_cropped(photo, resolution))  # training data and FID references unchanged
    if (height, width) != (resolution, resolution):
        assert np.array_equal(resize_square(photo, resolution, "pad"), scaled_then_padded(photo, resolution))


def test_a_sideways_phone_photo_is_edited_upright(model: Path, studio: Studio, tmp_path: Path) -> None:
    photo = sideways_jpeg(tmp_path / "phone.jpg")
    with Image.open(photo) as stored:
        assert stored.size == (80, 60)  # landscape on disk
    assert_upright(load_image(photo))
    assert_upright(load_image(Image.open(photo)))
    assert_upright(studio.read_upload(photo, "photo"))
    assert_upright(studio.read_upload(photo.read_bytes(), "photo"))
    assert decode_image(photo, str(photo)).shape == (60, 80, 3)  # dataset readers keep the stored pixels
    pipeline = FashionGenPipeline.from_pretrained(model)
    pipeline.show_progress = False
    edited = pipeline.edit(photo, "a red shirt", strength=0.0, num_inference_steps=2)[0]  # strength 0: the photo itself
    square = np.asarray(edited.convert("RGB"))
    assert np.abs(square[1, square.shape[1] // 2].astype(int) - RED).max() < 40  # red at the top, as the phone showed it
    assert np.abs(square[-2, square.shape[1] // 2].astype(int) - WHITE).max() < 40
