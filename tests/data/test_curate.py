"""`harken data curate`: the split rule, the folder (resumable, atomic, re-split without sampling) and,
on a toy model taught to read a leak planted in the question text, finding the leaky items."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import harken.eval.curate as cur
from harken.cli import main
from harken.data.readers import read_dataset
from harken.eval.curate import SPLITS, Thresholds, curate_dataset, split_of
from harken.io import read_json


def test_split_rule_takes_the_first_that_applies():
    th = Thresholds(text=0.75, strong_gain=0.25)
    assert split_of(8, 6, 8, th) == "text_answerable"  # p_text 0.75, even with all right with the clip
    assert split_of(0, 7, 8, th) == "text_answerable"
    assert split_of(8, 5, 8, th) == "zero_variance"
    assert split_of(0, 0, 8, th) == "zero_variance"
    assert split_of(5, 3, 8, th) == "strong_audio"  # 0.625 - 0.375 = 0.25
    assert split_of(4, 3, 8, th) == "weak_audio"
    assert split_of(1, 4, 8, th) == "weak_audio"  # the clip hurts: weak
    with pytest.raises(ValueError, match="--text-threshold"):
        Thresholds(text=0).check()


def _items(out):
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]


def _curate(data, out, **kw):
    kw = {"samples": 2, "max_new_tokens": 3, "batch_size": 3, **kw}
    return curate_dataset(str(data), "tiny:qwen2-audio", out, **kw)


def test_curate_folder_resumes_as_if_uninterrupted_and_resplits_without_sampling(tmp_path, synth_dir, monkeypatch):
    data = synth_dir / "train.jsonl"
    straight = tmp_path / "straight"
    assert main(["data", "curate", "--data", str(data), "--model", "tiny:qwen2-audio", "--out", str(straight),
                 "--samples", "2", "--max-new-tokens", "3", "--batch-size", "3", "--limit", "6"]) == 0
    rows = _items(straight)
    assert [r["id"] for r in rows] == [f"synth-train-{i:06d}" for i in range(6)]
    for r in rows:
        assert r["p_audio"] == r["right_audio"] / 2 and r["p_text"] == r["right_text"] / 2
        assert r["audio_gain"] == r["p_audio"] - r["p_text"] and r["split"] in SPLITS

    resumed = tmp_path / "resumed"
    _curate(data, resumed, limit=3)
    with open(resumed / "items.jsonl", "a") as f:
        f.write('{"id": "synth-train-0000')  # a write cut short by a crash
    _curate(data, resumed, limit=6)
    assert _items(resumed) == rows  # seeded per batch: the same samples as without the interruption

    splits = read_json(straight / "splits.json")
    assert sorted(i for s in SPLITS for i in splits["splits"][s]) == [r["id"] for r in rows]
    for s in SPLITS:  # each split is a dataset harken reads, clips included
        members = splits["splits"][s]
        if members:
            ds = read_dataset(straight / "splits" / f"{s}.jsonl", check_audio=True)
            assert [ex.id for ex in ds] == members
    summary = read_json(straight / "curate.json")
    assert sum(summary["counts"].values()) == 6 and "| split | items |" in (straight / "curate.md").read_text()
    assert (straight / "pass_rates.png").read_bytes()[:4] == b"\x89PNG"

    def no_model(*a, **k):
        raise AssertionError("a finished curation is re-split without loading the model")

    monkeypatch.setattr(cur, "_load_model", no_model)
    everything = _curate(data, straight, limit=6, text_threshold=0.01)
    assert everything["counts"]["text_answerable"] == sum(r["right_text"] > 0 for r in rows)
    with pytest.raises(ValueError, match=r"holds a curation made with other settings \(samples: 2 there, 3 now\)"):
        _curate(data, straight, limit=6, samples=3)


# ---------------------------------------------------------------------------------------------
# A planted leak, found
# ---------------------------------------------------------------------------------------------


def _with_hints(examples, leaky_every: int):
    """Every question gets a hint naming one of its choices: the answer on every `leaky_every`-th item
    (the planted leak), a wrong choice on the others (so the hint sentence alone gives nothing away).
    Returns the ids of the leaky items."""
    leaky = set()
    for i, ex in enumerate(examples):
        named = ex.answer if i % leaky_every == 0 else [c for c in ex.choices if c != ex.answer][i % (len(ex.choices) - 1)]
        ex.question = f"{ex.question} Hint: {named}."
        if named == ex.answer:
            leaky.add(ex.id)
    return leaky


def _teach_the_leak(lm, examples, steps: int, batch: int = 16, lr: float = 3e-3, seed: int = 0):
    """A short SFT, text-only prompts (the leak is in the text), with the SFT step's own pieces."""
    from harken.data.prompts import get_template
    from harken.rl.rollout import token_logprobs
    from harken.train.sft import build_sft_batch, sft_loss, target_logits

    tmpl = get_template("prompt2")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(lm.model.parameters(), lr=lr)
    lm.model.train()
    for _ in range(steps):
        b = build_sft_batch(lm, tmpl, [examples[i] for i in rng.choice(len(examples), batch, replace=False)],
                            [None] * batch)
        loss = sft_loss(token_logprobs(target_logits(lm, b), b.target_ids), b.target_mask, b.num_target_tokens)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
        opt.step()
    lm.model.eval()
    return float(loss)


@pytest.mark.slow
def test_curation_finds_a_leak_planted_in_the_question_text(tmp_path, warm_toy):
    """The warmed-up toy is taught, on leaky questions of the warm-up split, to answer with the word its
    hint names; the training split has the leak planted in a third of its items and a hint naming a
    wrong choice in the others. The curation must find the leaky third from p_text alone."""
    from harken.data.synth import load_split, make_synthetic
    from harken.io import write_jsonl
    from harken.models.loading import load_audio_lm, save_audio_lm

    data = tmp_path / "synth"
    make_synthetic(data, seed=0, n_train=96, n_test=0, n_warmup=384, skills="count,timbre")
    teach = load_split(data, "warmup")
    _with_hints(teach, leaky_every=1)
    train = load_split(data, "train")
    leaky = _with_hints(train, leaky_every=3)
    write_jsonl(data / "leaky.jsonl", train)

    lm = load_audio_lm(str(warm_toy))
    loss = _teach_the_leak(lm, teach, steps=200)
    save_audio_lm(lm, tmp_path / "leak-reader")
    summary = curate_dataset(str(data / "leaky.jsonl"), str(tmp_path / "leak-reader"), tmp_path / "curation",
                             samples=8, max_new_tokens=8, batch_size=16, text_threshold=0.75)
    found = set(read_json(tmp_path / "curation" / "splits.json")["splits"]["text_answerable"])
    precision = len(found & leaky) / max(len(found), 1)
    recall = len(found & leaky) / len(leaky)
    print(f"\nleak planted in {len(leaky)} of {len(train)} items; SFT loss {loss:.4f}; text_answerable "
          f"{len(found)}: precision {precision:.3f}, recall {recall:.3f}; counts {summary['counts']}")
    assert precision >= 0.9 and recall >= 0.9
