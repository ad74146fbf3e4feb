"""`python -m gdino.cli`: the `gdino` command."""

import sys

from . import main

sys.exit(main())
