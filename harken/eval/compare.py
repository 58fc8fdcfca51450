"""`harken eval compare`: several evaluation folders side by side.

Owns: the table across runs on their headline group (`compare_runs`: a row per run, a column per
group value plus the average, and warnings when the runs are not comparable), its markdown
(`compare_markdown`), grouped bar chart (`plot_compare`), terminal table (`print_compare`) and
files (`write_compare`). The demo's report (`harken.demo.report`) draws on these too.
With `--audio-gain`, the runs of one model in several audio modes (`eval run --audio`, one of them
`real`) give the score that needs the audio (`audio_gain`): per value of every group, accuracy
with the clip, in each other mode, and the difference, over the items judged in every run
(`audio_gain_markdown`, `plot_audio_gain`, `print_audio_gain`, `write_audio_gain`).

Does not own: the per-run results and their folder (`harken.eval.results`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from harken.eval.ablation import AUDIO_MODES
from harken.eval.benchmarks import ordered_values
from harken.eval.results import NO_VALUE, audio_mode, headline_group, pct
from harken.io import iter_jsonl, read_json, write_json_atomic, write_text_atomic
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
    heard = [audio_mode(r) for r in runs if r.get("command") == "run"]
    if len(set(heard)) > 1:
        warnings.append(f"the runs heard different audio ({', '.join(dict.fromkeys(heard))}): --audio-gain shows, for "
                        "runs of one model, the score that needs the audio")
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


# ---------------------------------------------------------------------------------------------
# --audio-gain: the score that needs the audio
# ---------------------------------------------------------------------------------------------

# The settings the runs of an --audio-gain table must share: the same model on the same items.
_SAME = ("benchmark_sha256", "model", "adapter", "template", "max_new_tokens", "fields")


def _runs_by_mode(dirs: Sequence[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """{audio mode: (folder, results)}, in `AUDIO_MODES` order; one-line errors for what does not fit."""
    by_mode: dict[str, tuple[Path, dict[str, Any]]] = {}
    for d in dirs:
        r = _read_results(d)
        if r.get("command") != "run":
            raise ValueError(f"{d} was written by `harken eval {r.get('command')}`: --audio-gain compares `eval run` "
                             "folders of one model made with different --audio modes")
        mode = audio_mode(r)
        if mode in by_mode:
            raise ValueError(f"{by_mode[mode][0]} and {d} are both --audio {mode}: give one folder per mode")
        by_mode[mode] = (d, r)
    if "real" not in by_mode or len(by_mode) < 2:
        have = ", ".join(f"{m} ({d})" for m, (d, _) in by_mode.items())
        raise ValueError(f"--audio-gain needs an `eval run --audio real` folder and one with another mode "
                         f"({', '.join(m for m in AUDIO_MODES if m != 'real')}); given: {have}")
    real = by_mode["real"][1]["run"]
    for mode, (d, r) in by_mode.items():
        diffs = [k for k in _SAME if r["run"].get(k) != real.get(k)]
        if diffs:
            raise ValueError(f"{d} differs from the --audio real folder {by_mode['real'][0]} in "
                             f"{', '.join(diffs)}: --audio-gain compares one model on one set of items")
    return {m: by_mode[m] for m in AUDIO_MODES if m in by_mode}


def _judged(d: Path) -> dict[str, dict]:
    """id -> items.jsonl row of the items judged in a folder (an answer and counted)."""
    return {str(row["id"]): row for _, row in iter_jsonl(d / "items.jsonl")
            if row.get("correct") is not None and row.get("counted", True)}


def _gain_row(rows: dict[str, list[dict]], modes: Sequence[str]) -> dict[str, Any]:
    """{"n", "accuracy": {mode: %}, "gain": {mode: points}} over the same items in every mode."""
    n = len(rows["real"])
    acc = {m: round(100.0 * sum(r["correct"] for r in rows[m]) / n, 4) if n else None for m in modes}
    gain = {m: round(acc["real"] - acc[m], 4) if n else None for m in modes if m != "real"}
    return {"n": n, "accuracy": acc, "gain": gain}


def audio_gain(dirs: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Accuracy with the clip, in each other audio mode, and the difference, per value of every group.

    Computed over the items judged in every run (the others are counted in `dropped`), so each row
    compares the same questions.

    Returns:
        {"benchmark", "file", "model", "modes", "dirs": {mode: folder}, "n", "dropped": {mode: n},
        "all": row, "groups": {group: [{"value", **row}]}} with row = {"n", "accuracy": {mode: %},
        "gain": {mode: points}} (gain = accuracy with the clip minus accuracy in that mode).
    """
    runs = _runs_by_mode([Path(d) for d in dirs])
    modes = list(runs)
    judged = {m: _judged(d) for m, (d, _) in runs.items()}
    common = [i for i in judged["real"] if all(i in judged[m] for m in modes)]
    real = runs["real"][1]
    groups = [g for g in real["group_order"] if real["groups"].get(g)]
    table: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        values = ordered_values(g, list({judged["real"][i].get(g, NO_VALUE) for i in common}))
        table[g] = []
        for v in values:
            ids = [i for i in common if judged["real"][i].get(g, NO_VALUE) == v]
            table[g].append({"value": v, **_gain_row({m: [judged[m][i] for i in ids] for m in modes}, modes)})
    return {
        "benchmark": real["benchmark"], "file": real["file"]["name"], "model": real["run"]["model"],
        "modes": modes, "dirs": {m: str(d) for m, (d, _) in runs.items()}, "n": len(common),
        "dropped": {m: len(judged[m]) - len(common) for m in modes},
        "all": _gain_row({m: [judged[m][i] for i in common] for m in modes}, modes), "groups": table,
    }


def _gain_columns(modes: Sequence[str]) -> list[tuple[str, str, str]]:
    """(header, "accuracy" | "gain", mode) of the table's number columns."""
    cols = [("real", "accuracy", "real")]
    for m in modes[1:]:
        cols += [(m, "accuracy", m), (f"real-{m}", "gain", m)]
    return cols


def _gain_cells(row: dict[str, Any], modes: Sequence[str]) -> list[str]:
    return [pct(row[kind].get(m)) for _, kind, m in _gain_columns(modes)]


def audio_gain_markdown(gain: dict[str, Any]) -> str:
    """One table per group: n, accuracy with the clip, in each other mode, and the points that need the audio."""
    modes = gain["modes"]
    lines = [f"# How much of the score needs the audio: `{gain['model']}` on {gain['benchmark']} ({gain['file']})", "",
             f"- {gain['n']} items judged in every run; accuracy in %; `real-MODE`: the points of the score "
             "that need the audio (accuracy with the clip minus accuracy in that mode)"]
    lines += [f"- {m}: {AUDIO_MODES[m]} (`{gain['dirs'][m]}`)" for m in modes]
    lines += [f"- note: {n} items of the {m} run are not in every run, left out" for m, n in gain["dropped"].items() if n]
    heads = [h for h, _, _ in _gain_columns(modes)]
    for g, rows in gain["groups"].items():
        lines += ["", f"## {g}", "", f"| {g} | n | " + " | ".join(heads) + " |", "|---|---:" + "|---:" * len(heads) + "|"]
        for row in rows:
            lines.append(f"| {row['value']} | {row['n']} | " + " | ".join(_gain_cells(row, modes)) + " |")
        lines.append(f"| **all** | {gain['all']['n']} | " + " | ".join(f"**{c}**" for c in _gain_cells(gain["all"], modes)) + " |")
    if not gain["groups"]:
        lines += ["", "| | n | " + " | ".join(heads) + " |", "|---|---:" + "|---:" * len(heads) + "|",
                  f"| **all** | {gain['all']['n']} | " + " | ".join(_gain_cells(gain["all"], modes)) + " |"]
    return "\n".join(lines) + "\n"


def plot_audio_gain(gain: dict[str, Any], path: Path) -> None:
    """Grouped bars on the first group (and all): accuracy in each audio mode."""
    group = next(iter(gain["groups"]), None)
    rows = (gain["groups"][group] if group else []) + [{"value": "all", **gain["all"]}]
    modes = gain["modes"]
    width = 0.8 / len(modes)
    fig = figure(max(5.0, 1.0 + len(rows) * (0.4 + 0.25 * len(modes))), 3.8, constrained=True)
    ax = fig.subplots()
    for i, m in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(rows))]
        bars = ax.bar(xs, [r["accuracy"][m] or 0.0 for r in rows], width=width, label=f"{m}: {AUDIO_MODES[m]}")
        ax.bar_label(bars, [pct(r["accuracy"][m]) for r in rows], fontsize=6, padding=1)
    ax.set_xticks(range(len(rows)), [r["value"] for r in rows])
    ax.set_ylim(0, 115)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{gain['benchmark']}: accuracy by audio mode" + (f" and {group}" if group else ""), fontsize=9)
    fig.legend(fontsize=7, loc="outside lower center", ncols=1)
    save_png(fig, path)


def write_audio_gain(gain: dict[str, Any], out: Path) -> None:
    """audio_gain.md, audio_gain.json and audio_gain.png in `out`."""
    write_text_atomic(out / "audio_gain.md", audio_gain_markdown(gain))
    write_json_atomic(out / "audio_gain.json", gain)
    plot_audio_gain(gain, out / "audio_gain.png")


def print_audio_gain(gain: dict[str, Any]) -> None:
    """One terminal table per group, with the all row."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    modes = gain["modes"]
    for g, rows in gain["groups"].items() or [(None, [])]:
        t = Table(title=f"{gain['benchmark']}: accuracy (%) by audio mode" + (f" and {g}" if g else "")
                  + "; real-MODE: the points that need the audio")
        t.add_column(g or "")
        t.add_column("n", justify="right")
        for head, kind, _ in _gain_columns(modes):
            t.add_column(head, justify="right", style="bold" if kind == "gain" else None)
        for row in rows + [{"value": "all", **gain["all"]}]:
            t.add_row(row["value"], str(row["n"]), *_gain_cells(row, modes))
        console.print(t)
    for m, n in gain["dropped"].items():
        if n:
            console.print(f"[yellow]note: {n} items of the {m} run are not in every run, left out[/yellow]")
