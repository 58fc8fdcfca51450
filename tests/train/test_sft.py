"""SFT: the loss mask covers exactly the target, the composed forward equals the stock model's,
a toy model learns a skill, LoRA / frozen-encoder runs move only what they should, stop-and-resume
equals an uninterrupted run, and `harken train sft` writes a loadable model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harken.config import load_config
from harken.models.toy import build_tiny
from harken.data.prompts import get_template
from harken.data.records import Example
from harken.rl.rollout import prompt_positions, token_logprobs
from harken.schema import SFTConfig
from harken.train.sft import IGNORE_INDEX, SFTTrainer, build_sft_batch, sft_loss, target_logits


@pytest.fixture(scope="module")
def timbre_dir(tmp_path_factory):
    """One skill the toy model can learn on a CPU in seconds: which of 4 waveforms (chance 0.25)."""
    from harken.data.synth import make_synthetic

    out = tmp_path_factory.mktemp("timbre")
    make_synthetic(out, seed=0, n_train=200, n_test=60, n_warmup=0, skills=["timbre"])
    return out


def _cfg(out_dir, data_dir, *overrides):
    base = [
        f"run.out_dir={out_dir}",
        f"data.path={data_dir / 'train.jsonl'}",
        "train.batch_size=2",
        "optim.lr=1e-2",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        "run.max_steps=2",
        "run.save_every=0",
        "run.sample_every=0",
        "run.progress=false",
        "run.tensorboard=false",
    ]
    return load_config(SFTConfig, None, base + list(overrides))


def _metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _train(cfg):
    trainer = SFTTrainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters()}
    return trainer, before, after


# --------------------------------------------------------------------------------------------
# The batch and the loss
# --------------------------------------------------------------------------------------------


def _two_examples():
    rng = np.random.default_rng(0)
    short = Example("a", "a.wav", "Which waveform?", ["sine", "square"], "sine")
    long = Example(
        "b", "b.wav", "Compared with the first tone, is the second one louder or softer than the first one?",
        ["louder", "softer", "sawtooth", "noise"], "sawtooth",
    )
    # Different clip lengths too: different numbers of audio placeholder tokens.
    audio = [rng.standard_normal(16000).astype(np.float32) * 0.1, rng.standard_normal(40000).astype(np.float32) * 0.1]
    return [short, long], audio


def test_loss_mask_covers_exactly_the_target_tokens():
    lm = build_tiny("qwen2-audio", seed=0)
    template = get_template("prompt1")
    examples, audio = _two_examples()
    batch = build_sft_batch(lm, template, examples, audio)

    prompt_lengths = batch.prompts.attention_mask.sum(-1).tolist()
    assert prompt_lengths[0] != prompt_lengths[1]  # left padding is exercised
    assert batch.target_mask.sum(-1).tolist()[0] != batch.target_mask.sum(-1).tolist()[1]  # right padding too
    b, length = batch.input_ids.shape
    assert batch.attention_mask.shape == batch.loss_mask.shape == batch.labels.shape == (b, length)
    for i, ex in enumerate(examples):
        masked = batch.input_ids[i][batch.loss_mask[i]].tolist()
        assert lm.tokenizer.decode(masked, skip_special_tokens=False) == f"<answer>{ex.answer}</answer><|im_end|>"
        # Nothing of the prompt (audio placeholders, chat headers, question) is in the loss.
        assert lm.audio_token_id not in masked
        assert (batch.labels[i][~batch.loss_mask[i]] == IGNORE_INDEX).all()
        # The unmasked real tokens are exactly the chat prompt, ending with the assistant header.
        real = batch.input_ids[i][batch.attention_mask[i].bool() & ~batch.loss_mask[i]].tolist()
        text = lm.tokenizer.decode(real, skip_special_tokens=False)
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        assert ex.question in text and ex.answer in text  # the options are in the prompt
        # Padding never counts: every loss token is attended.
        assert batch.attention_mask[i][batch.loss_mask[i]].all()


def test_composed_forward_and_loss_equal_the_stock_model():
    """target_logits == the transformers model's own forward at the positions that predict the
    target, and the token-mean loss == its loss with `labels` (which shifts them itself)."""
    lm = build_tiny("qwen2-audio", seed=0)
    lm.model.float().eval()
    examples, audio = _two_examples()
    batch = build_sft_batch(lm, get_template("prompt1"), examples, audio)
    with torch.no_grad():
        logits = target_logits(lm, batch)  # [B, T, V]
        lp = token_logprobs(logits, batch.target_ids)
        loss = sft_loss(lp, batch.target_mask, batch.num_target_tokens)
        attn = batch.attention_mask
        out = lm.model(
            input_ids=batch.input_ids, attention_mask=attn, position_ids=prompt_positions(attn),
            input_features=batch.prompts.input_features, feature_attention_mask=batch.prompts.feature_mask,
            labels=batch.labels,
        )
    p = batch.prompts.input_ids.shape[1]
    ref = out.logits[:, p - 1 : -1]
    m = batch.target_mask
    torch.testing.assert_close(logits[m], ref[m], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, out.loss, rtol=1e-5, atol=1e-5)


def test_step_loss_is_the_token_mean_whatever_the_micro_batches(tmp_path, timbre_dir):
    """One batch of 4 == two micro-batches of 2 normalised by the step's token count: padding
    (left for prompts, right for targets) and the split change nothing."""
    trainer = SFTTrainer(_cfg(tmp_path, timbre_dir))
    examples = trainer.stream.take(4)
    wave = [trainer.audio.load(ex.audio) for ex in examples]
    whole = build_sft_batch(trainer.lm, trainer.template, examples, wave)
    halves = [build_sft_batch(trainer.lm, trainer.template, examples[i : i + 2], wave[i : i + 2]) for i in (0, 2)]
    assert len(set(whole.prompts.attention_mask.sum(-1).tolist())) > 1  # left padding in play
    assert len(set(whole.target_mask.sum(-1).tolist())) > 1  # right padding in play

    def grads(batches):
        trainer.optimizer.zero_grad(set_to_none=True)
        n = sum(b.num_target_tokens for b in batches)
        nll = sum(trainer.backward(b, n)[0] for b in batches)
        return nll / n, [p.grad.clone() for p in trainer.params]

    loss_whole, g_whole = grads([whole])
    loss_split, g_split = grads(halves)
    assert loss_whole == pytest.approx(loss_split, rel=1e-5)
    for a, b in zip(g_whole, g_split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_steps_follow_epochs_unless_max_steps_is_set():
    from harken.train.sft import total_steps

    # 200 examples / (4 x 2 accumulation x 3 processes = 24 per step) = 8.33 -> 9 steps per epoch
    assert total_steps(0, 1.0, 200, 4, 2, 3) == 9
    assert total_steps(0, 2.5, 200, 4, 2, 3) == 21  # ceil(20.8)
    assert total_steps(7, 2.5, 200, 4, 2, 3) == 7


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_toy_model_learns_a_skill(tmp_path, timbre_dir, capsys):
    cfg = _cfg(
        tmp_path, timbre_dir,
        f"val.path={timbre_dir / 'test.jsonl'}",
        "train.batch_size=4", "optim.lr=3e-3", "optim.schedule=cosine", "optim.warmup_steps=5",
        "run.max_steps=100", "run.eval_every=100", "run.eval_batch_size=30", "run.eval_max_new_tokens=8",
    )
    SFTTrainer(cfg).train()
    rows = _metrics(tmp_path)
    losses = [r["loss"] for r in rows if "loss" in r]
    val = {r["step"]: r["val/accuracy"] for r in rows if "val/accuracy" in r}
    assert len(losses) == 100 and all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    with capsys.disabled():
        print(f"\nSFT timbre (4 choices): loss {first:.3f} -> {last:.3f}; val accuracy {val[0]:.3f} -> {val[100]:.3f}")
    assert last < first / 5
    # 4 choices: chance is 0.25; measured ~0.73-0.92 over seeds 0-3.
    assert val[100] > 0.25 + 0.25
    assert val[100] > val[0] + 0.3


def test_lora_changes_only_the_adapter(tmp_path, timbre_dir):
    cfg = _cfg(tmp_path, timbre_dir, "model.lora=true", "model.lora_r=4", "run.max_steps=3")
    trainer, before, after = _train(cfg)
    adapter = [n for n in before if "lora_" in n]
    assert adapter and all(trainer.lm.model.get_parameter(n).requires_grad for n in adapter)
    assert not any(".audio_tower." in n for n in adapter)  # the encoder never gets an adapter
    assert [n for n in adapter if torch.equal(before[n], after[n])] == []
    assert [n for n in before if n not in adapter and not torch.equal(before[n], after[n])] == []
    assert (tmp_path / "final" / "adapter_config.json").exists()


@pytest.mark.parametrize("dtype,master_weights,stored", [
    ("float32", True, torch.float32),
    ("bfloat16", True, torch.float32),  # bf16 compute over fp32 master weights
    ("bfloat16", False, torch.bfloat16),  # pure bf16, asked for explicitly
])
def test_frozen_encoder_full_finetune(tmp_path, timbre_dir, dtype, master_weights, stored):
    cfg = _cfg(tmp_path, timbre_dir, "model.freeze_encoder=true", f"model.dtype={dtype}",
               f"model.master_weights={str(master_weights).lower()}")
    trainer, before, after = _train(cfg)
    assert {p.dtype for p in after.values()} == {stored}
    assert trainer.lm.compute_dtype == (getattr(torch, dtype) if stored != getattr(torch, dtype) else None)
    assert all(math.isfinite(r["loss"]) for r in _metrics(tmp_path))
    encoder = [n for n in before if n.startswith("model.audio_tower.")]
    rest = [n for n in before if n not in encoder]
    assert encoder and rest
    assert [n for n in encoder if not torch.equal(before[n], after[n])] == []
    assert [n for n in rest if torch.equal(before[n], after[n])] == []


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, timbre_dir):
    """4 steps straight vs: the state saved at step 2 of that run, resumed to step 4 elsewhere
    (data position, RNG, optimizer and a non-constant schedule all matter)."""
    common = ["run.max_steps=4", "optim.grad_accum=2", "optim.schedule=linear", "optim.warmup_steps=1",
              "optim.lr=3e-3", "optim.weight_decay=0.01"]
    straight, _, after_straight = _train(_cfg(tmp_path / "a", timbre_dir, *common, "run.save_every=2"))
    ckpt = tmp_path / "a" / "checkpoints" / "step-000002"
    assert (ckpt / "state.json").exists()
    resumed, _, after_resumed = _train(_cfg(tmp_path / "b", timbre_dir, *common, f"run.resume={ckpt}"))
    assert resumed.step == 4
    assert [r["step"] for r in _metrics(tmp_path / "b")] == [3, 4]
    for a, b in zip(_metrics(tmp_path / "a")[2:], _metrics(tmp_path / "b")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["lr"] == pytest.approx(b["lr"])
    for n, p in after_straight.items():
        torch.testing.assert_close(after_resumed[n], p, rtol=0, atol=0, msg=n)


def test_cli_tiny_preset_writes_a_loadable_model(tmp_path):
    from transformers import Qwen2AudioForConditionalGeneration

    from harken.cli import main
    from harken.models.loading import load_audio_lm

    out = tmp_path / "run"
    assert main(["train", "sft", "--config", "tiny-sft", "run.max_steps=2", f"run.out_dir={out}", "run.progress=false",
                 "val.limit=8", "run.eval_limit=8"]) == 0
    rows = _metrics(out)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("loss", "token_accuracy", "lr", "grad_norm", "time/step_s", "throughput/tokens_per_s"):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert [r["step"] for r in rows if "val/accuracy" in r] == [0, 2]  # before training and at the end
    for name in ("config.yaml", "samples.jsonl", "tb", "checkpoints/step-000002/state.json"):
        assert (out / name).exists(), name
    lm = load_audio_lm(str(out / "final"))
    assert lm.family.name == "qwen2-audio"
    model = Qwen2AudioForConditionalGeneration.from_pretrained(out / "final")
    trained = dict(model.named_parameters())
    initial = dict(build_tiny("qwen2-audio", seed=0).model.named_parameters())
    assert any(not torch.equal(trained[n], p) for n, p in initial.items())


@pytest.mark.parametrize("family", ["qwen2.5-omni", "audio-flamingo-3", "qwen3-omni", "voxtral"])
def test_every_family_trains_and_reloads(tmp_path, timbre_dir, family):
    """Two SFT steps on each other family's toy: the loss covers exactly the target, every trainable
    weight moves, and final/ loads with the family's own transformers class."""
    trainer, before, after = _train(_cfg(tmp_path, timbre_dir, f"model.path=tiny:{family}"))
    examples, audio = _two_examples()
    batch = build_sft_batch(trainer.lm, trainer.template, examples, audio)
    for i, ex in enumerate(examples):
        masked = batch.input_ids[i][batch.loss_mask[i]].tolist()
        # The target, then the family's end of turn (Voxtral: "</s>").
        assert trainer.lm.tokenizer.decode(masked) == f"<answer>{ex.answer}</answer>{trainer.lm.family.end_of_turn}"
    assert all(math.isfinite(r["loss"]) for r in _metrics(tmp_path))
    trainable = [n for n, p in trainer.lm.model.named_parameters() if p.requires_grad]
    assert trainable and [n for n in trainable if torch.equal(before[n], after[n])] == []
    model = trainer.lm.family.model_class.from_pretrained(tmp_path / "final")
    assert all(torch.equal(model.get_parameter(n), after[n]) for n in trainable)
