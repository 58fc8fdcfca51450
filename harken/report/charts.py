"""The PNG charts of a training run (one per panel, and a grid of the metrics no panel draws), and of
results over seeds (grouped bars with the seeds' range, lines with a band).

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
    wide: bool = False  # a grid of small multiples: shown at the page's full width


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
    # Below the axes, never over the lines.
    ax.legend(fontsize=legend_size, loc="upper center", bbox_to_anchor=(0.5, -0.16 - 0.04 * legend_size / 7),
              ncol=_legend_columns(keys), frameon=False)


def _legend_columns(keys: Sequence[str]) -> int:
    return 1 if max((len(k) for k in keys), default=0) > 40 else min(2, len(keys)) if len(keys) > 1 else 1


def _legend_rows(keys: Sequence[str]) -> int:
    return -(-len(keys) // _legend_columns(keys))


def plot_panel(series: dict[str, Series], keys: Sequence[str], title: str, ylabel: str, path: Path,
               xlabel: str = "optimizer step") -> None:
    """One line chart of `keys` over steps."""
    # Fixed margins instead of a layout engine: a constrained layout doubles the time of a chart.
    # The legend sits below the x label: the figure grows by its rows.
    legend_h = 0.2 * _legend_rows(keys) + 0.15
    height = 3.6 + legend_h
    fig = figure(6.4, height)
    fig.subplots_adjust(left=0.12, right=0.97, top=1 - 0.36 / height, bottom=(0.55 + legend_h) / height)
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
    # Inches: the suptitle above, then per row a title, the axes, tick labels and the legend below.
    legend_h = 0.14 * max(_legend_rows(keys) for keys in families.values())
    axes_h, gap, top, bottom = 2.0, 0.25 + 0.45 + legend_h, 0.55, 0.5 + legend_h
    height = top + rows * axes_h + (rows - 1) * gap + bottom
    fig = figure(4.2 * cols, height)
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - top / height, bottom=bottom / height,
                        wspace=0.25, hspace=gap / axes_h)
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
        full_title = f"{title}: {panel.title_for(keys)}" if title else panel.title_for(keys)
        plot_panel(series, keys, full_title, panel.ylabel, path)
        charts.append(Chart(path, full_title, keys))
    if families:
        path = plot_dir / f"{prefix}more.png"
        full_title = f"{title}: more metrics" if title else "more metrics"
        plot_grid(series, families, full_title, path)
        charts.append(Chart(path, full_title, [k for keys in families.values() for k in keys], wide=len(families) > 1))
    return charts


# ---------------------------------------------------------------------------------------------
# Results over several seeds: a value per seed, drawn as its mean with the seeds' range.


@dataclass
class Spread:
    """Values of one quantity over seeds: the mean and the lowest and highest seed."""

    mean: float
    low: float
    high: float


def plot_bars(groups: Sequence[str], bars: dict[str, Sequence[Spread]], title: str, ylabel: str, path: Path,
              ylim: tuple[float, float] | None = (0, 105)) -> None:
    """Grouped bars: a group per entry of `groups`, a bar per entry of `bars` (its name -> one
    `Spread` per group) at the mean, its error bar from the lowest to the highest seed, and the
    mean written above the error bar."""
    width = 0.8 / max(1, len(bars))
    fig = figure(max(6.4, 1.2 + len(groups) * (0.35 + 0.3 * len(bars))), 3.9)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.91, bottom=0.2)
    ax = fig.subplots()
    for i, (name, spreads) in enumerate(bars.items()):
        xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(groups))]
        err = [[s.mean - s.low for s in spreads], [s.high - s.mean for s in spreads]]
        ax.bar(xs, [s.mean for s in spreads], width=width, color=f"C{i % 10}", label=name, yerr=err, capsize=2.5,
               error_kw={"elinewidth": 0.9, "ecolor": "#333"})
        for x, s in zip(xs, spreads):
            ax.annotate(f"{s.mean:.0f}", (x, s.high), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=6.5)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(4, len(bars)), frameon=False)
    save_png(fig, path)


def plot_bands(lines: dict[str, tuple[Sequence[float], Sequence[Spread]]], title: str, xlabel: str, ylabel: str,
               path: Path, marker: tuple[str, float, float] | None = None, colors: dict[str, str] | None = None) -> None:
    """Lines at the mean over seeds with a shaded band from the lowest to the highest seed.

    Args:
        lines: name -> (x values, one `Spread` per x).
        marker: (label, x, y) of one point drawn as a star (e.g. the model every line starts from).
        colors: name -> matplotlib color, to match another chart (default: C0, C1, ... in order).
    """
    fig = figure(6.4, 3.9)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.91, bottom=0.27)
    ax = fig.subplots()
    for i, (name, (xs, spreads)) in enumerate(lines.items()):
        color = (colors or {}).get(name, f"C{i % 10}")
        ax.plot(xs, [s.mean for s in spreads], color=color, marker="o", markersize=3.5, linewidth=1.4, label=name)
        ax.fill_between(xs, [s.low for s in spreads], [s.high for s in spreads], color=color, alpha=0.15, linewidth=0)
    if marker:
        ax.plot([marker[1]], [marker[2]], marker="*", markersize=12, color="black", linestyle="none", label=marker[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=min(4, len(lines) + bool(marker)),
              frameon=False)
    save_png(fig, path)
