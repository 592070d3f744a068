"""`python train.py ...` is `fashiongen train ...`: the command and its documentation live in fashiongen/scripts/train.py,
so that an installed package has it too."""

import sys

from fashiongen.cli import script_main

main = script_main("train")

if __name__ == "__main__":
    sys.exit(main())
