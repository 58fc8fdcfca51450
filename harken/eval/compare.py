"""`harken eval compare`: several evaluation folders side by side.

Owns: the table across runs on their headline group (`compare_runs`: a row per run, a column per
group value plus the average, and warnings when the runs are not comparable), its markdown
(`compare_markdown`), grouped bar chart (`plot_compare`), terminal table (`print_compare`) and
files (`write_compare`). The demo's report (`harken.demo.report`) draws on these too.

Does not own: the per-run results and their folder (`harken.eval.results`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from harken.eval.benchmarks import ordered_values
from harken.eval.results import headline_group, pct
from harken.io import read_json, write_json_atomic, write_text_atomic
from harken.report.plotting import figure, save_png


def _read_results(d: Path) -> dict[str, Any]:
    rj = d / "results.json"
    if not rj.is_file():
        raise FileNotFoundError(f"{rj} not found: is {d} the --out of `harken eval run` or `harken eval score`?")
    return read_json(rj)


def _default_names(dirs: Sequence[Path]) -> list[str]:
    """The folder names, or the whole paths when two folders share a name."""
    names = [d.name or str(d) for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def _warnings(names: Sequence[str], runs: Sequence[dict], heads: Sequence[str | None], group: str | None) -> list[str]:
    """Why the numbers of the table may not compare: other groups, other files, missing items."""
    warnings = []
    if len(set(heads)) > 1:
        warnings.append(f"the runs are broken down by different groups ({', '.join(map(str, heads))}); only {group} is shown")
    if len({r["file"]["sha256"] for r in runs}) > 1:
        files = ", ".join(sorted({f"{r['file']['name']} ({r['file']['sha256'][:12]})" for r in runs}))
        warnings.append(f"the runs were scored on different files ({files}): their numbers are not comparable")
    for name, r in zip(names, runs):
        m, cov = r["missing_predictions"], r.get("coverage")
        if r.get("no_accuracy"):
            warnings.append(f"{name}: no accuracy, its items have no answers (a test split)")
        if m["count"]:
            warnings.append(f"{name}: {m['count']} items without a prediction, counted as {m['counted_as']}")
        if cov and cov["evaluated"] < cov["total"]:
            warnings.append(f"{name}: only {cov['evaluated']} of {cov['total']} items evaluated")
    return warnings


def compare_runs(dirs: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Side-by-side accuracy of several evaluation folders on their headline group.

    Returns:
        {"group", "columns" (group values, then "avg"), "rows": [{"name", "dir", "values":
        {column: accuracy or None}, "n", "file", "sha256"}], "warnings": [...]}.
    """
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("eval compare needs at least one evaluation folder")
    if names is not None and len(names) != len(dirs):
        raise ValueError(f"--names has {len(names)} names for {len(dirs)} folders")
    runs = [_read_results(d) for d in dirs]
    names = _default_names(dirs) if names is None else names
    heads = [headline_group(r) for r in runs]
    group = heads[0]
    values: list[str] = []
    for r, h in zip(runs, heads):
        if h == group and h is not None:
            values += [v for v in r["groups"][h] if v not in values]
    values = ordered_values(group, values) if group else []
    rows = []
    for name, d, r, h in zip(names, dirs, runs, heads):
        cells = {v: (r["groups"][h].get(v, {}).get("accuracy") if h == group else None) for v in values}
        cells["avg"] = r["accuracy"]
        rows.append({"name": name, "dir": str(d), "values": cells, "n": r["n_scored"],
                     "file": r["file"]["name"], "sha256": r["file"]["sha256"]})
    return {"group": group, "columns": values + ["avg"], "rows": rows, "warnings": _warnings(names, runs, heads, group)}


def compare_markdown(table: dict[str, Any]) -> str:
    """The table as markdown, the average in bold, then the warnings as notes."""
    cols = table["columns"]
    lines = [
        f"| run ({table['group']}) | " + " | ".join(cols) + " | n | file |",
        "|---" + "|---:" * (len(cols) + 1) + "|---|",
    ]
    for row in table["rows"]:
        cells = [pct(row["values"][c]) for c in cols]
        cells[-1] = f"**{cells[-1]}**"
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {row['n']} | {row['file']} |")
    if table["warnings"]:
        lines.append("")
        lines += [f"- note: {w}" for w in table["warnings"]]
    return "\n".join(lines) + "\n"


def plot_compare(table: dict[str, Any], path: Path) -> None:
    """Grouped bars: one group of bars per column, one bar per run."""
    cols, rows = table["columns"], table["rows"]
    width = 0.8 / max(1, len(rows))
    fig = figure(max(5.0, 1.0 + len(cols) * (0.4 + 0.25 * len(rows))), 3.8, constrained=True)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(cols))]
        ys = [row["values"][c] or 0.0 for c in cols]
        bars = ax.bar(xs, ys, width=width, label=row["name"])
        ax.bar_label(bars, [pct(row["values"][c]) for c in cols], fontsize=6, padding=1, rotation=90 if len(rows) > 3 else 0)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"accuracy by {table['group']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncols=min(4, len(rows)))
    save_png(fig, path)


def write_compare(table: dict[str, Any], out: Path) -> None:
    """compare.md, compare.json and compare.png in `out`."""
    write_text_atomic(out / "compare.md", compare_markdown(table))
    write_json_atomic(out / "compare.json", table)
    plot_compare(table, out / "compare.png")


def print_compare(table: dict[str, Any]) -> None:
    """The table and its warnings on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"accuracy (%) by {table['group']}")
    t.add_column("run")
    for c in table["columns"]:
        t.add_column(c, justify="right", style="bold" if c == "avg" else None)
    t.add_column("n", justify="right")
    for row in table["rows"]:
        t.add_row(row["name"], *[pct(row["values"][c]) for c in table["columns"]], str(row["n"]))
    console.print(t)
    for w in table["warnings"]:
        console.print(f"[yellow]note: {w}[/yellow]")
