"""The `fashiongen` command: one subcommand per entry point, each given the rest of the command line.

    fashiongen sample "red floral summer dress" --num-images 4      # = python sample.py ...
    fashiongen train configs/small64.yaml                           # = python train.py ...
    fashiongen evaluate --model MODEL ...                           # = python evaluate.py ...
    fashiongen app                                                  # = python app.py ...
    fashiongen data inspect SOURCE                                  # = python -m fashiongen.data ...
    fashiongen release RUN OUT ...                                  # = python -m fashiongen.release ...
    fashiongen challenge init ...                                   # = python -m fashiongen.challenge ...

`python -m fashiongen` is the same command. A feature whose extra is not installed (the app without
`fashiongen[app]`...) ends with one line `error: ... pip install 'fashiongen[app]'` and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from .errors import ArgumentParser, command, exits_on_error

# subcommand -> (module holding main(argv), one line for --help)
COMMANDS = {
    "sample": ("fashiongen.scripts.sample", "generate garments from text (prompt sheets, submissions, interpolation, editing)"),
    "train": ("fashiongen.scripts.train", "train a model from a YAML config (the 'train' extra)"),
    "evaluate": ("fashiongen.scripts.evaluate", "FID/KID, critic scores and memorisation checks of a model (the 'eval' extra)"),
    "app": ("fashiongen.scripts.app", "the designer app in the browser (the 'app' extra)"),
    "data": ("fashiongen.data.__main__", "inspect a dataset or convert it to HDF5"),
    "release": ("fashiongen.release", "publish a model as a complete folder with its card"),
    "challenge": ("fashiongen.challenge.__main__", "the challenge server: set up, serve, score, validate a submission"),
}


@command()
def run(name: str, argv: Sequence[str] | None = None) -> int:
    """Run one subcommand's main(argv); a missing extra is one `error:` line and exit code 2."""
    main_of: Callable[[list[str] | None], int] = importlib.import_module(COMMANDS[name][0]).main
    return main_of(None if argv is None else list(argv))


def load_command(name: str) -> ModuleType:
    """The module of command `name`, imported now (the top-level scripts load theirs with the script, as before they
    were shims); a missing extra is one `error:` line and exit code 2."""
    with exits_on_error():
        return importlib.import_module(COMMANDS[name][0])


def parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<10} {help_line}" for name, (_, help_line) in COMMANDS.items())
    result = ArgumentParser(
        prog="fashiongen", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="FashionGen: text-to-image fashion generation.",
        epilog=f"commands:\n{commands}\n\n`fashiongen COMMAND --help` shows a command's options.")
    result.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(COMMANDS))
    result.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with exits_on_error():  # a bad command line here is argparse's SystemExit(2), after its one line
        if not argv:
            parser().error(f"name a command: {', '.join(COMMANDS)} (fashiongen --help)")
        options = parser().parse_args(argv)
    sys.argv[0] = f"fashiongen {options.command}"  # the command's usage and errors name it as typed
    return run(options.command, options.args)


if __name__ == "__main__":
    sys.exit(main())
