"""End-to-end GRPO runs on toy models: finite losses, parameters move (or stay frozen), resume,
user rewards, dynamic sampling, several processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harken.config import load_config
from harken.schema import GRPOConfig


def length_reward(completions, examples):
    """Test reward with variance inside every group: longer completions score higher."""
    return [len(c) / 10.0 for c in completions]


def bad_reward(completions, examples):
    return ["high"] * len(completions)


def _cfg(tmp_path, *overrides, data=None):
    base = [
        f"run.out_dir={tmp_path}",
        f"data.path={data}",
        "rollout.group_size=3",
        "rollout.prompts_per_step=2",
        "rollout.max_new_tokens=6",
        "optim.lr=1e-3",
        "run.max_steps=2",
        "run.save_every=0",
        "run.progress=false",
        "run.tensorboard=false",
        "reward.rewards=[{name: test_grpo:length_reward, weight: 1.0}, {name: format, weight: 1.0}]",
    ]
    return load_config(GRPOConfig, "tiny", base + list(overrides))


def _run(cfg):
    from harken.train.grpo import GRPOTrainer

    trainer = GRPOTrainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters()}
    trainer.train()
    after = dict(trainer.lm.model.named_parameters())
    return trainer, before, after


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni"])
def test_two_steps_move_every_trainable_parameter(tmp_path, synth_dir, family):
    cfg = _cfg(tmp_path, f"model.path=tiny:{family}", data=synth_dir / "train.jsonl")
    trainer, before, after = _run(cfg)
    rows = _metrics(tmp_path)
    assert len(rows) == 2
    for r in rows:
        assert all(v is None or abs(v) < float("inf") for v in r.values() if isinstance(v, float))
        assert r["loss"] is not None and r["reward/test_grpo:length_reward"] > 0
    trainable = [n for n, p in trainer.lm.model.named_parameters() if p.requires_grad]
    assert trainable
    unchanged = [n for n in trainable if torch.equal(before[n], after[n].detach())]
    assert unchanged == []
    frozen = [n for n, p in trainer.lm.model.named_parameters() if not p.requires_grad]
    assert all(torch.equal(before[n], after[n].detach()) for n in frozen)
    # The final model is a plain transformers folder.
    from harken.models.loading import load_audio_lm

    lm = load_audio_lm(str(tmp_path / "final"))
    assert lm.family.name == family


def test_frozen_encoder_stays_fixed(tmp_path, synth_dir):
    cfg = _cfg(tmp_path, "model.freeze_encoder=true", data=synth_dir / "train.jsonl")
    trainer, before, after = _run(cfg)
    enc = [n for n in before if n.startswith("model.audio_tower.")]
    assert enc and all(torch.equal(before[n], after[n].detach()) for n in enc)
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"].detach())
    assert not torch.equal(before["model.multi_modal_projector.linear.weight"],
                           after["model.multi_modal_projector.linear.weight"].detach())


def test_lora_changes_only_adapter(tmp_path, synth_dir):
    cfg = _cfg(tmp_path, "model.lora=true", "model.lora_r=4", "run.export_merged=true", data=synth_dir / "train.jsonl")
    trainer, before, after = _run(cfg)
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and not any("audio_tower" in n for n in lora)  # the encoder is excluded
    assert all(torch.equal(before[n], after[n].detach()) for n in base)
    assert all(not torch.equal(before[n], after[n].detach()) for n in lora)
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()
    assert (tmp_path / "final-merged" / "model.safetensors").exists()


def test_resume_equals_uninterrupted(tmp_path, synth_dir):
    data = synth_dir / "train.jsonl"
    straight = tmp_path / "straight"
    _run(_cfg(straight, "run.max_steps=4", "run.save_every=2", data=data))
    # A run stopped after step 2 holds exactly the step-2 checkpoint: continue it.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-000002", resumed / "checkpoints" / "step-000002")
    _run(_cfg(resumed, "run.max_steps=4", "run.save_every=2", data=data))
    a = load_file(str(straight / "checkpoints" / "step-000004" / "trainable.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-000004" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    # Metrics of the resumed run continue from step 3.
    assert [r["step"] for r in _metrics(resumed)] == [3, 4]


def test_prefix_sharing_switch_gives_same_weights(tmp_path, synth_dir):
    data = synth_dir / "train.jsonl"
    _, _, shared = _run(_cfg(tmp_path / "s", data=data))
    _, _, naive = _run(_cfg(tmp_path / "n", "rollout.prefix_sharing=false", data=data))
    for n, p in shared.items():
        assert torch.allclose(p.detach(), naive[n].detach(), atol=1e-5, rtol=1e-4), n


def test_bad_user_reward_names_function_and_item(tmp_path, synth_dir):
    cfg = _cfg(tmp_path, "reward.rewards=[{name: test_grpo:bad_reward}]", data=synth_dir / "train.jsonl")
    with pytest.raises(ValueError, match=r"test_grpo:bad_reward.*'high'.*item 'synth-train"):
        _run(cfg)


def test_dynamic_sampling_logs_zero_variance(tmp_path, synth_dir):
    # Accuracy alone on an untrained model: (almost) every group is all-zero.
    cfg = _cfg(tmp_path, "reward.rewards=[{name: accuracy}]", "rollout.dynamic_sampling=true",
               "rollout.max_resample_rounds=2", "algo.kl_coef=0", data=synth_dir / "train.jsonl")
    _run(cfg)
    rows = _metrics(tmp_path)
    assert all(r["groups/zero_variance_frac"] > 0.5 for r in rows)
    assert all(r["groups/resampled"] == 4.0 for r in rows)  # 2 rounds x 2 prompts drawn in addition


def test_unknown_key_lists_valid_ones():
    from harken.config import ConfigError

    with pytest.raises(ConfigError, match="valid keys here: .*group_size"):
        load_config(GRPOConfig, "tiny", ["rollout.group_sise=4"])


def test_r1aqa_preset_is_the_paper_recipe():
    cfg = load_config(GRPOConfig, "r1aqa")
    assert cfg.model.path == "Qwen/Qwen2-Audio-7B-Instruct"
    assert (cfg.rollout.group_size, cfg.optim.lr, cfg.algo.kl_coef, cfg.rollout.temperature) == (8, 1e-6, 0.04, 1.0)
    assert (cfg.rollout.max_new_tokens, cfg.prompt.template, cfg.rollout.prompts_per_step) == (256, "prompt2", 1)
    assert (cfg.optim.grad_accum, cfg.run.max_steps, cfg.run.save_every) == (2, 1000, 100)
    assert [r.name for r in cfg.reward.rewards] == ["accuracy", "format"]
    assert not cfg.model.freeze_encoder and not cfg.model.lora
    assert load_config(GRPOConfig, "r1aqa-think").prompt.template == "prompt3"


@pytest.mark.slow
def test_two_processes_agree(tmp_path, synth_dir):
    """torchrun with 2 processes (gloo on CPU): trains, and both replicas hold the same weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "harken.cli", "train", "grpo", "--config", "tiny",
        f"run.out_dir={tmp_path}", f"data.path={synth_dir / 'train.jsonl'}", "rollout.group_size=3",
        "rollout.prompts_per_step=1", "rollout.max_new_tokens=4", "run.max_steps=2", "run.progress=false",
        "run.save_every=0", "reward.rewards=[{name: test_grpo:length_reward}]",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 model replicas agree" in proc.stderr
    assert json.loads((tmp_path / "run.json").read_text())["processes"] == 2
    assert len(_metrics(tmp_path)) == 2
