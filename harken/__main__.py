"""`python -m harken`: the same entry point as the `harken` command."""

import sys

from harken.cli import main

sys.exit(main())
