"""`harken data curate`: how much each training item needs its audio, and the splits that follow.

For every item of a training set, k completions are sampled with the clip and k without it (a
text-only prompt; or, with `without="silence"`, silence of the clip's length: for a model never
trained on prompts without audio, whose text-only answers may suffer for other reasons), each k as one group of the shared-prefix rollout path (`harken.rl.rollout.generate`:
one prompt pass per group), and scored with the training reward's accuracy rule
(`harken.rl.rewards.ACCURACY_RULES`). The pass rates `p_audio` and `p_text`, and the audio
contribution `p_audio - p_text`, sort each item into one split, the first that applies:

    text_answerable  p_text >= text_threshold: the question and choices give the answer away
    zero_variance    all k right or all k wrong with the audio: a GRPO group of equal rewards,
                     no gradient (for this model, at this temperature)
    strong_audio     p_audio - p_text >= strong_gain: the audio makes the difference
    weak_audio       the rest: some variance, little gained from the audio

It lives in `harken.eval` rather than `harken.data` because it runs a model and scores its answers
on every item (an evaluation of the training set, written like `eval run`), while `harken.data`
reads and writes datasets without a model. Training reads its splits back with `selected_ids`
(`data.filter`).

Owns: the sampling and scoring per item, the split rule (`split_of`), the folder it writes and
reading the splits back. Like `eval run`, items are appended to items.jsonl after each batch (an
interrupted run continues where it stopped; a last line cut short is dropped) and the folder refuses
other settings (run.json, `harken.eval.run.check_settings`); the thresholds are not settings: a rerun
with other thresholds re-splits the finished items without sampling again. The same seed and batch
size give the same samples.

The --out folder:
    items.jsonl       one line per item: id, task, samples, right_audio, right_text, p_audio, p_text,
                      audio_gain, a completion of each kind, and (once finished) its split
    splits.json       the dataset (path, sha256), the thresholds, and the ids of each split
    splits/NAME.jsonl each split as canonical JSON lines (clip paths absolute): a dataset to train on
    curate.json       counts per split (and per task), mean pass rates, skipped items
    curate.md         the counts as markdown tables
    pass_rates.png    histograms of p_audio, p_text and the audio contribution
    run.json          the settings the items were sampled with

Does not own: reading datasets (`harken.data.readers`), prompts without audio
(`AudioLM.encode_prompts`), sampling (`harken.rl.rollout`), the accuracy rules (`harken.rl.rewards`),
applying `data.filter` in training (`harken.train.stream`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harken import __version__
from harken.data.records import Example
from harken.io import read_appended_jsonl, read_json, write_json_atomic, write_jsonl, write_text_atomic

logger = logging.getLogger(__name__)

SPLITS = ("text_answerable", "zero_variance", "strong_audio", "weak_audio")  # in the order the rule tries them
DEFAULT_SAMPLES = 8  # k: the group size of the tiny and r1aqa presets
DEFAULT_TEXT_THRESHOLD = 0.75  # above chance for 2-4 choices even at k = 8 (a 50 % guess reaches 6/8 one time in 7)
DEFAULT_STRONG_GAIN = 0.25


@dataclass(frozen=True)
class Thresholds:
    """Where the splits part (see the module docstring)."""

    text: float = DEFAULT_TEXT_THRESHOLD  # p_text at or above: text_answerable
    strong_gain: float = DEFAULT_STRONG_GAIN  # p_audio - p_text at or above: strong_audio

    def check(self) -> "Thresholds":
        if not 0 < self.text <= 1:
            raise ValueError(f"--text-threshold must be in (0, 1], got {self.text}")
        if not 0 < self.strong_gain <= 1:
            raise ValueError(f"--strong-gain must be in (0, 1], got {self.strong_gain}")
        return self


def split_of(right_audio: int, right_text: int, samples: int, th: Thresholds) -> str:
    """The split of an item right `right_audio` of `samples` times with its clip, `right_text` without."""
    p_audio, p_text = right_audio / samples, right_text / samples
    if p_text >= th.text:
        return "text_answerable"
    if right_audio in (0, samples):
        return "zero_variance"
    return "strong_audio" if p_audio - p_text >= th.strong_gain else "weak_audio"


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def _right_counts(lm, examples: list[Example], clips: list, tmpl, rule, params, k: int, generator) -> tuple[list[int], list[str]]:
    """Per example: how many of its k sampled completions the rule scores right, and its first completion."""
    from harken.eval.answers import decode
    from harken.rl.rollout import generate

    batch = lm.encode_prompts([tmpl.render(ex) for ex in examples], clips).to(lm.device)
    texts = decode(lm, generate(lm, batch, k, params, shared=True, generator=generator))
    right = rule(texts, [ex for ex in examples for _ in range(k)], tmpl.lettered)
    return [int(sum(right[i * k : (i + 1) * k])) for i in range(len(examples))], texts[::k]


def _rows(lm, examples: list[Example], waves: list, tmpl, rule, params, k: int, generator,
          without: str) -> list[dict[str, Any]]:
    """The items.jsonl rows of one batch: a group with the clips, then a group without (`without_audio`)."""
    from harken.eval.ablation import without_audio

    with_audio, first_audio = _right_counts(lm, examples, waves, tmpl, rule, params, k, generator)
    taken = [without_audio(without, w) for w in waves]
    without_counts, first_text = _right_counts(lm, examples, taken, tmpl, rule, params, k, generator)
    return [
        {"id": ex.id, "task": ex.meta.get("task"), "samples": k, "right_audio": a, "right_text": t,
         "p_audio": a / k, "p_text": t / k, "audio_gain": (a - t) / k, "completion_audio": ca, "completion_text": ct}
        for ex, a, t, ca, ct in zip(examples, with_audio, without_counts, first_audio, first_text)
    ]


def _read_done(path: Path, known: set[str]) -> dict[str, dict]:
    """Finished items of an items.jsonl being appended to (a torn last line dropped and the file rewritten)."""
    if not path.is_file():
        return {}
    lines, torn = read_appended_jsonl(path, hint="; delete the folder to start over")
    rows = {str(row["id"]): row for _, row in lines}
    if torn:
        write_jsonl(path, rows.values())
    strangers = [i for i in rows if i not in known]
    if strangers:
        raise ValueError(f"{path}: {len(strangers)} items are not in the dataset (e.g. {strangers[0]!r})")
    return rows


def _load_batch(loader, examples: Sequence[Example], skip_bad: bool, skipped: list[dict[str, str]]):
    """(examples, waveforms) of the clips that decode; a bad clip is an error, or skipped with `skip_bad`."""
    from harken.data.audio import AudioError

    kept, waves = [], []
    for ex in examples:
        try:
            waves.append(loader.load(ex.audio))
            kept.append(ex)
        except AudioError as e:
            if not skip_bad:
                raise ValueError(f"item {ex.id}: {e} (--skip-bad skips and counts bad clips; finished items are kept)") from None
            skipped.append({"id": ex.id, "problem": str(e)})
    return kept, waves


def _sample_todo(lm, todo: list[Example], position: dict[str, int], log_path: Path, done: dict[str, dict], *,
                 tmpl, rule, params, k: int, seed: int, batch_size: int, skip_bad: bool, total: int,
                 without: str) -> list[dict[str, str]]:
    """Sample the items of `todo` batch by batch, appending each batch to the log and to `done`.

    Returns:
        The items skipped for a bad clip ({"id", "problem"}).
    """
    import torch

    from harken.data.audio import AudioLoader
    from harken.progress import Progress

    loader = AudioLoader(lm.sampling_rate, lm.window_seconds, "truncate")
    skipped: list[dict[str, str]] = []
    with open(log_path, "a", encoding="utf-8") as log, Progress(total, "curate", "item", initial=total - len(todo)) as bar:
        for start in range(0, len(todo), batch_size):
            examples, waves = _load_batch(loader, todo[start : start + batch_size], skip_bad, skipped)
            if examples:
                # Seeded by the batch's place in the dataset: a resumed run draws what an uninterrupted one would.
                generator = torch.Generator(device=lm.device).manual_seed(seed * 1_000_003 + position[examples[0].id])
                for row in _rows(lm, examples, waves, tmpl, rule, params, k, generator, without):
                    log.write(json.dumps(row, ensure_ascii=False) + "\n")
                    done[row["id"]] = row
                log.flush()
                os.fsync(log.fileno())
            bar.update(min(batch_size, len(todo) - start))
    loader.warn_long()
    return skipped


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------


def _canonical(ex: Example) -> dict[str, Any]:
    """An item as a canonical JSON line whose clip path does not depend on where the file is."""
    from harken.data.tables import is_embedded

    row = ex.to_dict()
    if not (os.path.isabs(ex.audio) or is_embedded(ex.audio)):
        row["audio"] = os.path.abspath(ex.audio)
    return row


def _summary(rows: list[dict], skipped: list[dict], th: Thresholds, settings: dict, source: dict) -> dict[str, Any]:
    counts = Counter(r["split"] for r in rows)
    by_task: dict[str, Counter] = {}
    for r in rows:
        by_task.setdefault(str(r.get("task") or "(none)"), Counter())[r["split"]] += 1
    n = max(len(rows), 1)
    return {
        "harken_version": __version__,
        "dataset": source,
        "settings": settings,
        "thresholds": {"text_threshold": th.text, "strong_gain": th.strong_gain},
        "items": len(rows),
        "counts": {s: counts.get(s, 0) for s in SPLITS},
        "counts_by_task": {t: {s: c.get(s, 0) for s in SPLITS} for t, c in sorted(by_task.items())},
        "mean": {key: round(sum(r[key] for r in rows) / n, 4) for key in ("p_audio", "p_text", "audio_gain")},
        "skipped": skipped,
    }


def curate_markdown(summary: dict[str, Any]) -> str:
    """The counts per split (and per task) as markdown, with the rule that made them."""
    th, s = summary["thresholds"], summary["settings"]
    lines = [
        f"# Curation of {Path(summary['dataset']['path']).name}: {summary['items']} items",
        "",
        f"- model `{s['model']}`, template `{s['template']}`, {s['samples']} samples with the clip and "
        f"{s['samples']} without ({'silence' if s.get('without') == 'silence' else 'a text-only prompt'}), "
        f"temperature {s['temperature']}, accuracy rule `{s['accuracy_rule']}`",
        f"- mean p_audio {summary['mean']['p_audio']:.3f}, p_text {summary['mean']['p_text']:.3f}, "
        f"audio contribution {summary['mean']['audio_gain']:.3f}",
        f"- splits, the first that applies: text_answerable p_text >= {th['text_threshold']}; zero_variance all "
        f"right or all wrong with the clip; strong_audio p_audio - p_text >= {th['strong_gain']}; weak_audio the rest",
    ]
    if summary["skipped"]:
        lines.append(f"- {len(summary['skipped'])} items skipped for a bad clip (first: {summary['skipped'][0]['id']})")
    lines += ["", "| split | items |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in summary["counts"].items()]
    lines += ["", "| task | " + " | ".join(SPLITS) + " |", "|---" + "|---:" * len(SPLITS) + "|"]
    lines += [f"| {t} | " + " | ".join(str(c[k]) for k in SPLITS) + " |" for t, c in summary["counts_by_task"].items()]
    return "\n".join(lines) + "\n"


def plot_pass_rates(rows: list[dict], th: Thresholds, path: Path) -> None:
    """Histograms of p_audio, p_text and p_audio - p_text (one bar per count of k), the text threshold and
    the strong gain dashed."""
    import math

    from harken.report.plotting import figure, save_png

    fig = figure(10.0, 3.2, constrained=True)
    axes = fig.subplots(1, 3)
    k = rows[0]["samples"] if rows else 1
    edges = [(i - 0.5) / k for i in range(k + 2)]
    for ax, key, title, mark, span in (
        (axes[0], "p_audio", "with the clip (p_audio)", None, edges),
        (axes[1], "p_text", "without it (p_text); -- text threshold", th.text, edges),
        (axes[2], "audio_gain", "p_audio - p_text; -- strong gain", th.strong_gain,
         [(i - 0.5) / k for i in range(-k, k + 2)]),
    ):
        ax.hist([r[key] for r in rows], bins=span, color="#4c72b0")
        if mark is not None:  # the left edge of the first bar at or above the threshold
            ax.axvline((math.ceil(mark * k - 1e-9) - 0.5) / k, color="gray", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("pass rate" if key != "audio_gain" else "difference")
    axes[0].set_ylabel("items")
    save_png(fig, path)


def write_splits(out: Path, rows: list[dict], examples: dict[str, Example], th: Thresholds, source: dict) -> dict[str, list[str]]:
    """splits.json and splits/NAME.jsonl (every split, empty ones too); returns the ids per split."""
    ids = {s: [r["id"] for r in rows if r["split"] == s] for s in SPLITS}
    for s, members in ids.items():
        write_jsonl(out / "splits" / f"{s}.jsonl", [_canonical(examples[i]) for i in members])
    write_json_atomic(out / "splits.json", {
        "dataset": source, "thresholds": {"text_threshold": th.text, "strong_gain": th.strong_gain}, "splits": ids,
    })
    return ids


def curate_dataset(
    data: str,
    model: str,
    out: str | os.PathLike,
    *,
    format: str = "canonical",
    audio_root: str | None = None,
    fields: dict[str, str] | None = None,
    adapter: str | None = None,
    template: str | None = None,
    samples: int = DEFAULT_SAMPLES,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    accuracy_rule: str = "exact",
    without: str = "none",
    seed: int = 0,
    batch_size: int = 8,
    text_threshold: float = DEFAULT_TEXT_THRESHOLD,
    strong_gain: float = DEFAULT_STRONG_GAIN,
    limit: int | None = None,
    skip_bad: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
) -> dict[str, Any]:
    """Sample every item with and without its clip, write pass rates, splits and a report (see the module docstring).

    Args:
        data, format, audio_root, fields: the training set, read as `data.path`, `data.format`,
            `data.audio_root`, `data.fields` read it in training.
        model, adapter, template: the policy (template None: the one it was trained on, else prompt2).
        samples: k, completions per item in each group (as `rollout.group_size`).
        max_new_tokens, temperature: sampling, as `rollout.max_new_tokens` and `rollout.temperature`.
        accuracy_rule: the training reward's rule (`reward.accuracy_rule`: exact, benchmark, r1aqa).
        without: what the second group hears (`harken.eval.ablation.WITHOUT_AUDIO`): none, a
            text-only prompt; silence, zeros of the clip's length.
        seed: sampling seed. batch_size: items per generation call (2 groups of k rows each).
        text_threshold, strong_gain: where the splits part (`Thresholds`).
        limit: only the first N items. skip_bad: skip (and report) items whose clip is missing or
            does not decode, instead of stopping.

    Returns:
        The summary also written to curate.json.
    """
    from harken.data.prompts import get_template
    from harken.data.readers import DatasetConfig, load_dataset
    from harken.eval.run import check_settings, resolved_path, template_for
    from harken.rl.rewards import ACCURACY_RULES
    from harken.rl.rollout import SamplingParams

    from harken.eval.ablation import WITHOUT_AUDIO

    th = Thresholds(text_threshold, strong_gain).check()
    _check_options(samples, max_new_tokens, temperature, batch_size, limit, accuracy_rule, ACCURACY_RULES)
    if without not in WITHOUT_AUDIO:
        raise ValueError(f"--without {without!r} is not one of: {', '.join(WITHOUT_AUDIO)}")
    ds = load_dataset(DatasetConfig(path=data, format=format, audio_root=audio_root, fields=dict(fields or {})))
    examples = list(ds)[:limit] if limit else list(ds)
    missing = _missing(examples, skip_bad)
    template = template_for(model, adapter, template)
    tmpl = get_template(template)
    out = Path(out)
    source = {"path": ds.source["path"], "sha256": ds.source["sha256"], "format": ds.source["format"]}
    settings = {
        "data": ds.source["path"], "data_sha256": ds.source["sha256"], "format": format,
        **({"fields": dict(fields)} if fields else {}),
        "model": resolved_path(model), "adapter": resolved_path(adapter), "template": template, "samples": samples,
        "max_new_tokens": max_new_tokens, "temperature": temperature, "accuracy_rule": accuracy_rule, "seed": seed,
        **({"without": without} if without != "none" else {}),
    }
    invocation = {"harken_version": __version__, "audio_root": ds.source.get("audio_root"), "batch_size": batch_size,
                  "limit": limit, "skip_bad": skip_bad, "device": device, "dtype": dtype,
                  "text_threshold": th.text, "strong_gain": th.strong_gain}
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings, invocation, what="a curation", command="harken data curate",
                   defaults={"without": "none"})

    log_path = out / "items.jsonl"
    done = _read_done(log_path, {ex.id for ex in ds})
    todo = [ex for ex in examples if ex.id not in done and ex.id not in missing]
    skipped = [{"id": ex_id, "problem": problem} for ex_id, problem in missing.items()]
    if todo:
        lm = _load_model(model, adapter, dtype, device)
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
        skipped += _sample_todo(lm, todo, {ex.id: i for i, ex in enumerate(examples)}, log_path, done,
                                tmpl=tmpl, rule=ACCURACY_RULES[accuracy_rule], params=params, k=samples, seed=seed,
                                batch_size=batch_size, skip_bad=skip_bad, total=len(examples) - len(missing),
                                without=without)
    rows = [{**done[ex.id], "split": split_of(done[ex.id]["right_audio"], done[ex.id]["right_text"], samples, th)}
            for ex in examples if ex.id in done]
    write_jsonl(log_path, rows)
    write_splits(out, rows, {ex.id: ex for ex in examples}, th, source)
    summary = _summary(rows, skipped, th, settings, source)
    write_json_atomic(out / "curate.json", summary)
    write_text_atomic(out / "curate.md", curate_markdown(summary))
    plot_pass_rates(rows, th, out / "pass_rates.png")
    return summary


def _check_options(samples, max_new_tokens, temperature, batch_size, limit, rule, rules) -> None:
    for name, value in (("--samples", samples), ("--max-new-tokens", max_new_tokens), ("--batch-size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if samples < 2:
        raise ValueError(f"--samples must be at least 2 (a group's variance needs two completions), got {samples}")
    if not temperature > 0:
        raise ValueError(f"--temperature must be greater than 0 (the groups are sampled), got {temperature}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if rule not in rules:
        raise ValueError(f"--accuracy-rule {rule!r} is not one of: {', '.join(rules)}")


def _missing(examples: Sequence[Example], skip_bad: bool) -> dict[str, str]:
    """id -> problem of the items whose clip file is not there; an error (before a model is loaded) unless `skip_bad`."""
    from harken.data.audio import clip_exists

    missing = {ex.id: f"clip not found: {ex.audio}" for ex in examples if not clip_exists(ex.audio)}
    if missing and not skip_bad:
        first = next(iter(missing.items()))
        raise ValueError(f"{len(missing)} of {len(examples)} clips are missing (first: item {first[0]}, {first[1]}); "
                         "fix the paths (--audio-root), or pass --skip-bad to curate the rest")
    return missing


def _load_model(model: str, adapter: str | None, dtype: str, device: str):
    from harken.models.loading import load_audio_lm
    from harken.progress import quiet_library_bars

    quiet_library_bars()
    lm = load_audio_lm(model, adapter=adapter, dtype=dtype, device=device)
    lm.model.eval()  # dropout off, as in the rollouts of training (algo.dropout=false)
    return lm


# ---------------------------------------------------------------------------------------------
# Reading the splits back (data.filter)
# ---------------------------------------------------------------------------------------------


def selected_ids(folder: str | os.PathLike, keep: Sequence[str], dataset_sha256: str | None = None) -> set[str]:
    """The ids of the `keep` splits of a curation folder (its splits.json).

    Args:
        dataset_sha256: the training set's; a curation of another file is an error.
    """
    path = Path(folder) / "splits.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: data.filter.curation should be the --out folder of `harken data curate`")
    unknown = [s for s in keep if s not in SPLITS]
    if unknown:
        raise ValueError(f"data.filter.keep: {', '.join(unknown)} is not a split; the splits are: {', '.join(SPLITS)}")
    saved = read_json(path)
    if dataset_sha256 is not None and saved["dataset"]["sha256"] != dataset_sha256:
        raise ValueError(f"{path} was made from another file ({saved['dataset']['path']}, sha256 "
                         f"{saved['dataset']['sha256'][:12]}) than the training set (sha256 {dataset_sha256[:12]})")
    return {i for s in keep for i in saved["splits"][s]}
