"""`harken bench` (being moved here)."""

from harken.bench.harness import register  # noqa: F401
