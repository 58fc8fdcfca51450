"""`harken demo` (being moved here)."""

from harken.demo.run import register  # noqa: F401
