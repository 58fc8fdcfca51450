"""Rollouts and completion log-probs, with each group's prompt computed once.

Owns: sampling G completions per prompt, and the log-probabilities of completion tokens under
a model (policy with gradients, reference or old policy without). Two paths, chosen by
`shared`:

- shared (default): each prompt (system text, audio, question) goes through the encoder and
  the language model ONCE; its key/value cache is repeated for its G completions, which attend
  to it. Generation continues from the repeated cache; in the loss, the cache's keys and values
  are expanded with `repeat_interleave`, whose backward sums the G contributions, so gradients
  are exactly those of the naive path.
- naive (`shared=False`): every prompt is repeated G times and processed in full, as the released
  R1-AQA trainer and TRL do. Kept as the reference the tests and `harken bench` compare against.

Shapes: B prompts, G completions per prompt, N = B*G completion rows (rows of one prompt are
contiguous), P prompt tokens (left padded), T completion tokens, H hidden size, V vocab.

Does not own: rewards, advantages and losses (`harken.rl.rewards`, `harken.rl.algorithm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from harken.models.audio_lm import AudioLM, PromptBatch


@dataclass
class SamplingParams:
    """How the next token is drawn; filters apply in transformers' order: temperature, top-k, top-p, min-p."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0  # keep the smallest set of top tokens whose mass reaches top_p (1 = off)
    greedy: bool = False
    top_k: int = 0  # keep the k most likely tokens, ties with the k-th included (0 = off; transformers' default is 50)
    min_p: float = 0.0  # drop tokens less likely than min_p times the most likely one (0 = off)


@dataclass
class PrefixState:
    """A prompt batch after one pass through the language model."""

    cache_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, heads, P, d]
    last_hidden: torch.Tensor  # [B, H] hidden state at the last prompt position
    attention_mask: torch.Tensor  # [B, P]
    lengths: torch.Tensor  # [B] valid prompt tokens (next position id)


def prompt_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded prompts: [B, P] (padding positions get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _prefix(lm: AudioLM, batch: PromptBatch, encoded_audio: torch.Tensor | None) -> PrefixState:
    """Encode audio, embed and run the B prompts once (inside a pass; gradients follow the caller's mode)."""
    kv, last = _prefix_tensors(lm, batch, encoded_audio)
    return PrefixState(kv, last, batch.attention_mask, batch.attention_mask.sum(-1))


def _prefix_tensors(lm: AudioLM, batch: PromptBatch, encoded_audio: torch.Tensor | None):
    embeds = lm.embed_prompts(batch, encoded_audio)  # [B, P, H]
    cache = lm.new_cache()
    hidden, cache = lm.text_forward(embeds, batch.attention_mask, prompt_positions(batch.attention_mask), cache)
    return [(layer.keys, layer.values) for layer in cache.layers], hidden[:, -1].clone()  # not a view: a pass returns no views


def run_prefix(lm: AudioLM, batch: PromptBatch, encoded_audio: torch.Tensor | None = None) -> PrefixState:
    """The prompt pass as a pass of its own (`AudioLM.call`), for log-probs that reuse it."""
    kv, last = lm.call(_prefix_tensors, lm, batch, encoded_audio)
    return PrefixState(kv, last, batch.attention_mask, batch.attention_mask.sum(-1))


def _cache_from(lm: AudioLM, kv: list[tuple[torch.Tensor, torch.Tensor]]):
    # A fresh cache per pass: DynamicCache appends on every forward.
    cache = lm.new_cache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """[N, V] -> [N] next tokens."""
    if params.greedy or params.temperature <= 0:
        return logits.argmax(-1)
    return torch.multinomial(sampling_probs(logits, params), 1, generator=generator).squeeze(-1)


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[N, V] logits -> [N, V] sampling weights (proportional to the probabilities; 0 = filtered out).

    top-k and min-p keep what transformers' `TopKLogitsWarper` and `MinPLogitsWarper` keep (a
    token tied with the k-th logit stays; the most likely token always stays).
    """
    logits = logits.float() / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[:, -1:]  # [N, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop tokens once the mass before them already reaches top_p (the top token always stays).
        drop = probs.cumsum(-1) - probs >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    if params.min_p > 0.0:
        probs = probs.masked_fill(probs < params.min_p * probs.amax(-1, keepdim=True), 0.0)
    return probs


@torch.no_grad()
def generate(
    lm: AudioLM,
    batch: PromptBatch,
    group_size: int,
    params: SamplingParams,
    *,
    shared: bool = True,
    encoded_audio: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample `group_size` completions per prompt, as one pass with the model's weights gathered.

    Returns:
        completion ids [B*G, T'] (T' <= max_new_tokens; rows that ended early are padded with the
        pad id after their end-of-turn token).
    """
    with lm.gathered():
        return lm.call(_generate, lm, batch, group_size, params, shared, encoded_audio, generator)


def _generate(lm: AudioLM, batch: PromptBatch, g: int, params: SamplingParams, shared: bool,
              encoded_audio: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if shared:
        prefix = _prefix(lm, batch, encoded_audio)
        kv = [(k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)) for k, v in prefix.cache_kv]
        cache = _cache_from(lm, kv)
        last = prefix.last_hidden.repeat_interleave(g, 0)  # [N, H]
        attn = prefix.attention_mask.repeat_interleave(g, 0)  # [N, P]
        next_pos = prefix.lengths.repeat_interleave(g, 0)  # [N]
    else:
        rep = batch.repeat_interleave(g)
        prefix = _prefix(lm, rep, None if encoded_audio is None else _repeat_audio(encoded_audio, batch, g))
        cache = _cache_from(lm, prefix.cache_kv)
        last, attn, next_pos = prefix.last_hidden, prefix.attention_mask, prefix.lengths
    logits = lm.lm_head(last)  # [N, V]
    n = logits.shape[0]
    eos = torch.tensor(lm.eos_ids, device=logits.device)
    out = torch.full((n, params.max_new_tokens), lm.pad_id, dtype=torch.long, device=logits.device)
    done = torch.zeros(n, dtype=torch.bool, device=logits.device)
    steps = 0
    for t in range(params.max_new_tokens):
        tok = _sample(logits, params, generator)
        tok = torch.where(done, torch.full_like(tok, lm.pad_id), tok)
        out[:, t] = tok
        steps = t + 1
        done |= torch.isin(tok, eos)
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        hidden, cache = lm.text_forward(lm.embed_tokens(tok[:, None]), attn, next_pos[:, None], cache)
        next_pos = next_pos + 1
        logits = lm.lm_head(hidden[:, -1])
    return out[:, :steps]


def _repeat_audio(encoded: torch.Tensor, batch: PromptBatch, g: int) -> torch.Tensor:
    """Encoder output [sum tokens, D] for B clips -> the same for each clip repeated g times."""
    parts = torch.split(encoded, batch.audio_token_counts, dim=0)
    return torch.cat([p for p in parts for _ in range(g)], dim=0)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(ids) under logits: [N, T, V], [N, T] -> [N, T] (computed in fp32)."""
    n, t, v = logits.shape
    return -F.cross_entropy(logits.reshape(-1, v).float(), ids.reshape(-1), reduction="none").view(n, t)


def _completion_hidden_shared(
    lm: AudioLM, kv, last_hidden, prompt_mask, lengths, completion_ids: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Hidden states that predict each completion token, for completion `rows` of one batch.

    Args:
        kv: per-layer prompt keys/values [B, heads, P, d]; last_hidden [B, H]; prompt_mask [B, P];
            lengths [B]; completion_ids [n, T] for the selected rows; rows [n] prompt index of each row.
    Returns:
        [n, T, H]: row i's state before token t (the prompt's last state for t = 0).
    """
    t = completion_ids.shape[1]
    cache = _cache_from(lm, [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv])
    first = last_hidden.index_select(0, rows).unsqueeze(1)  # [n, 1, H]
    if t == 1:
        return first
    attn = torch.cat([prompt_mask.index_select(0, rows), torch.ones_like(completion_ids[:, :-1])], dim=1)
    pos = lengths.index_select(0, rows)[:, None] + torch.arange(t - 1, device=completion_ids.device)[None, :]
    hidden, _ = lm.text_forward(lm.embed_tokens(completion_ids[:, :-1]), attn, pos, cache)  # [n, T-1, H]
    return torch.cat([first, hidden], dim=1)


def _completion_hidden_naive(
    lm: AudioLM, batch: PromptBatch, completion_ids: torch.Tensor, rows: torch.Tensor, encoded_audio
) -> torch.Tensor:
    """Same as the shared version, processing each row's prompt in full."""
    idx = rows.tolist()
    sub = PromptBatch(
        batch.input_ids[rows], batch.attention_mask[rows], batch.input_features[rows], batch.feature_mask[rows],
        [batch.audio_token_counts[i] for i in idx],
    )
    enc = None
    if encoded_audio is not None:
        parts = torch.split(encoded_audio, batch.audio_token_counts, dim=0)
        enc = torch.cat([parts[i] for i in idx], dim=0)
    p = sub.input_ids.shape[1]
    embeds = torch.cat([lm.embed_prompts(sub, enc), lm.embed_tokens(completion_ids)], dim=1)
    attn = torch.cat([sub.attention_mask, torch.ones_like(completion_ids)], dim=1)
    hidden, _ = lm.text_forward(embeds, attn, prompt_positions(attn))
    return hidden[:, p - 1 : -1]


def _shared_logprobs(lm: AudioLM, kv, last_hidden, prompt_mask, lengths, completion_ids, rows) -> torch.Tensor:
    hidden = _completion_hidden_shared(lm, kv, last_hidden, prompt_mask, lengths, completion_ids, rows)
    return token_logprobs(lm.lm_head(hidden), completion_ids)  # [n, T]


def _naive_logprobs(lm: AudioLM, batch: PromptBatch, completion_ids, rows, encoded_audio) -> torch.Tensor:
    hidden = _completion_hidden_naive(lm, batch, completion_ids, rows, encoded_audio)
    return token_logprobs(lm.lm_head(hidden), completion_ids)  # [n, T]


def completion_logprobs(
    lm: AudioLM,
    batch: PromptBatch,
    completion_ids: torch.Tensor,
    group_size: int,
    *,
    shared: bool = True,
    encoded_audio: torch.Tensor | None = None,
    micro_batch: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Log-probs of completion tokens; optionally backpropagates a loss over micro-batches.

    Without `loss_fn` this is a plain forward (call it under `torch.no_grad()` for the reference
    or old policy). With `loss_fn(logprobs_mb [n, T], rows_mb [n]) -> scalar`, each completion
    micro-batch's loss is backpropagated as soon as it is computed (so only one micro-batch of
    completion activations is alive); in the shared path the prompt is run once, its outputs are
    detached into leaf tensors that collect the micro-batches' gradients, and the prompt is
    backpropagated once at the end with the accumulated gradients. `loss_fn` must already carry
    the micro-batch's weight in the whole batch's loss.

    Args:
        batch: B prompts. completion_ids: [B*G, T]. encoded_audio: encoder output to reuse
            ([sum tokens, D_enc] for the B clips; only valid when the encoder is frozen).
        micro_batch: completion rows per forward (default: all).
    Returns:
        [B*G, T] log-probs (detached when a loss_fn was given).
    """
    n, t = completion_ids.shape
    if n != len(batch) * group_size:
        raise ValueError(f"{n} completion rows for {len(batch)} prompts x G={group_size}")
    device = completion_ids.device
    owner = torch.arange(len(batch), device=device).repeat_interleave(group_size)  # [N] prompt of each row
    step = micro_batch or n
    # Rows are written in place; without a loss_fn and with grad enabled, autograd tracks the copies.
    out = torch.empty(n, t, device=device)
    if shared:
        prefix = run_prefix(lm, batch, encoded_audio)
        kv, last = prefix.cache_kv, prefix.last_hidden
        backprop_prefix = loss_fn is not None and last.requires_grad
        if backprop_prefix:
            # Leaves that collect every micro-batch's gradient w.r.t. the prompt's outputs.
            # (Only tensors that depend on trainable weights: with LoRA, layer 0's keys may not.)
            kv = [(k.detach().requires_grad_(k.requires_grad), v.detach().requires_grad_(v.requires_grad))
                  for k, v in prefix.cache_kv]
            last = last.detach().requires_grad_()
        for s in range(0, n, step):
            rows = torch.arange(s, min(s + step, n), device=device)
            lp = lm.call(_shared_logprobs, lm, kv, last, prefix.attention_mask, prefix.lengths, completion_ids[rows], owner[rows])
            if loss_fn is not None:
                loss_fn(lp, rows).backward()
                lp = lp.detach()
            out[rows] = lp
        if backprop_prefix:
            tensors, grads = [], []
            for (k0, v0), (k1, v1) in zip(prefix.cache_kv, kv):
                for a, b in ((k0, k1), (v0, v1)):
                    if b.grad is not None:
                        tensors.append(a)
                        grads.append(b.grad)
            if last.grad is not None:
                tensors.append(prefix.last_hidden)
                grads.append(last.grad)
            torch.autograd.backward(tensors, grads)
        return out
    for s in range(0, n, step):
        rows = torch.arange(s, min(s + step, n), device=device)
        lp = lm.call(_naive_logprobs, lm, batch, completion_ids[rows], owner[rows], encoded_audio)
        if loss_fn is not None:
            loss_fn(lp, rows).backward()
            lp = lp.detach()
        out[rows] = lp
    return out

