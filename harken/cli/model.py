"""`harken model ...` (being moved here)."""

from harken.models.families import register  # noqa: F401
