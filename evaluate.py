"""`python evaluate.py ...` is `fashiongen evaluate ...`: the command and its documentation live in fashiongen/scripts/evaluate.py,
so that an installed package has it too."""

import sys

from fashiongen.cli import script_main

main = script_main("evaluate")

if __name__ == "__main__":
    sys.exit(main())
