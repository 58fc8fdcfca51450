"""`harken eval run`: a model's greedy answers to a benchmark, scored into an evaluation folder.

Owns: checking every clip before a model is loaded, generating in batches and appending each
finished batch to items.jsonl (so an interrupted run continues where it stopped), refusing to
mix the results of different settings in one folder (run.json, `check_settings`, which
`harken data curate` shares), and the final pass that scores every finished item from its raw
output with coverage (missing and unreadable clips). The audio mode (`--audio`: the clip, none,
silence, another item's clip; `harken.eval.ablation`) is one of the settings.

Does not own: the benchmarks' specs and files (`harken.eval.benchmarks`), the correctness rule
and answer extraction (`harken.eval.scoring`), the evaluation folder and its tables
(`harken.eval.results`), decoding audio (`harken.data.audio`), loading models and generating
text (`harken.models`, `harken.eval.answers`).

Scoring is always the official rule (`harken.eval.scoring.is_correct`) on the answer extracted
from the model's raw output (`extract_answer`: the first <answer> tag, else the whole output).
A benchmark file without answers (a test split) gets its predictions and no accuracy: results.json
says why (`no_accuracy`), and predictions.json is the file to submit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from harken import __version__
from harken.data.benchmarks import MMAU_VERSIONS
from harken.data.records import Example
from harken.eval.ablation import Hearing, check_mode, donor_clips
from harken.eval.benchmarks import Benchmark, load_benchmark
from harken.eval.results import FIRST_IDS, ScoredItem, group_values, new_results, summarize, write_outputs
from harken.eval.scoring import extract_answer, is_correct
from harken.io import read_appended_jsonl, read_json, write_json_atomic, write_jsonl

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "prompt2"  # the paper's best, for models trained elsewhere

# Seams: the model layer is reached only through these three functions, so tests can run the
# whole command with a fake model.


def _load_model(model: str, adapter: str | None, dtype: str, device: str):
    from harken.models.loading import load_audio_lm
    from harken.progress import quiet_library_bars

    quiet_library_bars()
    return load_audio_lm(model, adapter=adapter, dtype=dtype, device=device)


def _generate(lm, examples: list[Example], template, audio: list, max_new_tokens: int) -> list[str]:
    from harken.eval.answers import generate_texts

    return generate_texts(lm, examples, template, audio, max_new_tokens=max_new_tokens, greedy=True)


def _audio_loader(lm):
    from harken.data.audio import AudioLoader

    # Cut at the encoder's window: the feature extractor would cut there anyway, and decoding
    # an hour-long clip only to drop it wastes time and memory.
    return AudioLoader(lm.sampling_rate, lm.window_seconds, "truncate")


def template_for(model: str, adapter: str | None, explicit: str | None) -> str:
    """The explicit template, else the one the model (or adapter) was trained on, else prompt2."""
    from harken.models.trained_with import choose_template, read_training_settings

    local = [p for p in (adapter, model) if p and os.path.isdir(p)]
    trained = read_training_settings(*local)
    template, warning = choose_template(explicit, trained, DEFAULT_TEMPLATE)
    if warning:
        logger.warning(warning)
    elif explicit is None and trained.get("template"):
        logger.info("prompt template %s: the one the model was trained on", template)
    return template


def resolved_path(path: str | None) -> str | None:
    """Local paths made absolute (so that reruns from another folder match); hub ids kept."""
    if path is None:
        return None
    return str(Path(path).resolve()) if os.path.exists(path) else path


def _check_numbers(max_new_tokens: int, batch_size: int, limit: int | None) -> None:
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")


def _missing_clips(selection: Sequence[Example], bench: Benchmark, skip_missing: bool) -> list[Example]:
    """The items whose clip file (or table, for an embedded clip) does not exist; an error unless `skip_missing`."""
    from harken.data.audio import clip_exists

    missing = [ex for ex in selection if not clip_exists(ex.audio)]
    if missing and not skip_missing:
        listed = "\n".join(f"  {ex.id}: {ex.audio}" for ex in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        hint = " (--audio-root should be the folder that holds test-mini-audios/)" if bench.name in MMAU_VERSIONS else ""
        raise ValueError(
            f"{len(missing)} of {len(selection)} clips are missing{hint}:\n{listed}{more}\n"
            "Fix the paths, or pass --skip-missing to evaluate the rest and report the coverage."
        )
    return missing


def check_settings(out: Path, settings: dict[str, Any], invocation: dict[str, Any], what: str = "an evaluation",
                   command: str = "harken eval run", defaults: dict[str, Any] | None = None) -> None:
    """Save run.json, or refuse when `out` holds a run (`what`, made by `command`) with other settings.

    `defaults`: the value of a setting left out of `settings` when it has its default (so that
    folders made before the setting existed still match).
    """
    run_json = out / "run.json"
    if run_json.is_file():
        previous = read_json(run_json).get("settings", {})
        defaults = defaults or {}
        old, new = {**defaults, **previous}, {**defaults, **settings}
        diffs = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                 if old.get(k) != new.get(k)]
        if diffs:
            raise ValueError(
                f"{out} holds {what} made with other settings ({'; '.join(diffs)}); "
                "results would be mixed. Use another --out, or delete that folder to start over."
            )
    elif (out / "items.jsonl").is_file():
        raise ValueError(
            f"{out} holds items.jsonl but no run.json (e.g. the output of `harken eval score`); "
            f"use another --out for `{command}`."
        )
    write_json_atomic(run_json, {"settings": settings, "last_invocation": invocation})


def _read_log(path: Path, bench: Benchmark) -> dict[str, dict]:
    """Finished items (id -> row) from an items.jsonl being appended to.

    A last line cut short by a crash is dropped and the file rewritten without it (its item is
    simply generated again); a malformed line anywhere else is an error, and so is an item that
    is not in the benchmark.
    """
    if not path.is_file():
        return {}
    lines, torn = read_appended_jsonl(path, hint="; delete the folder to start over")
    rows = {str(row["id"]): row for _, row in lines}
    if torn:
        write_jsonl(path, rows.values())
    known = {ex.id for ex in bench.examples}
    strangers = [i for i in rows if i not in known]
    if strangers:
        raise ValueError(f"{path}: {len(strangers)} items are not in {bench.source['name']} (e.g. {strangers[0]!r})")
    return rows


def _load_clips(hearing: Hearing, examples: Sequence[Example], skip_missing: bool, unreadable: list[dict[str, str]],
                bar):
    """(examples, waveforms) of the clips that decode (None for each with `--audio none`); the
    others are errors or, with `skip_missing`, added to `unreadable` and counted on the progress
    (`harken.progress.Progress`)."""
    from harken.data.audio import AudioError

    batch, audio = [], []
    for ex in examples:
        try:
            audio.append(hearing.clip(ex))
            batch.append(ex)
        except AudioError as e:
            if not skip_missing:
                raise ValueError(f"item {ex.id}: {e} (--skip-missing evaluates the rest; finished items are kept)") from None
            unreadable.append({"id": ex.id, "problem": str(e)})
            bar.update(1)
    return batch, audio


def _scored(ex: Example, pred: str | None, groups: Sequence[str], raw: str | None) -> ScoredItem:
    """An item judged by the official rule; without an answer (a test split) it is left unjudged."""
    if ex.answer is None:
        return ScoredItem(ex.id, pred, None, group_values(ex.meta, groups), counted=False, raw_output=raw)
    return ScoredItem(ex.id, pred, is_correct(pred, ex.answer, ex.choices), group_values(ex.meta, groups), raw_output=raw)


def _answer_batch(lm, batch: list[Example], audio: list, tmpl, max_new_tokens: int, groups: Sequence[str]) -> list[dict]:
    """Generate for one batch and score it: the rows for items.jsonl."""
    outputs = _generate(lm, batch, tmpl, audio, max_new_tokens)
    if len(outputs) != len(batch):
        raise RuntimeError(f"generation returned {len(outputs)} outputs for {len(batch)} prompts")
    return [
        _scored(ex, extract_answer(raw, ex.choices, tmpl.lettered), groups, raw).to_row() for ex, raw in zip(batch, outputs)
    ]


def _generate_todo(lm, todo: list[Example], bench: Benchmark, tmpl, log_path: Path, done: dict[str, dict],
                   n_target: int, *, batch_size: int, max_new_tokens: int, skip_missing: bool,
                   audio: str) -> list[dict[str, str]]:
    """Answer the items of `todo`, appending each batch to the log and to `done`.

    Returns:
        The unreadable clips ({"id", "problem"}) skipped with `skip_missing`.
    """
    from harken.progress import Progress

    loader = _audio_loader(lm)
    hearing = Hearing(audio, bench.examples, loader.load)
    unreadable: list[dict[str, str]] = []
    with open(log_path, "a", encoding="utf-8") as log, Progress(
        n_target, f"eval {bench.name}", "item", initial=n_target - len(todo)
    ) as bar:
        for start in range(0, len(todo), batch_size):
            batch, clips = _load_clips(hearing, todo[start : start + batch_size], skip_missing, unreadable, bar)
            if not batch:
                continue
            for row in _answer_batch(lm, batch, clips, tmpl, max_new_tokens, bench.groups):
                log.write(json.dumps(row, ensure_ascii=False) + "\n")
                done[row["id"]] = row
            # One flush per batch: a crash loses at most the batch being generated.
            log.flush()
            os.fsync(log.fileno())
            bar.update(len(batch))
    loader.warn_long()
    return unreadable


def _final_items(
    selection: Sequence[Example], done: dict[str, dict], bench: Benchmark, tmpl
) -> tuple[list[ScoredItem], list[dict]]:
    """Every finished item scored from its raw output, and the items of predictions.json.

    The numbers never depend on which invocation produced which item.
    """
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
        items.append(_scored(ex, pred, bench.groups, raw))
        predictions.append({**own, **{k: pred for k in bench.spec.prediction_keys}})
    return items, predictions


def _coverage(items: list[ScoredItem], selection: Sequence[Example], bench: Benchmark,
              missing: list[Example], unreadable: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "evaluated": len(items),
        "total": len(selection),
        "benchmark_items": len(bench.examples),
        "percent": round(100.0 * len(items) / len(selection), 4),
        "missing_audio": len(missing),
        "first_missing_ids": [ex.id for ex in missing[:FIRST_IDS]],
        "unreadable_audio": unreadable,
    }


def _no_accuracy_line(bench: Benchmark, n: int) -> str:
    """Why a test split gets no accuracy, and what to do with its predictions."""
    keys = " and ".join(bench.spec.prediction_keys)
    where = f"ready to submit to {bench.spec.submission}" if bench.spec.submission else "for whoever holds the answers"
    return (f"no accuracy: the {n} items have no answers (a test split); "
            f"predictions.json holds each prediction under {keys}, {where}")


def run_benchmark(
    benchmark: str,
    model: str,
    out: str | os.PathLike,
    *,
    data: str | None = None,
    audio_root: str | None = None,
    template: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    adapter: str | None = None,
    skip_missing: bool = False,
    limit: int | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    fields: dict[str, str] | None = None,
    audio: str = "real",
) -> dict[str, Any]:
    """Generate greedy answers for a benchmark, score them, write an evaluation folder.

    Every clip is checked for existence before any generation. Items are appended to
    `out/items.jsonl` after each batch, so an interrupted run continues where it stopped when
    started again with the same settings.

    Args:
        benchmark: mmau-test-mini (v05.15.25), mmau-test-mini-v2503 (the paper's), or mmau, mmar,
            jsonl with `data`.
        model: checkpoint folder (or cached hub id) for `harken.models.loading.load_audio_lm`.
        out: evaluation folder (see `harken.eval.results`).
        data: the dataset file or table for mmau / mmar / jsonl (the test-mini names use the
            shipped metadata). Without answers in it, predictions only (`no_accuracy`).
        audio_root: folder relative clip paths are joined to (MMAU: the folder that holds
            test-mini-audios/); default with `data`: the data file's folder.
        template: prompt template name (`harken.data.prompts`); None: the template the model was
            trained on (its folder's `harken.json`, written by `harken train`), else prompt2.
        max_new_tokens: generation budget per answer.
        batch_size: items per generation call.
        adapter: optional LoRA adapter folder.
        skip_missing: evaluate the items whose clip exists (or decodes) and report the coverage,
            instead of stopping.
        limit: evaluate only the first N items of the benchmark.
        device, dtype: where and in what precision the model runs.
        fields: canonical name -> the data's key (mmau, mmar, jsonl), as `data.fields`.
        audio: what the model hears (`harken.eval.ablation.AUDIO_MODES`): real (the clip), none (a
            text-only prompt; no clip is read, so none needs to exist), silence (zeros of the
            clip's length), shuffled (another item's clip). A setting of the folder, like the model.

    Returns:
        The results dict also written to `out/results.json`.
    """
    from harken.data.prompts import get_template

    _check_numbers(max_new_tokens, batch_size, limit)
    check_mode(audio)
    template = template_for(model, adapter, template)
    tmpl = get_template(template)
    out = Path(out)
    bench = load_benchmark(benchmark, data, audio_root, fields)
    selection = bench.examples[:limit] if limit else bench.examples
    # Clips first: a missing clip should stop the run before a model is even loaded. The clips
    # checked are the ones heard: none without audio, the donors' when shuffled.
    heard = selection
    if audio == "shuffled":
        donors = donor_clips(bench.examples)
        heard = [dataclasses.replace(ex, audio=donors[ex.audio]) for ex in selection]
    missing = _missing_clips(heard, bench, skip_missing) if audio != "none" else []

    settings = {
        "benchmark": benchmark,
        "benchmark_file": bench.source["name"],
        "benchmark_sha256": bench.source["sha256"],
        "model": resolved_path(model),
        "adapter": resolved_path(adapter),
        "template": template,
        "max_new_tokens": max_new_tokens,
        **({"fields": dict(fields)} if fields else {}),
        **({"audio": audio} if audio != "real" else {}),  # a folder made before --audio existed is real
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
    check_settings(out, settings, invocation, defaults={"audio": "real"})

    log_path = out / "items.jsonl"
    done = _read_log(log_path, bench)
    missing_ids = {ex.id for ex in missing}
    todo = [ex for ex in selection if ex.id not in done and ex.id not in missing_ids]
    n_target = len(selection) - len(missing_ids)
    if done:
        logger.info("%s: %d items already done, %d to go", log_path, n_target - len(todo), len(todo))
    unreadable: list[dict[str, str]] = []
    if todo:
        lm = _load_model(model, adapter, dtype, device)
        unreadable = _generate_todo(lm, todo, bench, tmpl, log_path, done, n_target, batch_size=batch_size,
                                    max_new_tokens=max_new_tokens, skip_missing=skip_missing, audio=audio)

    items, predictions = _final_items(selection, done, bench, tmpl)
    source = f"extract_answer on the raw output (first <answer> tag, else the whole output; template {template}" + (
        ", letters mapped to options)" if tmpl.lettered else ")"
    )
    file = {"name": bench.source["name"], "path": bench.source["path"], "sha256": bench.source["sha256"]}
    results = new_results("run", benchmark, file, source, items, run={**settings, **invocation, "audio": audio})
    results["coverage"] = _coverage(items, selection, bench, missing, unreadable)
    if bench.unanswered:
        results["no_accuracy"] = _no_accuracy_line(bench, len(selection))
    results.update(summarize(items, bench.groups))
    write_outputs(out, results, items, predictions)
    return results
