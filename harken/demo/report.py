"""The report of a `harken demo` folder: accuracy per test part over seeds, the verdict, budgets, charts.

Owns: turning what the demo stored (demo.json: per-part and per-skill accuracy of every model and
seed, the arms' budgets; runs/*/metrics.jsonl) into tables (mean ± standard deviation over seeds,
and each seed's value), the verdict (one sentence per test part, whichever way it goes), the
notes on the validation curves, comparison.md, report.md, the demo's charts and index.html,
regenerated at any time from those files (`harken report DEMO_DIR`), and the console summary.
Does not own: running the demo or computing its results (`harken.demo.run`), drawing
(`harken.report.charts`), the HTML building blocks (`harken.report.html`).
"""

from __future__ import annotations

import math
import os
from html import escape
from pathlib import Path
from typing import Any, Sequence

from harken.io import read_json, write_text_atomic
from harken.report.charts import Chart, Spread, plot_bands, plot_bars, plot_run
from harken.report.html import fresh_plots, html_charts, html_links, html_page, html_table
from harken.report.metrics import DEMO_FILE, METRICS_FILE, metric_series, read_metrics

MODEL_NAMES = {"base": "base (warm-up)", "sft": "SFT", "sft-wall": "SFT, GRPO's wall time", "grpo": "GRPO"}
MODEL_COLORS = {m: f"C{i}" for i, m in enumerate(MODEL_NAMES)}  # the bar chart's order; the curves match it
SHIFTED = "shifted (mean)"  # the column of the mean over the shifted parts
BUDGET_HEADER = ["arm", "recipe", "optimizer steps", "questions seen", "completions sampled", "wall time (s)"]
ACCURACY_CHART = "accuracy-by-part.png"
CURVES_CHART = "val-accuracy-arms.png"


def load_demo(demo_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(demo_dir) / DEMO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {demo_dir} the --out of `harken demo`?")
    demo = read_json(path)
    if "results" not in demo or "seeds" not in demo:
        raise ValueError(f"{path} was written by an earlier version of `harken demo`; run the demo again "
                         f"(harken demo --out {demo_dir})")
    return demo


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def cell(stats: dict[str, Any] | None, spread: bool = True) -> str:
    """"mean ± sd" of a model's per-seed accuracies (the base, one model: its value), "-" when none."""
    if stats is None:
        return "-"
    if not spread or len(stats["per_seed"]) == 1:
        return f"{stats['mean']:.1f}"
    return f"{stats['mean']:.1f} ± {stats['sd']:.1f}"


def _parts(demo: dict[str, Any]) -> list[dict[str, Any]]:
    return demo["data"]["parts"]


def accuracy_table(demo: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows: the test parts, then the mean over the shifted parts; columns: the models (mean ± sd
    over seeds), then the questions per part."""
    res = demo["results"]
    rows = [(p["key"], res["parts"][p["key"]], str(p["n"])) for p in _parts(demo)]
    if res.get("shifted"):
        rows.append((SHIFTED, res["shifted"], str(sum(p["n"] for p in _parts(demo) if p["shift"] != "none"))))
    header = ["test part", *MODEL_NAMES.values(), "n"]
    return header, [[key, *[cell(row.get(m)) for m in MODEL_NAMES], n] for key, row, n in rows]


def seed_table(demo: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each seed's accuracy per part and model (the numbers behind every mean)."""
    seeds = [str(s) for s in demo["seeds"]]
    header = ["part", "model", *[f"seed {s}" for s in seeds]]
    rows = []
    for p in _parts(demo):
        for model, stats in demo["results"]["parts"][p["key"]].items():
            values = stats["per_seed"] * (len(seeds) if len(stats["per_seed"]) == 1 else 1)  # the base: one model
            rows.append([p["key"], MODEL_NAMES[model], *[f"{v:.1f}" for v in values]])
    return header, rows


def skill_table(demo: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Accuracy per part and skill (mean ± sd over seeds)."""
    header = ["part", "skill", *MODEL_NAMES.values(), "n"]
    rows = []
    for p in _parts(demo):
        for skill, models in demo["results"]["skills"][p["key"]].items():
            n = next(iter(models.values()))["n"]
            rows.append([p["key"], skill, *[cell(models.get(m)) for m in MODEL_NAMES], str(n)])
    return header, rows


def parts_table(demo: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """What each test part asks and what it changes from the training set."""
    header = ["part", "what it asks", "skills", "shift from training", "questions"]
    return header, [[p["key"], p["title"], ", ".join(p["skills"]), p["shift"], str(p["n"])] for p in _parts(demo)]


def _mean_sd(values: Sequence[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.1f} ± {sd:.1f}"


def budget_table(demo: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each arm's budget: steps, questions seen, completions sampled, wall time (mean ± sd over seeds)."""
    rows = []
    base = demo["base"]
    rows.append([base["label"], base["recipe"], str(base["steps"]), str(base["questions"]), "-", f"{base['wall_s']:.1f}"])
    seeds = list(demo["arms"])
    for key in ("sft", "sft-wall", "grpo"):
        arm = demo["arms"][seeds[0]][key]
        walls = [demo["arms"][s][key]["wall_s"] for s in seeds]
        rows.append([MODEL_NAMES[key], arm["recipe"], str(arm["steps"]), str(arm["questions"]),
                     str(arm["completions"]) if arm["completions"] else "-", _mean_sd(walls)])
    return BUDGET_HEADER, rows


def budget_note(demo: dict[str, Any]) -> str:
    seeds = list(demo["arms"])
    arms = demo["arms"][seeds[0]]
    s, w, g = arms["sft"], arms["sft-wall"], arms["grpo"]

    def wall(key: str) -> float:
        return sum(demo["arms"][x][key]["wall_s"] for x in seeds) / len(seeds)

    return (
        f"Both arms start from the same base and train on the same {demo['size']['n_train']} questions. "
        f"Same number of questions seen: SFT {s['steps']} steps x {s['questions_per_step']} = {s['questions']} "
        f"(one teacher-forced target each), GRPO {g['steps']} steps x {g['questions_per_step']} = {g['questions']} "
        f"({g['completions']} sampled completions scored by the rewards). Wall time per seed: SFT {wall('sft'):.0f} s, "
        f"GRPO {wall('grpo'):.0f} s; the SFT run continued to {w['steps']} steps ({w['questions']} questions) took "
        f"{wall('sft-wall'):.0f} s, about GRPO's."
    )


# ---------------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------------


def _noise(a: dict[str, Any], b: dict[str, Any], answers: int) -> float:
    """Two standard errors (points) of the difference of two mean accuracies over `answers` answers each."""
    pa, pb = a["mean"] / 100, b["mean"] / 100
    return 200 * math.sqrt(max(pa * (1 - pa) + pb * (1 - pb), 1e-12) / answers)


def compare(a: dict[str, Any], b: dict[str, Any], n: int) -> dict[str, Any]:
    """Arm a vs arm b on one part: mean difference, per-seed differences, the noise level, and the call.

    The call is "a" or "b" when every seed's difference has the same sign and the mean difference
    exceeds two standard errors of the difference over all answers (unpaired, conservative);
    otherwise "tie".
    """
    diffs = [x - y for x, y in zip(a["per_seed"], b["per_seed"])]
    mean = sum(diffs) / len(diffs)
    noise = _noise(a, b, n * len(diffs))
    call = "tie"
    if abs(mean) > noise and (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        call = "a" if mean > 0 else "b"
    return {"diff": mean, "per_seed": diffs, "noise": noise, "call": call}


def _signed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:+.1f}" for v in values)


def _part_verdict(title: str, row: dict[str, Any], n: int) -> str | None:
    if not {"sft", "grpo"} <= set(row):
        return None
    g, s = row["grpo"], row["sft"]
    k = len(g["per_seed"])
    c = compare(g, s, n)
    head = f"{title}: GRPO {cell(g)}, SFT {cell(s)}"
    if c["call"] == "a":
        verdict = f"GRPO ahead by {c['diff']:.1f} points, in every seed"
    elif c["call"] == "b":
        verdict = f"SFT ahead by {-c['diff']:.1f} points, in every seed"
    else:
        verdict = f"no clear difference ({c['diff']:+.1f} points on average)"
    line = f"{head}: {verdict} (GRPO - SFT per seed: {_signed(c['per_seed'])}; 2 SE = {c['noise']:.1f})."
    if "sft-wall" in row:
        w = compare(g, row["sft-wall"], n)
        word = {"a": "GRPO ahead", "b": "SFT ahead", "tie": "no clear difference"}[w["call"]]
        line += f" SFT given GRPO's wall time: {cell(row['sft-wall'])}, GRPO - it = {w['diff']:+.1f} ({word})."
    if "base" in row:
        b = row["base"]["mean"]
        lost = [MODEL_NAMES[m] for m in ("sft", "grpo") if b - row[m]["mean"] > _noise(row[m], row["base"], n * k)]
        gained = [MODEL_NAMES[m] for m in ("sft", "grpo") if row[m]["mean"] - b > _noise(row[m], row["base"], n * k)]
        line += f" The base scored {b:.1f}"
        if lost:
            line += f"; {' and '.join(lost)} fell below it"
        if gained:
            line += f"; {' and '.join(gained)} rose above it"
        line += "."
    return line


def verdict(demo: dict[str, Any]) -> list[str]:
    """One sentence per test part (and one for the shifted parts together): GRPO vs SFT with the seeds' spread.

    Every number is mean ± standard deviation over the seeds; a difference is called only when
    every seed agrees on its sign and it exceeds two standard errors (`compare`).
    """
    res = demo["results"]
    k = len(demo["seeds"])
    lines = []
    for p in _parts(demo):
        line = _part_verdict(f"{p['key']} ({p['n']} questions x {k} seeds)", res["parts"][p["key"]], p["n"])
        if line:
            lines.append(line)
    if res.get("shifted"):
        n = sum(p["n"] for p in _parts(demo) if p["shift"] != "none")
        line = _part_verdict(f"all shifted parts together ({n} questions x {k} seeds)", res["shifted"], n)
        if line:
            lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------
# Validation curves over seeds
# ---------------------------------------------------------------------------------------------


def _curve(demo_dir: Path, arm: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(questions seen, validation accuracy %) of one run."""
    path = demo_dir / arm["run_dir"] / METRICS_FILE
    if not path.is_file():
        return [], []
    s = metric_series(read_metrics(path.parent)).get("val/accuracy")
    if s is None:
        return [], []
    return [step * arm["questions_per_step"] for step in s.steps], [100 * v for v in s.values]


def arm_val_curves(demo_dir: Path, demo: dict[str, Any]) -> tuple[dict[str, tuple[list[float], list[Spread]]], float | None]:
    """Validation accuracy against questions seen, per arm, over the seeds.

    The SFT run and its continuation are one curve ("sft-wall"); GRPO's curve starts from the
    base's accuracy, the SFT run's first point (its validation before step 1).

    Returns:
        ({arm key: (questions seen, one Spread per point)}, the base's accuracy % or None).
    """
    per_seed: dict[str, list[tuple[list[float], list[float]]]] = {"sft-wall": [], "grpo": []}
    for arms in demo["arms"].values():
        xs, ys = _curve(demo_dir, arms["sft"])
        more = _curve(demo_dir, arms["sft-wall"])
        per_seed["sft-wall"].append((xs + more[0], ys + more[1]))
        per_seed["grpo"].append(_curve(demo_dir, arms["grpo"]))
    firsts = [c for c in per_seed["sft-wall"] if c[0] and c[0][0] == 0]
    base = firsts[0][1][0] if firsts else None
    out = {}
    for key, curves in per_seed.items():
        if base is not None:
            curves = [(xs, ys) if xs and xs[0] == 0 else ([0.0] + xs, [base] + ys) for xs, ys in curves]
        shared = sorted(set.intersection(*[set(xs) for xs, _ in curves])) if curves and all(c[0] for c in curves) else []
        if not shared:
            continue
        points = []
        for x in shared:
            vals = [ys[xs.index(x)] for xs, ys in curves]
            points.append(Spread(sum(vals) / len(vals), min(vals), max(vals)))
        out[key] = (shared, points)
    return out, base


CURVE_NAMES = {"sft-wall": "SFT (continued to GRPO's wall time)", "grpo": "GRPO"}


def curve_notes(demo_dir: Path, demo: dict[str, Any]) -> list[str]:
    """One sentence per curve: start, end, best, and whether it was still rising (means over seeds)."""
    notes = []
    for key, (xs, pts) in arm_val_curves(demo_dir, demo)[0].items():
        ys = [p.mean for p in pts]
        if len(ys) < 2:
            continue
        best = max(range(len(ys)), key=lambda i: (ys[i], -i))
        trend = ("still rising at the end" if ys[-1] > ys[-2]
                 else f"best ({ys[best]:.1f} %) after {xs[best]:.0f} questions")
        notes.append(f"{CURVE_NAMES[key]}: validation accuracy (in-domain, mean over seeds) {ys[0]:.1f} % -> "
                     f"{ys[-1]:.1f} % over {xs[-1]:.0f} questions, {trend}.")
    return notes


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------


def _spread(stats: dict[str, Any] | None) -> Spread:
    if stats is None:
        return Spread(0.0, 0.0, 0.0)
    return Spread(stats["mean"], stats["min"], stats["max"])


def accuracy_chart(demo: dict[str, Any], path: Path) -> Chart:
    """Accuracy per test part (and over the shifted parts), a bar per model at the mean over
    seeds, its error bar the lowest to the highest seed."""
    res = demo["results"]
    groups = [p["key"] for p in _parts(demo)]
    rows = [res["parts"][g] for g in groups]
    if res.get("shifted"):
        groups.append(SHIFTED)
        rows.append(res["shifted"])
    bars = {MODEL_NAMES[m]: [_spread(r.get(m)) for r in rows] for m in MODEL_NAMES}  # colors C0..C3: MODEL_COLORS
    k = len(demo["seeds"])
    title = (f"accuracy by test part: mean of {k} seed{'s' * (k > 1)} (error bars: lowest to highest seed; "
             "one base model)")
    plot_bars(groups, bars, title, "accuracy (%)", path)
    return Chart(path, title, list(bars))


def curves_chart(demo_dir: Path, demo: dict[str, Any], path: Path) -> Chart | None:
    curves, base = arm_val_curves(demo_dir, demo)
    if not curves:
        return None
    lines = {CURVE_NAMES[k]: v for k, v in curves.items()}
    n_val = demo["size"]["n_val"]
    title = f"in-domain validation accuracy ({n_val} held-out questions; band: the seeds' range)"
    plot_bands(lines, title, "training questions seen", "validation accuracy (%)", path,
               marker=("base", 0.0, base) if base is not None else None,
               colors={CURVE_NAMES[k]: MODEL_COLORS[k] for k in curves})
    return Chart(path, title, list(lines))


def _charts(demo_dir: Path, demo: dict[str, Any], plots: Path) -> tuple[list[Chart], dict[str, list[Chart]]]:
    """Write every chart; returns (comparison charts, {run title: its training charts})."""
    compare = [accuracy_chart(demo, plots / ACCURACY_CHART)]
    curves = curves_chart(demo_dir, demo, plots / CURVES_CHART)
    if curves:
        compare.append(curves)
    seed = str(demo["seeds"][0])
    runs = {"warmup": demo["base"], **{f"seed{seed}-{k}": a for k, a in demo["arms"][seed].items()}}
    training: dict[str, list[Chart]] = {}
    for key, arm in runs.items():
        run = demo_dir / arm["run_dir"]
        if (run / METRICS_FILE).is_file():
            title = arm["label"] if key == "warmup" else f"{arm['label']} (seed {seed})"
            training[title] = plot_run(read_metrics(run), plots, prefix=f"{key}-", title=title)
    return compare, training


# ---------------------------------------------------------------------------------------------
# The files of the report
# ---------------------------------------------------------------------------------------------


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """A markdown table whose columns from `numeric_from` on are right-aligned numbers."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= numeric_from else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _caption(demo: dict[str, Any]) -> str:
    k = len(demo["seeds"])
    return (f"Accuracy (%), mean ± standard deviation over {k} seed{'s' * (k > 1)} "
            f"({', '.join(map(str, demo['seeds']))}); the base is one model, trained once.")


def comparison_markdown(demo: dict[str, Any]) -> str:
    """The accuracy tables: by part, each seed's value, and by part and skill."""
    return "\n".join([
        "# Accuracy (%) of base, SFT and GRPO by test part\n", _caption(demo) + "\n", _md_table(*accuracy_table(demo)),
        "## Each seed\n", _md_table(*seed_table(demo), numeric_from=2),
        "## By part and skill\n", _md_table(*skill_table(demo), numeric_from=2),
    ])


def _report_md(out: Path, demo: dict[str, Any], verdicts: list[str], notes: list[str], compare: list[Chart],
               training: dict[str, list[Chart]]) -> str:
    """report.md: verdict, the tables, budget, charts, timings."""

    def md_img(c: Chart) -> str:
        return f"![{c.title}]({Path(os.path.relpath(c.path.resolve(), out.resolve())).as_posix()})"

    md = [f"# {demo['title']}\n", demo["question"] + "\n", "## Verdict\n"]
    md += [f"- {v}" for v in verdicts] or ["- no test part had both arms evaluated"]
    md += [f"- {n}" for n in notes]
    md += ["", demo["differences"] + "\n", "## Accuracy by test part\n", _caption(demo) + "\n",
           _md_table(*accuracy_table(demo)), "## The test parts\n", _md_table(*parts_table(demo), numeric_from=4)]
    md += [f"- {s}" for s in demo["data"].get("skipped", [])]
    md += ["", "## Budget\n", budget_note(demo) + "\n", _md_table(*budget_table(demo), numeric_from=2),
           "## Each seed\n", _md_table(*seed_table(demo), numeric_from=2),
           "## By part and skill\n", _md_table(*skill_table(demo), numeric_from=2),
           "## Charts\n"] + [md_img(c) for c in compare]
    for title, charts in training.items():
        md += [f"\n### Training curves: {title}\n"] + [md_img(c) for c in charts]
    md += ["", "## Timings (s)\n", _md_table(["stage", "wall time (s)"], [[k, f"{v:.1f}"] for k, v in demo["timings"].items()])]
    return "\n".join(md) + "\n"


def _index_html(demo_dir: Path, out: Path, demo: dict[str, Any], verdicts: list[str], notes: list[str],
                compare: list[Chart], training: dict[str, list[Chart]]) -> str:
    """index.html: the same as report.md, with links to every file behind it."""
    body = [f"<h1>{escape(demo['title'])}</h1>", f"<p>{escape(demo['question'])}</p>",
            "<h2>Verdict</h2>", '<div class="verdict"><ul>']
    body += [f"<li>{escape(v)}</li>" for v in verdicts] or ["<li>no test part had both arms evaluated</li>"]
    body += [f"<li>{escape(n)}</li>" for n in notes]
    body += ["</ul>", f"<p>{escape(demo['differences'])}</p></div>"]
    body += ["<h2>Accuracy by test part</h2>", f"<p class=\"muted\">{escape(_caption(demo))}</p>",
             html_table(*accuracy_table(demo)), html_charts(compare[:1], out),
             "<h3>The test parts</h3>", html_table(*parts_table(demo), numeric_from=4)]
    body += [f"<p class=\"muted\">{escape(s)}</p>" for s in demo["data"].get("skipped", [])]
    body += ["<h2>Budget</h2>", f"<p>{escape(budget_note(demo))}</p>", html_table(*budget_table(demo), numeric_from=2)]
    body += ["<h2>Each seed</h2>", html_table(*seed_table(demo), numeric_from=2),
             "<h2>By part and skill</h2>", html_table(*skill_table(demo), numeric_from=2)]
    evals = [("base: results.md", demo_dir / demo["evaluations"]["base"] / "results.md")]
    for seed, models in demo["evaluations"]["seeds"].items():
        evals += [(f"seed {seed}, {MODEL_NAMES[m]}: results.md", demo_dir / d / "results.md") for m, d in models.items()]
    body += ["<h3>Evaluation folders</h3>", html_links(out, evals)]
    body += ["<h2>Validation curves</h2>", html_charts(compare[1:], out)]
    runs = [("base (warm-up)", demo["base"])] + [(f"seed {s}, {MODEL_NAMES[k]}", a) for s, arms in demo["arms"].items()
                                                 for k, a in arms.items()]
    for title, charts in training.items():
        body += [f"<h2>Training curves: {escape(title)}</h2>", html_charts(charts, out)]
    body += ["<h3>Every run's files</h3>",
             html_links(out, [(f"{t}: {name}", demo_dir / a["run_dir"] / name) for t, a in runs
                              for name in (METRICS_FILE, "config.yaml")])]
    timings = [[k, f"{v:.1f}"] for k, v in demo["timings"].items()]
    body += ["<h2>Timings</h2>", html_table(["stage", "wall time (s)"], timings)]
    body += ["<h2>Files</h2>", html_links(out, [("report.md", out / "report.md"), ("comparison.md", out / "comparison.md"),
                                                 ("demo.json (stored results)", demo_dir / DEMO_FILE),
                                                 ("demo.log", demo_dir / "demo.log")])]
    body.append(f"<p class=\"muted\">{escape(demo.get('command', ''))}; regenerate with "
                f"<code>harken report {escape(str(demo_dir))}</code></p>")
    return html_page(demo["title"], body)


def demo_report(demo_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """(Re)write the demo's report from its stored files: demo.json and runs/*/metrics.jsonl.

    Writes, under `out` (default: the demo folder): comparison.md (the accuracy tables),
    report.md (verdict, tables, budget, charts), plots/*.png and index.html.

    Returns:
        The path of index.html.
    """
    demo_dir = Path(demo_dir)
    demo = load_demo(demo_dir)
    out = Path(out) if out is not None else demo_dir
    plots = fresh_plots(out / "plots")
    verdicts, notes = verdict(demo), curve_notes(demo_dir, demo)
    compare, training = _charts(demo_dir, demo, plots)
    write_text_atomic(out / "comparison.md", comparison_markdown(demo))
    write_text_atomic(out / "report.md", _report_md(out, demo, verdicts, notes, compare, training))
    page = out / "index.html"
    write_text_atomic(page, _index_html(demo_dir, out, demo, verdicts, notes, compare, training))
    return page


def print_summary(demo_dir: Path, demo: dict[str, Any], page: Path, total: float) -> None:
    """The accuracy table, budget and verdict on the console."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print()
    console.rule(demo["title"])
    header, rows = accuracy_table(demo)
    table = Table(title=_caption(demo))
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for s in demo["data"].get("skipped", []):
        console.print(f"[yellow]{s}[/yellow]")
    console.print("[bold]budget[/bold]: " + budget_note(demo))
    for v in verdict(demo) + curve_notes(demo_dir, demo):
        console.print("[bold]verdict[/bold]: " + v)
    console.print(demo["differences"])
    console.print(f"report: {page} (open in a browser: file://{page.resolve()})")
    console.print(f"total time: {total:.1f} s ({total / 60:.1f} min)")
