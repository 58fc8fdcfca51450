"""Dataset statistics: what `harken data stats` counts, draws and prints.

Owns: counts per question type / task and number of choices, the answer-position balance, clip
durations read from the clip headers (`clip_durations`), the statistics dict (`dataset_stats`,
`file_stats`), the duration histogram chart (`plot_durations`), its terminal rendering
(`print_stats`) and the files written (`write_stats`: stats.json, durations.png).

Does not own: reading the dataset (`harken.data.readers.load_examples`), clip headers
(`harken.data.audio.audio_info`), the matplotlib set-up (`harken.report.plotting`), the command
line (`harken.cli.data`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harken.data.readers import load_examples
from harken.data.records import Example
from harken.io import write_json_atomic


def _question_kind(ex: Example) -> str:
    meta = ex.meta or {}
    return str(meta.get("question_type") or meta.get("task") or "(none)")


def clip_durations(paths: Iterable[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Duration in seconds per readable clip (header only), and the error per unreadable one."""
    from harken.data.audio import audio_info

    durations, errors = {}, {}
    for p in paths:
        try:
            durations[p] = float(audio_info(p)["duration"])
        except Exception as e:  # an AudioError, or an OS error on a broken mount: listed, not fatal
            errors[p] = f"{type(e).__name__}: {e}"
    return durations, errors


def dataset_stats(
    examples: Sequence[Example], durations: dict[str, float], window_seconds: float = 30.0, bins: int = 20, show: int = 5
) -> dict[str, Any]:
    """Counts and duration statistics of a dataset (pure: durations are given).

    Args:
        examples: the questions.
        durations: seconds per audio path (paths absent here count as unreadable clips).
        window_seconds: encoder window; longer clips are cut by the feature extractor.
        bins: histogram bins (equal width from 0 to the longest clip).
        show: how many offenders to list.
    """
    by_kind = Counter(_question_kind(ex) for ex in examples)
    by_n = Counter(len(ex.choices) for ex in examples)
    positions = Counter(ex.choices.index(ex.answer) + 1 for ex in examples if ex.answer in ex.choices)
    not_in_choices = [ex.id for ex in examples if ex.answer not in ex.choices]
    clips = sorted({ex.audio for ex in examples})
    total = len(examples)
    return {
        "questions": total,
        "clips": len(clips),
        "by_question_type": dict(sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_num_choices": {str(k): v for k, v in sorted(by_n.items())},
        "answer_position": {str(k): v for k, v in sorted(positions.items())},
        "answer_position_share": {str(k): round(v / total, 4) for k, v in sorted(positions.items())},
        "answer_not_in_choices": {"count": len(not_in_choices), "first": not_in_choices[:show]},
        "durations": _duration_stats(clips, durations, bins, show),
        "longer_than_window": _longer_than_window(examples, clips, durations, window_seconds, show),
    }


def _duration_stats(clips: list[str], durations: dict[str, float], bins: int, show: int) -> dict[str, Any]:
    d = np.array([durations[p] for p in clips if p in durations], dtype=np.float64)
    unreadable = [p for p in clips if p not in durations]
    hist: dict[str, Any] = {"edges": [], "counts": []}
    if len(d):
        top = max(float(d.max()), 1e-3)
        counts, edges = np.histogram(d, bins=bins, range=(0.0, top))
        hist = {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}
    return {
        "readable": int(len(d)),
        "unreadable": len(unreadable),
        "unreadable_first": unreadable[:show],
        "min": float(d.min()) if len(d) else None,
        "max": float(d.max()) if len(d) else None,
        "mean": float(d.mean()) if len(d) else None,
        "median": float(np.median(d)) if len(d) else None,
        "total_hours": float(d.sum() / 3600) if len(d) else 0.0,
        "histogram": hist,
    }


def _longer_than_window(
    examples: Sequence[Example], clips: list[str], durations: dict[str, float], window_seconds: float, show: int
) -> dict[str, Any]:
    long_clips = [p for p in clips if durations.get(p, 0.0) > window_seconds]
    long_set = set(long_clips)
    return {
        "window_seconds": window_seconds,
        "clips": len(long_clips),
        "questions": sum(1 for ex in examples if ex.audio in long_set),
        "first": [{"audio": p, "duration": round(durations[p], 3)} for p in long_clips[:show]],
    }


def plot_durations(stats: dict[str, Any], path: str | os.PathLike) -> None:
    """Histogram of clip durations with the encoder window marked, as a PNG."""
    from harken.report.plotting import figure, save_png

    hist = stats["durations"]["histogram"]
    fig = figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    if hist["counts"]:
        edges = np.array(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", edgecolor="black", linewidth=0.5)
    window = stats["longer_than_window"]["window_seconds"]
    ax.axvline(window, color="red", linestyle="--", label=f"encoder window {window:g} s")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips")
    ax.set_title(f"{stats['clips']} clips, {stats['questions']} questions")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def print_stats(stats: dict[str, Any], show: int = 5) -> None:
    """The statistics on the terminal: count tables, a text histogram, the long clips."""
    from rich.console import Console

    con = Console()
    _print_counts(con, stats)
    _print_durations(con, stats["durations"])
    lw = stats["longer_than_window"]
    con.print(
        f"longer than the {lw['window_seconds']:g} s encoder window (cut by the feature extractor): "
        f"{lw['clips']} clips, {lw['questions']} questions"
    )
    for item in lw["first"][:show]:
        con.print(f"  {item['audio']} ({item['duration']:.1f} s)", markup=False)


def _print_counts(con: Any, stats: dict[str, Any]) -> None:
    from rich.table import Table

    total = stats["questions"]
    con.print(f"{total} questions, {stats['clips']} clips")
    for title, key in (("question type / task", "by_question_type"), ("choices", "by_num_choices"), ("answer position", "answer_position")):
        t = Table(title=title, title_justify="left")
        t.add_column(title)
        t.add_column("questions", justify="right")
        t.add_column("share", justify="right")
        for k, v in stats[key].items():
            t.add_row(str(k), str(v), f"{100 * v / total:.1f}%")
        con.print(t)
    if stats["answer_not_in_choices"]["count"]:
        con.print(f"answer not among the choices: {stats['answer_not_in_choices']['count']}")


def _print_durations(con: Any, d: dict[str, Any]) -> None:
    if d["readable"]:
        con.print(
            f"clip durations: min {d['min']:.2f} s, median {d['median']:.2f} s, mean {d['mean']:.2f} s, "
            f"max {d['max']:.2f} s, total {d['total_hours']:.2f} h"
        )
        edges, counts = d["histogram"]["edges"], d["histogram"]["counts"]
        peak = max(counts) or 1
        for lo, hi, c in zip(edges[:-1], edges[1:], counts):
            con.print(f"  {lo:7.2f}-{hi:7.2f} s | {'#' * math.ceil(40 * c / peak) if c else '':40s} {c}", markup=False)
    if d["unreadable"]:
        con.print(f"unreadable clips: {d['unreadable']} (e.g. {', '.join(d['unreadable_first'])})", markup=False)


def file_stats(
    dataset: str | os.PathLike,
    format: str = "canonical",
    audio_root: str | None = None,
    window_seconds: float = 30.0,
    bins: int = 20,
    fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`dataset_stats` of a dataset file or table, durations read from the clip headers.

    Adds the dataset's path and the errors of the first 5 unreadable clips. Clips are read in the
    dataset's order (a table's embedded clips: one row group after the other). `fields` as
    `data.fields`.
    """
    dataset = Path(dataset)
    examples = load_examples(dataset, format, audio_root, fields)
    durations, errors = clip_durations(dict.fromkeys(ex.audio for ex in examples))
    stats = dataset_stats(examples, durations, window_seconds=window_seconds, bins=bins)
    stats["dataset"] = str(dataset.resolve())
    stats["durations"]["unreadable_errors"] = dict(list(errors.items())[:5])
    return stats


def write_stats(stats: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write OUT/durations.png and OUT/stats.json; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / "durations.png", out / "stats.json"
    plot_durations(stats, png)
    write_json_atomic(js, stats)
    return png, js
