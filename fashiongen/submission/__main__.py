"""python -m fashiongen.submission validate ... (fashiongen.submission.command)."""

import sys

from .command import main

sys.exit(main())
