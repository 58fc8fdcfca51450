"""Sharded training (FSDP2 on CPU, gloo) against the replicated run, and fp32 master weights.

Two processes under torchrun, fp32 compute, a reward that varies inside every group (with the
built-in rewards a random toy's advantages are all zero and equal weights would prove nothing).
Tolerances: sharded and replicated runs reduce gradients in a different order (reduce-scatter vs
all-reduce), so they agree to float32 rounding (1e-5 absolute after the steps, 1e-4 relative on
metrics); a restored checkpoint is bit-exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harken.config import load_config
from harken.schema import GRPOConfig

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # a free port each


def length_reward(completions, examples):
    """Longer completions score higher: variance inside every group."""
    return [len(c) / 10.0 for c in completions]


def _overrides(out: Path, data: Path, *extra: str) -> list[str]:
    return [
        f"run.out_dir={out}", f"data.path={data / 'train.jsonl'}", "rollout.group_size=3", "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6", "optim.lr=1e-3", "run.max_steps=2", "run.save_every=0", "run.sample_every=1",
        "run.progress=false", "run.tensorboard=false", "reward.rewards=[{name: test_sharding:length_reward}]", *extra,
    ]


def _train(out: Path, data: Path, procs: int, *extra: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    launch = [sys.executable, "-m", "harken.cli"]
    if procs > 1:
        launch = [*TORCHRUN[:-1], str(procs), "-m", "harken.cli"]
    proc = subprocess.run([*launch, "train", "grpo", "--config", "tiny", *_overrides(out, data, *extra)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _final(run: Path) -> dict[str, torch.Tensor]:
    from transformers import Qwen2AudioForConditionalGeneration

    model, info = Qwen2AudioForConditionalGeneration.from_pretrained(run / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return {k: v.detach() for k, v in model.state_dict().items()}


def _rows(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_dir):
    """Two steps on two processes, replicated and sharded; then the sharded checkpoint restored
    on one process, and that one's checkpoint restored on two."""
    root = tmp_path_factory.mktemp("sharding")
    out = {name: root / name for name in ("ddp", "fsdp", "to1", "to2", "more")}
    logs = {"ddp": _train(out["ddp"], synth_dir, 2), "fsdp": _train(out["fsdp"], synth_dir, 2, "model.sharding=fsdp")}
    ckpt = out["fsdp"] / "checkpoints" / "step-000002"
    logs["to1"] = _train(out["to1"], synth_dir, 1, "model.sharding=fsdp", f"run.resume={ckpt}")
    logs["to2"] = _train(out["to2"], synth_dir, 2, "model.sharding=fsdp",
                         f"run.resume={out['to1'] / 'checkpoints' / 'step-000002'}")
    logs["more"] = _train(out["more"], synth_dir, 1, "model.sharding=fsdp", f"run.resume={ckpt}", "run.max_steps=4")
    return out, logs


@pytest.mark.slow
def test_sharded_run_matches_the_replicated_run(runs):
    out, _ = runs
    ddp, fsdp = _rows(out["ddp"], "metrics.jsonl"), _rows(out["fsdp"], "metrics.jsonl")
    assert [r["step"] for r in fsdp] == [1, 2]
    for a, b in zip(ddp, fsdp):
        for key in ("reward/total", "loss", "kl", "grad_norm", "advantage/std"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    completions = [[r["completion"] for r in _rows(out[k], "samples.jsonl")] for k in ("ddp", "fsdp")]
    assert completions[0] == completions[1] and len(completions[0]) == 12  # the same sampled tokens
    before = {k: v for k, v in _final(out["ddp"]).items()}
    after = _final(out["fsdp"])
    assert before.keys() == after.keys()
    for name, value in after.items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_sharding_halves_the_state_each_process_holds(runs):
    out, _ = runs
    ddp = json.loads((out["ddp"] / "run.json").read_text())["memory_bytes_per_process"]
    fsdp = json.loads((out["fsdp"] / "run.json").read_text())["memory_bytes_per_process"]
    print("per-process bytes, replicated:", ddp, "sharded over 2:", fsdp)
    for part in ("weights", "gradients", "optimizer"):
        assert 0.45 < fsdp[part] / ddp[part] < 0.55, part
    assert ddp["optimizer"] == 2 * ddp["weights"]  # AdamW's two fp32 moments


@pytest.mark.slow
def test_sharded_checkpoints_restore_exactly_on_another_number_of_processes(runs):
    out, logs = runs
    written = _final(out["fsdp"])
    for run in ("to1", "to2"):  # resumed at step 2 with max_steps=2: restore, then export
        restored = _final(out[run])
        for name, value in written.items():
            torch.testing.assert_close(restored[name], value, rtol=0, atol=0, msg=f"{run}: {name}")
    assert "written by 2 process(es), resumed on 1" in logs["to1"]
    assert "written by 1 process(es), resumed on 2" in logs["to2"]
    more = _rows(out["more"], "metrics.jsonl")  # and training goes on from there
    assert [r["step"] for r in _rows(out["fsdp"], "metrics.jsonl")] + [r["step"] for r in more] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in more)
    continued = _final(out["more"])
    assert any(not torch.equal(continued[k], v) for k, v in written.items() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni", "audio-flamingo-3", "qwen3-omni", "voxtral"])
def test_sharded_gradients_equal_one_process(tmp_path, family):
    """The same fixed rollouts: gradients gathered from two processes' shards == one unsharded process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = str(HERE / "sharded_grads.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one.pt"), family], env=env, check=True, timeout=300)
    subprocess.run([*TORCHRUN, script, str(tmp_path / "two.pt"), family, "fsdp"],
                   env=env, check=True, timeout=300, capture_output=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert torch.equal(one["ids"], two["ids"])
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 50
    assert all(g.abs().sum() > 0 for g in one["grads"].values() if g.dim() > 1)
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_bf16_compute_with_master_weights_moves_the_weights(tmp_path, synth_dir, caplog):
    """lr 1e-6 in bf16: with fp32 masters every weight that got a gradient moves; without, most do not."""
    from harken.train.grpo import GRPOTrainer

    moved = {}
    for master in ("true", "false"):
        cfg = load_config(GRPOConfig, "tiny", _overrides(tmp_path / master, synth_dir, "model.dtype=bfloat16",
                                                         f"model.master_weights={master}", "optim.lr=1e-6",
                                                         "run.max_steps=1", "run.sample_every=0"))
        trainer = GRPOTrainer(cfg)
        before = {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters() if p.requires_grad}
        grads: dict[str, torch.Tensor] = {}
        for n, p in trainer.lm.model.named_parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda q, n=n: grads.__setitem__(n, q.grad.detach().clone()))
        with caplog.at_level("WARNING", logger="harken"):
            trainer.train()
        got_grad = [n for n, g in grads.items() if g.abs().sum() > 0]
        total = sum(grads[n].ne(0).sum().item() for n in got_grad)
        changed = sum((trainer.lm.model.get_parameter(n).detach() != before[n])[grads[n] != 0].sum().item()
                      for n in got_grad)
        moved[master] = changed / total
        assert {p.dtype for p in trainer.lm.model.parameters()} == {torch.float32 if master == "true" else torch.bfloat16}
    print("fraction of weights with a gradient that moved:", moved)
    assert moved["true"] > 0.99, moved
    assert moved["false"] < 0.5, moved
    assert "model.master_weights=false" in caplog.text and "will not change" in caplog.text


def test_rounded_away_fraction_by_hand():
    """bf16 eps = 2^-7, so a weight w loses an update of lr when |w| * 2^-8 > lr: at lr 1e-3 that is |w| > 0.256."""
    from harken.train.policy import rounded_away_fraction

    w = torch.nn.Parameter(torch.tensor([0.1, 0.25, 0.3, -1.0], dtype=torch.bfloat16))
    assert rounded_away_fraction([w], 1e-3) == 0.5  # 0.3 and -1.0
    assert rounded_away_fraction([w.detach().float().requires_grad_()], 1e-3) == 0.0  # fp32: 2^-24 * 1.0 < 1e-3


def test_sharding_setting_is_checked():
    from harken.config import ConfigError

    with pytest.raises(ConfigError, match="model.sharding='zero3' is not one of: none, fsdp"):
        load_config(GRPOConfig, "tiny", ["model.sharding=zero3"])


@pytest.mark.slow
def test_sharded_sft_with_validation_matches_the_replicated_run(tmp_path, synth_dir):
    """SFT on two processes with activation checkpointing: validation and samples generate on every
    process of a sharded model (a main-process-only generation would wait forever)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    losses = {}
    for name, extra in (("ddp", []), ("fsdp", ["model.sharding=fsdp", "model.gradient_checkpointing=true"])):
        out = tmp_path / name
        cmd = [*TORCHRUN, "-m", "harken.cli", "train", "sft", "--config", "tiny-sft", f"run.out_dir={out}",
               f"data.path={synth_dir / 'train.jsonl'}", f"val.path={synth_dir / 'test.jsonl'}", "run.eval_every=2",
               "run.eval_limit=8", "run.sample_every=2", "run.max_steps=2", "run.progress=false",
               "run.tensorboard=false", *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = _rows(out, "metrics.jsonl")
        losses[name] = [r["loss"] for r in rows if "loss" in r]
        assert sum("val/accuracy" in r for r in rows) == 2  # before step 1 and at step 2
        assert (out / "samples.jsonl").exists()
    assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-5)
