"""Hostile and odd image files: decompression bombs refused from the header before decoding, truncated and random
files named in one message, every PNG/JPEG/TIFF mode turned into sensible RGB (16-bit grey scaled, transparency on
white), masks of other proportions refused; through decode_image, the data CLI, sample.py --edit and train.py.
Every big file here is a small file that claims to be big (hostile_files.write_png_bomb)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashiongen.config import TextConfig
from fashiongen.data import RecordError, open_source
from fashiongen.data.__main__ import main as data_main
from fashiongen.data.images import DATASET_MAX_PIXELS, UPLOAD_MAX_PIXELS, decode_image
from fashiongen.data.records import as_rgb_uint8
from fashiongen.pipeline import PipelineInputError, check_mask_shape, load_image
from fashiongen.text import CaptionEncoder
from hostile_files import write_png_bomb
from pipeline_helpers import export_tiny
from script_helpers import REPO, load_script
from training_helpers import tiny_overrides

NAVY = (30, 40, 120)


def png(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def forged_jpeg(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(png(Image.new("RGB", (16, 16), NAVY), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


# ------------------------------------------------------------------ bombs, garbage, truncation


@pytest.mark.parametrize(("make", "limit", "message"), [
    (lambda p: write_png_bomb(p, 20000, 20000), DATASET_MAX_PIXELS, "image is 400 megapixels .*over the limit of 64 megapixels"),
    (lambda p: write_png_bomb(p, 9000, 9000), DATASET_MAX_PIXELS, "image is 9000x9000 = 81 megapixels, over the limit of 64"),
    (lambda p: write_png_bomb(p, 5000, 4000), UPLOAD_MAX_PIXELS, "image is 5000x4000 = 20 megapixels, over the limit of 16"),
    (lambda p: p.write_bytes(forged_jpeg(30000, 30000)), DATASET_MAX_PIXELS, "image is 900 megapixels"),
    (lambda p: p.write_bytes(forged_jpeg(9000, 8000)), DATASET_MAX_PIXELS, "9000x8000 = 72 megapixels"),
])
def test_a_bomb_is_refused_from_its_header_naming_the_file(tmp_path: Path, make, limit: int, message: str) -> None:
    path = tmp_path / "bomb.img"
    make(path)
    assert path.stat().st_size < 200_000
    with pytest.raises(RecordError, match=message) as refused:
        decode_image(path, str(path), limit)
    assert refused.value.where == str(path)


@pytest.mark.parametrize(("data", "message"), [
    (png(Image.new("RGB", (64, 64), NAVY))[:-40], "corrupt or truncated"),
    (png(Image.effect_noise((64, 64), 60), "JPEG")[:300], "corrupt or truncated"),
    (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not an image file"),
    (b"", "not an image file"),
    (b"<html>not a photo</html>", "not an image file"),
])
def test_garbage_and_truncated_files_are_a_record_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    with pytest.raises(RecordError, match=message):
        decode_image(path, str(path))
    with pytest.raises(PipelineInputError, match=f"image: {path}: .*{message}"):
        load_image(path)


def test_a_large_jpeg_is_decoded_reduced_when_a_small_image_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "camera.jpg"
    Image.new("RGB", (2048, 1536), NAVY).save(path, quality=90)  # 3.1 MP
    with pytest.raises(RecordError, match="even when read at 1024x768"):
        decode_image(path, "camera", max_pixels=500_000, min_size=700)
    small = decode_image(path, "camera", max_pixels=500_000, min_size=100)  # libjpeg decodes at 1/8: 256x192
    assert small.shape == (192, 256, 3) and np.abs(small.astype(int) - NAVY).max() <= 3
    assert decode_image(path, "camera").shape == (1536, 2048, 3)  # in full when no small size is asked for


# ------------------------------------------------------------------ modes


def _cut_out(mode: str) -> Image.Image:
    """A navy (or grey) square on a transparent background, in `mode`."""
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[4:12, 4:12] = (*NAVY, 255)
    image = Image.fromarray(rgba, "RGBA")
    return image.convert(mode) if mode != "RGBA" else image


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, *NAVY] + [0] * 762)
    image.paste(1, (4, 4, 12, 12))
    return png(image, transparency=0)


def _rgb_with_transparent_colour() -> bytes:
    image = Image.new("RGB", (16, 16), (0, 0, 0))
    image.paste(NAVY, (4, 4, 12, 12))
    return png(image, transparency=(0, 0, 0))


def _sixteen_bit(mode: str, fmt: str, value: int) -> bytes:
    image = Image.new(mode, (16, 16))
    image.frombytes(np.full((16, 16), value, dtype=">u2" if mode == "I;16B" else "<u2").tobytes())
    return png(image, fmt)


@pytest.mark.parametrize(("data", "corner", "centre"), [
    pytest.param(_sixteen_bit("I;16", "PNG", 32896), (128,) * 3, (128,) * 3, id="16-bit grey PNG (was all white)"),
    pytest.param(_sixteen_bit("I;16B", "TIFF", 65535), (255,) * 3, (255,) * 3, id="16-bit big-endian TIFF"),
    pytest.param(png(Image.fromarray(np.full((16, 16), 257 * 64, dtype=np.int32)), "TIFF"), (64,) * 3, (64,) * 3,
                 id="32-bit int grey TIFF"),
    pytest.param(png(Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)), "TIFF"), (128,) * 3, (128,) * 3,
                 id="float TIFF in 0..1"),
    pytest.param(png(_cut_out("RGBA")), (255,) * 3, NAVY, id="RGBA cut-out (was black)"),
    pytest.param(png(_cut_out("LA")), (255,) * 3, (46,) * 3, id="grey+alpha cut-out"),
    pytest.param(_palette_with_transparency(), (255,) * 3, NAVY, id="palette with a transparent index"),
    pytest.param(_rgb_with_transparent_colour(), (255,) * 3, NAVY, id="RGB with a transparent colour"),
    pytest.param(png(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95), (255, 0, 0), (255, 0, 0), id="CMYK JPEG"),
    pytest.param(png(Image.new("1", (16, 16), 1)), (255,) * 3, (255,) * 3, id="1-bit"),
    pytest.param(png(_cut_out("RGB").convert("P", palette=Image.Palette.ADAPTIVE)), (0, 0, 0), NAVY, id="palette without transparency"),
])
def test_every_mode_becomes_sensible_rgb(tmp_path: Path, data: bytes, corner: tuple, centre: tuple) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(data)
    pixels = decode_image(path, str(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    assert np.abs(pixels[0, 0].astype(int) - corner).max() <= 2 and np.abs(pixels[8, 8].astype(int) - centre).max() <= 2
    assert np.array_equal(load_image(path), pixels)  # the pipeline's edit inputs convert the same way


def test_arrays_of_other_dtypes_and_alpha_convert_like_files() -> None:
    assert as_rgb_uint8(np.full((2, 2), 65535, np.uint16), "a")[0, 0].tolist() == [255, 255, 255]
    assert as_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32), "a")[0, 0].tolist() == [128, 128, 128]
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (*NAVY, 255)
    assert as_rgb_uint8(rgba, "a")[:, :, 0].tolist() == [[NAVY[0], 255], [255, 255]]  # transparent black -> white
    rgbx = np.full((2, 2, 4), 7, np.uint8)
    rgbx[..., 3] = 0
    assert (as_rgb_uint8(rgbx, "a") == 7).all()  # a 4th channel of zeros is padding, not an invisible image
    with pytest.raises(RecordError, match="dtype is complex64"):
        as_rgb_uint8(np.zeros((2, 2), np.complex64), "a")


def test_a_mask_must_have_the_photos_proportions() -> None:
    check_mask_shape((64, 48, 3), (64, 48, 3))
    check_mask_shape((640, 480, 3), (64, 48, 3))  # drawn on a copy at 1/10
    check_mask_shape((101, 75, 3), (50, 37, 3))  # rounding of a half-size copy
    with pytest.raises(PipelineInputError, match=r"mask: its shape 64x64 \(aspect 1.00\) does not match the photo's 48x64"):
        check_mask_shape((64, 48, 3), (64, 64, 3))


# ------------------------------------------------------------------ the data CLI


@pytest.fixture()
def hostile_folder(tmp_path: Path) -> Path:
    """Good photos, odd modes and three defective files in one folder+JSONL set."""
    root = tmp_path / "shop"
    (root / "images").mkdir(parents=True)
    files = {
        "red.jpg": png(Image.new("RGB", (40, 40), (200, 30, 40)), "JPEG", quality=95),
        "grey16.png": _sixteen_bit("I;16", "PNG", 32896),
        "cutout.png": png(_cut_out("RGBA")),
        "cmyk.jpg": png(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
        "bomb.png": None,
        "cut.png": png(Image.new("RGB", (64, 64), NAVY))[:-40],
        "noise.jpg": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    rows = []
    for number, (name, data) in enumerate(files.items(), start=1):
        if data is None:
            write_png_bomb(root / "images" / name, 20000, 20000)
        else:
            (root / "images" / name).write_bytes(data)
        rows.append({"id": number, "file": f"images/{name}", "caption": f"{name} shirt", "colour": "Navy"})
    (root / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return root


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_convert_skips_bombs_and_garbage_with_a_count_and_converts_odd_modes(hostile_folder: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    before = digests(hostile_folder)
    assert data_main(["convert", str(hostile_folder), str(tmp_path / "out.h5"), "--size", "16"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["num_records"] == 4 and result["num_skipped"] == 3
    reasons = " | ".join(result["skipped_by_reason"])
    assert "400 megapixels" in reasons and "corrupt or truncated" in reasons and "not an image file" in reasons
    records = {record.caption: record.image for record in open_source(tmp_path / "out.h5")}
    assert (records["grey16.png shirt"] == 128).all()
    assert (records["cutout.png shirt"][0, 0] == 255).all() and np.abs(records["cutout.png shirt"][8, 8].astype(int) - NAVY).max() <= 2
    assert np.abs(records["cmyk.jpg shirt"][8, 8].astype(int) - (255, 0, 0)).max() <= 2
    assert digests(hostile_folder) == before  # the source is only read


@pytest.mark.slow
def test_strict_convert_stops_at_the_bomb_with_one_error_line(hostile_folder: Path, tmp_path: Path) -> None:
    for name in ("cut.png", "noise.jpg"):  # leave the bomb as the only defect
        (hostile_folder / "images" / name).write_bytes(png(Image.new("RGB", (16, 16), NAVY)))
    before = digests(hostile_folder)
    result = subprocess.run([sys.executable, "-m", "fashiongen.data", "convert", str(hostile_folder), str(tmp_path / "out.h5"),
                             "--size", "16", "--strict"], cwd=REPO, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "bomb.png: image is 400 megapixels" in errors[0]
    assert "Traceback" not in result.stderr
    assert digests(hostile_folder) == before


def test_inspect_reads_a_folder_with_bombs_and_shows_the_good_photos(hostile_folder: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    assert data_main(["inspect", str(hostile_folder), "--out", str(tmp_path / "report"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["num_records"] == 7 and sorted(report["grid_ids"]) == ["1", "2", "3", "4"]


# ------------------------------------------------------------------ sample.py --edit


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "export", CaptionEncoder(TextConfig(cache_dir="")))


def test_sample_edit_refuses_a_bomb_and_a_mismatched_mask_with_one_line(model: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    script = load_script("sample")
    bomb = write_png_bomb(tmp_path / "bomb.png", 20000, 20000)
    Image.new("RGB", (32, 48), NAVY).save(tmp_path / "photo.png")
    Image.new("L", (48, 48), 255).save(tmp_path / "mask.png")
    fast = ["--steps", "2", "--quiet"]
    cases = [(["--edit", str(bomb)], f"error: --edit: {bomb}: image is 400 megapixels"),  # before the model loads
             (["--edit", str(tmp_path / "photo.png"), "--mask", str(bomb)], f"error: --mask: {bomb}: "),
             (["--edit", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png")],
              "error: mask: its shape 48x48 (aspect 1.00) does not match the photo's 32x48 (aspect 0.67)")]
    for args, message in cases:
        out = tmp_path / "out"
        assert script.main(["--model", str(model), *args, "a red shirt", "--out", str(out), *fast]) == 2
        stderr = capsys.readouterr().err
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(message) and "Traceback" not in stderr, stderr
        assert not (out / "edits").exists()
    (tmp_path / "grey16.png").write_bytes(_sixteen_bit("I;16", "PNG", 32896))
    assert script.main(["--model", str(model), "--edit", str(tmp_path / "grey16.png"), "--strength", "0", "a red shirt",
                        "--out", str(tmp_path / "grey"), *fast]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "grey" / "edits" / "edit_0.png"), dtype=int) - 128).max() <= 2


# ------------------------------------------------------------------ train.py


@pytest.mark.slow
def test_training_skips_a_bomb_in_a_dataloader_worker_or_stops_with_one_line(garments16: Path, tmp_path: Path,
                                                                            text_cache_dir: Path) -> None:
    data = tmp_path / "garments"
    for path in garments16.rglob("*"):
        if path.is_file():
            (data / path.relative_to(garments16)).parent.mkdir(parents=True, exist_ok=True)
            (data / path.relative_to(garments16)).write_bytes(path.read_bytes())
    first = json.loads((data / "captions.jsonl").read_text().splitlines()[0])
    write_png_bomb(data / first["file"], 20000, 20000)
    defect = f"{data / first['file']}: image is 400 megapixels"

    def train(out: str, **extra: object) -> subprocess.CompletedProcess:
        overrides = tiny_overrides(data, tmp_path / out, text_cache_dir, **{"train.max_steps": 4, "train.num_workers": 1, **extra})
        return subprocess.run([sys.executable, str(REPO / "train.py"), *overrides, "--quiet"], cwd=REPO, capture_output=True,
                              text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})

    strict = train("strict", **{"data.skip_bad_records": "false"})  # the worker raises; the run used to hang at exit
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert strict.returncode == 2 and errors == [f"error: {defect} (PIL refuses it as a decompression bomb), over the limit "
                                                 "of 64 megapixels"], strict.stderr[-3000:]
    assert "Traceback" not in strict.stderr
    skipping = train("runs")
    assert skipping.returncode == 0, skipping.stderr[-3000:]
    assert defect in skipping.stderr and "Traceback" not in skipping.stderr
    assert next((tmp_path / "runs").glob("001-*/checkpoints/*"), None) is not None
