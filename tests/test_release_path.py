"""The FashionGen release path as docs/data.md gives it, on a pair of files in the release's schema
(conftest.write_fashiongen_h5): convert once into a pair folder, train, evaluate, publish, load and sample; and what
a user can get wrong on the way: a missing sibling, a pair whose files differ, an output folder that exists, a
truncated file, a conversion killed half-way."""

from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import write_fashiongen_h5, write_garment_set
from fashiongen.data import DataError, open_source
from fashiongen.data.__main__ import main as data_main
from fashiongen.pipeline import FashionGenPipeline
from fashiongen.release import publish
from fashiongen.train import prepare, train
from script_helpers import load_script
from training_helpers import tiny_config

TRAIN, VALIDATION = "fashiongen_256_256_train.h5", "fashiongen_256_256_validation.h5"


def write_release(folder: Path, size: int = 48, validation_size: int | None = None) -> Path:
    """A FashionGen-schema pair named as the release names its files: 16 training rows, 8 validation rows."""
    folder.mkdir(parents=True, exist_ok=True)
    write_fashiongen_h5(folder / TRAIN, num_rows=16, size=size)
    write_fashiongen_h5(folder / VALIDATION, num_rows=8, size=validation_size or size)
    return folder


def convert(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, dict | None, str]:
    """`python -m fashiongen.data convert ...` in-process: its exit code, the JSON of its last stdout line, stderr."""
    capsys.readouterr()
    code = data_main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]) if code == 0 else None, captured.err


def error_line(stderr: str, *names: str) -> str:
    """The one `error:` line on stderr, naming each of `names`."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def refused(capsys: pytest.CaptureFixture, args: tuple, *names: str) -> str:
    """convert with `args` ends with exit code 2 and one `error:` line naming each of `names`."""
    code, _, stderr = convert(capsys, *args)
    assert code == 2, stderr
    return error_line(stderr, *names)


def listing(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow  # two tiny trainings, an evaluation, a publication: ~1 min on 2 cores
def test_a_pair_converts_once_then_trains_evaluates_publishes_and_samples(tmp_path: Path, text_cache_dir: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    release = write_release(tmp_path / "fashiongen")
    pair = tmp_path / "fashiongen16"
    code, result, _ = convert(capsys, release, pair, "--size", "16")  # the base model's resolution, both splits
    assert code == 0 and {split: info["num_records"] for split, info in result["splits"].items()} == {
        "train": 16, "validation": 8}
    assert sorted(path.name for path in pair.iterdir()) == ["fashiongen16_train.h5", "fashiongen16_train.json",
                                                            "fashiongen16_validation.h5", "fashiongen16_validation.json"]
    runs = tmp_path / "runs"
    # the base at the converted size, from one file of the pair: validation is read from its sibling
    base = train(prepare(tiny_config(pair / "fashiongen16_train.h5", runs, text_cache_dir, **{
        "name": "base16", "data.resolution": 16, "data.val_fraction": 0.05, "train.max_steps": 4,
        "model.attributes": "[category, gender]"}),
        show_progress=False), show_progress=False)
    metrics = [json.loads(line) for line in (base / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1].get("val_loss", 0) > 0 and np.isfinite(metrics[-1]["val_loss"])
    # the stage at the release's own resolution (32 px here, 256 in configs/fashiongen256.yaml) reads the release
    stage = train(prepare(tiny_config(release, runs, text_cache_dir, **{
        "name": "stage32", "model.name": "unet-tiny-sr", "model.low_res_resolution": 16, "train.max_steps": 4}),
        show_progress=False), show_progress=False)
    evaluation = tmp_path / "eval"
    assert load_script("evaluate").main([
        "--model", str(base), "--captions", str(pair), "--split", "validation", "--num-images", "4", "--steps", "2",
        "--reference", str(pair), "--critic", "none", "--no-memorisation", "--kid-subset-size", "2",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(evaluation), "--quiet"]) == 0
    fid = json.loads((evaluation / "report.json").read_text())["metrics"]["fid"]
    assert fid["num_real"] == 8 and fid["num_generated"] == 4 and np.isfinite(fid["value"])  # the validation file's rows
    folder = publish(base, tmp_path / "my-model", dtype="float32", critic=None, report=evaluation / "report.json",
                     superres=(stage,))
    assert f"FID: {fid['value']:.2f}" in (folder / "README.md").read_text()  # the card carries the evaluation
    pipe = FashionGenPipeline.from_pretrained(folder)
    prompt = ["Long sleeve wool sweater in beige"]
    images = pipe(prompt, num_images_per_prompt=2, num_inference_steps=2, seed=0)
    assert [image.size for image in images] == [(32, 32)] * 2 and np.asarray(images[0]).std() > 0
    again = pipe(prompt, num_images_per_prompt=2, num_inference_steps=2, seed=0)
    assert [image.tobytes() for image in again] == [image.tobytes() for image in images]
    assert pipe(prompt, num_inference_steps=2, seed=0, size=16)[0].size == (16, 16)  # the base's own designs


def test_one_file_of_a_pair_finds_its_sibling_or_names_the_command_that_makes_it(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture) -> None:
    release = write_release(tmp_path / "fashiongen")
    train_file = tmp_path / "fg16_train.h5"
    assert convert(capsys, release, "--split", "train", train_file, "--size", "16")[0] == 0  # the old command line
    assert data_main(["inspect", str(train_file), "--split", "validation", "--out", str(tmp_path / "report")]) == 2
    message = error_line(capsys.readouterr().err, str(tmp_path / "fg16_validation.h5"), "'validation' split")
    one = message.split("make it with: ", 1)[1].split(" (or ", 1)[0]
    both = message.split("into a folder: ", 1)[1].removesuffix(")")
    assert one == (f"python -m fashiongen.data convert {release / VALIDATION} {tmp_path / 'fg16_validation.h5'} "
                   "--size 16")
    assert convert(capsys, *shlex.split(one)[4:])[0] == 0  # the command it names makes exactly the missing file
    assert len(open_source(train_file, split="validation")) == 8 and len(open_source(train_file, split="train")) == 16
    assert len(open_source(tmp_path / "fg16_validation.h5", split="train")) == 16  # from either file of the pair
    assert convert(capsys, *shlex.split(both)[4:])[0] == 0  # and the pair command it offers makes the pair folder
    assert len(open_source(tmp_path / "fg16", split="validation")) == 8
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(release / TRAIN, alone / TRAIN)  # the release's own file, its sibling not downloaded
    with pytest.raises(DataError, match=rf"{VALIDATION}: no such file; .* download the release's validation file"):
        open_source(alone / TRAIN, split="validation")


def test_a_pair_whose_files_differ_is_refused_naming_both(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = write_release(tmp_path / "mixed", size=48, validation_size=32)
    out = tmp_path / "out"
    refused(capsys, (release, out, "--size", "16"), str(release / TRAIN), str(release / VALIDATION),
            "image size 48x48 against 32x32")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mixed"]  # nothing written, no lock, no partial folder
    with h5py.File(release / VALIDATION, "a") as handle:  # the same size, but a schema column missing
        del handle["input_category"]
    write_fashiongen_h5(release / TRAIN, num_rows=16, size=32)
    with pytest.raises(DataError, match=r"not one pair: schema columns .*input_category"):
        open_source(release / TRAIN, split="train")  # either split: the pair is checked whichever file is read


def test_an_existing_output_folder_is_refused_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = write_release(tmp_path / "fashiongen", size=16)
    out = tmp_path / "pair"
    assert convert(capsys, release, out, "--size", "16")[0] == 0
    before = listing(out)
    refused(capsys, (release, out, "--size", "8"), str(out), "exists; pass --overwrite")
    assert listing(out) == before
    code, result, _ = convert(capsys, release, out, "--size", "8", "--overwrite")  # a pair's folder is replaced whole
    assert code == 0 and result["kept"] == [] and listing(out) != before
    assert open_source(out, split="validation")[0].image.shape == (8, 8, 3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fashiongen", "pair"]  # no staging, lock or old folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    refused(capsys, (release, mine, "--overwrite"), str(mine), "notes.txt", "choose a new folder")  # never deleted
    assert (mine / "notes.txt").read_text() == "my notes"
    (tmp_path / "a-file").write_text("x")
    refused(capsys, (release, tmp_path / "a-file", "--overwrite"), str(tmp_path / "a-file"), "not a folder")
    refused(capsys, (release, "--split", "train", tmp_path / "new"), str(tmp_path / "new"), "new_train.h5")
    for name in (".", ".."):
        refused(capsys, (release, name), "name the pair's folder")
    (tmp_path / "empty").mkdir()
    assert convert(capsys, release, tmp_path / "empty", "--size", "8")[0] == 0  # an empty folder is a new one


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_file_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = write_release(tmp_path / "fashiongen", size=16)
    _truncate(release / VALIDATION)
    refused(capsys, (release, tmp_path / "pair", "--size", "8"), str(release / VALIDATION))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fashiongen"]
    with pytest.raises(DataError, match=rf"{VALIDATION}: not a readable HDF5 file"):
        open_source(release / TRAIN, split="validation")  # as training opens its validation split


def test_a_killed_conversion_resumes_keeping_the_finished_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    release = write_release(tmp_path / "fashiongen", size=16)
    with h5py.File(release / VALIDATION, "a") as handle:  # a defect --strict stops on, after train is converted
        handle["input_description"][3] = b""
    out = tmp_path / "pair"
    staged = tmp_path / ".pair.partial" / "pair_train.h5"
    refused(capsys, (release, out, "--size", "8", "--strict"), str(release / VALIDATION), "row 3")
    assert staged.is_file() and not out.exists()
    finished = staged.stat().st_mtime_ns
    write_fashiongen_h5(release / VALIDATION, num_rows=8, size=16)  # the user mends the source and runs it again
    code, result, _ = convert(capsys, release, out, "--size", "8", "--strict")
    assert code == 0 and result["kept"] == ["train"] and result["splits"]["train"]["num_records"] == 16
    assert (out / "pair_train.h5").stat().st_mtime_ns == finished  # the same file, moved into place, not redone
    assert len(open_source(out, split="validation")) == 8 and not staged.parent.exists()
    # a finished split is kept only when it reads back whole and was made with the same options
    with h5py.File(release / VALIDATION, "a") as handle:
        handle["input_description"][3] = b""
    for damage, options in ((_truncate, ("--size", "8")), (lambda path: None, ("--size", "12"))):
        assert convert(capsys, release, tmp_path / "again", "--size", "8", "--strict")[0] == 2
        damage(tmp_path / ".again.partial" / "again_train.h5")
        write_fashiongen_h5(release / VALIDATION, num_rows=8, size=16)
        code, result, stderr = convert(capsys, release, tmp_path / "again", *options, "--strict")
        assert code == 0 and result["kept"] == [], stderr
        assert len(open_source(tmp_path / "again", split="train")) == 16
        shutil.rmtree(tmp_path / "again")
        with h5py.File(release / VALIDATION, "a") as handle:
            handle["input_description"][3] = b""


@pytest.mark.slow  # a dozen conversions in processes killed at random points
def test_kill_9_at_any_point_then_the_same_command_finishes_the_same_pair(tmp_path: Path) -> None:
    source = write_garment_set(tmp_path / "source", 240, size=64)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "fashiongen.data", "convert", str(source), str(out), "--size", "48",
                "--val-fraction", "0.3", "--overwrite"]

    def files(out: Path) -> dict[str, bytes]:  # the pair's h5 files, named as in OUT "pair" (summaries hold timings)
        return {name.replace(out.name, "pair"): data for name, data in listing(out).items() if name.endswith(".h5")}

    subprocess.run(command(tmp_path / "clean"), check=True, capture_output=True, timeout=300)  # caches content hashes
    start = time.perf_counter()
    subprocess.run(command(tmp_path / "clean"), check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - start
    clean = files(tmp_path / "clean")
    assert sorted(clean) == ["pair_train.h5", "pair_validation.h5"]
    out, rng = tmp_path / "pair", random.Random(0)
    for delay in sorted(rng.uniform(0.3, 1.0) * duration for _ in range(10)):
        shutil.rmtree(out, ignore_errors=True)
        process = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait()
        assert not out.exists() or files(out) == clean  # no folder, or the whole pair: never half of one
        subprocess.run(command(out), check=True, capture_output=True, timeout=300)  # the same command finishes it
        assert files(out) == clean
        assert sorted(path.name for path in tmp_path.iterdir()) == ["clean", "pair", "source"]  # no staging or lock left
