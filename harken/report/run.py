"""The page of a training run, and `report(folder)`: the page of whichever folder it is given.

Owns: a training run's report (a summary table of its metrics, its charts, links to its files),
regenerated at any time from what the run wrote; telling a run folder (metrics.jsonl) from a
`harken demo` folder (demo.json).
Does not own: reading the metrics and choosing panels (`harken.report.metrics`), drawing
(`harken.report.charts`), the HTML building blocks (`harken.report.html`), the demo's report
(`harken.demo.report`), the command line (`harken.cli.report`).
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Sequence

from harken.io import read_json, write_text_atomic
from harken.report.charts import plot_run
from harken.report.html import fresh_plots, html_charts, html_links, html_page, html_table
from harken.report.metrics import DEMO_FILE, METRICS_FILE, Series, learned_nothing, metric_series, read_metrics

HEADLINE_KEYS = ("reward/total", "reward/accuracy", "reward/format", "val/accuracy", "kl", "completion/length",
                 "loss", "token_accuracy")


def report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """The page for a demo folder (demo.json) or a training run folder (metrics.jsonl)."""
    folder = Path(folder)
    if (folder / DEMO_FILE).is_file():
        from harken.demo.report import demo_report

        return demo_report(folder, out)
    return run_report(folder, out)


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.3e}"
    return f"{x:.{digits}g}"


def _final_values(series: dict[str, Series], keys: Sequence[str]) -> list[list[str]]:
    """Rows of (metric, first, last, min, max, points) for a summary table."""
    return [
        [k, _fmt(s.values[0]), _fmt(s.last), _fmt(min(s.values)), _fmt(max(s.values)), str(len(s.values))]
        for k in keys
        if (s := series.get(k)) is not None
    ]


def _run_kind(run_dir: Path) -> str:
    """"grpo", "sft" (from run.json), or "training" when the run did not say."""
    run_json = run_dir / "run.json"
    return str(read_json(run_json).get("kind", "training")) if run_json.is_file() else "training"


def run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Charts and a page for one training run (GRPO or SFT).

    Args:
        run_dir: the run folder (holds metrics.jsonl; config.yaml, run.json, train.log are linked
            when present).
        out: where the page and its charts go (default RUN/report).
    Returns:
        The path of the page (OUT/index.html); charts in OUT/plots/.
    """
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    kind = _run_kind(run_dir)
    name = kind.upper() if kind in ("grpo", "sft") else kind
    series = metric_series(rows)
    charts = plot_run(rows, fresh_plots(out / "plots"), title=name if kind in ("grpo", "sft") else "")
    steps = max((int(r["step"]) for r in rows), default=0)
    title = f"{name} run {run_dir.name}"
    body = [f"<h1>{escape(title)}</h1>",
            f"<p class=\"muted\">{escape(str(run_dir.resolve()))}: {len(rows)} logged rows, last step {steps}</p>"]
    if (warning := learned_nothing(series)) is not None:
        body.append(f'<p class="warning"><b>This run learned nothing:</b> {escape(warning)}</p>')
    if not series:
        body.append("<p>metrics.jsonl holds no numeric metric yet: nothing to chart.</p>")
    else:
        head = [k for k in HEADLINE_KEYS if k in series] + [k for k in series if k not in HEADLINE_KEYS]
        body += ["<h2>Metrics</h2>", html_table(["metric", "first", "last", "min", "max", "points"],
                                                _final_values(series, head))]
        body += ["<h2>Charts</h2>", html_charts(charts, out)]
    files = [("metrics.jsonl", run_dir / METRICS_FILE), ("config.yaml (resolved config)", run_dir / "config.yaml"),
             ("samples.jsonl (sample completions)", run_dir / "samples.jsonl"), ("train.log", run_dir / "train.log"),
             ("final model folder", run_dir / "final")]
    body += ["<h2>Files</h2>", html_links(out, files)]
    page = out / "index.html"
    write_text_atomic(page, html_page(title, body))
    return page
