"""Hostile input for the readers behind evaluate.py, the dataset readers and caption lists (issue 33): a FIFO among
the evaluated images never hangs, an --out holding another evaluation's or an edited report is refused unless
--overwrite, dataset rows pointing outside their folder are bad records, a CSV field over csv's 128 KB limit is
no traceback, convert --size is checked by argparse, a one-photo reference and lone surrogates are one line.
Every refusal is exit 2 with exactly one `error:` line naming the file, row or option, and what the user owns is
byte-identical before and after."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_garment_set
from script_helpers import REPO, load_script

from fashiongen.data import open_source
from fashiongen.data.folder import MAX_CSV_FIELD
from fashiongen.data.records import RecordError
from fashiongen.evaluation.report import OWNER_FILE, ReportFolder, ReportFolderError, claimed

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EVALUATE = [str(REPO / "evaluate.py")]
QUICK = ["--critic", "none", "--no-memorisation", "--kid-subset-size", "2", "--quiet"]  # FID/KID only: fast


def owned(folder: Path) -> dict[str, bytes]:
    """Everything the user owns under `folder`: relpath -> bytes (a symlink: its target; a FIFO: only that it is one)."""
    if not folder.exists():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            found[relative] = b"-> " + os.readlink(path).encode()
        elif path.is_fifo():
            found[relative] = b"FIFO"
        elif path.is_file():
            found[relative] = path.read_bytes()
    return found


def run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """A script or module as the user runs it; a hang fails the test after `timeout` instead of hanging the suite."""
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def one_error(stderr: str, *names: str) -> str:
    """Exactly one `error:` line, no traceback, naming each of `names`."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def garments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_garment_set(tmp_path_factory.mktemp("garments"), 12, size=16)


@pytest.fixture(scope="module")
def evaluate_py():
    return load_script("evaluate")


def sample_folder(root: Path, garments: Path, count: int = 4) -> Path:
    """A sample.py-style folder: images/ and manifest.jsonl with a prompt per image."""
    (root / "images").mkdir(parents=True)
    rows = []
    for index in range(count):
        shutil.copy(garments / "images" / f"{index}.png", root / "images" / f"{index}.png")
        rows.append({"file": f"images/{index}.png", "prompt": f"garment {index}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


# ---------------------------------------------------------------- evaluate.py --images: only regular files


@pytest.mark.slow
@pytest.mark.parametrize("where", ["plain folder", "manifest"])
def test_a_fifo_among_the_images_is_one_line_never_a_hang(where: str, garments: Path, tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "samples", garments)
    os.mkfifo(folder / "images" / "9.png")
    if where == "plain folder":
        (folder / "manifest.jsonl").unlink()
    else:
        with (folder / "manifest.jsonl").open("a") as manifest:
            manifest.write(json.dumps({"file": "images/9.png", "prompt": "a pipe"}) + "\n")
    before = owned(tmp_path)
    result = run([*EVALUATE, "--images", str(folder), "--reference", str(garments), *QUICK, "--out", str(tmp_path / "eval")],
                 timeout=180)
    assert result.returncode == 2, result.stderr
    one_error(result.stderr, str(folder / "images" / "9.png"), "FIFO")
    assert owned(tmp_path) == before


@pytest.mark.slow
def test_a_fifo_named_manifest_is_refused_not_read(garments: Path, tmp_path: Path) -> None:
    folder = sample_folder(tmp_path / "samples", garments)
    (folder / "manifest.jsonl").unlink()
    os.mkfifo(folder / "manifest.jsonl")
    before = owned(tmp_path)
    result = run([*EVALUATE, "--images", str(folder), "--reference", str(garments), *QUICK, "--out", str(tmp_path / "eval")],
                 timeout=180)
    assert result.returncode == 2, result.stderr
    one_error(result.stderr, str(folder / "manifest.jsonl"), "FIFO")
    assert owned(tmp_path) == before


# ---------------------------------------------------------------- evaluate.py --out: only our own report folder


def test_an_edited_or_foreign_report_folder_is_refused_unless_overwrite(evaluate_py, garments: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    folder = sample_folder(tmp_path / "samples", garments)
    out = tmp_path / "eval"
    job = ["--images", str(folder), "--reference", str(garments), "--val-fraction", "0.3", *QUICK,
           "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert evaluate_py.main(job) == 0
    assert evaluate_py.main(job) == 0  # the same evaluation again resumes (rewrites) its own folder
    capsys.readouterr()
    with (out / "report.md").open("a") as report:
        report.write("my notes on this run\n")
    before = owned(out)
    assert evaluate_py.main(job) == 2
    one_error(capsys.readouterr().err, str(out / "report.md"), "--overwrite")
    assert owned(out) == before
    assert evaluate_py.main([*job, "--overwrite"]) == 0
    assert "my notes" not in (out / "report.md").read_text()
    capsys.readouterr()
    before = owned(out)
    assert evaluate_py.main([*job, "--num-real", "3"]) == 2  # another evaluation into a sealed folder
    one_error(capsys.readouterr().err, str(out), "another evaluation", "num_real")
    assert owned(out) == before


def test_a_folder_of_the_users_files_is_not_a_report_folder(evaluate_py, garments: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    folder = sample_folder(tmp_path / "samples", garments)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own report\n")
    before = owned(out)
    assert evaluate_py.main(["--images", str(folder), "--reference", str(garments), *QUICK, "--out", str(out)]) == 2
    one_error(capsys.readouterr().err, str(out), "report.md", "--overwrite")
    assert owned(out) == before


# ---------------------------------------------------------------- dataset rows outside their folder


def write_csv_dataset(root: Path, garments: Path, bad: dict[str, str] | None = None) -> Path:
    """A folder dataset with captions.csv of 4 good rows; `bad` is a 5th row (line 3 of the file)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for index in range(4):
        shutil.copy(garments / "images" / f"{index}.png", root / "images" / f"{index}.png")
        rows.append({"id": str(index), "file": f"images/{index}.png", "caption": f"garment {index}"})
    if bad is not None:
        rows.insert(1, bad)
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "file", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("how, words", [("absolute", "absolute path"), ("dotdot", "climbs out"), ("symlink", "symlink")])
def test_a_row_whose_image_lies_outside_the_dataset_is_a_bad_record(how: str, words: str, garments: Path,
                                                                    tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    shutil.copy(garments / "images" / "5.png", secret)  # a valid image: only its place is wrong
    file = {"absolute": str(secret), "dotdot": "images/../../secret.png", "symlink": "images/link.png"}[how]
    root = write_csv_dataset(tmp_path / "data", garments, {"id": "x", "file": file, "caption": "a secret"})
    if how == "symlink":
        (root / "images" / "link.png").symlink_to(secret)
    before = owned(tmp_path)
    source = open_source(root)  # skip_bad_records: skipped and counted
    assert len(source) == 4 and "x" not in {source.meta(i).id for i in range(len(source))}
    (where, reason), = source.skipped.entries
    assert where == f"{root / 'captions.csv'}:3" and words in reason
    with pytest.raises(RecordError, match=words):
        open_source(root, skip_bad_records=False)
    result = run(["-m", "fashiongen.data", "inspect", str(root), "--strict", "--out", str(tmp_path / "inspect")])
    assert result.returncode == 2, result.stderr
    one_error(result.stderr, f"{root / 'captions.csv'}:3", words)
    assert owned(tmp_path) == before


@pytest.mark.slow
def test_a_csv_field_over_128_kb_is_read_and_one_over_the_limit_is_a_bad_row(garments: Path, tmp_path: Path) -> None:
    long_caption = "silk " * (200 * 1024 // 5)  # 200 KB: over csv's default limit, a traceback before
    root = write_csv_dataset(tmp_path / "long", garments, {"id": "long", "file": "images/0.png", "caption": long_caption})
    shutil.copy(root / "images" / "0.png", root / "images" / "long.png")
    source = open_source(root)
    assert "long" in {source.meta(i).id for i in range(len(source))}
    huge = write_csv_dataset(tmp_path / "huge", garments,
                             {"id": "huge", "file": "images/0.png", "caption": "x" * (MAX_CSV_FIELD + 1)})
    source = open_source(huge)
    (where, reason), = source.skipped.entries
    assert where == f"{huge / 'captions.csv'}:3" and "'caption'" in reason and "over the limit" in reason
    before = owned(tmp_path)
    result = run(["-m", "fashiongen.data", "inspect", str(huge), "--strict", "--out", str(tmp_path / "inspect")])
    assert result.returncode == 2, result.stderr
    one_error(result.stderr, f"{huge / 'captions.csv'}:3", "'caption'")
    assert owned(tmp_path) == before


# ---------------------------------------------------------------- convert --size


@pytest.mark.slow
@pytest.mark.parametrize("size", ["-5", "0", str(10**9), "abc"])
def test_convert_size_is_checked_by_argparse(size: str, garments: Path, tmp_path: Path) -> None:
    before = owned(tmp_path)
    result = run(["-m", "fashiongen.data", "convert", str(garments), str(tmp_path / "out.h5"), "--size", size])
    assert result.returncode == 2, result.stderr
    one_error(result.stderr, "--size", size)
    assert owned(tmp_path) == before


# ---------------------------------------------------------------- tiny reference sets


def test_a_one_photo_reference_is_one_line_naming_it(evaluate_py, garments: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    folder = sample_folder(tmp_path / "samples", garments)
    one = tmp_path / "one"
    (one / "images").mkdir(parents=True)
    shutil.copy(garments / "images" / "0.png", one / "images" / "0.png")
    (one / "captions.jsonl").write_text(json.dumps({"id": 0, "file": "images/0.png", "caption": "a garment"}) + "\n")
    before = owned(tmp_path)
    out = tmp_path / "eval"
    assert evaluate_py.main(["--images", str(folder), "--reference", str(one), "--val-fraction", "1", *QUICK,
                             "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 2
    one_error(capsys.readouterr().err, f"--reference {one}", "1 readable image(s)", "at least 2")
    assert evaluate_py.main(["--stats-only", "--reference", str(one), "--val-fraction", "1", "--quiet",
                             "--cache-dir", str(tmp_path / "cache")]) == 2
    one_error(capsys.readouterr().err, f"--reference {one}", "1 image(s)", "at least 2")
    assert evaluate_py.main(["--images", str(folder), "--num-real", "1", *QUICK, "--out", str(out)]) == 2
    one_error(capsys.readouterr().err, "--num-real")
    assert owned(tmp_path) == before and not out.exists()


# ---------------------------------------------------------------- lone surrogates in caption lists


@pytest.mark.slow
@pytest.mark.parametrize("row, words", [
    ('{"id": "dress\\ud800", "caption": "a red dress"}', "id"),
    ('{"id": "dress", "caption": "a red \\udc80 dress"}', "caption"),
])
def test_a_lone_surrogate_in_a_caption_list_is_one_line(row: str, words: str, tmp_path: Path) -> None:
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"id": "coat", "caption": "a navy coat"}\n' + row + "\n")
    (tmp_path / "submission").mkdir()
    folder = tmp_path / "samples"
    (folder / "images").mkdir(parents=True)
    (folder / "manifest.jsonl").write_text("")
    before = owned(tmp_path)
    for command in (["-m", "fashiongen.submission", "validate", str(tmp_path / "submission"), "--captions", str(captions)],
                    [*EVALUATE, "--images", str(folder), "--captions", str(captions), *QUICK, "--out", str(tmp_path / "e")]):
        result = run(command)
        assert result.returncode == 2, result.stderr
        one_error(result.stderr, f"{captions}:2", words, "lone surrogate")
    assert owned(tmp_path) == before


def test_a_lone_surrogate_in_a_dataset_caption_is_a_bad_record(garments: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(garments, root)
    lines = (root / "captions.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"caption": "', '"caption": "\\ud83d ')
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    source = open_source(root)
    (where, reason), = source.skipped.entries
    assert where == f"{root / 'captions.jsonl'}:2:caption" and "lone surrogate (\\ud83d)" in reason


def test_the_report_folder_record_resumes_a_killed_job_and_outlives_a_failed_one(tmp_path: Path) -> None:
    """evaluation.json on its own: a job killed mid-write ('running') resumes over what it wrote; a job that fails
    before writing leaves the record as it was (so a later edit is still caught); generated/ sets are not ours to hash."""
    out, job = tmp_path / "eval", {"images": "/somewhere", "num_real": None}
    out.mkdir()
    with claimed(out, job):
        (out / "report.md").write_text("first\n")
        (out / "generated" / "images").mkdir(parents=True)
        (out / "generated" / "images" / "a_0.png").write_bytes(b"png")
    folder = ReportFolder(out, job, overwrite=False)  # a second run starts (records 'running') ...
    (out / "report.md").write_text("half-written by the run that is then killed\n")
    ReportFolder(out, job, overwrite=False).seal()  # ... and the same job, run again, resumes and finishes
    assert json.loads((out / OWNER_FILE).read_text())["state"] == "done" and folder.job == job
    with pytest.raises(RuntimeError), claimed(out, job):
        raise RuntimeError("fails before writing")
    assert json.loads((out / OWNER_FILE).read_text())["state"] == "done"
    (out / "generated" / "images" / "a_1.png").write_bytes(b"png")  # generate_submission's to check, not ours
    with claimed(out, job):
        pass
    (out / "report.md").write_text("edited\n")
    before = owned(out)
    with pytest.raises(ReportFolderError, match="report.md was changed"):
        ReportFolder(out, job, overwrite=False)
    assert owned(out) == before
