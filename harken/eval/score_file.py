"""`harken eval score`: score a predictions file in a benchmark's own format, no model involved.

Owns: checking each item of a MMAU or MMAR predictions file (answer, choices, the prediction
field), taking the prediction from the benchmark's own key(s) as it stands (no answer
extraction, like the official scripts), counting items without a prediction as wrong or, with
`official_skip`, leaving them out as the official scripts do, and the notes of results.json
about a file (an MMAU file with predictions only under `model_prediction`, which shipped MMAU
file the items match).

Does not own: the correctness rule (`harken.eval.scoring`), the benchmarks' groups and prediction
keys (`harken.eval.benchmarks`), the evaluation folder (`harken.eval.results`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from harken.data.benchmarks import MMAU_VERSIONS, file_sha256
from harken.eval.benchmarks import SPECS, BenchmarkSpec, identify_mmau, read_items
from harken.eval.results import ScoredItem, group_values, new_results, summarize, write_outputs
from harken.eval.scoring import is_correct

logger = logging.getLogger(__name__)


def score_file(path: str | os.PathLike, benchmark: str, out: str | os.PathLike, official_skip: bool = False) -> dict[str, Any]:
    """Score a predictions file in a benchmark's own format and write an evaluation folder.

    Args:
        path: MMAU: a JSON list of items with `model_output` (or `model_prediction`); MMAR: a JSON
            list or JSON lines with `answer_prediction`. Each item needs `answer` and `choices`.
        benchmark: "mmau" or "mmar".
        out: the folder to write (see `harken.eval.results`).
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
    items, predictions, keys_used = _score_items(path, raw_items, benchmark, spec, official_skip)
    source = (
        f"the field {' / '.join(spec.prediction_keys)} as it stands (no answer extraction); "
        f"items per key: {dict(keys_used) or 'none'}"
    )
    file = {"name": path.name, "path": str(path.resolve()), "sha256": file_sha256(path)}
    results = new_results("score", benchmark, file, source, items, official_skip=official_skip)
    results["notes"] = _key_notes(benchmark, keys_used)
    if benchmark == "mmau":
        _name_mmau_version(results, path, raw_items)
    results.update(summarize(items, spec.groups))
    write_outputs(Path(out), results, items, predictions)
    return results


def _score_items(
    path: Path, raw_items: list[dict], benchmark: str, spec: BenchmarkSpec, official_skip: bool
) -> tuple[list[ScoredItem], list[dict], Counter]:
    """(scored items, predictions.json items, how many predictions came from each key)."""
    items: list[ScoredItem] = []
    predictions: list[dict] = []
    keys_used: Counter = Counter()
    for i, obj in enumerate(raw_items):
        where = f"{path} item [{i}] (id {obj.get('id')!r})"
        _check_item(obj, benchmark, where)
        prediction, key = _prediction_of(obj, spec.prediction_keys, where)
        groups = group_values(obj, spec.groups)
        item_id = str(obj["id"]) if obj.get("id") is not None else f"[{i}]"
        if prediction is None:
            items.append(ScoredItem(item_id, None, False, groups, counted=not official_skip))
            predictions.append(dict(obj))
            continue
        keys_used[key] += 1
        items.append(ScoredItem(item_id, prediction, is_correct(prediction, obj["answer"], obj["choices"]), groups))
        predictions.append({**obj, **{k: prediction for k in spec.prediction_keys}})
    return items, predictions, keys_used


def _check_item(obj: dict, benchmark: str, where: str) -> None:
    for needed in ("answer", "choices"):
        if needed not in obj:
            raise ValueError(f"{where}: no {needed!r} field; is this a {benchmark.upper()} predictions file?")
    if not isinstance(obj["choices"], list) or not all(isinstance(c, str) for c in obj["choices"]):
        raise ValueError(f"{where}: 'choices' should be a list of strings, got {obj['choices']!r:.80}")
    if not isinstance(obj["answer"], str):
        raise ValueError(f"{where}: 'answer' should be the correct option's text, got {obj['answer']!r:.60}")


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


def _key_notes(benchmark: str, keys_used: Counter) -> list[str]:
    if benchmark == "mmau" and keys_used.get("model_prediction"):
        return [
            f"{keys_used['model_prediction']} items carry their prediction only under model_prediction; "
            "MMAU's evaluation.py reads model_output alone and would skip them (predictions.json has both keys)"
        ]
    return []


def _name_mmau_version(results: dict[str, Any], path: Path, raw_items: list[dict]) -> None:
    """Record which shipped MMAU file(s) the items match; one match names the benchmark."""
    results["matches_benchmark"] = identify_mmau(raw_items)
    if len(results["matches_benchmark"]) == 1:
        results["benchmark"] = results["matches_benchmark"][0]
    elif not results["matches_benchmark"]:
        logger.warning(
            "%s: the items match neither shipped MMAU test-mini file (%s); "
            "check which version the predictions were made on", path, ", ".join(MMAU_VERSIONS),
        )
