"""Hostile input and faults for sample.py, evaluate.py and the submission validator, on a tiny real model:
every bad option, prompt file, output folder and listed path ends with exactly one `error: ...` line naming
it and exit code 2, with every file already in the folder byte-identical; two writers on one folder, and
kill -9 at seeded random points of a submission run, lose nothing."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_fashiongen_h5
from PIL import Image
from pipeline_helpers import export_tiny

from fashiongen import submission
from fashiongen.config import TextConfig
from fashiongen.submission import SubmissionError, read_caption_list, validate_submission
from fashiongen.text import CaptionEncoder
from fashiongen.utils import output_lock
from script_helpers import REPO, load_script

FAST = ["--steps", "2", "--guidance", "2", "--quiet"]
CAPTIONS = [{"id": "a", "caption": "a red silk dress"}, {"id": "b", "caption": "a navy wool coat"},
            {"id": "c", "caption": "white leather sneakers"}, {"id": "d", "caption": "black ankle boots"}]
SUBMISSION = ["--per-caption", "2", "--resolution", "16", "--batch-size", "1", *FAST]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sample_py():
    return load_script("sample")


@pytest.fixture(scope="module")
def evaluate_py():
    return load_script("evaluate")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "export", CaptionEncoder(TextConfig(cache_dir="")), resolution=16)


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("captions") / "captions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CAPTIONS))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sample_py, model: Path, captions: Path) -> Path:
    """One uninterrupted submission run through sample.py (8 images of 16 px)."""
    out = tmp_path_factory.mktemp("reference") / "submission"
    assert sample_py.main(["--model", str(model), "--submission", str(captions), *SUBMISSION, "--out", str(out)]) == 0
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's sha256 (and every symlink's target) under `folder`; {} when it does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def assert_one_error(err: str, *names: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """An --out folder that already holds the user's files, which no refused run may touch."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes\n")
    (out / "manifest.jsonl").write_text('{"file": "images/keep.png", "prompt": "x"}\n')
    Image.new("RGB", (16, 16), "red").save(out / "images" / "keep.png")
    return out


# ---------------------------------------------------------------- options, prompt files, caption lists


BIG = 2**64
SAMPLE_CASES = {
    "num-images 0": (["a dress", "--num-images", "0"], ["--num-images"]),
    "num-images -1": (["a dress", "--num-images", "-1"], ["--num-images"]),
    "num-images not a number": (["a dress", "--num-images", "four"], ["--num-images"]),
    "batch-size 0": (["a dress", "--batch-size", "0"], ["--batch-size"]),
    "steps 0": (["a dress", "--steps", "0"], ["--steps"]),
    "guidance nan": (["a dress", "--guidance", "nan"], ["--guidance"]),
    "size 4": (["a dress", "--size", "4"], ["--size"]),
    "scheduler": (["a dress", "--scheduler", "nope"], ["--scheduler"]),
    "seed negative": (["a dress", "--seed", "-1"], ["--seed", "2**64"]),
    "seed 2**64": (["a dress", "--seed", str(BIG)], ["--seed", "2**64"]),
    "seed + k overflows": (["a dress", "b coat", "--num-images", "2", "--seed", str(BIG - 3)], ["--seed", str(BIG)]),
    "seed-b": (["--interpolate", "a", "b", "--seed-b", str(BIG)], ["--seed-b"]),
    "frames 1": (["--interpolate", "a", "b", "--frames", "1"], ["--frames"]),
    "strength 1.5": (["--edit", "photo.png", "red", "--strength", "1.5"], ["--strength"]),
    "edit photo missing": (["--edit", "nowhere.png", "red"], ["--edit", "nowhere.png"]),
    "per-caption 0": (["--submission", "CAPTIONS", "--per-caption", "0"], ["--per-caption"]),
    "limit 0": (["--submission", "CAPTIONS", "--limit", "0"], ["--limit"]),
    "resolution 4": (["--submission", "CAPTIONS", "--resolution", "4"], ["--resolution"]),
    "prompts not UTF-8": (["--prompts", "prompts.txt"], ["prompts.txt:2", "UTF-8"]),
    "prompts JSONL seed 2**64": (["--prompts", "seed_big.jsonl"], ["seed_big.jsonl:2", "seed"]),
    "prompts JSONL seed negative": (["--prompts", "seed_negative.jsonl"], ["seed_negative.jsonl:1", "seed"]),
    "prompts JSONL seed true": (["--prompts", "seed_bool.jsonl"], ["seed_bool.jsonl:1", "seed"]),
    "prompts JSONL seed + k overflows": (["--prompts", "seed_edge.jsonl", "--num-images", "3"], ["seed_edge.jsonl:1", "seed"]),
    "prompts is a folder": (["--prompts", "."], ["is not a file"]),
    "caption list not UTF-8": (["--submission", "latin1.jsonl"], ["latin1.jsonl:1", "UTF-8"]),
}


@pytest.mark.parametrize("case", list(SAMPLE_CASES))
def test_bad_options_and_inputs_exit_2_with_one_line_and_touch_nothing(case: str, sample_py, model: Path, captions: Path,
                                                                       user_folder: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "prompts.txt").write_bytes(b"a red dress\nun caf\xe9 cr\xe8me\n")  # cp1252, not UTF-8
    (tmp_path / "seed_big.jsonl").write_text(f'{{"prompt": "a", "seed": 1}}\n{{"prompt": "b", "seed": {BIG}}}\n')
    (tmp_path / "seed_negative.jsonl").write_text('{"prompt": "a", "seed": -4}\n')
    (tmp_path / "seed_bool.jsonl").write_text('{"prompt": "a", "seed": true}\n')
    (tmp_path / "seed_edge.jsonl").write_text(f'{{"prompt": "a", "seed": {BIG - 2}}}\n')
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "a", "caption": "caf\xe9"}\n')
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.png")
    args, names = SAMPLE_CASES[case]
    args = [str(captions) if a == "CAPTIONS" else str(tmp_path / a) if a.endswith((".txt", ".jsonl", ".png")) or a == "."
            else a for a in args]
    before = snapshot(user_folder)
    capsys.readouterr()
    assert sample_py.main(["--model", str(model), *args, "--out", str(user_folder), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, *names)
    assert snapshot(user_folder) == before


def test_a_single_h5_file_is_one_split_read_whole_unless_a_split_is_named(sample_py, model: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    plain = write_fashiongen_h5(tmp_path / "fashiongen_256.h5", num_rows=12)
    assert [item.id for item in read_caption_list(plain)] == [str(i) for i in range(12)]
    with pytest.raises(SubmissionError, match="no captions in split 'validation'"):
        read_caption_list(plain, split="validation")  # named: the file's 5% hash split (none of these 6 products)
    out = tmp_path / "sub"
    assert sample_py.main(["--model", str(model), "--submission", str(plain), "--per-caption", "1", "--resolution", "16",
                           *FAST, "--out", str(out)]) == 0
    assert "12 images written" in capsys.readouterr().out
    assert submission.main(["validate", str(out), "--captions", str(plain)]) == 0


# ---------------------------------------------------------------- output folders


def test_out_that_is_a_file_is_refused_before_loading_the_model(sample_py, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    taken = tmp_path / "results.png"
    taken.write_bytes(b"not mine to overwrite")
    for out in (taken, taken / "inside"):
        assert sample_py.main(["--model", str(tmp_path / "no-model"), "a dress", "--out", str(out)]) == 2  # no model needed
        assert_one_error(capsys.readouterr().err, str(taken), "is a file")
    assert taken.read_bytes() == b"not mine to overwrite"


@pytest.fixture
def read_only(tmp_path: Path):
    """A read-only tmpfs holding a folder with a file (tests run as root, for whom chmod stops nothing)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only folder needs a read-only mount, which needs root and mount(8)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here (no CAP_SYS_ADMIN), so no read-only folder can be made")
    try:
        (mount / "old").mkdir()
        (mount / "old" / "notes.txt").write_text("kept\n")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["new folder", "existing folder"])
def test_out_in_a_read_only_folder_is_refused(where: str, read_only: Path, sample_py, evaluate_py, captions: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = read_only / ("new" if where == "new folder" else "old")
    before = snapshot(read_only)
    assert sample_py.main(["--model", str(tmp_path / "no-model"), "--submission", str(captions), "--out", str(out)]) == 2
    assert_one_error(capsys.readouterr().err, str(out), "Read-only file system")
    assert evaluate_py.main(["--images", str(tmp_path), "--out", str(out), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, str(out), "Read-only file system")
    assert snapshot(read_only) == before


MODES = {"prompt sheet": ["a dress"], "submission": ["--submission", "CAPTIONS"], "interpolate": ["--interpolate", "a", "b"],
         "edit": ["--edit", "PHOTO", "a red dress"]}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_sample_mode_refuses_a_folder_another_process_writes(mode: str, sample_py, model: Path, captions: Path,
                                                                   user_folder: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.png")
    args = [str(captions) if a == "CAPTIONS" else str(tmp_path / "photo.png") if a == "PHOTO" else a for a in MODES[mode]]
    before = snapshot(user_folder)
    with output_lock(user_folder):  # another writer (this process, through another open file)
        assert sample_py.main(["--model", str(model), *args, "--out", str(user_folder), *FAST]) == 2
    line = assert_one_error(capsys.readouterr().err, str(user_folder), f"another process (pid {os.getpid()})")
    assert line.endswith("wait for it or choose another --out")
    assert snapshot(user_folder) == before  # and the lock file went with its holder


def test_evaluate_refuses_a_busy_or_unusable_report_folder(evaluate_py, reference: Path, model: Path, captions: Path,
                                                          user_folder: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    before = snapshot(user_folder)
    with output_lock(user_folder):
        for mode in (["--images", str(reference)], ["--model", str(model), "--captions", str(captions)],
                     ["--upsampling", str(model)]):
            assert evaluate_py.main([*mode, "--out", str(user_folder), "--quiet"]) == 2
            assert_one_error(capsys.readouterr().err, str(user_folder), f"pid {os.getpid()}")
    assert snapshot(user_folder) == before
    (tmp_path / "report").write_text("a file")
    assert evaluate_py.main(["--images", str(reference), "--out", str(tmp_path / "report"), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, str(tmp_path / "report"), "is a file")


@pytest.mark.parametrize("args, name", [
    (["--num-images", "0"], "--num-images"), (["--per-caption", "-2"], "--per-caption"), (["--steps", "5000"], "--steps"),
    (["--guidance", "inf"], "--guidance"), (["--seed", "-3"], "--seed"), (["--resolution", "2"], "--resolution"),
    (["--kid-subset-size", "1"], "--kid-subset-size"), (["--val-fraction", "1.5"], "--val-fraction"),
    (["--sweep", "steps=10,0"], "--sweep steps"), (["--num-real", "x"], "--num-real"), (["--size", "7"], "--size"),
    (["--input-size", "100000"], "--input-size"),
])
def test_evaluate_bad_options_exit_2_with_one_line(args: list[str], name: str, evaluate_py, reference: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert evaluate_py.main(["--images", str(reference), *args, "--out", str(tmp_path / "eval"), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, name)
    assert not (tmp_path / "eval").exists()


def test_evaluate_upsampling_refuses_what_is_not_a_stage_with_one_line(evaluate_py, model: Path, reference: Path,
                                                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--upsampling: a folder that is no model, a base model without a stage, a damaged one: one line, no report."""
    import shutil

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.json").write_bytes(os.urandom(300))
    damaged = tmp_path / "damaged"
    shutil.copytree(model, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    for path, words in ((tmp_path / "missing", "missing"), (junk, "model.json"), (model, "not an upsampling stage"),
                        (damaged, "model.safetensors")):
        out = tmp_path / f"eval-{path.name}"
        assert evaluate_py.main(["--upsampling", str(path), "--reference", str(reference), "--out", str(out), "--quiet"]) == 2
        assert_one_error(capsys.readouterr().err, words)
        assert not (out / "report.json").exists()


# ---------------------------------------------------------------- files a folder lists


def _point_outside(out: Path, how: str, outside: Path) -> str:
    """Make submission.jsonl's first row lead outside `out`; returns the file it now names."""
    lines = (out / "submission.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    if how == "absolute path":
        row["file"] = str(outside)
    elif how == "'..' path":
        row["file"] = f"images/../../{outside.name}"
    elif how == "symlinked image":
        (out / row["file"]).unlink()
        (out / row["file"]).symlink_to(outside)
    else:  # a symlinked images/ folder
        shutil.move(out / "images", outside.parent / "elsewhere")
        (out / "images").symlink_to(outside.parent / "elsewhere")
    lines[0] = json.dumps(row)
    (out / "submission.jsonl").write_text("\n".join(lines) + "\n")
    return row["file"]


@pytest.mark.parametrize("how", ["absolute path", "'..' path", "symlinked image", "symlinked images folder"])
def test_evaluate_and_validate_refuse_files_outside_the_folder(how: str, evaluate_py, reference: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = Path(shutil.copytree(reference, tmp_path / "set" / "submission", symlinks=True))
    outside = tmp_path / "set" / "secret.png"
    shutil.copy(reference / "images" / "a_0.png", outside)  # a valid image: only its place is wrong
    file = _point_outside(out, how, outside)
    before = snapshot(tmp_path / "set")
    assert evaluate_py.main(["--images", str(out), "--out", str(tmp_path / "eval"), "--quiet"]) == 2
    line = assert_one_error(capsys.readouterr().err, "submission.jsonl:1", "only files inside the folder")
    problems = validate_submission(out)
    assert any(file in problem and ("outside" in problem or "'..'" in problem or "absolute" in problem) for problem in problems), problems
    assert submission.main(["validate", str(out)]) == 1
    reason = line.split(": file ", 1)[1].split(";")[0]
    assert any(reason in problem for problem in problems), (reason, problems)  # one rule, one wording
    assert snapshot(tmp_path / "set") == before and not (tmp_path / "eval").exists()


def test_a_sample_folder_manifest_pointing_outside_is_refused(evaluate_py, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "samples"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(tmp_path / "private.png")
    (folder / "images" / "000_0_dress.png").symlink_to(tmp_path / "private.png")
    (folder / "manifest.jsonl").write_text('{"file": "images/000_0_dress.png", "prompt": "a dress"}\n')
    assert evaluate_py.main(["--images", str(folder), "--out", str(tmp_path / "eval"), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, "manifest.jsonl", "outside")
    (folder / "manifest.jsonl").unlink()  # a plain folder of images: the same rule for what it holds
    assert evaluate_py.main(["--images", str(folder), "--out", str(tmp_path / "eval"), "--quiet"]) == 2
    assert_one_error(capsys.readouterr().err, "000_0_dress.png", "outside")


# ---------------------------------------------------------------- two writers, kill -9


@pytest.mark.slow
def test_two_sample_processes_on_one_folder_one_writes_the_other_is_refused(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    command = [sys.executable, str(REPO / "sample.py"), "--model", str(model), "a red silk dress", "a navy coat", "white sneakers",
               "--num-images", "4", "--batch-size", "1", "--out", str(out), *FAST]
    runs = [subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.pid, run.wait(timeout=300), *run.communicate()) for run in runs]
    codes = sorted(code for _, code, _, _ in results)
    if codes == [0, 0]:
        pytest.fail("both runs succeeded one after the other: the second started after the first had finished")
    assert codes == [0, 2], results
    (winner, *_), (_, _, _, refused) = sorted(results, key=lambda r: r[1])
    assert_one_error(refused, str(out), f"another process (pid {winner})")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    images = sorted(p.name for p in (out / "images").iterdir())
    assert len(rows) == len({r["file"] for r in rows}) == len(images) == 12
    assert sorted(Path(r["file"]).name for r in rows) == images and (out / "grid.png").is_file()
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_kill_9_at_random_points_of_a_submission_loses_nothing(model: Path, captions: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run is a real process, forked from a server that has imported sample.py once (so ten kills cost seconds,
    not ten interpreter starts), and killed with SIGKILL at a seeded delay drawn over one full run's duration."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import sample  # noqa: E402  the module the server preloads; runs call sample.main in a fresh process

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sample"])
    out = tmp_path / "submission"
    argv = ["--model", str(model), "--submission", str(captions), "--per-caption", "3", "--resolution", "16",
            "--batch-size", "1", *FAST, "--out", str(out)]  # 12 images, each written on its own

    def start(args: list[str] = argv) -> multiprocessing.Process:
        process = context.Process(target=sample.main, args=(args,))
        process.start()
        return process

    start(["--steps", "0"]).join(120)  # starts the server (one import of sample.py) outside the timed run
    began = time.monotonic()
    timed = start()
    timed.join(120)
    duration = time.monotonic() - began
    assert timed.exitcode == 0 and validate_submission(out) == []
    uninterrupted = snapshot(out / "images")

    rng, kills, trials = random.Random(18), 0, 0
    while kills < 10 and trials < 30:
        trials += 1
        if validate_submission(out) == []:
            shutil.rmtree(out)  # finished: start the set over, so that every kill lands in a run with work to do
        finished = {row["file"]: hashlib.sha256((out / row["file"]).read_bytes()).hexdigest()
                    for row in _complete_rows(out)}
        process = start()
        time.sleep(rng.uniform(0.0, duration))
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.join(60)
        for file, digest in finished.items():  # what was finished before stays finished, byte for byte
            assert hashlib.sha256((out / file).read_bytes()).hexdigest() == digest, (trials, file)
    assert kills >= 10, f"only {kills} of {trials} runs were still running at their kill time"

    final = start()
    final.join(120)
    assert final.exitcode == 0
    assert submission.main(["validate", str(out), "--captions", str(captions)]) == 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and not (out / ".lock").exists()
    assert snapshot(out / "images") == uninterrupted  # resumed images equal uninterrupted ones


def _complete_rows(out: Path) -> list[dict]:
    """submission.jsonl's complete lines (a kill may leave half a last line)."""
    path = out / "submission.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]


def test_a_resumed_prompt_sheet_lists_each_image_once_even_after_a_partial_line(sample_py, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    args = ["--model", str(model), "a red silk dress", "a navy coat", "--num-images", "2", "--out", str(out), *FAST]
    assert sample_py.main(args) == 0
    rows = (out / "manifest.jsonl").read_text().splitlines()
    (out / json.loads(rows[3])["file"]).unlink()  # killed while writing the last image: half its line, no image
    (out / "manifest.jsonl").write_text("\n".join(rows[:3] + [rows[1], rows[3][:25]]))
    assert sample_py.main(args) == 0
    again = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in again) == sorted(json.loads(r)["file"] for r in rows)
    assert np.asarray(Image.open(out / again[-1]["file"])).shape == (16, 16, 3)


@pytest.mark.parametrize("args, name", [(["validate"], "dir"), (["validate", "X", "--bogus"], "--bogus"),
                                        (["check", "X"], "check"), (["validate", "nowhere"], "nowhere")])
def test_the_validator_command_line_answers_bad_arguments_in_one_line(args: list[str], name: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    args = [str(tmp_path) if a == "X" else str(tmp_path / a) if a == "nowhere" else a for a in args]
    assert submission.main(args) == 2
    assert_one_error(capsys.readouterr().err, name)
