"""`harken report` (being moved here)."""

from harken.report.run_report import register  # noqa: F401
