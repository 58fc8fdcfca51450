"""Reports of finished runs: charts and a page that opens from disk.

Modules: `metrics` (metrics.jsonl into series, the panel registry), `plotting` (the one
matplotlib set-up), `charts` (a run's PNGs), `html` (page building blocks), `run` (a run's page
and `report(folder)`, which also serves demo folders through `harken.demo.report`). The names
below are the package's public entry points.
"""

from harken.report.metrics import learned_nothing, metric_series, plan_panels, read_metrics
from harken.report.run import report, run_report

__all__ = ["learned_nothing", "metric_series", "plan_panels", "read_metrics", "report", "run_report"]
