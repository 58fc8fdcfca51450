"""Training on a curation: `data.filter` keeps chosen splits; `rollout.skip_zero_variance` passes over a
prompt whose group had equal rewards when last drawn, and so spends fewer rollouts on such groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harken.config import ConfigError, load_config
from harken.data.records import Example
from harken.io import read_json
from harken.schema import GRPOConfig
from harken.train.stream import DataStream


def _examples(n: int) -> list[Example]:
    return [Example(f"q{i}", f"c{i}.wav", "?", ["a", "b"], "a") for i in range(n)]


def _epoch(stream: DataStream, n: int) -> list[str]:
    return [ex.id for ex in stream.take(n)]


def test_a_marked_prompt_is_passed_over_once_and_the_state_keeps_it():
    stream = DataStream(_examples(6), seed=3)
    first = _epoch(stream, 6)
    stream.mark({"q1": True, "q4": True, "q2": False})
    state = stream.state_dict()
    assert state == {"epoch": 0, "index": 6, "skip": ["q1", "q4"]}
    second = _epoch(stream, 4)
    assert sorted(second) == ["q0", "q2", "q3", "q5"] and stream.skipped == 2
    assert sorted(_epoch(stream, 6)) == sorted(first)  # forgotten once passed over: back the epoch after
    resumed = DataStream(_examples(6), seed=3)
    resumed.load_state_dict(state)
    assert _epoch(resumed, 4) == second
    assert DataStream.rescaled(state, 2, 1)["skip"] == ["q1", "q4"]
    plain = DataStream(_examples(6), seed=3)
    assert _epoch(plain, 3) == first[:3] and plain.state_dict() == {"epoch": 0, "index": 3}  # nothing marked: as before


def _curation(tmp_path, data) -> Path:
    from harken.eval.curate import curate_dataset

    out = tmp_path / "curation"
    curate_dataset(str(data), "tiny:qwen2-audio", out, samples=2, max_new_tokens=3, batch_size=6, limit=12)
    return out


def _trainer(tmp_path, data, *overrides):
    from harken.train.grpo import GRPOTrainer

    cfg = load_config(GRPOConfig, "tiny", [
        "model.path=tiny:qwen2-audio", f"data.path={data}", f"run.out_dir={tmp_path / 'run'}", "run.progress=false",
        "run.tensorboard=false", *overrides,
    ])
    return GRPOTrainer(cfg)


def test_data_filter_trains_on_the_chosen_splits(tmp_path, synth_dir):
    data = synth_dir / "train.jsonl"
    curation = _curation(tmp_path, data)
    splits = read_json(curation / "splits.json")["splits"]
    keep = [s for s, ids in splits.items() if ids]
    trainer = _trainer(tmp_path, data, f"data.filter.curation={curation}", f"data.filter.keep=[{','.join(keep)}]")
    assert sorted(ex.id for ex in trainer.stream.examples) == sorted(i for s in keep for i in splits[s])
    empty = [s for s, ids in splits.items() if not ids]
    if empty:
        with pytest.raises(ValueError, match="data.filter keeps no item"):
            _trainer(tmp_path, data, f"data.filter.curation={curation}", f"data.filter.keep=[{empty[0]}]")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(line + "\n" for line in data.read_text().splitlines()[:20]))
    with pytest.raises(ValueError, match="was made from another file"):
        _trainer(tmp_path, other, f"data.filter.curation={curation}", f"data.filter.keep=[{keep[0]}]")
    with pytest.raises(ConfigError, match="data.filter.keep: easy is not a split"):
        load_config(GRPOConfig, "tiny", [f"data.filter.curation={curation}", "data.filter.keep=[easy]"])
    with pytest.raises(ConfigError, match="needs both"):
        load_config(GRPOConfig, "tiny", [f"data.filter.curation={curation}"])


def _zero_variance_rollouts(run_dir: Path, per_step: int) -> tuple[float, float]:
    """(completions spent on groups of equal rewards, prompts passed over) over a run's metrics."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    spent = sum(r["groups/zero_variance_frac"] * per_step for r in rows)
    return spent, sum(r.get("groups/skipped_zero_variance", 0.0) for r in rows)


def _half_hopeless(synth_dir, out: Path) -> Path:
    """24 two-choice questions; in every other one the right choice is a word the toy never says, so
    its group is all wrong (zero variance) every time it is drawn."""
    from harken.data.synth import load_split
    from harken.io import write_jsonl

    exs = [ex for ex in load_split(synth_dir, "train") if len(ex.choices) == 2][:24]
    for ex in exs[::2]:
        ex.choices = ["unheard" if c == ex.answer else c for c in ex.choices]
        ex.answer = "unheard"
    write_jsonl(out, exs)
    return out


@pytest.mark.slow
def test_filtered_runs_spend_fewer_rollouts_on_zero_variance_groups(tmp_path, synth_dir, warm_toy):
    """The warmed-up toy, accuracy reward only, a learning rate too small to change which prompts give
    equal rewards, 24 steps over 24 prompts of which half can never be answered: the same run
    unfiltered, with rollout.skip_zero_variance, and on a curation's splits without zero_variance."""
    from harken.eval.curate import SPLITS, curate_dataset
    from harken.train.grpo import train_grpo

    data = _half_hopeless(synth_dir, tmp_path / "data.jsonl")
    prompts, group, steps = 4, 4, 24
    common = [f"data.path={data}", "reward.rewards=[{name: accuracy}]", f"rollout.prompts_per_step={prompts}",
              f"rollout.group_size={group}", "rollout.max_new_tokens=8", "optim.lr=1e-8", "algo.kl_coef=0",
              f"run.max_steps={steps}", "run.save_every=0", "run.progress=false", "run.tensorboard=false",
              "run.sample_every=0"]
    curation = tmp_path / "curation"
    curate_dataset(str(data), "tiny-warm:qwen2-audio", curation, samples=group, max_new_tokens=8)
    runs = {
        "unfiltered": [],
        "rollout.skip_zero_variance": ["rollout.skip_zero_variance=true"],
        "data.filter": [f"data.filter.curation={curation}",
                        f"data.filter.keep=[{','.join(s for s in SPLITS if s != 'zero_variance')}]"],
    }
    spent = {}
    for name, extra in runs.items():
        out = tmp_path / name
        train_grpo(load_config(GRPOConfig, "tiny", common + extra + [f"run.out_dir={out}"]))
        spent[name] = _zero_variance_rollouts(out, prompts * group)
    print(f"\ncompletions spent on zero-variance groups in {steps} steps ({steps * prompts * group} completions): "
          + ", ".join(f"{name} {n:.0f}" for name, (n, _) in spent.items())
          + f"; prompts passed over by skip_zero_variance: {spent['rollout.skip_zero_variance'][1]:.0f}")
    assert spent["rollout.skip_zero_variance"][1] > 0 and spent["unfiltered"][1] == 0
    assert spent["rollout.skip_zero_variance"][0] < spent["unfiltered"][0]
    assert spent["data.filter"][0] < spent["unfiltered"][0]
