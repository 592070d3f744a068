"""`python train.py ...` is `fashiongen train ...`: the command and its documentation live in fashiongen/scripts/train.py,
so that an installed package has it too."""

import sys

from fashiongen.cli import load_command, run

load_command("train")  # its imports load with the script (a missing extra: one `error:` line, exit code 2)


def main(argv: list[str] | None = None) -> int:
    return run("train", argv)


if __name__ == "__main__":
    sys.exit(main())
