"""A training run's metrics as series, and which of them share a chart.

Owns: reading a run's `metrics.jsonl` into rows and per-metric series; the registry of panels
(which metric keys share a chart) and the grouping of the keys no panel draws into families
(`advantage/*`, `clip_frac*`, ...); the names of the files that mark a run folder and a demo folder.
Does not own: drawing (`harken.report.charts`), pages (`harken.report.run`, `harken.demo.report`),
writing the metrics (the trainers).

A panel is skipped when none of its metrics was logged, so one code path serves GRPO runs
(reward/*, kl, completion/length, ...), SFT runs (loss, token_accuracy, ...) and whatever a run
logs beyond the registry.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harken.io import read_appended_jsonl

DEMO_FILE = "demo.json"  # what marks a `harken demo` folder and holds its stored results
METRICS_FILE = "metrics.jsonl"  # what marks a training run folder
NOT_METRICS = ("step", "time")  # row fields that are not metrics


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
    rows, _ = read_appended_jsonl(path)
    for lineno, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("step"), (int, float)):
            raise ValueError(f"{path}:{lineno}: expected an object with a numeric \"step\", got {json.dumps(row)[:80]!r}")
    return [row for _, row in rows]


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


@dataclass(frozen=True)
class Panel:
    """One chart: the metric keys it draws (fnmatch patterns, legend in pattern order)."""

    name: str  # file stem of the chart
    title: str
    ylabel: str
    keys: tuple[str, ...]  # patterns, e.g. "reward/*"
    exclude: tuple[str, ...] = ()  # patterns left out even when `keys` match
    notes: tuple[tuple[str, str], ...] = ()  # (key, what it measures): named in the title when drawn

    def title_for(self, drawn: Sequence[str]) -> str:
        """The title, with a note for each drawn key that has one (a GRPO and an SFT run differ)."""
        notes = [note for key, note in self.notes if key in drawn]
        return f"{self.title} ({'; '.join(notes)})" if notes else self.title

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
    Panel("accuracy", "accuracy", "accuracy",
          ("val/accuracy", "val/accuracy/*", "reward/accuracy", "token_accuracy"),
          notes=(("val/accuracy", "val: greedy answers, held-out"),
                 ("reward/accuracy", "reward/accuracy: sampled completions, training"),
                 ("token_accuracy", "token_accuracy: next target token, training"))),
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


def learned_nothing(series: dict[str, Series]) -> str | None:
    """A warning when the run could not have changed its weights, else None.

    GRPO: every group's rewards equal on every step (`reward/std_in_group` always 0: all
    advantages are 0). Any trainer: a gradient norm of 0 on every step.
    """
    spread = series.get("reward/std_in_group")
    if spread is not None and spread.values and max(spread.values) == 0:
        return (f"every group of completions got equal rewards on all {len(spread.values)} logged steps: "
                "the advantages were all 0 and the policy had nothing to learn from. Start from a model that "
                "is right some of the time, or raise rollout.group_size or the sampling temperature.")
    norm = series.get("grad_norm")
    if norm is not None and norm.values and max(norm.values) == 0:
        return (f"the gradient norm was 0 on all {len(norm.values)} logged steps: the weights never changed.")
    return None
