"""`python -m fashiongen`: the `fashiongen` command (fashiongen/cli.py)."""

import sys

from .cli import main

sys.exit(main())
