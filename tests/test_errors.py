"""fashiongen.errors: the one wrapper every command ends through. A user's error is one `error:` line and its exit
code; a deliberate stop is its own line and code; a command's own handlers come first; anything else is a bug and
keeps its traceback. Also that no command defines its own argparse error path or prints its own `error:` lines."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from fashiongen.errors import (ArgumentParser, CommandStopped, Ending, UsageError, UserError, command, exits_on_error,
                               input_errors, raising_user_errors)

PACKAGE = Path(__file__).resolve().parents[1] / "fashiongen"


class Stopped(CommandStopped):
    def __init__(self) -> None:
        super().__init__("stopped by SIGTERM at runs/001/checkpoints/step_000004;\n continue with --resume runs/001")
        self.exit_code = 143


def test_a_user_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    @command()
    def main() -> int:
        raise UserError("configs/x.yaml: train.batch_size must be\n  an integer, got 'eight'")

    assert main() == 2
    assert capsys.readouterr().err == "error: configs/x.yaml: train.batch_size must be an integer, got 'eight'\n"


def test_a_stop_prints_its_message_and_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    @command()
    def main() -> int:
        raise Stopped()

    assert main() == 143
    assert capsys.readouterr().err.startswith("stopped by SIGTERM at runs/001/checkpoints/step_000004; continue")


def test_a_bad_command_line_is_argparses_words_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    @command()
    def main(argv: list[str]) -> int:
        parser = ArgumentParser(prog="x")
        parser.add_argument("--steps", type=int)
        parser.parse_args(argv)
        return 0

    assert main(["--steps", "many"]) == 2
    assert capsys.readouterr().err == "error: argument --steps: invalid int value: 'many'\n"
    with pytest.raises(UsageError):
        ArgumentParser(prog="x").parse_args(["--nope"])


def test_input_errors_name_the_file_and_a_disk_error_by_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    @command(input_errors(OSError))
    def main(code: int) -> int:
        raise OSError(code, "raw strerror", "out/model.safetensors")

    assert main(errno.ENOSPC) == 2
    assert capsys.readouterr().err == "error: out/model.safetensors: no space left on device\n"
    assert main(errno.ENOENT) == 2
    assert capsys.readouterr().err == "error: out/model.safetensors: raw strerror\n"


def test_a_commands_own_handler_comes_first_and_anything_else_keeps_its_traceback(capsys) -> None:
    def diverged(error: Exception) -> Ending | None:
        return Ending("error: the loss is NaN at step 7", 1) if isinstance(error, FloatingPointError) else None

    @command(diverged)
    def main(error: Exception) -> int:
        raise error

    assert main(FloatingPointError()) == 1
    assert capsys.readouterr().err == "error: the loss is NaN at step 7\n"
    with pytest.raises(KeyError):  # a bug: not ours to hide
        main(KeyError("x"))
    with pytest.raises(ValueError):  # a ValueError is a user's only where the command says so
        main(ValueError("x"))


def test_exits_on_error_and_raising_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info, exits_on_error():
        raise UserError("a missing extra: pip install 'fashiongen[app]'")
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: a missing extra")
    with pytest.raises(UserError, match=r"^models/m: not a directory$"), raising_user_errors(OSError):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", "models/m")
    with pytest.raises(KeyError), raising_user_errors(OSError):
        raise KeyError("later code keeps its traceback")


def test_no_command_has_its_own_argparse_error_path_or_error_prints() -> None:
    """The four argparse subclasses and the sixteen `print("error: ...")` sites of d6ecea2 went into errors.py."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"class \w+\(argparse\.ArgumentParser\)", text) or re.search(r"print\(f?[\"']error:", text):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
