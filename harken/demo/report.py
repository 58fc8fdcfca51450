"""The report of a `harken demo` folder: tables, verdict, budget and every arm's curves.

Owns: reading what the demo stored (demo.json, eval/*/results.json and items.jsonl,
runs/*/metrics.jsonl) into comparison tables and answer diagnostics; the verdict and the notes on
the validation curves; comparison.md, report.md, the demo's charts and index.html, regenerated at
any time from those files (`harken report DEMO_DIR`).
Does not own: running the demo (`harken.demo.run`), evaluation tables and bar charts
(`harken.eval.compare`: `compare_runs`, `compare_markdown`, `plot_compare`), a run's charts
(`harken.report.charts`), the HTML building blocks (`harken.report.html`).
"""

from __future__ import annotations

import math
import os
from html import escape
from pathlib import Path
from typing import Any, Sequence

from harken.io import iter_jsonl, read_json, write_text_atomic
from harken.report.charts import Chart, plot_run
from harken.report.html import fresh_plots, html_charts, html_links, html_page, html_table
from harken.report.metrics import DEMO_FILE, METRICS_FILE, metric_series, read_metrics
from harken.report.plotting import figure, save_png

ROW_NAMES = {"base": "base (warm-up)", "sft": "SFT", "grpo": "GRPO"}  # model key -> table row
BUDGET_HEADER = ["arm", "recipe", "steps", "training questions seen", "completions sampled", "wall time (s)"]


def load_demo(demo_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(demo_dir) / DEMO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {demo_dir} the --out of `harken demo`?")
    return read_json(path)


# ---------------------------------------------------------------------------------------------
# Tables and diagnostics
# ---------------------------------------------------------------------------------------------


def demo_tables(demo_dir: Path, demo: dict[str, Any]) -> list[dict[str, Any]]:
    """One `harken.eval.compare.compare_runs` table per evaluated dataset, from the stored results.json files.

    Returns:
        [{"key", "title", "table", "diagnostics" (`answer_diagnostics`)}] in the order the demo
        evaluated them.
    """
    from harken.eval.compare import compare_runs

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


def accuracy_cells(row: dict[str, Any], columns: Sequence[str]) -> list[str]:
    """A compare table row's accuracies (%), two decimals, "-" where none."""
    return ["-" if row["values"][c] is None else f"{row['values'][c]:.2f}" for c in columns]


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
    from harken.eval.scoring import is_correct
    from harken.rl.rewards import format_reward

    choices = {str(row["id"]): [str(c) for c in row["choices"]] for _, row in iter_jsonl(demo_dir / evaluation["data"])}
    models: dict[str, Any] = {}
    chance: list[float] = []
    for key, rel in evaluation["runs"].items():
        items = [row for _, row in iter_jsonl(demo_dir / rel / "items.jsonl")]
        run = read_json(demo_dir / rel / "run.json")["settings"]
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


def _budget_rows(demo: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm in demo["arms"].values():
        completions = str(arm["completions"]) if arm.get("completions") is not None else "-"
        rows.append([arm["label"], arm["recipe"], str(arm["steps"]), str(arm["questions"]), completions,
                     f"{arm['wall_s']:.1f}"])
    return rows


def _timing_rows(demo: dict[str, Any]) -> list[list[str]]:
    return [[k, f"{v:.1f}"] for k, v in demo["timings"].items()]


# ---------------------------------------------------------------------------------------------
# Verdict and validation curves
# ---------------------------------------------------------------------------------------------


def _verdict_line(t: dict[str, Any]) -> str | None:
    """GRPO vs SFT (and both vs the base and chance) on one dataset; None when it lacks an arm."""
    table = t["table"]
    keys = [r["key"] for r in table["rows"]]
    if not {"sft", "grpo"} <= set(keys):
        return None
    (g, n), (s, _) = _overall(table, "grpo"), _overall(table, "sft")
    if g is None or s is None or not n:
        return None
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
    return line


def verdict(tables: Sequence[dict[str, Any]]) -> list[str]:
    """Plain sentences: GRPO vs SFT (and both vs the base and chance) on each dataset, with the noise level.

    The noise level is two standard errors of the difference of two accuracies measured on n
    items each (unpaired, a conservative yardstick); a gap below it is called a tie. When at most
    half of the answers on a set are one of its options, the set cannot rank the arms, and the
    sentence says so.
    """
    return [line for t in tables if (line := _verdict_line(t)) is not None]


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


def _val_curves(demo_dir: Path, demo: dict[str, Any], path: Path) -> Chart | None:
    """The arms' validation curves (`arm_val_curves`) on one chart."""
    curves, base = arm_val_curves(demo_dir, demo)
    if not curves:
        return None
    fig = figure(6.4, 3.6)
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
    save_png(fig, path)
    return Chart(path, title, [f"{k}: val/accuracy" for k in curves])


# ---------------------------------------------------------------------------------------------
# The files of the report
# ---------------------------------------------------------------------------------------------


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def comparison_markdown(tables: Sequence[dict[str, Any]]) -> str:
    """The accuracy tables (percent, per task and overall) of every evaluated dataset."""
    from harken.eval.compare import compare_markdown

    parts = ["# Accuracy (%) of base, SFT and GRPO\n"]
    for t in tables:
        parts += [f"## {t['title']}\n", compare_markdown(t["table"])]
    return "\n".join(parts)


def _charts(demo_dir: Path, demo: dict[str, Any], tables: Sequence[dict[str, Any]],
            plots: Path) -> tuple[list[Chart], dict[str, list[Chart]]]:
    """Write every chart; returns (comparison charts, {arm key: its training charts})."""
    from harken.eval.compare import plot_compare

    compare = []
    for t in tables:
        p = plots / f"compare-{t['key']}.png"
        plot_compare(t["table"], p)
        compare.append(Chart(p, f"{t['title']}: accuracy by task", [r["name"] for r in t["table"]["rows"]]))
    val_chart = _val_curves(demo_dir, demo, plots / "val-accuracy-arms.png")
    if val_chart:
        compare.append(val_chart)
    arms: dict[str, list[Chart]] = {}
    for key, arm in demo["arms"].items():
        run = demo_dir / arm["run_dir"]
        if (run / METRICS_FILE).is_file():
            arms[key] = plot_run(read_metrics(run), plots, prefix=f"{key}-", title=arm["label"])
    return compare, arms


def _report_md(out: Path, demo: dict[str, Any], tables: Sequence[dict[str, Any]], verdicts: list[str],
               compare: list[Chart], arm_charts: dict[str, list[Chart]]) -> str:
    """report.md: verdict, budget, tables, charts, timings."""
    from harken.eval.compare import compare_markdown

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
    md += ["", "## Charts\n"] + [md_img(c) for c in compare]
    for key, charts in arm_charts.items():
        md += [f"\n### {demo['arms'][key]['label']}\n"] + [md_img(c) for c in charts]
    md += ["", "## Timings (s)\n", _md_table(["stage", "wall time (s)"], _timing_rows(demo))]
    return "\n".join(md) + "\n"


def _html_accuracy(demo_dir: Path, out: Path, t: dict[str, Any]) -> list[str]:
    """One dataset's accuracy table, its notes, its answer diagnostics and links to its results."""
    table = t["table"]
    header = ["model"] + table["columns"][:-1] + ["overall", "n"]
    rows = [[r["name"]] + accuracy_cells(r, table["columns"]) + [r["n"]] for r in table["rows"]]
    body = [f"<h3>{escape(t['title'])}</h3>", html_table(header, rows)]
    body += [f"<p class=\"muted\">note: {escape(w)}</p>" for w in table["warnings"]]
    header, drows = _diagnostic_rows(t)
    body += [f"<p class=\"muted\">{escape(_diagnostic_caption(t))}</p>", html_table(header, drows)]
    body.append(html_links(out, [(f"{r['name']}: results.md", demo_dir / r["dir"] / "results.md") for r in table["rows"]]))
    return body


def _index_html(demo_dir: Path, out: Path, demo: dict[str, Any], tables: Sequence[dict[str, Any]],
                verdicts: list[str], compare: list[Chart], arm_charts: dict[str, list[Chart]]) -> str:
    """index.html: the same as report.md, with links to every file behind it."""
    body = [f"<h1>{escape(demo['title'])}</h1>", f"<p>{escape(demo['question'])}</p>",
            "<h2>Verdict</h2>", '<div class="verdict"><ul>']
    body += [f"<li>{escape(v)}</li>" for v in verdicts] or ["<li>no dataset had both arms evaluated</li>"]
    body += ["</ul>", f"<p>{escape(demo['honesty_note'])}</p></div>", "<h2>Accuracy (%)</h2>"]
    for t in tables:
        body += _html_accuracy(demo_dir, out, t)
    body += [f"<p class=\"muted\">{escape(s)}</p>" for s in demo.get("skipped", [])]
    body += ["<h2>Budget</h2>", f"<p>{escape(demo['budget_note'])}</p>",
             html_table(BUDGET_HEADER, _budget_rows(demo), numeric_from=2)]
    body += ["<h2>Comparison charts</h2>", html_charts(compare, out)]
    for key, charts in arm_charts.items():
        arm, run = demo["arms"][key], demo_dir / demo["arms"][key]["run_dir"]
        body += [f"<h2>Training curves: {escape(arm['label'])}</h2>", html_charts(charts, out),
                 html_links(out, [(name, run / name) for name in (METRICS_FILE, "config.yaml", "samples.jsonl")])]
    body += ["<h2>Timings</h2>", html_table(["stage", "wall time (s)"], _timing_rows(demo))]
    body += ["<h2>Files</h2>", html_links(out, [("report.md", out / "report.md"), ("comparison.md", out / "comparison.md"),
                                                 ("demo.json (stored results)", demo_dir / DEMO_FILE),
                                                 ("demo.log", demo_dir / "demo.log")])]
    body.append(f"<p class=\"muted\">{escape(demo.get('command', ''))}; regenerate with "
                f"<code>harken report {escape(str(demo_dir))}</code></p>")
    return html_page(demo["title"], body)


def demo_report(demo_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """(Re)write the demo's report from its stored files: demo.json, eval/*/results.json, runs/*/metrics.jsonl.

    Writes, under `out` (default: the demo folder): comparison.md (the accuracy tables),
    report.md (verdict, budget, tables, charts), plots/*.png and index.html.

    Returns:
        The path of index.html.
    """
    demo_dir = Path(demo_dir)
    demo = load_demo(demo_dir)
    out = Path(out) if out is not None else demo_dir
    plots = fresh_plots(out / "plots")
    tables = demo_tables(demo_dir, demo)
    verdicts = verdict(tables) + curve_notes(demo_dir, demo)
    compare, arm_charts = _charts(demo_dir, demo, tables, plots)
    write_text_atomic(out / "comparison.md", comparison_markdown(tables))
    write_text_atomic(out / "report.md", _report_md(out, demo, tables, verdicts, compare, arm_charts))
    page = out / "index.html"
    write_text_atomic(page, _index_html(demo_dir, out, demo, tables, verdicts, compare, arm_charts))
    return page
