"""Reports: charts and a browsable page for a training run, and the page of a `harken demo` folder.

Owns: reading a run's `metrics.jsonl` into per-metric series; the registry of panels (which
metric keys share a chart); the PNG charts of a run (matplotlib figures without pyplot, rendered
by the Agg canvas); the self-contained HTML pages (relative links only, so they open from disk
with no server); the demo's report (comparison tables, verdict, budget, every arm's curves),
regenerated at any time from the files the demo stored; `harken report RUN_DIR`.

Does not own: evaluation tables and bar charts (`harken.eval.run`: `compare_runs`,
`compare_markdown`, `plot_compare`), running the demo (`harken.demo.run`), the trainers.

A panel is skipped when none of its metrics was logged, so one code path serves GRPO runs
(reward/*, kl, completion/length, ...), SFT runs (loss, token_accuracy, ...) and whatever a run
logs beyond the registry: leftover keys are charted by family (`advantage/*`, `clip_frac*`, ...).
"""

from __future__ import annotations

import argparse
import fnmatch
import html
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

DEMO_FILE = "demo.json"  # what marks a `harken demo` folder and holds its stored results
METRICS_FILE = "metrics.jsonl"  # what marks a training run folder
NOT_METRICS = ("step", "time")  # row fields that are not metrics


# ---------------------------------------------------------------------------------------------
# Metrics of a run
# ---------------------------------------------------------------------------------------------


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of RUN/metrics.jsonl (one per logged step), in file order.

    A last line cut short (a run still writing, or killed mid-write) is dropped with a warning;
    a malformed line anywhere else is an error naming the file and line.

    Raises:
        FileNotFoundError: the folder has no metrics.jsonl.
        ValueError: a malformed line, or a row without a step.
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        why = "the folder does not exist" if not run_dir.exists() else "no such file"
        raise FileNotFoundError(
            f"{path} not found ({why}): give a training run folder (the run.out_dir of `harken train grpo|sft`, "
            f"which holds {METRICS_FILE}) or a `harken demo` folder (which holds {DEMO_FILE})"
        )
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines) and not line.endswith("\n"):
                log.warning("%s:%d: dropping a last line cut short (the run may still be writing)", path, lineno)
                break
            raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            raise ValueError(f"{path}:{lineno}: expected an object with a numeric \"step\", got {line.strip()[:80]!r}")
        rows.append(row)
    return rows


@dataclass
class Series:
    """One metric over the run: the steps it was logged at and its values (finite only)."""

    steps: list[float]
    values: list[float]

    @property
    def last(self) -> float:
        return self.values[-1]


def metric_series(rows: Sequence[dict[str, Any]]) -> dict[str, Series]:
    """Every numeric metric of the rows as a Series, in first-seen key order.

    Missing and non-finite values (logged as null) are left out of their series; a key that
    never has a finite value has no series.
    """
    out: dict[str, Series] = {}
    for row in rows:
        for key, value in row.items():
            if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(float(value)):
                continue
            s = out.setdefault(key, Series([], []))
            s.steps.append(float(row["step"]))
            s.values.append(float(value))
    return out


# ---------------------------------------------------------------------------------------------
# Panels: which metrics share a chart
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One chart: the metric keys it draws (fnmatch patterns, legend in pattern order)."""

    name: str  # file stem of the chart
    title: str
    ylabel: str
    keys: tuple[str, ...]  # patterns, e.g. "reward/*"
    exclude: tuple[str, ...] = ()  # patterns left out even when `keys` match

    def select(self, available: Sequence[str]) -> list[str]:
        chosen: list[str] = []
        for pattern in self.keys:
            for k in available:
                if fnmatch.fnmatchcase(k, pattern) and k not in chosen:
                    if not any(fnmatch.fnmatchcase(k, x) for x in self.exclude):
                        chosen.append(k)
        return chosen


PANELS: tuple[Panel, ...] = (
    Panel("reward", "reward of the sampled completions (mean per step)", "reward",
          ("reward/total", "reward/*"), exclude=("reward/std_in_group",)),
    Panel("accuracy", "accuracy (val: greedy, held-out; reward/accuracy: sampled, training)", "accuracy",
          ("val/accuracy", "val/accuracy/*", "reward/accuracy", "token_accuracy")),
    Panel("kl", "KL divergence to the reference model", "KL", ("kl",)),
    Panel("completion_length", "completion length", "tokens", ("completion/length",)),
    Panel("loss", "training loss", "loss", ("loss", "policy_loss")),
    Panel("lr", "learning rate", "learning rate", ("lr",)),
    Panel("grad_norm", "gradient norm (before clipping)", "norm", ("grad_norm",)),
)

# Keys that repeat another key under a second name (GRPO logs `accuracy` = `reward/accuracy`):
# not charted when the original is there.
ALIASES = {"accuracy": "reward/accuracy"}


def _family(key: str) -> str:
    """The leftover family of a key: `advantage/std` -> advantage, `clip_frac_low` -> clip."""
    return key.split("/")[0].split("_")[0]


def plan_panels(keys: Sequence[str]) -> tuple[list[tuple[Panel, list[str]]], dict[str, list[str]]]:
    """The charts to draw for these metric keys.

    Returns:
        ([(registry panel, keys it draws)] for the panels that match at least one key,
        {family: keys} of the keys no registry panel draws, e.g. {"advantage": ["advantage/std", ...]}).
        Every key but an alias of a present key is drawn somewhere.
    """
    keys = [k for k in keys if not (k in ALIASES and ALIASES[k] in keys)]
    planned: list[tuple[Panel, list[str]]] = []
    drawn: set[str] = set()
    for panel in PANELS:
        chosen = panel.select(keys)
        if chosen:
            planned.append((panel, chosen))
            drawn.update(chosen)
    families: dict[str, list[str]] = {}
    for k in keys:
        if k not in drawn:
            families.setdefault(_family(k), []).append(k)
    return planned, families


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    # A bare Figure renders through the Agg canvas: no pyplot, no GUI backend, no global state.
    # Fixed margins instead of a layout engine: a constrained layout doubles the time of a chart.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


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
    fig = _figure(6.4, 3.6)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.14)
    ax = fig.subplots()
    _draw(ax, series, keys)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.savefig(path)


def plot_grid(series: dict[str, Series], families: dict[str, list[str]], title: str, path: Path) -> None:
    """Small multiples: one axes per metric family (the metrics no registry panel draws)."""
    n = len(families)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = _figure(4.2 * cols, 2.8 * rows)
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
    fig.savefig(path)


@dataclass
class Chart:
    """A chart written for a page."""

    path: Path  # the PNG
    title: str
    keys: list[str]  # the metrics it draws


def plot_run(rows: Sequence[dict[str, Any]], plot_dir: str | os.PathLike, prefix: str = "", title: str = "") -> list[Chart]:
    """Write one PNG per panel of a run's metrics into plot_dir (`<prefix><panel>.png`), and one
    grid of the remaining metrics (`<prefix>more.png`).

    Args:
        rows: metrics.jsonl rows (`read_metrics`).
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


# ---------------------------------------------------------------------------------------------
# HTML building blocks (every link relative to the page, so the folder can be opened from disk)
# ---------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; } td.num { text-align: right; }
th { background: #f3f3f3; } .verdict { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.6em 1em; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; } .charts figure { margin: 0; width: 520px; }
.charts img { width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.8em; color: #555; }
code { background: #f5f5f5; padding: 0 0.2em; } .muted { color: #666; font-size: 0.9em; }
"""


def _rel(target: Path, page_dir: Path) -> str:
    """A URL to `target` relative to the page's folder (forward slashes, escaped)."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return html.escape(Path(rel).as_posix(), quote=True)


def _html_page(title: str, body: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{html.escape(str(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _html_charts(charts: Sequence[Chart], page_dir: Path) -> str:
    figs = [
        f'<figure><img src="{_rel(c.path, page_dir)}" alt="{html.escape(c.title, quote=True)}">'
        f"<figcaption>{html.escape(', '.join(c.keys))}</figcaption></figure>"
        for c in charts
    ]
    return '<div class="charts">\n' + "\n".join(figs) + "\n</div>"


def _html_links(page_dir: Path, files: Sequence[tuple[str, Path]]) -> str:
    """Links to the files that exist (label, path)."""
    items = [f'<li><a href="{_rel(p, page_dir)}">{html.escape(label)}</a></li>' for label, p in files if p.exists()]
    return "<ul>\n" + "\n".join(items) + "\n</ul>" if items else ""


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


def _fresh_plots(plot_dir: Path) -> Path:
    """The page's chart folder, emptied of the PNGs of an earlier report (it owns that folder)."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    for old in plot_dir.glob("*.png"):
        old.unlink()
    return plot_dir


# ---------------------------------------------------------------------------------------------
# A training run
# ---------------------------------------------------------------------------------------------

HEADLINE_KEYS = ("reward/total", "reward/accuracy", "reward/format", "val/accuracy", "kl", "completion/length",
                 "loss", "token_accuracy")


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
    kind = "training"
    run_json = run_dir / "run.json"
    if run_json.is_file():
        kind = str(json.loads(run_json.read_text(encoding="utf-8")).get("kind", kind))
    series = metric_series(rows)
    charts = plot_run(rows, _fresh_plots(out / "plots"), title=kind.upper() if kind in ("grpo", "sft") else "")
    steps = max((int(r["step"]) for r in rows), default=0)
    title = f"{kind.upper() if kind in ('grpo', 'sft') else kind} run {run_dir.name}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class=\"muted\">{html.escape(str(run_dir.resolve()))}: {len(rows)} logged rows, last step {steps}</p>"]
    if not series:
        body.append("<p>metrics.jsonl holds no numeric metric yet: nothing to chart.</p>")
    else:
        head = [k for k in HEADLINE_KEYS if k in series] + [k for k in series if k not in HEADLINE_KEYS]
        body += ["<h2>Metrics</h2>", _html_table(["metric", "first", "last", "min", "max", "points"],
                                                 _final_values(series, head))]
        body += ["<h2>Charts</h2>", _html_charts(charts, out)]
    files = [("metrics.jsonl", run_dir / METRICS_FILE), ("config.yaml (resolved config)", run_dir / "config.yaml"),
             ("samples.jsonl (sample completions)", run_dir / "samples.jsonl"), ("train.log", run_dir / "train.log"),
             ("final model folder", run_dir / "final")]
    body += ["<h2>Files</h2>", _html_links(out, files)]
    page = out / "index.html"
    page.write_text(_html_page(title, body), encoding="utf-8")
    return page


# ---------------------------------------------------------------------------------------------
# A demo folder (written by harken.demo.run; everything below reads only what it stored)
# ---------------------------------------------------------------------------------------------

ROW_NAMES = {"base": "base (warm-up)", "sft": "SFT", "grpo": "GRPO"}  # model key -> table row


def load_demo(demo_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(demo_dir) / DEMO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {demo_dir} the --out of `harken demo`?")
    return json.loads(path.read_text(encoding="utf-8"))


def demo_tables(demo_dir: Path, demo: dict[str, Any]) -> list[dict[str, Any]]:
    """One `harken.eval.run.compare_runs` table per evaluated dataset, from the stored results.json files.

    Returns:
        [{"key", "title", "table", "diagnostics" (`answer_diagnostics`)}] in the order the demo
        evaluated them.
    """
    from harken.eval.run import compare_runs

    out = []
    for ev in demo["evaluations"]:
        keys = list(ev["runs"])
        table = compare_runs([demo_dir / ev["runs"][k] for k in keys], [ROW_NAMES.get(k, k) for k in keys])
        for row, k in zip(table["rows"], keys):
            row["key"] = k
            row["dir"] = ev["runs"][k]  # relative to the demo folder, not to wherever we run from
        out.append({"key": ev["key"], "title": ev["title"], "table": table,
                    "diagnostics": answer_diagnostics(demo_dir, ev)})
    return out


def _overall(table: dict[str, Any], key: str) -> tuple[float | None, int]:
    row = next(r for r in table["rows"] if r["key"] == key)
    return row["values"]["avg"], row["n"]


def answer_diagnostics(demo_dir: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    """What the models' answers look like on one evaluated set, from its items.jsonl files.

    Returns:
        {"chance": accuracy (%) of a uniform guess among each item's options,
         "models": {model key: {"n", "format" (% of outputs that are exactly <answer>...</answer>),
                                "in_options" (% of answers the scoring rule matches to one of the
                                item's options, right or wrong)}}}
    """
    from harken.data.prompts import get_template
    from harken.io import iter_jsonl
    from harken.rl.rewards import format_reward
    from harken.eval.scoring import is_correct

    choices = {str(row["id"]): [str(c) for c in row["choices"]] for _, row in iter_jsonl(demo_dir / evaluation["data"])}
    models: dict[str, Any] = {}
    chance: list[float] = []
    for key, rel in evaluation["runs"].items():
        items = [row for _, row in iter_jsonl(demo_dir / rel / "items.jsonl")]
        run = json.loads((demo_dir / rel / "run.json").read_text(encoding="utf-8"))["settings"]
        fmt = format_reward(get_template(run["template"]).format_pattern)
        raw = [it.get("raw_output") or "" for it in items]
        formatted = fmt(raw, [None] * len(raw))  # the format reward ignores the examples
        in_options = [any(is_correct(it.get("prediction"), c, choices[str(it["id"])]) for c in choices[str(it["id"])])
                      for it in items]
        n = len(items)
        models[key] = {"n": n, "format": 100 * sum(formatted) / n if n else None,
                       "in_options": 100 * sum(in_options) / n if n else None}
        if not chance:
            chance = [100 / len(choices[str(it["id"])]) for it in items]
    return {"chance": sum(chance) / len(chance) if chance else None, "models": models}


def verdict(tables: Sequence[dict[str, Any]]) -> list[str]:
    """Plain sentences: GRPO vs SFT (and both vs the base and chance) on each dataset, with the noise level.

    The noise level is two standard errors of the difference of two accuracies measured on n
    items each (unpaired, a conservative yardstick); a gap below it is called a tie. When at most
    half of the answers on a set are one of its options, the set cannot rank the arms, and the
    sentence says so.
    """
    lines = []
    for t in tables:
        table = t["table"]
        keys = [r["key"] for r in table["rows"]]
        if not {"sft", "grpo"} <= set(keys):
            continue
        (g, n), (s, _) = _overall(table, "grpo"), _overall(table, "sft")
        if g is None or s is None or not n:
            continue
        p1, p2 = g / 100, s / 100
        two_se = 200 * math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 1e-12) / n)
        diff = g - s
        if abs(diff) < two_se:
            head = f"GRPO and SFT tie ({g:.1f} % vs {s:.1f} %; the {abs(diff):.1f}-point gap is within noise, 2 SE = {two_se:.1f})"
        elif diff > 0:
            head = f"GRPO beats SFT: {g:.1f} % vs {s:.1f} % (+{diff:.1f} points; 2 SE = {two_se:.1f})"
        else:
            head = f"GRPO does NOT beat SFT here: {g:.1f} % vs {s:.1f} % ({diff:.1f} points; 2 SE = {two_se:.1f})"
        base = _overall(table, "base")[0] if "base" in keys else None
        tail = f"; the base model scored {base:.1f} %" if base is not None else ""
        diag = t.get("diagnostics") or {}
        if diag.get("chance") is not None:
            tail += f"; chance is {diag['chance']:.1f} %"
        line = f"{t['title']} ({n} items): {head}{tail}."
        opts = [m["in_options"] for m in diag.get("models", {}).values() if m["in_options"] is not None]
        if opts and max(opts) <= 50:
            line += (f" At most {max(opts):.0f} % of the answers on this set are one of its options: the models answer "
                     "with the words they were trained on, so this set shows that no model transfers, not which one "
                     "transfers better.")
        lines.append(line)
    return lines


def arm_val_curves(demo_dir: Path, demo: dict[str, Any]) -> tuple[dict[str, tuple[list[float], list[float]]], float | None]:
    """Held-out validation accuracy (%) of each trained arm against training questions seen.

    Both arms start from the base: its accuracy (an arm's validation before step 1, when one
    logged it) is put first on every curve that lacks it.

    Returns:
        ({arm key: (questions seen, accuracy %)}, the base's accuracy % or None).
    """
    curves = {}
    for key, arm in demo["arms"].items():
        p = demo_dir / arm["run_dir"] / METRICS_FILE
        if key == "warmup" or not p.is_file():
            continue
        s = metric_series(read_metrics(p.parent)).get("val/accuracy")
        if s is not None:
            curves[key] = ([step * arm["questions_per_step"] for step in s.steps], [100 * v for v in s.values])
    base = next((ys[0] for xs, ys in curves.values() if xs[0] == 0), None)
    if base is not None:
        curves = {k: (xs, ys) if xs[0] == 0 else ([0.0] + xs, [base] + ys) for k, (xs, ys) in curves.items()}
    return curves, base


def curve_notes(demo_dir: Path, demo: dict[str, Any]) -> list[str]:
    """One sentence per arm on its validation curve: start, end, and whether it was still rising."""
    notes = []
    for key, (xs, ys) in arm_val_curves(demo_dir, demo)[0].items():
        if len(ys) < 2:
            continue
        best = max(range(len(ys)), key=lambda i: (ys[i], -i))
        trend = ("still rising at the end of its budget" if ys[-1] > ys[-2]
                 else f"best ({ys[best]:.1f} %) after {xs[best]:.0f} questions")
        notes.append(f"{demo['arms'][key]['label']}: validation accuracy {ys[0]:.1f} % -> {ys[-1]:.1f} % "
                     f"over {xs[-1]:.0f} questions, {trend}.")
    return notes


def _budget_rows(demo: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, arm in demo["arms"].items():
        rows.append([
            arm["label"],
            arm["recipe"],
            str(arm["steps"]),
            str(arm["questions"]),
            str(arm["completions"]) if arm.get("completions") is not None else "-",
            f"{arm['wall_s']:.1f}",
        ])
    return rows


BUDGET_HEADER = ["arm", "recipe", "steps", "training questions seen", "completions sampled", "wall time (s)"]


def _diagnostic_caption(t: dict[str, Any]) -> str:
    chance = t["diagnostics"]["chance"]
    where = f"chance accuracy (a uniform guess among each item's options): {chance:.1f} %" if chance is not None else ""
    return f"What the answers look like; {where}"


def _diagnostic_rows(t: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "formatted as <answer>...</answer> (%)", "answer is one of the options (%)", "n"]
    rows = []
    for r in t["table"]["rows"]:
        m = t["diagnostics"]["models"].get(r["key"])
        if m is not None:
            rows.append([r["name"], _pct1(m["format"]), _pct1(m["in_options"]), str(m["n"])])
    return header, rows


def _pct1(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(tables: Sequence[dict[str, Any]]) -> str:
    """The accuracy tables (percent, per task and overall) of every evaluated dataset."""
    from harken.eval.run import compare_markdown

    parts = ["# Accuracy (%) of base, SFT and GRPO\n"]
    for t in tables:
        parts += [f"## {t['title']}\n", compare_markdown(t["table"])]
    return "\n".join(parts)


def _val_curves(demo_dir: Path, demo: dict[str, Any], path: Path) -> Chart | None:
    """The arms' validation curves (`arm_val_curves`) on one chart."""
    curves, base = arm_val_curves(demo_dir, demo)
    if not curves:
        return None
    fig = _figure(6.4, 3.6)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.9, bottom=0.14)
    ax = fig.subplots()
    for i, (key, (xs, ys)) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o", markersize=3.5, color=f"C{i + 1}", label=demo["arms"][key]["label"])
    if base is not None:
        ax.plot([0], [base], marker="*", markersize=12, color="black", linestyle="none", label="base")
    ax.set_xlabel("training questions seen")
    ax.set_ylabel("validation accuracy (%)")
    title = f"held-out validation accuracy during training ({demo.get('val_items', '?')} synthetic test items, greedy)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return Chart(path, title, [f"{k}: val/accuracy" for k in curves])


def demo_report(demo_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """(Re)write the demo's report from its stored files: demo.json, eval/*/results.json, runs/*/metrics.jsonl.

    Writes, under `out` (default: the demo folder): comparison.md (the accuracy tables),
    report.md (verdict, budget, tables, charts), plots/*.png and index.html.

    Returns:
        The path of index.html.
    """
    from harken.eval.run import compare_markdown, plot_compare

    demo_dir = Path(demo_dir)
    demo = load_demo(demo_dir)
    out = Path(out) if out is not None else demo_dir
    plots = _fresh_plots(out / "plots")
    tables = demo_tables(demo_dir, demo)
    verdicts = verdict(tables) + curve_notes(demo_dir, demo)

    compare_charts = []
    for t in tables:
        p = plots / f"compare-{t['key']}.png"
        plot_compare(t["table"], p)
        compare_charts.append(Chart(p, f"{t['title']}: accuracy by task", [r["name"] for r in t["table"]["rows"]]))
    val_chart = _val_curves(demo_dir, demo, plots / "val-accuracy-arms.png")
    arm_charts: dict[str, list[Chart]] = {}
    for key, arm in demo["arms"].items():
        run = demo_dir / arm["run_dir"]
        if (run / METRICS_FILE).is_file():
            arm_charts[key] = plot_run(read_metrics(run), plots, prefix=f"{key}-", title=arm["label"])

    (out / "comparison.md").write_text(comparison_markdown(tables), encoding="utf-8")

    # --- report.md -----------------------------------------------------------------------------
    def md_img(c: Chart) -> str:
        return f"![{c.title}]({Path(os.path.relpath(c.path.resolve(), out.resolve())).as_posix()})"

    md = [f"# {demo['title']}\n", demo["question"] + "\n", "## Verdict\n"]
    md += [f"- {v}" for v in verdicts] or ["- no dataset had both arms evaluated"]
    md += ["", demo["honesty_note"] + "\n", "## Budget\n", demo["budget_note"] + "\n",
           _md_table(BUDGET_HEADER, _budget_rows(demo))]
    for t in tables:
        header, rows = _diagnostic_rows(t)
        md += [f"## {t['title']}\n", compare_markdown(t["table"]), _diagnostic_caption(t) + "\n", _md_table(header, rows)]
    md += [f"- {s}" for s in demo.get("skipped", [])]
    md += ["", "## Charts\n"] + [md_img(c) for c in compare_charts]
    if val_chart:
        md.append(md_img(val_chart))
    for key, charts in arm_charts.items():
        md += [f"\n### {demo['arms'][key]['label']}\n"] + [md_img(c) for c in charts]
    md += ["", "## Timings (s)\n", _md_table(["stage", "wall time (s)"],
                                             [[k, f"{v:.1f}"] for k, v in demo["timings"].items()])]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    # --- index.html ----------------------------------------------------------------------------
    body = [f"<h1>{html.escape(demo['title'])}</h1>", f"<p>{html.escape(demo['question'])}</p>",
            "<h2>Verdict</h2>", '<div class="verdict"><ul>']
    body += [f"<li>{html.escape(v)}</li>" for v in verdicts] or ["<li>no dataset had both arms evaluated</li>"]
    body += ["</ul>", f"<p>{html.escape(demo['honesty_note'])}</p></div>"]
    body += ["<h2>Accuracy (%)</h2>"]
    for t in tables:
        table = t["table"]
        header = ["model"] + table["columns"][:-1] + ["overall", "n"]
        rows = [[r["name"]] + [("-" if r["values"][c] is None else f"{r['values'][c]:.2f}") for c in table["columns"]]
                + [r["n"]] for r in table["rows"]]
        body += [f"<h3>{html.escape(t['title'])}</h3>", _html_table(header, rows)]
        body += [f"<p class=\"muted\">note: {html.escape(w)}</p>" for w in table["warnings"]]
        header, drows = _diagnostic_rows(t)
        body += [f"<p class=\"muted\">{html.escape(_diagnostic_caption(t))}</p>", _html_table(header, drows)]
        body.append(_html_links(out, [(f"{r['name']}: results.md", demo_dir / r["dir"] / "results.md")
                                      for r in table["rows"]]))
    body += [f"<p class=\"muted\">{html.escape(s)}</p>" for s in demo.get("skipped", [])]
    body += ["<h2>Budget</h2>", f"<p>{html.escape(demo['budget_note'])}</p>",
             _html_table(BUDGET_HEADER, _budget_rows(demo), numeric_from=2)]
    body += ["<h2>Comparison charts</h2>", _html_charts(compare_charts + ([val_chart] if val_chart else []), out)]
    for key, charts in arm_charts.items():
        arm = demo["arms"][key]
        body += [f"<h2>Training curves: {html.escape(arm['label'])}</h2>", _html_charts(charts, out),
                 _html_links(out, [("metrics.jsonl", demo_dir / arm["run_dir"] / METRICS_FILE),
                                   ("config.yaml", demo_dir / arm["run_dir"] / "config.yaml"),
                                   ("samples.jsonl", demo_dir / arm["run_dir"] / "samples.jsonl")])]
    body += ["<h2>Timings</h2>", _html_table(["stage", "wall time (s)"], [[k, f"{v:.1f}"] for k, v in demo["timings"].items()])]
    body += ["<h2>Files</h2>", _html_links(out, [("report.md", out / "report.md"), ("comparison.md", out / "comparison.md"),
                                                  ("demo.json (stored results)", demo_dir / DEMO_FILE),
                                                  ("demo.log", demo_dir / "demo.log")])]
    body.append(f"<p class=\"muted\">{html.escape(demo.get('command', ''))}; regenerate with "
                f"<code>harken report {html.escape(str(demo_dir))}</code></p>")
    page = out / "index.html"
    page.write_text(_html_page(demo["title"], body), encoding="utf-8")
    return page


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """The page for a demo folder (demo.json) or a training run folder (metrics.jsonl)."""
    folder = Path(folder)
    if (folder / DEMO_FILE).is_file():
        return demo_report(folder, out)
    return run_report(folder, out)


def _cmd_report(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    page = report(args.run_dir, args.out)
    n = len(list((page.parent / "plots").glob("*.png")))
    print(f"wrote {page} and {n} charts in {page.parent / 'plots'}/ ({time.perf_counter() - t0:.1f} s); "
          f"open it in a browser: file://{page.resolve()}")
    return 0


def register(top, groups) -> None:
    p = top.add_parser(
        "report",
        help="charts and an HTML page for a training run or a demo folder",
        description=(
            "Regenerate the charts (reward, accuracy, KL, completion length, loss, learning rate, ... "
            "whatever the run logged) and a page that opens from disk. RUN_DIR is a training run folder "
            "(holds metrics.jsonl; output in RUN_DIR/report/) or a `harken demo` folder (holds demo.json; "
            "its report is rewritten in place)."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run folder or demo folder")
    p.add_argument("--out", default=None, metavar="DIR", help="write the page and charts here instead")
    p.set_defaults(func=_cmd_report)
