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


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni", "audio-flamingo-3", "qwen3-omni", "voxtral"])
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
    # Accuracy alone on an untrained model (the random toy): (almost) every group is all-zero.
    cfg = _cfg(tmp_path, "model.path=tiny:qwen2-audio", "reward.rewards=[{name: accuracy}]",
               "rollout.dynamic_sampling=true", "rollout.max_resample_rounds=2", "algo.kl_coef=0",
               data=synth_dir / "train.jsonl")
    _run(cfg)
    rows = _metrics(tmp_path)
    assert all(r["groups/zero_variance_frac"] > 0.5 for r in rows)
    assert all(r["groups/resampled"] == 4.0 for r in rows)  # 2 rounds x 2 prompts drawn in addition


def test_unknown_key_lists_valid_ones():
    from harken.config import ConfigError

    with pytest.raises(ConfigError, match="valid keys here: .*group_size"):
        load_config(GRPOConfig, "tiny", ["rollout.group_sise=4"])


@pytest.mark.slow
def test_two_processes_agree(tmp_path, synth_dir):
    """torchrun with 2 processes (gloo on CPU): trains, and both replicas hold the same weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
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


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dropout", [False, True])
def test_first_ratio_is_exactly_one_with_lora_dropout(tmp_path, synth_dir, dropout, shared):
    """Old log-probs and the first policy pass run in one mode (dropout off by default): ratio 1, no clipping."""
    from harken.train.grpo import GRPOTrainer

    cfg = _cfg(tmp_path, "model.lora=true", "model.lora_r=4", "model.lora_dropout=0.5", "algo.updates_per_batch=2",
               f"algo.dropout={str(dropout).lower()}", f"rollout.prefix_sharing={str(shared).lower()}",
               data=synth_dir / "train.jsonl")
    trainer = GRPOTrainer(cfg)
    for name, p in trainer.lm.model.named_parameters():  # a live adapter: its dropout changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    rb = trainer.collect()
    trainer.score_logprobs(rb)
    m = trainer.backward(rb, trainer.step_normaliser([rb]))
    if dropout:  # algo.dropout=true: every pass in train mode, so the two passes draw different masks
        assert m["ratio_min"] < 1.0 < m["ratio_max"]
    else:
        assert (m["ratio_min"], m["ratio_mean"], m["ratio_max"], m["clip_frac"]) == (1.0, 1.0, 1.0, 0.0)
    assert trainer.lm.model.training == dropout  # the mode the passes ran in


def test_dropout_off_keeps_activation_checkpointing():
    """Dropout off: every module in eval mode but the checkpointed layers (transformers checkpoints only in
    train mode); generation puts those in eval mode too (they would drop the cache)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    from harken.models.toy import build_tiny
    from harken.train.policy import layers_with_own_dropout, set_dropout

    lm = build_tiny("qwen2-audio", seed=0)
    lm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layers = {n: m for n, m in lm.model.named_modules() if isinstance(m, GradientCheckpointingLayer)}
    assert layers and all(m.gradient_checkpointing for m in layers.values())
    set_dropout(lm.model, False)
    assert all(m.training == (n in layers) for n, m in lm.model.named_modules())
    set_dropout(lm.model, False, generating=True)
    assert not any(m.training for m in lm.model.modules())
    set_dropout(lm.model, True)
    assert all(m.training for m in lm.model.modules())
    assert layers_with_own_dropout(lm.model) == []
    name, layer = next(iter(layers.items()))
    layer.dropout = 0.1  # dropout applied in the layer's own forward: dropout off cannot reach it
    assert layers_with_own_dropout(lm.model) == [name]
