"""The decode loop's cache: allocated once for prompt + budget and written in place (no per-step
allocation or concatenation of keys and values), used by rollouts and by evaluation's greedy answers
alike. Token exactness against the naive path and the previous loop: `test_prefix_sharing.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicLayer

from harken.models.toy import build_tiny
from harken.rl import rollout
from harken.rl.rollout import SamplingParams, decode, generate, start_decode


def _lm_and_batch(family="qwen2-audio"):
    lm = build_tiny(family, seed=0)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (1.2, 3.1)]
    return lm, lm.encode_prompts(["Short?", "A noticeably longer question about the second clip, please?"], clips)


class _Calls:
    """Counts calls of a method (and records what the instance held), calling through."""

    def __init__(self, monkeypatch, cls, name, record=None):
        self.n, self.seen, orig = 0, [], getattr(cls, name)

        def spy(obj, *args, **kwargs):
            self.n += 1
            if record:
                self.seen.append(record(obj))
            return orig(obj, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)


def test_cache_is_allocated_once_and_written_in_place(monkeypatch):
    lm, batch = _lm_and_batch()
    g, budget = 3, 40
    with torch.no_grad():
        state = start_decode(lm, batch, g, budget)
    layers = state.cache.layers
    n_layers = len(layers)
    p = batch.input_ids.shape[1]
    kv_heads = lm.model.config.text_config.num_key_value_heads
    assert all(layer.keys.shape[:3] == (2 * g, kv_heads, p + budget) for layer in layers)
    assert state.filled == p and state.positions.shape == (2 * g, 1)
    # Each prompt's rows hold its keys: row 0 and row g-1 are prompt 0's, row g prompt 1's.
    assert torch.equal(layers[0].keys[0, :, :p], layers[0].keys[g - 1, :, :p])
    assert not torch.equal(layers[0].keys[0, :, :p], layers[0].keys[g, :, :p])

    pointers = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in layers]
    updates = _Calls(monkeypatch, rollout._BudgetLayer, "update", record=lambda layer: layer.filled)
    grown = _Calls(monkeypatch, DynamicLayer, "update")
    with torch.no_grad():
        ids = decode(lm, state, SamplingParams(max_new_tokens=budget, greedy=True))
    steps = ids.shape[1] - 1  # forwards after the first token
    assert steps > 10
    assert grown.n == 0 and updates.n == n_layers * steps
    assert updates.seen[::n_layers] == list(range(p, p + steps))  # one position per step, in order
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in layers] == pointers
    assert state.filled == p + steps
    assert torch.equal(state.positions[:, 0], batch.attention_mask.sum(-1).repeat_interleave(g) + steps)


def test_decoding_past_the_budget_is_refused():
    lm, batch = _lm_and_batch()
    with torch.no_grad():
        state = start_decode(lm, batch, 2, 3)
        with pytest.raises(RuntimeError, match="full"):
            decode(lm, state, SamplingParams(max_new_tokens=8, greedy=True))


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni"])
def test_eval_answers_use_the_same_decode_loop(monkeypatch, family):
    """`eval.answers.generate_texts` (what `harken eval run` and validation call): the prompt pass is
    the only growing-cache work, every decode step writes the pre-allocated cache, and its greedy
    answers over long outputs are the previous loop's."""
    from harken.bench.decode import concat_generate
    from harken.data.prompts import get_template
    from harken.data.records import Example
    from harken.eval.answers import decode as decode_text, generate_texts

    lm, batch = _lm_and_batch(family)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (1.2, 3.1, 2.0)]
    examples = [Example(id=str(i), audio=f"{i}.wav", question=q, choices=["a", "b"], answer="a")
                for i, q in enumerate(["Which one?", "How many beeps are there in this clip?", "Louder?"])]
    template = get_template("prompt2")
    n_layers = lm.model.config.text_config.num_hidden_layers
    budget_updates = _Calls(monkeypatch, rollout._BudgetLayer, "update")
    grown = _Calls(monkeypatch, DynamicLayer, "update")
    texts = generate_texts(lm, examples, template, clips, max_new_tokens=120)
    assert grown.n == n_layers  # the prompt pass only
    assert budget_updates.n >= n_layers * 100  # the greedy toy writes well past 100 tokens
    prompts = lm.encode_prompts([template.render(ex) for ex in examples], clips)
    previous = concat_generate(lm, prompts, 1, SamplingParams(max_new_tokens=120, greedy=True))
    assert texts == decode_text(lm, previous)


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen3-omni"])
@pytest.mark.parametrize("prompts", [1, 2])  # without and with left padding
def test_step_logits_are_bitwise_those_of_a_concatenated_cache(family, prompts):
    """Same arithmetic, not only the same tokens: each step's logits equal, bit for bit, a forward
    over a cache grown by concatenation with a concatenated 2-D mask (the loop decoding used before)."""
    from harken.bench.decode import _concat_start

    lm, batch = _lm_and_batch(family)
    batch = type(batch).join([(batch, i) for i in range(prompts)], lm.pad_id)
    g = 3
    with torch.no_grad():
        state = start_decode(lm, batch, g, 50)
        cache, logits, attn, pos = _concat_start(lm, batch, g)
        assert torch.equal(state.logits, logits)
        for _ in range(48):
            tok = logits.argmax(-1)
            ours = rollout.decode_step(lm, state, tok)
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            hidden, cache = lm.text_forward(lm.embed_tokens(tok[:, None]), attn, pos[:, None], cache)
            pos = pos + 1
            logits = lm.lm_head(hidden[:, -1])
            assert torch.equal(ours, logits)
