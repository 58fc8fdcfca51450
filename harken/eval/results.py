"""The results of an evaluation: scored items, accuracy per group, and the evaluation folder.

Owns: a scored item (`ScoredItem`) and its line in items.jsonl; the accuracy overall and per
group value (`summarize`); the common part of results.json (`new_results`); writing an
evaluation folder (`write_outputs`): items.jsonl, results.json, predictions.json, results.md
(`results_markdown`) and one bar chart per group (`plot_group`); the table printed at the end
of `harken eval run | score` (`print_summary`).

Does not own: producing the items (`harken.eval.run` with a model, `harken.eval.score_file` from
a predictions file), the correctness rule (`harken.eval.scoring`), which groups a benchmark has
and their value order (`harken.eval.benchmarks`), tables across runs (`harken.eval.compare`).

An evaluation folder (`--out DIR`) holds:
    items.jsonl          one line per item: id, prediction, correct, group fields, and raw_output
                         (`eval run`) or missing_prediction / counted (`eval score`); an item
                         without an answer (a test split) has correct null and counted false
    results.json         benchmark, file + sha256, accuracy overall and per group with counts,
                         items without a prediction and how they were counted, coverage; for a
                         test split, accuracy null and `no_accuracy`: the line saying why
    predictions.json     the benchmark's own items with the prediction under the benchmark's own
                         key(s), ready for the official scripts (MMAU: model_output and
                         model_prediction; MMAR: answer_prediction; jsonl: prediction)
    results.md           the same numbers as markdown tables
    accuracy_<group>.png one bar chart per group (task, difficulty, sub-category, ...)
    run.json             `eval run` only: the settings the items were produced with

An `eval run` folder names what the model heard (results.json `run.audio`: real, none, silence or
shuffled, `harken.eval.ablation`); results.md and the terminal table say so when it is not the clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harken import __version__
from harken.eval.benchmarks import ordered_values
from harken.eval.scoring import RULE, tokenize
from harken.io import write_json_atomic, write_jsonl, write_text_atomic
from harken.report.plotting import figure, save_png

NO_VALUE = "(none)"  # group value of an item that lacks the field
FIRST_IDS = 10  # how many ids to list for missing predictions / clips


@dataclass
class ScoredItem:
    """One benchmark item after scoring."""

    id: str
    prediction: str | None  # the text judged; None when the item had no prediction
    correct: bool | None  # None: the item has no answer to judge against (a test split; not counted)
    groups: dict[str, str] = field(default_factory=dict)  # group field -> value
    counted: bool = True  # False: left out of the accuracy (--official-skip)
    raw_output: str | None = None  # the model's whole output (`eval run`)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "prediction": self.prediction, "correct": self.correct}
        if self.raw_output is not None:
            row["raw_output"] = self.raw_output
        if self.prediction is None:
            row["missing_prediction"] = True
        if not self.counted:
            row["counted"] = False
        for name, value in self.groups.items():
            row.setdefault(name, value)
        return row


def group_value(value: Any) -> str:
    """An item's value for a group field as a label (lists, as some MMAR variants have, joined)."""
    if value is None or value == "":
        return NO_VALUE
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or NO_VALUE
    return str(value)


def group_values(fields: Mapping[str, Any], groups: Sequence[str]) -> dict[str, str]:
    """{group: label} for one item, from its fields (a benchmark item, or an example's meta)."""
    return {g: group_value(fields.get(g)) for g in groups}


def _cell(correct: int, total: int) -> dict[str, Any]:
    return {"correct": correct, "total": total, "accuracy": round(100.0 * correct / total, 4) if total else None}


def summarize(items: Sequence[ScoredItem], groups: Sequence[str]) -> dict[str, Any]:
    """Micro-averaged accuracy (percent) over the counted items, overall and per group value.

    Returns:
        {"n_scored", "n_correct", "accuracy", "group_order", "groups": {group: {value: {"correct",
        "total", "accuracy"}}}}; each group's totals add up to n_scored.
    """
    counted = [it for it in items if it.counted]
    overall = _cell(sum(it.correct for it in counted), len(counted))
    table: dict[str, dict[str, Any]] = {}
    for g in groups:
        tally: dict[str, list[int]] = {}
        for it in counted:
            c = tally.setdefault(it.groups.get(g, NO_VALUE), [0, 0])
            c[0] += it.correct
            c[1] += 1
        table[g] = {v: _cell(*tally[v]) for v in ordered_values(g, list(tally))}
    return {
        "n_scored": overall["total"],
        "n_correct": overall["correct"],
        "accuracy": overall["accuracy"],
        "group_order": list(groups),
        "groups": table,
    }


def _missing_report(items: Sequence[ScoredItem], official_skip: bool) -> dict[str, Any]:
    ids = [it.id for it in items if it.prediction is None]
    return {
        "count": len(ids),
        "first_ids": ids[:FIRST_IDS],
        "counted_as": "skipped (--official-skip, as the official scripts)" if official_skip else "wrong",
    }


def new_results(
    command: str,
    benchmark: str,
    file: dict[str, str],
    prediction_source: str,
    items: Sequence[ScoredItem],
    official_skip: bool = False,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The first keys of results.json, common to `eval run` and `eval score`.

    Args:
        command: "run" or "score".
        file: {"name", "path", "sha256"} of the benchmark or predictions file.
        prediction_source: how the judged text was obtained.
        official_skip: items without a prediction were left out of the accuracy.
        run: `eval run`'s settings and invocation.
    """
    results: dict[str, Any] = {"harken_version": __version__, "command": command, "benchmark": benchmark, "file": file}
    if run is not None:
        results["run"] = run
    results.update({
        "rule": RULE,
        "prediction_source": prediction_source,
        "n_items": len(items),
        "missing_predictions": _missing_report(items, official_skip),
        "empty_predictions": sum(1 for it in items if it.prediction is not None and not tokenize(it.prediction)),
    })
    return results


def write_outputs(out: Path, results: dict[str, Any], items: Sequence[ScoredItem], predictions: list[dict]) -> None:
    """Write items.jsonl, results.json, predictions.json, results.md and one chart per group."""
    write_jsonl(out / "items.jsonl", [it.to_row() for it in items])
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "predictions.json", predictions)
    write_text_atomic(out / "results.md", results_markdown(results))
    for g in results["group_order"]:
        if results["groups"].get(g):
            plot_group(results, g, out / f"accuracy_{g}.png")


def audio_mode(results: dict[str, Any]) -> str:
    """What the model heard in an `eval run` (real: the clip; folders made before --audio existed too)."""
    return (results.get("run") or {}).get("audio", "real")


def audio_label(results: dict[str, Any]) -> str:
    """What the model heard when it was not the clip ("none (no audio: ...)"), else ""."""
    from harken.eval.ablation import AUDIO_MODES

    mode = audio_mode(results)
    return "" if mode == "real" else f"{mode} ({AUDIO_MODES[mode]})"


def pct(x: float | None) -> str:
    """An accuracy in percent as shown in tables: two decimals, "-" when there is none."""
    return "-" if x is None else f"{x:.2f}"


def headline_group(results: dict[str, Any]) -> str | None:
    """The first group with values: the one tables across benchmarks and runs show."""
    return next((g for g in results["group_order"] if results["groups"].get(g)), None)


def _provenance_lines(results: dict[str, Any]) -> list[str]:
    f = results["file"]
    lines = [f"- file: `{f['name']}`, sha256 `{f['sha256']}`"]
    if results.get("matches_benchmark"):
        lines.append(f"- items match the shipped benchmark file(s): {', '.join(results['matches_benchmark'])}")
    if results.get("run"):
        r = results["run"]
        adapter = f" + adapter `{r['adapter']}`" if r.get("adapter") else ""
        lines.append(f"- model `{r['model']}`{adapter}, template `{r['template']}`, max new tokens {r['max_new_tokens']}")
        if audio_label(results):
            lines.append(f"- audio: {audio_label(results)}")
    lines.append(f"- scoring: {results['rule']}")
    lines += [f"- note: {n}" for n in results.get("notes", [])]
    lines.append(f"- prediction: {results['prediction_source']}")
    return lines


def _coverage_lines(results: dict[str, Any]) -> list[str]:
    m = results["missing_predictions"]
    if m["count"]:
        lines = [
            f"- {m['count']} of {results['n_items']} items had no prediction, counted as {m['counted_as']}"
            f" (first: {', '.join(m['first_ids'])})"
        ]
    else:
        lines = [f"- every one of the {results['n_items']} items had a prediction"]
    if results.get("empty_predictions"):
        lines.append(f"- {results['empty_predictions']} predictions had no word at all (wrong)")
    cov = results.get("coverage")
    if cov:
        lines.append(f"- coverage: {cov['evaluated']} of {cov['total']} items evaluated ({pct(cov['percent'])} %)")
        if cov.get("missing_audio"):
            lines.append(f"  - {cov['missing_audio']} clips missing (first: {', '.join(cov['first_missing_ids'])})")
        if cov.get("unreadable_audio"):
            lines.append(f"  - {len(cov['unreadable_audio'])} clips unreadable")
    return lines


def _table_lines(results: dict[str, Any]) -> list[str]:
    """The headline group in one row, then one table per group with counts."""
    groups = [g for g in results["group_order"] if results["groups"].get(g)]
    if not groups:
        return []
    head = groups[0]
    values = list(results["groups"][head])
    cells = [pct(results["groups"][head][v]["accuracy"]) for v in values]
    lines = ["", f"| {head} | " + " | ".join(values) + " | avg |", "|---" * (len(values) + 2) + "|"]
    lines.append("| accuracy (%) | " + " | ".join(cells) + f" | {pct(results['accuracy'])} |")
    for g in groups:
        lines += ["", f"## {g}", "", f"| {g} | correct | total | accuracy (%) |", "|---|---:|---:|---:|"]
        for v, c in results["groups"][g].items():
            lines.append(f"| {v} | {c['correct']} | {c['total']} | {pct(c['accuracy'])} |")
        lines.append(f"| **all** | {results['n_correct']} | {results['n_scored']} | {pct(results['accuracy'])} |")
    return lines


def results_markdown(results: dict[str, Any]) -> str:
    """The results as markdown: headline, provenance, one table per group (or why there is none)."""
    heard = audio_mode(results)
    name = results["benchmark"] + (f" (audio: {heard})" if heard != "real" else "")
    head = f"# {name}: {pct(results['accuracy'])} % ({results['n_correct']} / {results['n_scored']})"
    if results.get("no_accuracy"):
        head = f"# {results['benchmark']}: no accuracy\n\n{results['no_accuracy']}"
    lines = [head, "", *_provenance_lines(results), *_coverage_lines(results), *_table_lines(results)]
    return "\n".join(lines) + "\n"


def plot_group(results: dict[str, Any], group: str, path: Path) -> None:
    """Bar chart of the accuracy per value of one group, with counts and the overall line.

    Up to 8 values stand as vertical bars; more (MMAU has 27 sub-categories) lie as horizontal
    bars, which keep the labels readable.
    """
    cells = results["groups"][group]
    labels = list(cells)
    acc = [cells[v]["accuracy"] or 0.0 for v in labels]
    notes = [f"{pct(cells[v]['accuracy'])} ({cells[v]['correct']}/{cells[v]['total']})" for v in labels]
    overall, n = results["accuracy"], len(labels)
    if n <= 8:
        fig = figure(max(4.0, 1.1 * n + 1.5), 3.6, constrained=True)
        ax = fig.subplots()
        bars = ax.bar(range(n), acc, color="#4c72b0")
        ax.set_xticks(range(n), labels, rotation=20 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        overall_line, label_size = ax.axhline, 7
    else:
        fig = figure(8.0, 0.3 * n + 1.2, constrained=True)
        ax = fig.subplots()
        bars = ax.barh(range(n), acc, color="#4c72b0")
        ax.set_yticks(range(n), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 115)
        ax.set_xlabel("accuracy (%)")
        overall_line, label_size = ax.axvline, 6
    if overall is not None:
        overall_line(overall, color="gray", linestyle="--", linewidth=1)
    ax.bar_label(bars, notes, fontsize=label_size, padding=2)
    ax.set_title(f"{results['benchmark']}: accuracy by {group} (all: {pct(overall)} %)", fontsize=9)
    save_png(fig, path)


def print_summary(results: dict[str, Any], out: Path) -> None:
    """The headline table, missing predictions and coverage, on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if results.get("no_accuracy"):
        console.print(results["no_accuracy"], markup=False)
        cov = results.get("coverage")
        if cov and cov["evaluated"] < cov["total"]:
            console.print(f"[yellow]coverage: {cov['evaluated']} of {cov['total']} items have a prediction[/yellow]")
        console.print(f"written to {out}/ (predictions.json, results.json, results.md, items.jsonl)")
        return
    head = headline_group(results)
    heard = audio_mode(results)
    table = Table(title=f"{results['benchmark']} ({results['file']['name']}" + (f"; audio: {heard})" if heard != "real" else ")"))
    table.add_column(head or "")
    values = list(results["groups"][head]) if head else []
    for v in values:
        table.add_column(v, justify="right")
    table.add_column("avg", justify="right", style="bold")
    table.add_row("accuracy (%)", *[pct(results["groups"][head][v]["accuracy"]) for v in values], pct(results["accuracy"]))
    table.add_row("items", *[str(results["groups"][head][v]["total"]) for v in values], str(results["n_scored"]))
    console.print(table)
    m = results["missing_predictions"]
    if m["count"]:
        console.print(f"[yellow]{m['count']} items without a prediction, counted as {m['counted_as']}[/yellow]"
                      f" (first: {', '.join(m['first_ids'][:5])})")
    cov = results.get("coverage")
    if cov and cov["evaluated"] < cov["total"]:
        console.print(f"[yellow]coverage: {cov['evaluated']} of {cov['total']} items evaluated[/yellow]")
    console.print(f"written to {out}/ (results.json, results.md, items.jsonl, predictions.json, charts)")
