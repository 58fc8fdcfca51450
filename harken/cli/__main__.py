"""`python -m harken.cli`: the same entry point as the `harken` command (used by torchrun/accelerate)."""

import sys

from harken.cli import main

sys.exit(main())
