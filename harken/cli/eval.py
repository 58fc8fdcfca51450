"""`harken eval ...` (being moved here)."""

from harken.eval.run import register  # noqa: F401
