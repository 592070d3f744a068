"""`python sample.py ...` is `fashiongen sample ...`: the command and its documentation live in fashiongen/scripts/sample.py,
so that an installed package has it too."""

import sys

from fashiongen.cli import script_main

main = script_main("sample")

if __name__ == "__main__":
    sys.exit(main())
