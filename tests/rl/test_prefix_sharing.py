"""Exactness of the shared-prefix path against the naive repeated-prompt path.

Same tokens when generating (also over long completions, and as the decode loop that grew its
cache by concatenation, `harken.bench.decode.concat_generate`), same log-probs and the same
gradient for every trainable parameter (fp32 tolerance), for several prompts of different lengths, ragged completions, completion
micro-batches, LoRA (reference = adapter disabled), a frozen encoder with its output reused.
These tests also guard the transformers cache internals the shared path relies on. They run on
every registered family's toy (the real transformers classes); tolerance, all in fp32: log-probs
within 2e-5 absolute, every gradient within 5e-5 of the naive one relative to its largest entry
(see `_assert_same_grads` for gradients that are zero in exact arithmetic).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harken.models.families import FAMILIES as REGISTERED
from harken.models.toy import build_tiny
from harken.rl.rollout import SamplingParams, _sample, completion_logprobs, generate, sampling_probs

FAMILIES = list(REGISTERED)
G = 3


def _setup(family, seed=0):
    torch.manual_seed(seed)
    lm = build_tiny(family, seed=seed)
    rng = np.random.default_rng(seed)
    clips = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (1.2, 3.1)]
    batch = lm.encode_prompts(["Short?", "A noticeably longer question about the second clip, please?"], clips)
    return lm, batch


def _ragged_completions(lm, n, t, seed=1):
    """Random completions where some rows end early with an end-of-turn token then padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, len(lm.tokenizer) - 10, (n, t), generator=g)
    eos = lm.eos_ids[0]
    for row, end in enumerate([2, t, 4, 1, t, 3][:n]):
        if end < t:
            ids[row, end] = eos
            ids[row, end + 1 :] = lm.pad_id
    return ids


def _grads(lm, batch, comp, shared, micro=None, encoded=None, weights=None):
    lm.model.zero_grad(set_to_none=True)
    w = weights if weights is not None else torch.ones(comp.shape)
    lp = completion_logprobs(lm, batch, comp, G, shared=shared, micro_batch=micro, encoded_audio=encoded,
                             loss_fn=lambda lp, rows: (lp * w[rows]).sum())
    return lp, {n: p.grad.clone() for n, p in lm.model.named_parameters() if p.grad is not None}


def _assert_same_grads(a, b, rtol=5e-5):
    """Each gradient within rtol of the other relative to its largest entry, floored at 1e-4 of the
    model's largest gradient entry: some gradients are zero in exact arithmetic (an attention key
    bias shifts every score of a query alike) and hold only rounding noise (~1e-11)."""
    assert a.keys() == b.keys() and len(a) > 0
    floor = 1e-4 * max(g.abs().max() for g in b.values()).clamp_min(1e-8)
    for name in a:
        scale = b[name].abs().max().clamp_min(floor)
        err = ((a[name] - b[name]).abs().max() / scale).item()
        assert err < rtol, f"{name}: relative gradient difference {err:.2e}"


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_identical(family):
    lm, batch = _setup(family)
    greedy = SamplingParams(max_new_tokens=8, greedy=True)
    assert torch.equal(generate(lm, batch, G, greedy, shared=True), generate(lm, batch, G, greedy, shared=False))
    for sampled in (SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9),
                    SamplingParams(max_new_tokens=8, temperature=1.0, top_k=50),  # the r1aqa preset
                    SamplingParams(max_new_tokens=8, temperature=0.7, top_k=20, top_p=0.95, min_p=0.05)):
        a = generate(lm, batch, G, sampled, shared=True, generator=torch.Generator().manual_seed(3))
        b = generate(lm, batch, G, sampled, shared=False, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b), sampled
        assert a.shape[0] == 2 * G


@pytest.mark.parametrize("family", FAMILIES)
def test_long_generation_identical_to_naive_and_previous_loop(family):
    """160-token completions (thinking-prompt lengths): the pre-allocated decode cache samples the same
    tokens as the naive path and as the loop that grew its cache by concatenation, greedy and sampled,
    with padded prompts (two of different lengths) and without (one prompt)."""
    from harken.bench.decode import concat_generate

    lm, batch = _setup(family)
    single = lm.encode_prompts(["Short?"], [(0.1 * np.random.default_rng(1).standard_normal(20000)).astype(np.float32)])
    for params in (SamplingParams(max_new_tokens=160, greedy=True),
                   SamplingParams(max_new_tokens=160, temperature=1.0, top_k=50)):
        gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
        shared = generate(lm, batch, G, params, shared=True, generator=gen())
        assert torch.equal(shared, generate(lm, batch, G, params, shared=False, generator=gen())), params
        assert torch.equal(shared, concat_generate(lm, batch, G, params, generator=gen())), params
        one = generate(lm, single, G, params, generator=gen())
        assert torch.equal(one, concat_generate(lm, single, G, params, generator=gen())), params
        if not params.greedy:  # long: the sampled rows do not all end within a few tokens
            assert shared.shape[1] > 100


def test_top_k_and_min_p_keep_what_transformers_keeps():
    """The sampler keeps exactly the tokens transformers' temperature -> top-k -> min-p warpers keep."""
    from transformers.generation.logits_process import MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper

    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)) * 3
    logits[0, :60] = 10.0  # a tie across the 50th place: all tied tokens stay, as in transformers
    for top_k, min_p in ((50, 0.0), (5, 0.0), (1, 0.0), (0, 0.1), (50, 0.05), (400, 0.0), (0, 0.0)):
        hf = TemperatureLogitsWarper(0.8)(None, logits.clone())
        if top_k:
            hf = TopKLogitsWarper(top_k)(None, hf)
        if min_p:
            hf = MinPLogitsWarper(min_p)(None, hf)
        kept = sampling_probs(logits, SamplingParams(temperature=0.8, top_k=top_k, min_p=min_p)) > 0
        assert torch.equal(kept, torch.isfinite(hf)), (top_k, min_p)
    assert int((sampling_probs(logits, SamplingParams(top_k=50)) > 0).sum(-1)[0]) == 60
    drawn = _sample(logits, SamplingParams(top_k=5), torch.Generator().manual_seed(2))
    assert bool((logits.gather(1, drawn[:, None]) >= logits.topk(5).values[:, -1:]).all())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("micro", [None, 2])
def test_gradients_identical(family, micro):
    lm, batch = _setup(family)
    comp = _ragged_completions(lm, 2 * G, 6)
    weights = torch.randn(comp.shape, generator=torch.Generator().manual_seed(5))
    lp_naive, g_naive = _grads(lm, batch, comp, shared=False, weights=weights)
    lp_shared, g_shared = _grads(lm, batch, comp, shared=True, micro=micro, weights=weights)
    assert torch.allclose(lp_shared, lp_naive, atol=2e-5)
    _assert_same_grads(g_shared, g_naive)
    # Every parameter on the audio path receives a gradient (the audio really is in the loss).
    assert any(n.startswith("model.audio_tower") for n in g_shared)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_completion_scored_against_its_own_clip(family):
    """Two prompts with different clips in one batch == each prompt alone (no clip mix-up)."""
    lm, batch = _setup(family)
    comp = _ragged_completions(lm, 2 * G, 5)
    with torch.no_grad():
        together = completion_logprobs(lm, batch, comp, G)
        for i in range(2):
            text = ["Short?", "A noticeably longer question about the second clip, please?"][i]
            alone_batch = lm.encode_prompts([text], _clips_of(batch, lm, i))
            alone = completion_logprobs(lm, alone_batch, comp[i * G : (i + 1) * G], G)
            assert torch.allclose(together[i * G : (i + 1) * G], alone, atol=2e-5)
        # And the clips matter: scoring prompt 0's completions against prompt 1's clip differs.
        swapped = lm.encode_prompts(["Short?"], _clips_of(batch, lm, 1))
        other = completion_logprobs(lm, swapped, comp[:G], G)
        assert not torch.allclose(together[:G], other, atol=1e-4)


def _clips_of(batch, lm, i):
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (1.2, 3.1)]
    return [clips[i]]


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_encoder_reuses_output(family):
    lm, batch = _setup(family)
    for name, p in lm.model.named_parameters():
        if name.startswith(lm.family.encoder_modules):
            p.requires_grad_(False)
    comp = _ragged_completions(lm, 2 * G, 6)
    with torch.no_grad():
        encoded = lm.encode_audio(batch)
    _, g_naive = _grads(lm, batch, comp, shared=False)
    lp_reuse, g_reuse = _grads(lm, batch, comp, shared=True, encoded=encoded)
    _assert_same_grads(g_reuse, g_naive)
    assert not any(n.startswith(lm.family.encoder_modules) for n in g_reuse)
    projector = lm.family.module_paths["projector"]  # empty when the projection is inside the encoder
    assert not projector or any(n.startswith(projector + ".") for n in g_reuse)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_and_adapter_disabled_reference(family):
    from peft import LoraConfig, get_peft_model

    from harken.train.policy import lora_target_regex

    lm, batch = _setup(family)
    lm.model = get_peft_model(lm.model, LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_regex(lm, ["q_proj", "v_proj"])))
    for name, p in lm.model.named_parameters():  # non-zero B so the adapter changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    comp = _ragged_completions(lm, 2 * G, 6)
    _, g_naive = _grads(lm, batch, comp, shared=False)
    _, g_shared = _grads(lm, batch, comp, shared=True, micro=4)
    assert all("lora_" in n for n in g_shared)
    _assert_same_grads(g_shared, g_naive)
    with torch.no_grad(), lm.model.disable_adapter():
        ref_shared = completion_logprobs(lm, batch, comp, G, shared=True)
        ref_naive = completion_logprobs(lm, batch, comp, G, shared=False)
    with torch.no_grad():
        policy = completion_logprobs(lm, batch, comp, G, shared=True)
    assert torch.allclose(ref_shared, ref_naive, atol=2e-5)
    assert not torch.allclose(ref_shared, policy, atol=1e-4)  # the reference really is the base


def test_checkpointing_with_prefix_sharing_is_refused():
    from harken.config import ConfigError, load_config
    from harken.schema import GRPOConfig

    with pytest.raises(ConfigError, match="gradient_checkpointing.*prefix_sharing"):
        load_config(GRPOConfig, "tiny", ["model.gradient_checkpointing=true"])
    cfg = load_config(GRPOConfig, "tiny", ["model.gradient_checkpointing=true", "rollout.prefix_sharing=false"])
    assert cfg.model.gradient_checkpointing


def test_naive_path_with_checkpointing_matches():
    """The naive path supports non-reentrant checkpointing with unchanged gradients."""
    lm, batch = _setup("qwen2-audio")
    comp = _ragged_completions(lm, 2 * G, 6)
    lm.model.train()
    _, plain = _grads(lm, batch, comp, shared=False)
    lm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    _, ckpt = _grads(lm, batch, comp, shared=False)
    _assert_same_grads(ckpt, plain)
