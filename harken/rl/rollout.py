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

Decoding (`start_decode`, then `decode`, one `decode_step` per token; both paths, and evaluation's
greedy answers through `generate`): the keys and values live in tensors allocated once for the
prompt and the whole budget (`_BudgetLayer`), written in place at each step; attention reads the
filled part as a view, so it sees exactly the keys a cache grown by concatenation would hold (the
same arithmetic, the same tokens). The attention mask is made once for all positions, the position
ids advance in place, the head runs on the last position only, and rows that ended are masked
(never dropped: every row's arithmetic stays that of its own batch). `harken bench --decode`
measures it against the loop it replaced and transformers' `generate`.

Shapes: B prompts, G completions per prompt, N = B*G completion rows (rows of one prompt are
contiguous), P prompt tokens (left padded), T completion tokens, H hidden size, V vocab.

Does not own: rewards, advantages and losses (`harken.rl.rewards`, `harken.rl.algorithm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from transformers.cache_utils import Cache, CacheLayerMixin

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
    state = start_decode(lm, batch, g, params.max_new_tokens, shared=shared, encoded_audio=encoded_audio)
    return decode(lm, state, params, generator)


class _BudgetLayer(CacheLayerMixin):
    """One layer's keys and values in tensors allocated once for the prompt and the whole completion
    budget ([N, kv heads, P + T, d]). A forward writes its new positions in place and attends to the
    filled part, a view: the keys and values a cache grown by concatenation would hold, in the same
    order, without copying the ones already there."""

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int):
        super().__init__()
        self.keys, self.values, self.filled = keys, values, filled
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise AssertionError("a decode cache is allocated when it is made")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.filled + key_states.shape[-2]
        if end > self.keys.shape[2]:
            raise RuntimeError(f"decode cache of {self.keys.shape[2]} positions is full")
        self.keys[:, :, self.filled : end].copy_(key_states)
        self.values[:, :, self.filled : end].copy_(value_states)
        self.filled = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.filled + query_length, 0

    def get_seq_length(self) -> int:
        return self.filled

    def get_max_length(self) -> int:
        return self.keys.shape[2]


@dataclass
class DecodeState:
    """N rows ready to decode T tokens: their prompt in a cache with room for the whole budget.

    Shapes: N rows, P prompt width, T budget, V vocab.
    """

    cache: Cache  # one `_BudgetLayer` per layer, P positions filled
    logits: torch.Tensor  # [N, V] next-token logits after the prompt (only the last position's)
    # Attention mask over P + T positions, in the form the model's attention takes it (sdpa:
    # [N, 1, 1, P + T] bool, used as given; others: [N, P + T], from which the model builds its
    # own); None when no prompt is padded.
    mask: torch.Tensor | None
    positions: torch.Tensor  # [N, 1] position id of the next token, advanced in place

    @property
    def filled(self) -> int:
        return self.cache.layers[0].filled


def start_decode(lm: AudioLM, batch: PromptBatch, group_size: int, budget: int, *, shared: bool = True,
                 encoded_audio: torch.Tensor | None = None) -> DecodeState:
    """Run the prompts (once per group when `shared`, G times each otherwise) into a cache of
    P + `budget` positions for the B*G rows. Inside a pass (`AudioLM.call`), without gradients."""
    g = group_size
    if shared:
        prefix = _prefix(lm, batch, encoded_audio)
    else:
        rep = batch.repeat_interleave(g)
        prefix = _prefix(lm, rep, None if encoded_audio is None else _repeat_audio(encoded_audio, batch, g))
        g = 1
    b, p = prefix.attention_mask.shape
    layers = []
    for k, v in prefix.cache_kv:
        buffers = []
        for x in (k, v):
            buf = x.new_empty(b, g, x.shape[1], p + budget, x.shape[3])
            buf[:, :, :, :p].copy_(x[:, None])  # each prompt's rows share its keys and values
            buffers.append(buf.view(b * g, x.shape[1], p + budget, x.shape[3]))
        layers.append(_BudgetLayer(*buffers, filled=p))
    logits = lm.lm_head(prefix.last_hidden.repeat_interleave(g, 0))  # [N, V]
    mask = _decode_mask(lm, prefix.attention_mask.repeat_interleave(g, 0), budget)
    positions = prefix.lengths.repeat_interleave(g, 0)[:, None].clone()
    return DecodeState(Cache(layers=layers), logits, mask, positions)


def _decode_mask(lm: AudioLM, prompt_mask: torch.Tensor, budget: int) -> torch.Tensor | None:
    """`DecodeState.mask` for left-padded prompts [N, P]: every completion position is attended to.

    What transformers would make of the concatenated 2-D mask: the 4-D boolean form for sdpa, built
    once; none without padding (a mask of ones would select another sdpa kernel, whose results
    differ in the last bit); the 2-D mask for other attentions, which build their own from it.
    """
    if bool(prompt_mask.all()):
        return None
    full = torch.ones(prompt_mask.shape[0], prompt_mask.shape[1] + budget, dtype=prompt_mask.dtype,
                      device=prompt_mask.device)
    full[:, : prompt_mask.shape[1]] = prompt_mask
    if lm.family.module(lm.model, "language_model").config._attn_implementation == "sdpa":
        return full.bool()[:, None, None, :]
    return full


def decode_step(lm: AudioLM, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
    """Feed one token per row [N]; returns the next-token logits [N, V] (the last position only)."""
    mask = None if state.mask is None else state.mask[..., : state.filled + 1]
    hidden, _ = lm.text_forward(lm.embed_tokens(tokens[:, None]), mask, state.positions, state.cache)
    state.positions += 1
    return lm.lm_head(hidden[:, -1])


def decode(lm: AudioLM, state: DecodeState, params: SamplingParams,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample up to `params.max_new_tokens` tokens per row (at most the cache's budget).

    Returns:
        [N, T'] ids; T' stops at the step where every row has ended; a row that ended holds the pad
        id after its end-of-turn token (it keeps being fed, its tokens masked: no row is dropped,
        so the batch, and with it every row's arithmetic, stays that of the prompt pass).
    """
    logits = state.logits
    n, steps = logits.shape[0], params.max_new_tokens
    eos = torch.tensor(lm.eos_ids, device=logits.device)
    out = torch.full((n, steps), lm.pad_id, dtype=torch.long, device=logits.device)
    done = torch.zeros(n, dtype=torch.bool, device=logits.device)
    for t in range(steps):
        tok = _sample(logits, params, generator).masked_fill_(done, lm.pad_id)
        out[:, t] = tok
        done |= torch.isin(tok, eos)
        if t == steps - 1 or bool(done.all()):
            return out[:, : t + 1]
        logits = decode_step(lm, state, tok)
    return out[:, :0]


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

