"""The PNG charts of a training run: one per panel, and a grid of the metrics no panel draws.

Owns: drawing metric series (faint raw values with a moving average for dense series, points for
sparse ones) and the `Chart` record a page shows.
Does not own: which metrics share a chart (`harken.report.metrics`), the figure set-up and
atomic saving (`harken.report.plotting`), pages (`harken.report.run`, `harken.demo.report`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harken.report.metrics import Series, metric_series, plan_panels
from harken.report.plotting import figure, save_png


@dataclass
class Chart:
    """A chart written for a page."""

    path: Path  # the PNG
    title: str
    keys: list[str]  # the metrics it draws


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _draw(ax, series: dict[str, Series], keys: Sequence[str], legend_size: int = 7) -> None:
    """Lines of `keys` on one axes.

    Dense series (noisy per-step values) are drawn faintly with a moving average on top; sparse
    ones (validation every N steps) as points joined by lines.
    """
    for i, key in enumerate(keys):
        s = series[key]
        color = f"C{i % 10}"
        if len(s.values) >= 30:
            window = max(2, len(s.values) // 25)
            ax.plot(s.steps, s.values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(s.steps, _smooth(s.values, window), color=color, linewidth=1.6, label=f"{key} (mean of {window})")
        else:
            ax.plot(s.steps, s.values, color=color, marker="o", markersize=3.5, linewidth=1.2, label=key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="best")


def plot_panel(series: dict[str, Series], keys: Sequence[str], title: str, ylabel: str, path: Path,
               xlabel: str = "optimizer step") -> None:
    """One line chart of `keys` over steps."""
    # Fixed margins instead of a layout engine: a constrained layout doubles the time of a chart.
    fig = figure(6.4, 3.6)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.14)
    ax = fig.subplots()
    _draw(ax, series, keys)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    save_png(fig, path)


def plot_grid(series: dict[str, Series], families: dict[str, list[str]], title: str, path: Path) -> None:
    """Small multiples: one axes per metric family (the metrics no registry panel draws)."""
    n = len(families)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = figure(4.2 * cols, 2.8 * rows)
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.45 / (2.8 * rows), bottom=0.25 / (2.8 * rows) + 0.02,
                        wspace=0.25, hspace=0.35)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (fam, keys) in zip(axes, families.items()):
        _draw(ax, series, keys, legend_size=6)
        ax.set_title(fam, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    save_png(fig, path)


def plot_run(rows: Sequence[dict[str, Any]], plot_dir: str | os.PathLike, prefix: str = "", title: str = "") -> list[Chart]:
    """Write one PNG per panel of a run's metrics into plot_dir (`<prefix><panel>.png`), and one
    grid of the remaining metrics (`<prefix>more.png`).

    Args:
        rows: metrics.jsonl rows (`harken.report.metrics.read_metrics`).
        prefix: file-name prefix, e.g. "grpo-" when several runs share a folder.
        title: prepended to every chart title (e.g. the arm's name).
    Returns:
        The charts written, in panel order (none when the rows hold no metric).
    """
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    series = metric_series(rows)
    panels, families = plan_panels(list(series))
    charts = []
    for panel, keys in panels:
        path = plot_dir / f"{prefix}{panel.name}.png"
        full_title = f"{title}: {panel.title}" if title else panel.title
        plot_panel(series, keys, full_title, panel.ylabel, path)
        charts.append(Chart(path, full_title, keys))
    if families:
        path = plot_dir / f"{prefix}more.png"
        full_title = f"{title}: more metrics" if title else "more metrics"
        plot_grid(series, families, full_title, path)
        charts.append(Chart(path, full_title, [k for keys in families.values() for k in keys]))
    return charts
