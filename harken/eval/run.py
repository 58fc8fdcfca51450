"""Evaluation: run a model over a benchmark, score predictions files, compare runs.

Owns: the `harken eval run | score | compare` commands; the layout of an evaluation folder;
per-group accuracy tables and charts; resuming an interrupted run; refusing to mix the results
of different settings in one folder.

Does not own: the correctness rule and answer extraction (`harken.eval.scoring`), reading benchmark
files into examples (`harken.data.readers`), decoding audio (`harken.data.audio`), loading models and
generating text (`harken.models`, `harken.eval.answers`).

An evaluation folder (`--out DIR`) holds:
    items.jsonl          one line per item: id, prediction, correct, group fields, and raw_output
                         (`eval run`) or missing_prediction / counted (`eval score`)
    results.json         benchmark, file + sha256, accuracy overall and per group with counts,
                         items without a prediction and how they were counted, coverage
    predictions.json     the benchmark's own items with the prediction under the benchmark's own
                         key(s), ready for the official scripts (MMAU: model_output and
                         model_prediction; MMAR: answer_prediction; jsonl: prediction)
    results.md           the same numbers as markdown tables
    accuracy_<group>.png one bar chart per group (task, difficulty, sub-category, ...)
    run.json             `eval run` only: the settings the items were produced with

Scoring is always the official rule (`harken.eval.scoring.is_correct`) on the prediction text.
`eval run` extracts the prediction from the model's raw output first (`extract_answer`);
`eval score` judges the prediction field as it stands, like the official scripts. Items without
a prediction count as wrong unless `--official-skip` asks for the official scripts' behaviour
(they silently leave such items out of the accuracy).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harken import __version__
from harken.data.readers import MMAU_VERSIONS, file_sha256, mmau_metadata_path, read_dataset
from harken.data.records import Example
from harken.io import write_json_atomic, write_jsonl
from harken.eval.scoring import extract_answer, is_correct, tokenize

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Benchmarks: how each is grouped and where its prediction lives
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    kind: str  # mmau | mmar | jsonl
    groups: tuple[str, ...]  # item fields accuracy is broken down by; the first is the headline
    prediction_keys: tuple[str, ...]  # where the benchmark's scripts read the prediction, preferred first


SPECS: dict[str, BenchmarkSpec] = {
    # MMAU's evaluation.py reads `model_output`; its older README says `model_prediction`.
    "mmau": BenchmarkSpec("mmau", ("task", "difficulty", "sub-category"), ("model_output", "model_prediction")),
    "mmar": BenchmarkSpec("mmar", ("modality", "category", "sub-category"), ("answer_prediction",)),
    # Canonical / generic files: whichever of these meta fields the items carry.
    "jsonl": BenchmarkSpec("jsonl", ("task", "modality", "difficulty", "category", "sub-category"), ("prediction",)),
}

# `eval run --benchmark` choices -> kind. The MMAU names are the shipped, pinned test-mini files
# (harken.data.readers.MMAU_VERSIONS): mmau-test-mini is the current v05.15.25, -v2503 the paper's.
RUN_BENCHMARKS = {**{name: "mmau" for name in MMAU_VERSIONS}, "mmar": "mmar", "jsonl": "jsonl"}

RULE = (
    "official MMAU/MMAR word match: lowercase \\b\\w+\\b words; correct when the prediction has "
    "every word of the answer and no word found only in a wrong choice; no word at all is wrong"
)

# Display order of known group values; other values follow alphabetically.
_VALUE_ORDER = {
    "task": ["sound", "music", "speech"],
    "modality": [
        "sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech", "mix-sound-music-speech",
    ],
    "difficulty": ["easy", "medium", "hard"],
    "category": ["Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"],
}
NO_VALUE = "(none)"  # group value of an item that lacks the field
FIRST_IDS = 10  # how many ids to list for missing predictions / clips


# ---------------------------------------------------------------------------------------------
# Scored items and their summary
# ---------------------------------------------------------------------------------------------


@dataclass
class ScoredItem:
    """One benchmark item after scoring."""

    id: str
    prediction: str | None  # the text judged; None when the item had no prediction
    correct: bool
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


def _ordered_values(group: str, values: Sequence[str]) -> list[str]:
    known = _VALUE_ORDER.get(group, [])
    present = set(values)
    return [v for v in known if v in present] + sorted(present - set(known))


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
        table[g] = {v: _cell(*tally[v]) for v in _ordered_values(g, list(tally))}
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


# ---------------------------------------------------------------------------------------------
# Writing an evaluation folder
# ---------------------------------------------------------------------------------------------


def write_outputs(out: Path, results: dict[str, Any], items: Sequence[ScoredItem], predictions: list[dict]) -> None:
    """Write items.jsonl, results.json, predictions.json, results.md and one chart per group."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "items.jsonl", [it.to_row() for it in items])
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "predictions.json", predictions)
    (out / "results.md").write_text(results_markdown(results), encoding="utf-8")
    for g in results["group_order"]:
        if results["groups"].get(g):
            plot_group(results, g, out / f"accuracy_{g}.png")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The results as markdown: headline, provenance, one table per group."""
    f = results["file"]
    lines = [
        f"# {results['benchmark']}: {_pct(results['accuracy'])} % ({results['n_correct']} / {results['n_scored']})",
        "",
        f"- file: `{f['name']}`, sha256 `{f['sha256']}`",
    ]
    if results.get("matches_benchmark"):
        lines.append(f"- items match the shipped benchmark file(s): {', '.join(results['matches_benchmark'])}")
    if results.get("run"):
        r = results["run"]
        adapter = f" + adapter `{r['adapter']}`" if r.get("adapter") else ""
        lines.append(f"- model `{r['model']}`{adapter}, template `{r['template']}`, max new tokens {r['max_new_tokens']}")
    lines.append(f"- scoring: {results['rule']}")
    lines += [f"- note: {n}" for n in results.get("notes", [])]
    lines.append(f"- prediction: {results['prediction_source']}")
    m = results["missing_predictions"]
    if m["count"]:
        lines.append(
            f"- {m['count']} of {results['n_items']} items had no prediction, counted as {m['counted_as']}"
            f" (first: {', '.join(m['first_ids'])})"
        )
    else:
        lines.append(f"- every one of the {results['n_items']} items had a prediction")
    if results.get("empty_predictions"):
        lines.append(f"- {results['empty_predictions']} predictions had no word at all (wrong)")
    cov = results.get("coverage")
    if cov:
        lines.append(f"- coverage: {cov['evaluated']} of {cov['total']} items evaluated ({_pct(cov['percent'])} %)")
        if cov.get("missing_audio"):
            lines.append(f"  - {cov['missing_audio']} clips missing (first: {', '.join(cov['first_missing_ids'])})")
        if cov.get("unreadable_audio"):
            lines.append(f"  - {len(cov['unreadable_audio'])} clips unreadable")
    groups = [g for g in results["group_order"] if results["groups"].get(g)]
    if groups:
        head = groups[0]
        values = list(results["groups"][head])
        lines += ["", f"| {head} | " + " | ".join(values) + " | avg |", "|---" * (len(values) + 2) + "|"]
        cells = [_pct(results["groups"][head][v]["accuracy"]) for v in values]
        lines.append("| accuracy (%) | " + " | ".join(cells) + f" | {_pct(results['accuracy'])} |")
    for g in groups:
        lines += ["", f"## {g}", "", f"| {g} | correct | total | accuracy (%) |", "|---|---:|---:|---:|"]
        for v, c in results["groups"][g].items():
            lines.append(f"| {v} | {c['correct']} | {c['total']} | {_pct(c['accuracy'])} |")
        lines.append(f"| **all** | {results['n_correct']} | {results['n_scored']} | {_pct(results['accuracy'])} |")
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float):
    # A bare Figure (no pyplot): no global state, no GUI backend, safe in threads and tests.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_group(results: dict[str, Any], group: str, path: Path) -> None:
    """Bar chart of the accuracy per value of one group, with counts and the overall line."""
    cells = results["groups"][group]
    labels = list(cells)
    acc = [cells[v]["accuracy"] or 0.0 for v in labels]
    notes = [f"{_pct(cells[v]['accuracy'])} ({cells[v]['correct']}/{cells[v]['total']})" for v in labels]
    title = f"{results['benchmark']}: accuracy by {group} (all: {_pct(results['accuracy'])} %)"
    if len(labels) <= 8:
        fig = _figure(max(4.0, 1.1 * len(labels) + 1.5), 3.6)
        ax = fig.subplots()
        bars = ax.bar(range(len(labels)), acc, color="#4c72b0")
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        if results["accuracy"] is not None:
            ax.axhline(results["accuracy"], color="gray", linestyle="--", linewidth=1)
        ax.bar_label(bars, notes, fontsize=7, padding=2)
    else:  # many values (MMAU has 27 sub-categories): horizontal bars keep the labels readable
        fig = _figure(8.0, 0.3 * len(labels) + 1.2)
        ax = fig.subplots()
        bars = ax.barh(range(len(labels)), acc, color="#4c72b0")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 115)
        ax.set_xlabel("accuracy (%)")
        if results["accuracy"] is not None:
            ax.axvline(results["accuracy"], color="gray", linestyle="--", linewidth=1)
        ax.bar_label(bars, notes, fontsize=6, padding=2)
    ax.set_title(title, fontsize=9)
    fig.savefig(path)


def _print_summary(results: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = next((g for g in results["group_order"] if results["groups"].get(g)), None)
    table = Table(title=f"{results['benchmark']} ({results['file']['name']})")
    table.add_column(head or "")
    values = list(results["groups"][head]) if head else []
    for v in values:
        table.add_column(v, justify="right")
    table.add_column("avg", justify="right", style="bold")
    table.add_row("accuracy (%)", *[_pct(results["groups"][head][v]["accuracy"]) for v in values], _pct(results["accuracy"]))
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


# ---------------------------------------------------------------------------------------------
# Reading benchmark-format files
# ---------------------------------------------------------------------------------------------


def read_items(path: Path) -> list[dict[str, Any]]:
    """The items of a benchmark-format file: a JSON list, or one JSON object per line."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: malformed JSON list ({e.msg} at column {e.colno})") from None
    else:
        items = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
    if not items:
        raise ValueError(f"{path}: no items (expected a JSON list of objects or one JSON object per line)")
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: item [{i}] is a {type(obj).__name__}, expected a JSON object")
    return items


def _item_label(path: Path, i: int, obj: dict) -> str:
    return f"{path} item [{i}] (id {obj.get('id')!r})"


def _prediction_of(obj: dict, keys: Sequence[str], where: str) -> tuple[str | None, str | None]:
    """(prediction, key it came from): the first of `keys` present with a non-null value."""
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}: {key} should be a string, got {type(value).__name__} {value!r:.60}")
        return str(value), key
    return None, None


def identify_mmau(items: Sequence[dict]) -> list[str]:
    """The shipped MMAU test-mini files (benchmark names) whose questions, choices and answers
    agree with every item here; MMAU's two versions differ on about a quarter of the items."""
    matches = []
    for name in MMAU_VERSIONS:
        path = mmau_metadata_path(name)
        if not path.is_file():
            continue
        ref = {str(o["id"]): (o["question"], list(o["choices"]), o["answer"]) for o in json.loads(path.read_text("utf-8"))}
        if all(ref.get(str(o.get("id"))) == (o.get("question"), list(o.get("choices") or []), o.get("answer")) for o in items):
            matches.append(name)
    return matches


# ---------------------------------------------------------------------------------------------
# harken eval score
# ---------------------------------------------------------------------------------------------


def score_file(path: str | os.PathLike, benchmark: str, out: str | os.PathLike, official_skip: bool = False) -> dict[str, Any]:
    """Score a predictions file in a benchmark's own format and write an evaluation folder.

    Args:
        path: MMAU: a JSON list of items with `model_output` (or `model_prediction`); MMAR: a JSON
            list or JSON lines with `answer_prediction`. Each item needs `answer` and `choices`.
        benchmark: "mmau" or "mmar".
        out: the folder to write (see the module docstring).
        official_skip: leave items without a prediction out of the accuracy, as the official
            scripts do, instead of counting them wrong.

    Returns:
        The results dict also written to `out/results.json`.
    """
    if benchmark not in ("mmau", "mmar"):
        raise ValueError(f"unknown benchmark {benchmark!r} for eval score; choose mmau or mmar")
    spec = SPECS[benchmark]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    raw_items = read_items(path)
    items: list[ScoredItem] = []
    predictions: list[dict] = []
    keys_used: Counter = Counter()
    for i, obj in enumerate(raw_items):
        where = _item_label(path, i, obj)
        for needed in ("answer", "choices"):
            if needed not in obj:
                raise ValueError(f"{where}: no {needed!r} field; is this a {benchmark.upper()} predictions file?")
        if not isinstance(obj["choices"], list) or not all(isinstance(c, str) for c in obj["choices"]):
            raise ValueError(f"{where}: 'choices' should be a list of strings, got {obj['choices']!r:.80}")
        if not isinstance(obj["answer"], str):
            raise ValueError(f"{where}: 'answer' should be the correct option's text, got {obj['answer']!r:.60}")
        prediction, key = _prediction_of(obj, spec.prediction_keys, where)
        groups = {g: group_value(obj.get(g)) for g in spec.groups}
        item_id = str(obj["id"]) if obj.get("id") is not None else f"[{i}]"
        if prediction is None:
            items.append(ScoredItem(item_id, None, False, groups, counted=not official_skip))
            predictions.append(dict(obj))
            continue
        keys_used[key] += 1
        items.append(ScoredItem(item_id, prediction, is_correct(prediction, obj["answer"], obj["choices"]), groups))
        predictions.append({**obj, **{k: prediction for k in spec.prediction_keys}})

    results: dict[str, Any] = {
        "harken_version": __version__,
        "command": "score",
        "benchmark": benchmark,
        "file": {"name": path.name, "path": str(path.resolve()), "sha256": file_sha256(path)},
        "rule": RULE,
        "prediction_source": (
            f"the field {' / '.join(spec.prediction_keys)} as it stands (no answer extraction); "
            f"items per key: {dict(keys_used) or 'none'}"
        ),
        "n_items": len(items),
        "missing_predictions": _missing_report(items, official_skip),
        "empty_predictions": sum(1 for it in items if it.prediction is not None and not tokenize(it.prediction)),
    }
    notes = []
    if benchmark == "mmau" and keys_used.get("model_prediction"):
        notes.append(
            f"{keys_used['model_prediction']} items carry their prediction only under model_prediction; "
            "MMAU's evaluation.py reads model_output alone and would skip them (predictions.json has both keys)"
        )
    results["notes"] = notes
    if benchmark == "mmau":
        results["matches_benchmark"] = identify_mmau(raw_items)
        if len(results["matches_benchmark"]) == 1:
            results["benchmark"] = results["matches_benchmark"][0]
        elif not results["matches_benchmark"]:
            logger.warning(
                "%s: the items match neither shipped MMAU test-mini file (%s); "
                "check which version the predictions were made on", path, ", ".join(MMAU_VERSIONS),
            )
    results.update(summarize(items, spec.groups))
    write_outputs(Path(out), results, items, predictions)
    return results


# ---------------------------------------------------------------------------------------------
# harken eval run
# ---------------------------------------------------------------------------------------------

# Seams: the model layer is reached only through these three functions, so tests can run the
# whole command with a fake model.


def _load_model(model: str, adapter: str | None, dtype: str, device: str):
    from harken.models.loading import load_audio_lm

    return load_audio_lm(model, adapter=adapter, dtype=dtype, device=device)


def _generate(lm, examples: list[Example], template, audio: list, max_new_tokens: int) -> list[str]:
    from harken.eval.answers import generate_texts

    return generate_texts(lm, examples, template, audio, max_new_tokens=max_new_tokens, greedy=True)


def _audio_loader(lm):
    from harken.data.audio import AudioLoader

    # Cut at the encoder's window: the feature extractor would cut there anyway, and decoding
    # an hour-long clip only to drop it wastes time and memory.
    return AudioLoader(lm.sampling_rate, lm.window_seconds, "truncate")


def _resolved(path: str | None) -> str | None:
    """Local paths made absolute (so that reruns from another folder match); hub ids kept."""
    if path is None:
        return None
    return str(Path(path).resolve()) if os.path.exists(path) else path


@dataclass
class _Benchmark:
    name: str  # the --benchmark value
    spec: BenchmarkSpec
    source: dict[str, Any]  # harken.data.readers Dataset.source: path, name, sha256, format, ...
    examples: list[Example]
    raw_by_id: dict[str, dict]  # the file's own items, for predictions.json
    groups: tuple[str, ...]


def _load_benchmark(benchmark: str, data: str | None, audio_root: str | None) -> _Benchmark:
    if benchmark not in RUN_BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(RUN_BENCHMARKS)}")
    spec = SPECS[RUN_BENCHMARKS[benchmark]]
    if spec.kind == "mmau":
        if data is not None:
            raise ValueError(
                f"--data is for mmar and jsonl; {benchmark} always uses the shipped, pinned metadata "
                f"({mmau_metadata_path(benchmark)})"
            )
        path = mmau_metadata_path(benchmark)
        fmt = "mmau"
    else:
        if data is None:
            what = "the MMAR metadata (MMAR-Benchmark.json)" if spec.kind == "mmar" else "a canonical or generic JSON-lines file"
            raise ValueError(f"--benchmark {benchmark} needs --data FILE: {what}")
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"--data file not found: {path}")
        fmt = spec.kind
        # As `harken data validate`: relative clip paths of a hand-made file point next to it.
        audio_root = audio_root if audio_root is not None else str(path.resolve().parent)
    dataset = read_dataset(path, fmt, audio_root)
    raw_by_id = {str(o.get("id")): o for o in read_items(Path(dataset.source["path"]))}
    groups = spec.groups
    if spec.kind == "jsonl":
        groups = tuple(g for g in spec.groups if any(g in ex.meta for ex in dataset))
    return _Benchmark(benchmark, spec, dict(dataset.source), list(dataset), raw_by_id, groups)


def _check_settings(out: Path, settings: dict[str, Any], invocation: dict[str, Any]) -> None:
    """Save run.json, or refuse when `out` holds a run made with other settings."""
    run_json = out / "run.json"
    if run_json.is_file():
        previous = json.loads(run_json.read_text(encoding="utf-8")).get("settings", {})
        diffs = [
            f"{k}: {previous.get(k)!r} there, {settings.get(k)!r} now"
            for k in sorted(set(previous) | set(settings))
            if previous.get(k) != settings.get(k)
        ]
        if diffs:
            raise ValueError(
                f"{out} holds an evaluation made with other settings ({'; '.join(diffs)}); "
                "results would be mixed. Use another --out, or delete that folder to start over."
            )
    elif (out / "items.jsonl").is_file():
        raise ValueError(
            f"{out} holds items.jsonl but no run.json (e.g. the output of `harken eval score`); "
            "use another --out for `harken eval run`."
        )
    write_json_atomic(run_json, {"settings": settings, "last_invocation": invocation})


def _read_log(path: Path) -> dict[str, dict]:
    """Finished items (id -> row) from an items.jsonl being appended to.

    A last line cut short by a crash is dropped (its item is simply generated again); a
    malformed line anywhere else is an error.
    """
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    rows: dict[str, dict] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines) and not line.endswith("\n"):
                logger.warning("%s: dropping the last line, cut short by an interrupted write", path)
                write_jsonl(path, rows.values())
                break
            raise ValueError(f"{path}:{lineno}: malformed line ({e.msg}); delete the folder to start over") from None
        rows[str(row["id"])] = row
    return rows


def run_benchmark(
    benchmark: str,
    model: str,
    out: str | os.PathLike,
    *,
    data: str | None = None,
    audio_root: str | None = None,
    template: str = "prompt2",
    max_new_tokens: int = 64,
    batch_size: int = 8,
    adapter: str | None = None,
    skip_missing: bool = False,
    limit: int | None = None,
    device: str = "cpu",
    dtype: str = "auto",
) -> dict[str, Any]:
    """Generate greedy answers for a benchmark, score them, write an evaluation folder.

    Every clip is checked for existence before any generation. Items are appended to
    `out/items.jsonl` after each batch, so an interrupted run continues where it stopped when
    started again with the same settings.

    Args:
        benchmark: mmau-test-mini (v05.15.25), mmau-test-mini-v2503 (the paper's), mmar, jsonl.
        model: checkpoint folder (or cached hub id) for `harken.models.loading.load_audio_lm`.
        out: evaluation folder.
        data: the dataset file for mmar / jsonl (MMAU uses the shipped metadata).
        audio_root: folder relative clip paths are joined to (MMAU: the folder that holds
            test-mini-audios/); default for mmar / jsonl: the data file's folder.
        template: prompt template name (`harken.data.prompts`).
        max_new_tokens: generation budget per answer.
        batch_size: items per generation call.
        adapter: optional LoRA adapter folder.
        skip_missing: evaluate the items whose clip exists (or decodes) and report the coverage,
            instead of stopping.
        limit: evaluate only the first N items of the benchmark.
        device, dtype: where and in what precision the model runs.

    Returns:
        The results dict also written to `out/results.json`.
    """
    from tqdm import tqdm

    from harken.data.audio import AudioError
    from harken.data.prompts import get_template

    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    tmpl = get_template(template)
    out = Path(out)
    bench = _load_benchmark(benchmark, data, audio_root)
    selection = bench.examples[:limit] if limit else bench.examples

    # Clips first: a missing clip should stop the run before a model is even loaded.
    missing = [ex for ex in selection if not os.path.isfile(ex.audio)]
    if missing and not skip_missing:
        listed = "\n".join(f"  {ex.id}: {ex.audio}" for ex in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        hint = " (--audio-root should be the folder that holds test-mini-audios/)" if bench.spec.kind == "mmau" else ""
        raise ValueError(
            f"{len(missing)} of {len(selection)} clips are missing{hint}:\n{listed}{more}\n"
            "Fix the paths, or pass --skip-missing to evaluate the rest and report the coverage."
        )
    missing_ids = {ex.id for ex in missing}

    settings = {
        "benchmark": benchmark,
        "benchmark_file": bench.source["name"],
        "benchmark_sha256": bench.source["sha256"],
        "model": _resolved(model),
        "adapter": _resolved(adapter),
        "template": template,
        "max_new_tokens": max_new_tokens,
    }
    invocation = {
        "harken_version": __version__,
        "data": bench.source["path"],
        "audio_root": bench.source.get("audio_root"),
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "limit": limit,
        "skip_missing": skip_missing,
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings, invocation)

    log_path = out / "items.jsonl"
    done = _read_log(log_path)
    known = {ex.id for ex in bench.examples}
    strangers = [i for i in done if i not in known]
    if strangers:
        raise ValueError(f"{log_path}: {len(strangers)} items are not in {bench.source['name']} (e.g. {strangers[0]!r})")
    todo = [ex for ex in selection if ex.id not in done and ex.id not in missing_ids]
    n_target = len(selection) - len(missing_ids)
    if done:
        logger.info("%s: %d items already done, %d to go", log_path, n_target - len(todo), len(todo))

    unreadable: list[dict[str, str]] = []
    if todo:
        lm = _load_model(model, adapter, dtype, device)
        loader = _audio_loader(lm)
        with open(log_path, "a", encoding="utf-8") as log, tqdm(
            total=n_target, initial=n_target - len(todo), unit="item", desc=f"eval {benchmark}", disable=None
        ) as bar:
            for start in range(0, len(todo), batch_size):
                batch, audio = [], []
                for ex in todo[start : start + batch_size]:
                    try:
                        audio.append(loader.load(ex.audio))
                        batch.append(ex)
                    except AudioError as e:
                        if not skip_missing:
                            raise ValueError(
                                f"item {ex.id}: {e} (--skip-missing evaluates the rest; finished items are kept)"
                            ) from None
                        unreadable.append({"id": ex.id, "problem": str(e)})
                        bar.update(1)
                if not batch:
                    continue
                outputs = _generate(lm, batch, tmpl, audio, max_new_tokens)
                if len(outputs) != len(batch):
                    raise RuntimeError(f"generation returned {len(outputs)} outputs for {len(batch)} prompts")
                for ex, raw in zip(batch, outputs):
                    pred = extract_answer(raw, ex.choices, tmpl.lettered)
                    row = ScoredItem(ex.id, pred, is_correct(pred, ex.answer, ex.choices), _groups_of(ex, bench.groups), raw_output=raw)
                    log.write(json.dumps(row.to_row(), ensure_ascii=False) + "\n")
                    done[ex.id] = row.to_row()
                # One flush per batch: a crash loses at most the batch being generated.
                log.flush()
                os.fsync(log.fileno())
                bar.update(len(batch))
        loader.warn_long()

    # Final pass over everything finished, from the raw outputs: the numbers never depend on
    # which invocation produced which item.
    items: list[ScoredItem] = []
    predictions: list[dict] = []
    for ex in selection:
        own = dict(bench.raw_by_id.get(ex.id) or ex.to_dict())
        row = done.get(ex.id)
        if row is None:
            predictions.append(own)
            continue
        raw = row.get("raw_output")
        pred = extract_answer(raw, ex.choices, tmpl.lettered) if raw is not None else row.get("prediction")
        items.append(ScoredItem(ex.id, pred, is_correct(pred, ex.answer, ex.choices), _groups_of(ex, bench.groups), raw_output=raw))
        predictions.append({**own, **{k: pred for k in bench.spec.prediction_keys}})
    results: dict[str, Any] = {
        "harken_version": __version__,
        "command": "run",
        "benchmark": benchmark,
        "file": {"name": bench.source["name"], "path": bench.source["path"], "sha256": bench.source["sha256"]},
        "run": {**settings, **invocation},
        "rule": RULE,
        "prediction_source": f"extract_answer on the raw output (first <answer> tag, else the whole output; template {template}"
        + (", letters mapped to options)" if tmpl.lettered else ")"),
        "n_items": len(items),
        "missing_predictions": _missing_report(items, official_skip=False),
        "empty_predictions": sum(1 for it in items if not tokenize(it.prediction or "")),
        "coverage": {
            "evaluated": len(items),
            "total": len(selection),
            "benchmark_items": len(bench.examples),
            "percent": round(100.0 * len(items) / len(selection), 4),
            "missing_audio": len(missing_ids),
            "first_missing_ids": [ex.id for ex in missing[:FIRST_IDS]],
            "unreadable_audio": unreadable,
        },
    }
    results.update(summarize(items, bench.groups))
    write_outputs(out, results, items, predictions)
    return results


def _groups_of(ex: Example, groups: Sequence[str]) -> dict[str, str]:
    return {g: group_value(ex.meta.get(g)) for g in groups}


# ---------------------------------------------------------------------------------------------
# harken eval compare
# ---------------------------------------------------------------------------------------------


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
    runs = []
    for d in dirs:
        rj = d / "results.json"
        if not rj.is_file():
            raise FileNotFoundError(f"{rj} not found: is {d} the --out of `harken eval run` or `harken eval score`?")
        runs.append(json.loads(rj.read_text(encoding="utf-8")))
    if names is None:
        names = [d.name or str(d) for d in dirs]
        if len(set(names)) < len(names):
            names = [str(d) for d in dirs]
    heads = [next((g for g in r["group_order"] if r["groups"].get(g)), None) for r in runs]
    group = heads[0]
    values: list[str] = []
    for r, h in zip(runs, heads):
        if h == group and h is not None:
            values += [v for v in r["groups"][h] if v not in values]
    values = _ordered_values(group, values) if group else []
    warnings = []
    if len({h for h in heads}) > 1:
        warnings.append(f"the runs are broken down by different groups ({', '.join(map(str, heads))}); only {group} is shown")
    shas = {r["file"]["sha256"] for r in runs}
    if len(shas) > 1:
        files = ", ".join(sorted({f"{r['file']['name']} ({r['file']['sha256'][:12]})" for r in runs}))
        warnings.append(f"the runs were scored on different files ({files}): their numbers are not comparable")
    for name, r in zip(names, runs):
        m, cov = r["missing_predictions"], r.get("coverage")
        if m["count"]:
            warnings.append(f"{name}: {m['count']} items without a prediction, counted as {m['counted_as']}")
        if cov and cov["evaluated"] < cov["total"]:
            warnings.append(f"{name}: only {cov['evaluated']} of {cov['total']} items evaluated")
    rows = []
    for name, d, r, h in zip(names, dirs, runs, heads):
        cells = {v: (r["groups"][h].get(v, {}).get("accuracy") if h == group else None) for v in values}
        cells["avg"] = r["accuracy"]
        rows.append({"name": name, "dir": str(d), "values": cells, "n": r["n_scored"], "file": r["file"]["name"], "sha256": r["file"]["sha256"]})
    return {"group": group, "columns": values + ["avg"], "rows": rows, "warnings": warnings}


def compare_markdown(table: dict[str, Any]) -> str:
    cols = table["columns"]
    lines = [
        f"| run ({table['group']}) | " + " | ".join(cols) + " | n | file |",
        "|---" + "|---:" * (len(cols) + 1) + "|---|",
    ]
    for row in table["rows"]:
        cells = [_pct(row["values"][c]) for c in cols]
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
    fig = _figure(max(5.0, 1.0 + len(cols) * (0.4 + 0.25 * len(rows))), 3.8)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(cols))]
        ys = [row["values"][c] or 0.0 for c in cols]
        bars = ax.bar(xs, ys, width=width, label=row["name"])
        ax.bar_label(bars, [_pct(row["values"][c]) for c in cols], fontsize=6, padding=1, rotation=90 if len(rows) > 3 else 0)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_ylim(0, 110)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"accuracy by {table['group']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncols=min(4, len(rows)))
    fig.savefig(path)


def _print_compare(table: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"accuracy (%) by {table['group']}")
    t.add_column("run")
    for c in table["columns"]:
        t.add_column(c, justify="right", style="bold" if c == "avg" else None)
    t.add_column("n", justify="right")
    for row in table["rows"]:
        t.add_row(row["name"], *[_pct(row["values"][c]) for c in table["columns"]], str(row["n"]))
    console.print(t)
    for w in table["warnings"]:
        console.print(f"[yellow]note: {w}[/yellow]")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _cmd_score(args: argparse.Namespace) -> int:
    results = score_file(args.predictions, args.benchmark, args.out, official_skip=args.official_skip)
    _print_summary(results, Path(args.out))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        results = run_benchmark(
            args.benchmark, args.model, args.out, data=args.data, audio_root=args.audio_root, template=args.template,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, adapter=args.adapter,
            skip_missing=args.skip_missing, limit=args.limit, device=args.device, dtype=args.dtype,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished items are kept in {args.out}/items.jsonl; run the same command again to continue")
        return 130
    _print_summary(results, Path(args.out))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    table = compare_runs(args.dirs, names)
    _print_compare(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(compare_markdown(table), encoding="utf-8")
        write_json_atomic(out / "compare.json", table)
        plot_compare(table, out / "compare.png")
        print(f"written to {out}/ (compare.md, compare.json, compare.png)")
    return 0


def register(top, groups) -> None:
    """Add `harken eval run | score | compare`."""
    ev = groups["eval"]

    p = ev.add_parser(
        "run",
        help="generate answers for a benchmark with a model and score them",
        description=(
            "Greedy answers for every item, scored with the benchmark's official rule. Clips are "
            "checked before anything is generated. Items are saved after each batch: run the same "
            "command again to continue an interrupted run."
        ),
    )
    p.add_argument("--benchmark", required=True, choices=list(RUN_BENCHMARKS),
                   help="mmau-test-mini (file v05.15.25), mmau-test-mini-v2503 (the paper's file), mmar, "
                        "or jsonl (a canonical / generic file given with --data)")
    p.add_argument("--model", required=True, metavar="PATH", help="model checkpoint folder")
    p.add_argument("--data", default=None, metavar="FILE", help="dataset file for mmar and jsonl")
    p.add_argument("--audio-root", default=None, metavar="DIR",
                   help="folder relative clip paths are joined to (MMAU: the folder holding test-mini-audios/; "
                        "default for mmar/jsonl: the --data file's folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder (reused to continue a run)")
    p.add_argument("--template", default="prompt2", help="prompt template (default: prompt2, the paper's best)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation budget per answer (default: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="items per generation batch (default: 8)")
    p.add_argument("--adapter", default=None, metavar="PATH", help="LoRA adapter folder to apply")
    p.add_argument("--skip-missing", action="store_true",
                   help="evaluate the items whose clip exists and report the coverage, instead of stopping")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="weights precision (auto: bfloat16 on a GPU that supports it, else float32)")
    p.set_defaults(func=_cmd_run)

    p = ev.add_parser(
        "score",
        help="score a predictions file in the benchmark's own format (no model)",
        description=(
            "Apply the official word-match rule to the prediction field as it stands (MMAU: "
            "model_output or model_prediction; MMAR: answer_prediction). Items without a "
            "prediction count as wrong and are reported; --official-skip leaves them out, as the "
            "official scripts do."
        ),
    )
    p.add_argument("predictions", metavar="PREDICTIONS", help="JSON list (or JSON lines) of items with predictions")
    p.add_argument("--benchmark", required=True, choices=["mmau", "mmar"])
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--official-skip", action="store_true",
                   help="skip items without a prediction (the official scripts' behaviour) instead of counting them wrong")
    p.set_defaults(func=_cmd_score)

    p = ev.add_parser(
        "compare",
        help="put several evaluation folders side by side",
        description="One table, a row per run and a column per task (or modality) plus the average.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders written by `eval run` or `eval score`")
    p.add_argument("--names", default=None, help="comma-separated row names (default: the folder names)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write compare.md, compare.json and compare.png here")
    p.set_defaults(func=_cmd_compare)
