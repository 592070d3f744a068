"""Hostile job folders and prompt files for sample.py (issue 33), on a tiny real model: a folder that is not this
job's, a manifest that lists files outside the folder or damaged ones, prompt files that are not what they seem,
and jobs larger than memory. Each ends with exit code 2, exactly one `error:` line naming the file, row or field,
and every file in the folder byte-identical; --overwrite and an honest resume still work."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from pipeline_helpers import export_tiny, export_tiny_gan

from fashiongen.config import TextConfig
from fashiongen.grid import sample_indices
from fashiongen.prompts import MAX_PROMPT_CHARS, MAX_PROMPT_FILE_BYTES, read_prompts
from fashiongen.settings import PipelineInputError
from fashiongen.text import CaptionEncoder
from script_helpers import load_script

FAST = ["--steps", "2", "--guidance", "2", "--quiet"]


@pytest.fixture(scope="module")
def sample_py():
    return load_script("sample")


@pytest.fixture(scope="module")
def encoder() -> CaptionEncoder:
    return CaptionEncoder(TextConfig(cache_dir=""))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, encoder: CaptionEncoder) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "export", encoder, resolution=16)


@pytest.fixture(scope="module")
def sheet(tmp_path_factory: pytest.TempPathFactory, sample_py, model: Path) -> Path:
    """A finished prompt sheet: two prompts, two images each, 16 px."""
    out = tmp_path_factory.mktemp("sheet") / "samples"
    assert sample_py.main(sheet_args(model, out)) == 0
    return out


def sheet_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "a red silk dress", "a navy coat", "--num-images", "2", "--out", str(out), *FAST, *extra]


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """relative path -> bytes of every file under `folder` (folders, FIFOs and symlinks by kind, never opened)."""
    if not folder.exists():
        return {}
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        found[name] = (f"-> {os.readlink(path)}" if path.is_symlink() else "folder" if path.is_dir()
                       else path.read_bytes() if path.is_file() else "special")
    return found


def one_error(capsys: pytest.CaptureFixture, *names: str) -> str:
    """The one `error: ...` line, last on stderr (a model that loaded first may have drawn its progress bar above it)."""
    lines = capsys.readouterr().err.strip("\n").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and not any("Traceback" in line for line in lines), lines
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def refused(sample_py, args: list[str], folder: Path, capsys: pytest.CaptureFixture, *names: str) -> str:
    """Run sample.py expecting exit 2 with one error line naming `names`, and `folder` left byte-identical."""
    before = snapshot(folder)
    capsys.readouterr()
    assert sample_py.main(args) == 2
    line = one_error(capsys, *names)
    assert snapshot(folder) == before
    return line


def copy_of(sheet: Path, tmp_path: Path) -> Path:
    out = tmp_path / "samples"
    shutil.copytree(sheet, out)
    return out


# ---------------------------------------------------------------- whose folder it is


@pytest.mark.parametrize("name", ["grid.png", "manifest.jsonl", "notes.txt"])
def test_a_folder_of_the_users_files_is_refused(name: str, sample_py, model: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    if name == "grid.png":
        Image.new("RGB", (40, 40), "blue").save(out / name)
    else:
        (out / name).write_text('{"file": "images/holiday.png", "note": "mine"}\n')
    line = refused(sample_py, sheet_args(model, out), out, capsys, str(out), name, "--overwrite")
    assert "did not write" in line


def test_overwrite_lets_a_job_write_over_the_users_grid_and_manifest(sample_py, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    Image.new("RGB", (40, 40), "blue").save(out / "grid.png")
    (out / "manifest.jsonl").write_text('{"file": "images/holiday.png"}\n')
    assert sample_py.main(sheet_args(model, out, "--overwrite")) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and Image.open(out / "grid.png").size != (40, 40)
    assert sample_py.main(sheet_args(model, out)) == 0  # now ours: it resumes without the flag


def test_a_job_of_another_model_is_refused(sample_py, sheet: Path, encoder: CaptionEncoder, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    gan = export_tiny_gan(tmp_path / "gan", encoder)
    out = copy_of(sheet, tmp_path)
    args = ["--model", str(gan), "a red silk dress", "a navy coat", "--num-images", "2", "--out", str(out), "--quiet"]
    refused(sample_py, args, out, capsys, str(out), "another model", "--overwrite")


def test_other_settings_are_refused_naming_the_setting(sample_py, sheet: Path, model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = copy_of(sheet, tmp_path)
    args = ["--model", str(model), "a red silk dress", "--out", str(out), "--steps", "3", "--guidance", "2", "--quiet"]
    refused(sample_py, args, out, capsys, "another prompt, seed, setting or model", "num_inference_steps")


def test_an_interpolation_into_a_prompt_sheet_is_refused(sample_py, sheet: Path, model: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = copy_of(sheet, tmp_path)
    args = ["--model", str(model), "--interpolate", "a red silk dress", "a navy coat", "--frames", "3", "--out", str(out), *FAST]
    refused(sample_py, args, out, capsys, str(out), "a prompt sheet, not an interpolation")


def test_a_sheet_folder_from_before_job_json_resumes_without_remaking_anything(sample_py, sheet: Path, model: Path,
                                                                               tmp_path: Path) -> None:
    out = copy_of(sheet, tmp_path)
    (out / "job.json").unlink()
    images = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert sample_py.main(sheet_args(model, out)) == 0
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == images
    assert json.loads((out / "job.json").read_text())["job"] == "prompt-sheet"


# ---------------------------------------------------------------- what a resume reads back


def rewrite_row(out: Path, number: int, **changes: object) -> None:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    row = json.loads(lines[number - 1])
    for key, value in changes.items():
        if value is None:
            del row[key]
        else:
            row[key] = value
    lines[number - 1] = json.dumps(row)
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("listed, names", [("../x.png", ["manifest.jsonl:2", "'..'"]),
                                           ("ABSOLUTE", ["manifest.jsonl:2", "absolute path"]),
                                           ("images/pipe.png", ["manifest.jsonl:2", "FIFO"])])
def test_a_manifest_listing_files_outside_or_a_fifo_is_refused(listed: str, names: list[str], sample_py, sheet: Path,
                                                              model: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    out = copy_of(sheet, tmp_path)
    Image.new("RGB", (16, 16), "green").save(tmp_path / "x.png")
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # not decodable: must never be opened
    os.mkfifo(out / "images" / "pipe.png")
    rewrite_row(out, 2, file=str(tmp_path / "bomb.png") if listed == "ABSOLUTE" else listed)
    refused(sample_py, sheet_args(model, out), out, capsys, *names)


def break_image(out: Path) -> None:
    (out / json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["file"]).write_text("not an image\n")


def header_bomb(out: Path) -> None:
    """A PNG whose header claims 20000x20000 (400 megapixels): refused from its header, never decoded."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    (out / json.loads((out / "manifest.jsonl").read_text().splitlines()[1])["file"]).write_bytes(png)


def grid_folder(out: Path) -> None:
    (out / "grid.png").unlink()
    (out / "grid.png").mkdir()


def manifest_folder(out: Path) -> None:
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").mkdir()


def images_file(out: Path) -> None:
    shutil.rmtree(out / "images")
    (out / "images").write_text("a file where the images go\n")


DAMAGE = {"image replaced by text": (break_image, ["manifest.jsonl:1", "not an image"]),
          "image a header bomb": (header_bomb, ["manifest.jsonl:2", "over the limit"]),
          "grid.png a folder": (grid_folder, ["grid.png is a folder"]),
          "manifest.jsonl a folder": (manifest_folder, ["manifest.jsonl is a folder"]),
          "images/ a file": (images_file, ["images is a file"]),
          "row without prompt": (lambda out: rewrite_row(out, 3, prompt=None), ["manifest.jsonl:3", "\"prompt\""]),
          "index not an integer": (lambda out: rewrite_row(out, 2, index="one"), ["manifest.jsonl:2", "\"index\""]),
          "row not JSON": (lambda out: (out / "manifest.jsonl").write_text("{oops\n"), ["manifest.jsonl:1", "JSON"])}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_folder_is_refused_naming_what(case: str, sample_py, sheet: Path, model: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    out = copy_of(sheet, tmp_path)
    damage, names = DAMAGE[case]
    damage(out)
    refused(sample_py, sheet_args(model, out), out, capsys, *names)


def test_a_missing_image_and_a_partial_last_line_are_made_again(sample_py, sheet: Path, model: Path, tmp_path: Path) -> None:
    out = copy_of(sheet, tmp_path)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / json.loads(lines[3])["file"]).unlink()
    (out / "manifest.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    assert sample_py.main(sheet_args(model, out)) == 0
    assert (out / "manifest.jsonl").read_text().splitlines() == lines


# ---------------------------------------------------------------- prompt files and prompts


def test_a_json_prompt_file_is_a_list_of_prompts_or_rows(tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(["a red dress", {"prompt": "white sneakers", "seed": 4}]))
    items = read_prompts(path)
    assert [(i.prompt, i.seed) for i in items] == [("a red dress", None), ("white sneakers", 4)]
    path.write_text('{"prompt": "a red dress"}')
    with pytest.raises(PipelineInputError, match=r"prompts.json: a .json prompt file must be a list"):
        read_prompts(path)


def test_invisible_characters_are_removed_from_prompts(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a red\u200b dress\u2060\n")
    assert read_prompts(path)[0].prompt == "a red dress"


def make_huge(path: Path) -> None:
    with path.open("wb") as handle:
        handle.truncate(1_500_000_000)  # sparse: no disk used


PROMPT_FILES = {
    "json object": ("prompts.json", lambda p: p.write_text('{"prompt": "a dress"}'), ["prompts.json", "must be a list"]),
    "json not json": ("prompts.json", lambda p: p.write_text('{"prompt": "a dress"}\n{"prompt": "b"}\n'),
                      ["prompts.json:2", "not valid JSON"]),
    "zero-width line": ("prompts.txt", lambda p: p.write_text("a red dress\n\u200b\u200d\ufeff\n"), ["prompts.txt:2", "empty"]),
    "zero-width jsonl": ("prompts.jsonl", lambda p: p.write_text('{"prompt": "\\u200b"}\n'), ["prompts.jsonl:1", "empty"]),
    "lone surrogate": ("prompts.jsonl", lambda p: p.write_text('{"prompt": "a dress"}\n{"prompt": "\\ud800"}\n'),
                       ["prompts.jsonl:2", "surrogate"]),
    "lone surrogate json": ("prompts.json", lambda p: p.write_text('["a dress", "red \\udc80"]'), ["prompts.json: item 2"]),
    "over the size limit": ("prompts.txt", make_huge, ["prompts.txt", f"{MAX_PROMPT_FILE_BYTES >> 20} MB"]),
    "a fifo": ("prompts.txt", lambda p: os.mkfifo(p), ["prompts.txt", "FIFO"]),
    "a prompt too long": ("prompts.txt", lambda p: p.write_text("a dress\n" + "red " * 1500 + "\n"),
                          ["prompts.txt:2", f"limit of {MAX_PROMPT_CHARS}"]),
}


@pytest.mark.parametrize("case", list(PROMPT_FILES))
def test_bad_prompt_files_are_refused_naming_the_line(case: str, sample_py, model: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    name, make, names = PROMPT_FILES[case]
    make(tmp_path / name)
    out = tmp_path / "out"
    refused(sample_py, ["--model", str(model), "--prompts", str(tmp_path / name), "--out", str(out), "--quiet"], out,
            capsys, *names)
    assert not out.exists()


@pytest.mark.parametrize("args, names", [(["\u200b\u200c"], ["prompt 1", "empty"]),
                                         (["a dress", "\udce9t\u00e9"], ["prompt 2", "surrogate"]),
                                         (["--interpolate", "a dress", "\u2060"], ["--interpolate B", "empty"])])
def test_bad_prompts_on_the_command_line_are_refused(args: list[str], names: list[str], sample_py, model: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    refused(sample_py, ["--model", str(model), *args, "--out", str(tmp_path / "out"), "--quiet"], tmp_path / "out", capsys,
            *names)


# ---------------------------------------------------------------- jobs larger than memory


@pytest.mark.parametrize("args, names", [(["--interpolate", "a", "b", "--frames", "50000"], ["--frames 50000", "at most"]),
                                         (["a dress", "--size", "4096", "--batch-size", "8"], ["--batch-size 8", "at most"]),
                                         (["a dress", "--num-images", "200000"], ["--num-images", "100000"]),
                                         (["--edit", "PHOTO", "red", "--num-images", "100001"], ["--num-images", "100000"])])
def test_jobs_larger_than_memory_are_refused_naming_the_limit(args: list[str], names: list[str], sample_py, model: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (16, 16)).save(tmp_path / "photo.png")
    args = [str(tmp_path / "photo.png") if a == "PHOTO" else a for a in args]
    out = tmp_path / "out"
    refused(sample_py, ["--model", str(model), *args, "--out", str(out), *FAST], out, capsys, *names)
    assert not out.exists()


def test_grids_and_strips_show_an_even_sample_of_a_large_job(sample_py, model: Path, tmp_path: Path) -> None:
    assert sample_indices(5, 64) == [0, 1, 2, 3, 4]
    assert sample_indices(200_000, 64)[:2] == [0, 3175] and sample_indices(200_000, 64)[-1] == 199_999
    assert len(sample_indices(200_000, 64)) == 64
    out = tmp_path / "lerp"
    assert sample_py.main(["--model", str(model), "--interpolate", "a red dress", "a navy coat", "--frames", "20",
                           "--scheduler", "ddim", "--out", str(out), *FAST]) == 0
    assert len(list((out / "frames").iterdir())) == 20 and Image.open(out / "strip.png").width == 16 * 96


def test_edits_are_made_in_batches_and_resume(sample_py, model: Path, tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), "red").save(tmp_path / "photo.png")
    out = tmp_path / "edit"
    args = ["--model", str(model), "--edit", str(tmp_path / "photo.png"), "a navy shirt", "--num-images", "3",
            "--batch-size", "2", "--out", str(out), *FAST]
    assert sample_py.main(args) == 0
    kept = (out / "edits" / "edit_0.png").stat().st_mtime_ns
    (out / "edits" / "edit_2.png").unlink()
    assert sample_py.main(args) == 0
    assert (out / "edits" / "edit_2.png").is_file() and (out / "edits" / "edit_0.png").stat().st_mtime_ns == kept
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3


def test_an_edit_the_model_refuses_leaves_a_new_folder_unmade(sample_py, model: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (32, 48), "red").save(tmp_path / "photo.png")
    Image.new("L", (48, 48), 255).save(tmp_path / "mask.png")
    out = tmp_path / "edit"
    refused(sample_py, ["--model", str(model), "--edit", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"),
                        "a navy shirt", "--out", str(out), *FAST], out, capsys, "mask")
    assert not out.exists()
