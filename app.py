"""`python app.py ...` is `fashiongen app ...`: the command and its documentation live in fashiongen/scripts/app.py,
so that an installed package has it too."""

import sys

from fashiongen.cli import script_main

main = script_main("app")

if __name__ == "__main__":
    sys.exit(main())
