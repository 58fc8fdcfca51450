"""GRPO learns: on one synthetic skill, a toy model started from a short supervised warm-up
raises its mean reward over a few dozen seeded GRPO steps.

The signal is measured, not read off the training log: per-step rewards (4 prompts a step) swing
by +-0.2 from step to step, so "last steps vs first steps" is too noisy to assert on. Instead the
same quantity is measured on the model GRPO starts from and on the model it writes: the mean
reward (accuracy + format, exactly the training rewards) of 16 completions sampled at the rollout
temperature for each of the 16 training questions, with one fixed sampling seed for both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harken.config import load_config
from harken.schema import GRPOConfig, SFTConfig

SEED = 0  # run.seed of both the warm-up and GRPO (data order, sampling, init)
SAMPLES = 16  # completions per question in the measurement
MAX_NEW_TOKENS = 6  # the longest well-formed answer, "<answer>sawtooth</answer><|im_end|>", is 6 toy tokens

_QUIET = ["run.progress=false", "run.tensorboard=false", "run.save_every=0", "run.sample_every=0", f"run.seed={SEED}"]


def _mean_rewards(model_dir: Path, cfg: GRPOConfig, examples) -> dict[str, float]:
    """Mean of each training reward over SAMPLES completions per example, sampled as the rollouts
    are (same template, temperature, length cap) with a fixed generator."""
    from harken.eval.answers import decode
    from harken.models.loading import load_audio_lm
    from harken.data.prompts import get_template
    from harken.rl.rewards import build_rewards, score
    from harken.rl.rollout import SamplingParams, generate
    from harken.train.stream import make_audio_loader

    lm = load_audio_lm(str(model_dir))
    lm.model.eval()
    template = get_template(cfg.prompt.template)
    audio = make_audio_loader(lm, cfg.prompt)
    batch = lm.encode_prompts([template.render(ex) for ex in examples], [audio.load(ex.audio) for ex in examples])
    params = SamplingParams(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)
    with torch.no_grad():
        ids = generate(lm, batch, SAMPLES, params, generator=torch.Generator().manual_seed(1234))
    rewards = build_rewards(cfg.reward.rewards, template, cfg.reward.accuracy_rule)
    total, logs = score(rewards, decode(lm, ids), [ex for ex in examples for _ in range(SAMPLES)])
    return {"total": float(total.mean()), "accuracy": logs["reward/accuracy"], "format": logs["reward/format"]}


@pytest.mark.slow
def test_grpo_raises_mean_reward_after_a_short_warm_up(tmp_path, capsys):
    from harken.train.grpo import train_grpo
    from harken.train.sft import train_sft
    from harken.data.synth import load_split, make_synthetic

    # timbre: which of sine / square / sawtooth / noise (chance 0.25). 16 training questions (one
    # per answer value x answer position), so 40 steps x 4 prompts see each about 10 times.
    data = tmp_path / "data"
    make_synthetic(data, seed=0, n_train=16, n_test=0, n_warmup=100, skills=["timbre"])

    # Warm-up: the tiny-sft recipe (100 steps of 4, lr 3e-3) on the warmup split with the GRPO
    # prompt, so the model already writes "<answer>X</answer>" (sampled format ~0.9) and knows some
    # of the skill (sampled accuracy ~0.4, greedy ~0.5-0.7), leaving room to improve.
    sft = load_config(SFTConfig, "tiny-sft", [
        f"data.path={data / 'warmup.jsonl'}", "val.path=''", f"run.out_dir={tmp_path / 'warm'}",
        "prompt.template=prompt2", "run.max_steps=100", "run.eval_every=0", "train.eval_before=false", *_QUIET,
    ])
    base = train_sft(sft)

    # GRPO: 4 prompts x 16 completions a step, 40 steps; no KL (no reference model), accuracy +
    # format rewards, sampling at T = 1, lr 1.5e-3 with 8 warm-up steps and linear decay (a constant
    # rate left the end point swinging; 2e-3 was unstable on some seeds).
    cfg = load_config(GRPOConfig, "tiny", [
        f"model.path={base}", f"data.path={data / 'train.jsonl'}", f"run.out_dir={tmp_path / 'grpo'}",
        "prompt.template=prompt2", "reward.rewards=[{name: accuracy}, {name: format}]",
        "rollout.prompts_per_step=4", "rollout.group_size=16", f"rollout.max_new_tokens={MAX_NEW_TOKENS}",
        "rollout.temperature=1.0", "algo.kl_coef=0.0",
        "optim.lr=1.5e-3", "optim.schedule=linear", "optim.warmup_steps=8", "optim.grad_accum=1",
        "run.max_steps=40", *_QUIET,
    ])
    final = train_grpo(cfg)

    questions = load_split(data / "train.jsonl")
    before = _mean_rewards(base, cfg, questions)
    after = _mean_rewards(final, cfg, questions)
    with capsys.disabled():
        print(f"\nGRPO timbre: mean reward {before['total']:.3f} -> {after['total']:.3f} "
              f"(accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
              f"format {before['format']:.3f} -> {after['format']:.3f})")

    # Measured (total = accuracy + format, 16 questions x 16 samples) for run.seed 0-8:
    #   seed  before -> after   gain   (accuracy gain)
    #   0     1.383 -> 1.609   +0.226  (+0.199)   <- this test
    #   1     1.376 -> 1.563   +0.187  (+0.156)
    #   2     1.465 -> 1.597   +0.132  (+0.097)
    #   3     1.352 -> 1.578   +0.226  (+0.175)
    #   4     1.336 -> 1.519   +0.183  (+0.168)
    #   5     1.340 -> 1.516   +0.176  (+0.168)
    #   6     1.285 -> 1.437   +0.152  (+0.129)
    #   7     1.449 -> 1.582   +0.133  (+0.082)
    #   8     1.410 -> 1.605   +0.195  (+0.156)
    # The measurement's own sampling noise (same model, 10 sampling seeds) is 0.02-0.04 sd.
    assert after["total"] >= before["total"] + 0.07
    # Not only the (easy) format: answers get more right too.
    assert after["accuracy"] >= before["accuracy"] + 0.04
