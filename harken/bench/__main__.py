"""`python3 -m harken.bench ...`: `harken bench` without importing harken's other commands (whose
audio/data dependencies need not be installed), as `scripts/gpu_bench.sh` runs it."""

import sys

from harken.cli.bench import main

sys.exit(main())
