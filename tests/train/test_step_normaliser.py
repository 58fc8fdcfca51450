"""Step-wide loss normalisers: one step's gradient does not depend on how its prompts are split.

On fixed completions (step_grads.py: 4 prompts x G = 3, ragged, one prompt's completions all
truncated), for every `algo.loss_agg`, with and without `rollout.mask_truncated`: the gradient of
the step processed as 1 x 4, 2 x 2 or 4 x 1 accumulation micro-steps on one process, and as 1 x 2
or 2 x 1 on each of two processes (torchrun, gloo), is the same. Tolerance: float32 rounding (the
splits pad prompts differently and sum in another order), 1e-4 of each gradient's largest entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harken.rl.algorithm import LOSS_AGGREGATIONS
from step_grads import make_trainer, step_grads

HERE = Path(__file__).parent
SPLITS = {"1x4": [[0, 1, 2, 3]], "2x2": [[0, 1], [2, 3]], "4x1": [[0], [1], [2], [3]]}
CASES = [(agg, masked) for agg in LOSS_AGGREGATIONS for masked in (False, True)]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str, rtol: float = 1e-4) -> None:
    assert a.keys() == b.keys() and a, what
    for name in a:
        scale = b[name].abs().max().clamp_min(1e-12)
        err = float((a[name] - b[name]).abs().max() / scale)
        assert err < rtol, f"{what}: {name} differs by {err:.2e} of its largest entry"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, synth_dir):
    """{(loss_agg, mask_truncated, split): gradient} on one process."""
    trainer = make_trainer(tmp_path_factory.mktemp("step1"), synth_dir / "train.jsonl")
    out = {}
    for agg, masked in CASES:
        trainer.cfg.algo.loss_agg, trainer.cfg.rollout.mask_truncated = agg, masked
        for name, split in SPLITS.items():
            out[(agg, masked, name)] = step_grads(trainer, split)
    return out


@pytest.mark.parametrize("agg, masked", CASES)
def test_accumulation_split_does_not_change_the_gradient(one_process, agg, masked):
    whole = one_process[(agg, masked, "1x4")]
    for name in ("2x2", "4x1"):
        _assert_same(one_process[(agg, masked, name)], whole, f"{agg} mask_truncated={masked} {name}")


def test_the_splits_really_differ_in_their_counts(tmp_path, synth_dir):
    """The fixed completions make per-micro-step normalisers wrong: per-part counts are unequal."""
    from harken.rl.algorithm import normaliser_count
    from step_grads import ENDS, G, T

    trainer = make_trainer(tmp_path, synth_dir / "train.jsonl", "rollout.mask_truncated=true")
    mask = torch.tensor([[t <= e for t in range(T)] if e < T else [False] * T for e in ENDS])
    for agg in ("token_mean", "seq_mean_token_mean"):
        counts = {normaliser_count(mask[i * G:(i + 1) * G], agg) for i in range(4)}
        assert len(counts) > 1 and 0.0 in counts, agg
    assert trainer.cfg.rollout.mask_truncated


@pytest.mark.slow
def test_two_processes_give_the_one_process_gradient(tmp_path, synth_dir, one_process):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    out = tmp_path / "grads.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "step_grads.py"), str(out), str(synth_dir / "train.jsonl"), str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(out)
    assert len(two) == 2 * len(CASES)
    for (agg, masked, name), grads in two.items():
        _assert_same(grads, one_process[(agg, masked, "1x4")], f"2 processes {name}: {agg} mask_truncated={masked}")
