"""The GRPO math: group advantages, KL to the reference, importance ratios, the clipped policy loss
and its aggregation over tokens, and the completion mask.

Owns: pure tensor functions only. Plain floats and names in, tensors out; no config objects, no
models, no I/O, no device or distributed logic. Does not own: computing log-probs from logits
(`harken.rl.rollout` / the trainer does the logit/label shift), rewards (`harken.rl.rewards`), choosing
which variant to run (the config names it, the trainer passes the name through).

Shape vocabulary (used in every docstring below):
    B  prompts in the batch
    G  completions per prompt (`group_size`); the G rows of one prompt are CONTIGUOUS
    N  = B*G rows, one per completion
    T  completion tokens (right-padded; `mask` says which are real)

Every variant is picked BY NAME from a small registry (a dict of name -> function):
    ADVANTAGE_ESTIMATORS  "grpo" | "dr_grpo"
    KL_ESTIMATORS         "k3" | "k1"
    RATIO_LEVELS          "token" | "sequence"
    LOSS_AGGREGATIONS     "seq_mean_token_mean" | "token_mean" | "seq_mean_token_sum_norm"
Callers look names up here (or call the public functions with the name); there are no if/elif
chains over variants in the trainer. A new variant is one function plus one registry entry.

Textbook GRPO (DeepSeekMath, arXiv 2402.03300, as used by R1-AQA arXiv 2503.11197) and where this
module differs from it, variant by variant:
    1. Advantage "grpo" (DeepSeekMath): A_i = (r_i - mean_g) / (std_g + eps), std UNBIASED
       (Bessel's correction, torch.std's default), eps = 1e-4 as in the R1-AQA release.
       Deviation: a group whose rewards are all exactly equal gets advantage exactly 0 (the
       floating-point mean of equal numbers need not equal them exactly); a group of size 1 has
       std 0 instead of NaN.
    2. Advantage "dr_grpo" (Dr.GRPO, "Understanding R1-Zero-Like Training", arXiv 2503.20783):
       A_i = r_i - mean_g, no division by the std (which over-weights nearly-solved and
       nearly-hopeless prompts).
    3. KL "k3" (DeepSeekMath; Schulman's "Approximating KL divergence" k3):
       exp(ref - logp) - (ref - logp) - 1, per token, non-negative, unbiased for KL(pi || ref).
       "k1" = logp - ref is the naive estimator (can be negative per token), offered for ablations.
       Neither is clamped: log-probs are expected in fp32.
    4. Importance ratio "token" (PPO / DeepSeekMath): exp(logp_t - old_t) per token. With one update
       per batch (the R1-AQA recipe) old == logp.detach(), the ratio is 1, clipping never fires
       and the loss reduces to the paper's -(exp(logp - logp.detach()) * A), gradient -A * grad logp.
    5. Importance ratio "sequence" (GSPO, "Group Sequence Policy Optimization", arXiv 2507.18071):
       s_i = exp(mean over the completion's tokens of (logp - old)), length-normalised, one ratio
       per completion, so clipping acts on whole completions. Implemented as GSPO-token:
       s_i,t = sg[s_i] * exp(logp_t - sg[logp_t]) (sg = stop-gradient): the VALUE of every token
       equals s_i, the GRADIENT w.r.t. logp_t is s_i (per token). With per-sequence token-mean
       aggregation ("seq_mean_token_mean") this is exactly GSPO's gradient
       s_i * A_i * (1/|y_i|) * sum_t grad logp_t. GSPO uses far smaller clip ranges (3e-4 / 4e-4).
    6. Clip-higher (DAPO, arXiv 2503.14476): separate `clip_eps_low` / `clip_eps_high`; a larger
       upper bound lets low-probability tokens with positive advantage grow (against entropy
       collapse). Equal values give PPO's symmetric clip.
    7. Aggregation "seq_mean_token_mean" (DeepSeekMath / R1-AQA): mean over each completion's
       tokens, then mean over completions. Deviation: completions with no unmasked token are left
       out of the mean over completions (the released code would divide by zero -> NaN); a batch
       with none at all gives a zero loss that still has a graph.
    8. Aggregation "token_mean" (DAPO): sum over all unmasked tokens / their number, so long
       completions weigh in proportion to their length.
    9. Aggregation "seq_mean_token_sum_norm" (Dr.GRPO): sum over all unmasked tokens / (N * max_tokens)
       with a CONSTANT max_tokens (e.g. max new tokens): no length normalisation bias.
   10. The completion mask covers the tokens up to and including the first end-of-turn token
       (`completion_mask_from_eos`); the KL and policy terms are summed per token before
       aggregation (as in the paper: loss_t = pg_t + kl_coef * kl_t).

Note on micro-batches: the aggregations normalise within the tensors they are given. When a batch
is split into gradient-accumulation micro-batches, "token_mean" normalises per micro-batch; the
trainer scales micro-batch losses if it wants a whole-batch normaliser.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "RATIO_LEVELS",
    "LOSS_AGGREGATIONS",
    "masked_mean",
    "completion_mask_from_eos",
    "group_advantages",
    "group_stats",
    "kl_penalty",
    "importance_ratio",
    "policy_loss",
    "aggregate",
    "grpo_loss",
]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _lookup(registry: dict[str, Callable], name: str, what: str) -> Callable:
    """Return registry[name], or raise an error that lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(repr(k) for k in registry)
        raise ValueError(f"unknown {what} {name!r}; expected one of: {valid}") from None


def _check_same_shape(**tensors: Tensor) -> None:
    """Raise a ValueError naming every argument's shape unless all shapes are equal."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n}={s}" for n, s in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; all must be [N, T]")


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """x where mask is True, 0 elsewhere.

    Used on log-probs BEFORE any exp: padded positions may hold arbitrary values (even -inf), and
    exp of those could overflow; `inf * 0` or a NaN in the unselected branch of a later
    `torch.where` would then turn the loss or the gradient into NaN. Zeroing first makes every
    masked position a harmless, gradient-free 0.
    """
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is True.

    Args:
        x: values, any shape, e.g. [N, T].
        mask: bool (or 0/1) tensor of the same shape as `x`.
        dim: dimension to reduce; None reduces everything to a scalar.

    Returns:
        The masked mean: a scalar when `dim` is None, else `x`'s shape without `dim`
        (e.g. [N] for dim=-1 on [N, T]). Where there is no unmasked element the result is 0
        (not NaN), still attached to `x`'s graph.
    """
    mask = mask.bool()
    if x.shape != mask.shape:
        raise ValueError(f"masked_mean: x has shape {tuple(x.shape)} but mask has {tuple(mask.shape)}")
    total = _zero_masked(x, mask).sum() if dim is None else _zero_masked(x, mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp_min(1).to(total.dtype)


# ----------------------------------------------------------------------------------------------
# Completion mask: the ONE place it is computed
# ----------------------------------------------------------------------------------------------


def completion_mask_from_eos(tokens: Tensor, eos_ids: list[int], pad_id: int | None) -> tuple[Tensor, Tensor]:
    """Which generated tokens belong to each completion, and which completions were cut off.

    A completion ends at its first end-of-turn token, which is INCLUDED (the model must learn to
    emit it); anything after it is masked. A row without any end-of-turn token was truncated (it
    hit the token budget): its tokens are kept up to its last non-pad token, i.e. the trailing
    right-padding is dropped (a pad id sampled mid-completion stays in, since it was generated).
    `pad_id` may itself be one of `eos_ids` (Qwen2's `<|endoftext|>` is both): the first one then
    counts as the end of the completion and is kept.

    Args:
        tokens: [N, T] integer ids of the generated tokens (no prompt), right-padded.
        eos_ids: ids that end a completion (e.g. `<|im_end|>`, `<|endoftext|>`); at least one.
        pad_id: id used for right-padding, or None when rows are never padded.

    Returns:
        mask: [N, T] bool, True on the tokens that count.
        truncated: [N] bool, True for rows with no end-of-turn token.
    """
    if tokens.dim() != 2:
        raise ValueError(f"completion_mask_from_eos: tokens must be [N, T], got shape {tuple(tokens.shape)}")
    if len(eos_ids) == 0:
        raise ValueError("completion_mask_from_eos: eos_ids is empty; pass at least one end-of-turn token id")
    n, t = tokens.shape
    if t == 0:  # nothing generated: no token counts, and no row ended properly
        empty = torch.zeros(n, 0, dtype=torch.bool, device=tokens.device)
        return empty, torch.ones(n, dtype=torch.bool, device=tokens.device)
    pos = torch.arange(t, device=tokens.device)  # [T]
    is_eos = torch.isin(tokens, torch.tensor(list(eos_ids), dtype=tokens.dtype, device=tokens.device))  # [N, T]
    has_eos = is_eos.any(dim=1)  # [N]
    # argmax returns the FIRST maximal index, i.e. the first eos; rows without one get T (keep all).
    first_eos = torch.where(has_eos, is_eos.to(torch.int8).argmax(dim=1), t)  # [N]
    eos_mask = pos[None, :] <= first_eos[:, None]  # [N, T]
    if pad_id is None:
        trunc_mask = torch.ones(n, t, dtype=torch.bool, device=tokens.device)
    else:
        non_pad = tokens != pad_id  # [N, T]
        last_non_pad = (non_pad.long() * (pos[None, :] + 1)).amax(dim=1) - 1  # [N]; -1 for an all-pad row
        trunc_mask = pos[None, :] <= last_non_pad[:, None]  # [N, T]
    mask = torch.where(has_eos[:, None], eos_mask, trunc_mask)
    return mask, ~has_eos


# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------


def _unbiased_std(grouped: Tensor) -> Tensor:
    """[B, G] -> [B] std with Bessel's correction; 0 (not NaN) for groups of one."""
    if grouped.shape[1] < 2:
        return torch.zeros(grouped.shape[0], dtype=grouped.dtype, device=grouped.device)
    return grouped.std(dim=1)  # correction=1, as the paper and the R1-AQA release


def _grpo_advantages(grouped: Tensor, eps: float) -> Tensor:
    """DeepSeekMath: (r - mean) / (std + eps), unbiased std. [B, G] -> [B, G]."""
    mean = grouped.mean(dim=1, keepdim=True)  # [B, 1]
    std = _unbiased_std(grouped)[:, None]  # [B, 1]
    return (grouped - mean) / (std + eps)


def _dr_grpo_advantages(grouped: Tensor, eps: float) -> Tensor:
    """Dr.GRPO: r - mean, no std scaling (`eps` unused). [B, G] -> [B, G]."""
    return grouped - grouped.mean(dim=1, keepdim=True)


# name -> fn(rewards grouped [B, G], eps) -> advantages [B, G]
ADVANTAGE_ESTIMATORS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "grpo": _grpo_advantages,
    "dr_grpo": _dr_grpo_advantages,
}


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """[B*G] -> [B, G] with validation; integer rewards become float32."""
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a multiple of group_size={group_size}; "
            "pass one reward per completion with the G completions of each prompt contiguous ([B*G])"
        )
    return rewards.view(-1, group_size)  # [B, G]


def group_advantages(rewards: Tensor, group_size: int, method: str = "grpo", eps: float = 1e-4) -> Tensor:
    """Group-relative advantage of every completion (one scalar per completion, used for all its tokens).

    Args:
        rewards: [B*G] scalar reward per completion; rows b*G .. b*G+G-1 are prompt b's group.
            Must be finite (the rewards module resolves "no opinion" NaNs before this).
        group_size: G, completions per prompt.
        method: name in ADVANTAGE_ESTIMATORS: "grpo" ((r - mean) / (std + eps), unbiased std) or
            "dr_grpo" (r - mean).
        eps: added to the std in "grpo" (1e-4 as in the R1-AQA release).

    Returns:
        [B*G] advantages, same float dtype as `rewards` (float32 for integer rewards). A group whose
        rewards are all exactly equal gets exactly 0 under every method.
    """
    estimator = _lookup(ADVANTAGE_ESTIMATORS, method, "advantage method")
    grouped = _grouped(rewards, group_size)  # [B, G]
    adv = estimator(grouped, eps)  # [B, G]
    # r - mean is 0 in exact arithmetic for an all-equal group but not always in floating point.
    all_equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # [B, 1]
    adv = torch.where(all_equal, torch.zeros((), dtype=adv.dtype, device=adv.device), adv)
    return adv.reshape(-1)  # [B*G]


def group_stats(rewards: Tensor, group_size: int, atol: float = 1e-6) -> dict[str, Tensor]:
    """Per-group reward statistics for logging and for DAPO-style dynamic sampling.

    Args:
        rewards: [B*G] scalar reward per completion, groups contiguous (as in `group_advantages`).
        group_size: G, completions per prompt.
        atol: rewards within `atol` of each other (max - min <= atol) count as all equal.

    Returns:
        dict of [B] tensors:
            "mean": group mean reward;
            "std": group std, unbiased (0 for G == 1);
            "min", "max": group extremes;
            "zero_variance": bool, True when the group's rewards are all equal (within `atol`):
                such a group carries (almost) no advantage and no learning signal.
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    mn = grouped.min(dim=1).values
    mx = grouped.max(dim=1).values
    return {
        "mean": grouped.mean(dim=1),
        "std": _unbiased_std(grouped),
        "min": mn,
        "max": mx,
        "zero_variance": (mx - mn) <= atol,
    }


# ----------------------------------------------------------------------------------------------
# KL to the reference policy
# ----------------------------------------------------------------------------------------------


def _kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """DeepSeekMath / Schulman k3: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def _kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Naive estimator k1: logp - ref (unbiased, high variance, may be negative per token)."""
    return logprobs - ref_logprobs


# name -> fn(logprobs [N, T], ref_logprobs [N, T]) -> per-token KL [N, T]
KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k3": _kl_k3,
    "k1": _kl_k1,
}


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) on the sampled tokens.

    Args:
        logprobs: [N, T] log-probs of the sampled tokens under the current policy (with grad).
        ref_logprobs: [N, T] log-probs of the same tokens under the frozen reference policy.
        estimator: name in KL_ESTIMATORS: "k3" (the paper's) or "k1".

    Returns:
        [N, T] per-token KL estimate; 0 where logprobs == ref_logprobs. Padded positions are NOT
        masked here (the caller masks, or zeroes them first as `grpo_loss` does).
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    return _lookup(KL_ESTIMATORS, estimator, "KL estimator")(logprobs, ref_logprobs)


# ----------------------------------------------------------------------------------------------
# Importance ratios
# ----------------------------------------------------------------------------------------------


def _token_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """PPO: exp(logp_t - old_t) per token. [N, T]."""
    return torch.exp(logprobs - old_logprobs)


def _sequence_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """GSPO, in its GSPO-token form: value s_i on every token, gradient s_i * grad logp_t. [N, T]."""
    seq_log_ratio = masked_mean(logprobs - old_logprobs, mask, dim=-1)  # [N]
    seq_ratio = torch.exp(seq_log_ratio).detach()  # [N]  sg[s_i]
    # exp(x - sg[x]) is 1 in value and has derivative 1 w.r.t. x: it routes s_i's weight to each token.
    return seq_ratio[:, None] * torch.exp(logprobs - logprobs.detach())  # [N, T]


# name -> fn(logprobs [N, T], old_logprobs [N, T], mask [N, T] bool) -> ratio [N, T]
RATIO_LEVELS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "token": _token_ratio,
    "sequence": _sequence_ratio,
}


def importance_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor, level: str = "token") -> Tensor:
    """Importance ratio pi_theta / pi_old of the sampled tokens.

    "token" (PPO, DeepSeekMath): r_i,t = exp(logp_t - old_t).
    "sequence" (GSPO): s_i = exp((1/|y_i|) * sum over the completion's unmasked tokens of (logp_t - old_t)),
    the length-normalised sequence likelihood ratio, returned on every token through the GSPO-token
    trick s_i,t = sg[s_i] * exp(logp_t - sg[logp_t]): every token's VALUE is s_i (so clipping is
    decided per completion), and d s_i,t / d logp_t = s_i. Averaged over the completion's tokens
    (aggregation "seq_mean_token_mean") that gives GSPO's gradient s_i * (1/|y_i|) * sum_t grad logp_t.
    A completion with no unmasked token gets s_i = 1.

    Args:
        logprobs: [N, T] log-probs under the current policy (with grad).
        old_logprobs: [N, T] log-probs under the policy that sampled the tokens (no grad).
        mask: [N, T] bool, True on completion tokens (see `completion_mask_from_eos`).
        level: name in RATIO_LEVELS: "token" or "sequence".

    Returns:
        [N, T] ratio. Masked positions hold a finite placeholder (1 for "token", s_i for "sequence")
        with zero gradient; whatever `logprobs` held there does not matter.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    fn = _lookup(RATIO_LEVELS, level, "ratio level")
    mask = mask.bool()
    return fn(_zero_masked(logprobs, mask), _zero_masked(old_logprobs, mask), mask)


# ----------------------------------------------------------------------------------------------
# Clipped policy loss
# ----------------------------------------------------------------------------------------------


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.2,
    ratio_level: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate per token, with DAPO's clip-higher and GSPO's sequence ratio as options.

    loss_t = -min(ratio_t * A, clip(ratio_t, 1 - clip_eps_low, 1 + clip_eps_high) * A)

    With A > 0 the clip bites when ratio > 1 + clip_eps_high; with A < 0 when ratio < 1 - clip_eps_low;
    a clipped token has zero gradient. With old_logprobs == logprobs.detach() (one update per batch)
    ratio == 1, nothing is clipped and the loss is the paper's -(exp(logp - logp.detach()) * A),
    whose gradient is -A * grad logp.

    Args:
        logprobs: [N, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logprobs: [N, T] log-probs under the sampling policy (no grad).
        advantages: [N] one advantage per completion (see `group_advantages`).
        mask: [N, T] bool, True on completion tokens.
        clip_eps_low: lower clip range (ratio >= 1 - clip_eps_low), >= 0.
        clip_eps_high: upper clip range (ratio <= 1 + clip_eps_high), >= 0; > clip_eps_low is DAPO's
            clip-higher.
        ratio_level: name in RATIO_LEVELS: "token" (PPO/GRPO) or "sequence" (GSPO).

    Returns:
        loss_per_token: [N, T]; masked positions are exactly 0 with zero gradient.
        stats: dict of detached scalars, fractions over unmasked tokens:
            "clip_frac_low" (A < 0 and ratio < 1 - low), "clip_frac_high" (A > 0 and ratio > 1 + high),
            "clip_frac" (their sum), "ratio_mean", "ratio_min", "ratio_max" (over unmasked tokens;
            min/max are 1 when there is none).
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be [N] with N = {logprobs.shape[0]} rows, got shape {tuple(advantages.shape)}"
        )
    if clip_eps_low < 0 or clip_eps_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got clip_eps_low={clip_eps_low}, clip_eps_high={clip_eps_high}")
    mask = mask.bool()
    ratio = importance_ratio(logprobs, old_logprobs, mask, level=ratio_level)  # [N, T]
    adv = advantages.to(ratio.dtype)[:, None]  # [N, 1]
    unclipped = -ratio * adv
    clipped = -torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * adv
    loss = torch.maximum(unclipped, clipped)  # -min(...) == max(-...)
    loss = _zero_masked(loss, mask)

    with torch.no_grad():
        clip_low = (adv < 0) & (ratio < 1.0 - clip_eps_low) & mask
        clip_high = (adv > 0) & (ratio > 1.0 + clip_eps_high) & mask
        frac_low = masked_mean(clip_low.to(ratio.dtype), mask)
        frac_high = masked_mean(clip_high.to(ratio.dtype), mask)
        one = torch.ones((), dtype=ratio.dtype, device=ratio.device)
        has_tokens = mask.any()  # stays a tensor: no host sync inside the loss
        ratio_min = torch.where(mask, ratio, math.inf).amin() if ratio.numel() else one
        ratio_max = torch.where(mask, ratio, -math.inf).amax() if ratio.numel() else one
        stats = {
            "clip_frac_low": frac_low,
            "clip_frac_high": frac_high,
            "clip_frac": frac_low + frac_high,
            "ratio_mean": masked_mean(ratio, mask),
            "ratio_min": torch.where(has_tokens, ratio_min, one),
            "ratio_max": torch.where(has_tokens, ratio_max, one),
        }
    return loss, stats


# ----------------------------------------------------------------------------------------------
# Aggregation over tokens and completions
# ----------------------------------------------------------------------------------------------


def _agg_seq_mean_token_mean(loss: Tensor, mask: Tensor, max_tokens: int | None) -> Tensor:
    """DeepSeekMath / R1-AQA: mean over each completion's tokens, then over completions that have tokens."""
    per_seq = masked_mean(loss, mask, dim=-1)  # [N]
    has_tokens = mask.any(dim=-1)  # [N]
    return masked_mean(per_seq, has_tokens)


def _agg_token_mean(loss: Tensor, mask: Tensor, max_tokens: int | None) -> Tensor:
    """DAPO: sum over all unmasked tokens / number of unmasked tokens."""
    return masked_mean(loss, mask)


def _agg_seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, max_tokens: int | None) -> Tensor:
    """Dr.GRPO: sum over all unmasked tokens / (N * max_tokens), a constant normaliser."""
    if max_tokens is None or max_tokens <= 0:
        raise ValueError(
            "aggregation 'seq_mean_token_sum_norm' (Dr.GRPO) needs max_tokens > 0, the constant "
            f"per-completion token budget (e.g. max new tokens); got max_tokens={max_tokens}"
        )
    return _zero_masked(loss, mask).sum() / (loss.shape[0] * max_tokens)


# name -> fn(loss_per_token [N, T], mask [N, T] bool, max_tokens) -> scalar
LOSS_AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, int | None], Tensor]] = {
    "seq_mean_token_mean": _agg_seq_mean_token_mean,
    "token_mean": _agg_token_mean,
    "seq_mean_token_sum_norm": _agg_seq_mean_token_sum_norm,
}


def aggregate(
    loss_per_token: Tensor, mask: Tensor, mode: str = "seq_mean_token_mean", max_tokens: int | None = None
) -> Tensor:
    """Reduce a per-token loss to the scalar that is back-propagated.

    Modes (names in LOSS_AGGREGATIONS):
        "seq_mean_token_mean" (DeepSeekMath, R1-AQA): mean over each completion's unmasked tokens,
            then mean over the completions that have at least one unmasked token (empty completions
            are left out of the count rather than producing 0/0).
        "token_mean" (DAPO): sum over all unmasked tokens / number of unmasked tokens in the batch.
        "seq_mean_token_sum_norm" (Dr.GRPO): sum over all unmasked tokens / (N * max_tokens); N
            counts every row, empty ones included, so the normaliser is a constant.
    Whatever the mode, a batch without any unmasked token gives 0, still attached to the graph
    (backward() works and yields zero gradients), never NaN.

    Args:
        loss_per_token: [N, T] per-token loss.
        mask: [N, T] bool, True on completion tokens.
        mode: aggregation name, see above.
        max_tokens: constant per-completion token budget, required by "seq_mean_token_sum_norm"
            (e.g. the max new tokens of the rollout), ignored by the others.

    Returns:
        Scalar loss.
    """
    _check_same_shape(loss_per_token=loss_per_token, mask=mask)
    fn = _lookup(LOSS_AGGREGATIONS, mode, "loss aggregation")
    return fn(loss_per_token, mask.bool(), max_tokens)


# ----------------------------------------------------------------------------------------------
# The full loss
# ----------------------------------------------------------------------------------------------


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    kl_coef: float,
    kl_estimator: str,
    clip_eps_low: float,
    clip_eps_high: float,
    ratio_level: str,
    agg_mode: str,
    max_tokens: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO objective (and its Dr.GRPO / DAPO / GSPO variants) for one batch of completions.

    loss_t = policy_loss_t + kl_coef * kl_t on every unmasked token, then `aggregate(..., agg_mode)`.
    The R1-AQA recipe is kl_coef=0.04, kl_estimator="k3", ratio_level="token",
    agg_mode="seq_mean_token_mean" (advantages from group_advantages(method="grpo")).

    Args:
        logprobs: [N, T] log-probs of the sampled tokens under the current policy (with grad), fp32.
        old_logprobs: [N, T] log-probs under the sampling policy (no grad); pass logprobs.detach()
            for the on-policy single-update case.
        ref_logprobs: [N, T] log-probs under the reference policy, or None when there is no
            reference model (then kl_coef must be 0).
        advantages: [N] one advantage per completion.
        mask: [N, T] bool, True on completion tokens (see `completion_mask_from_eos`).
        kl_coef: beta, weight of the KL term; 0 disables it (the KL is still logged if
            ref_logprobs is given).
        kl_estimator: name in KL_ESTIMATORS ("k3", "k1").
        clip_eps_low: lower clip range of the ratio.
        clip_eps_high: upper clip range of the ratio (> clip_eps_low: DAPO clip-higher).
        ratio_level: name in RATIO_LEVELS ("token", "sequence").
        agg_mode: name in LOSS_AGGREGATIONS.
        max_tokens: constant token budget for agg_mode "seq_mean_token_sum_norm".

    Returns:
        loss: scalar to back-propagate.
        metrics: python floats: "loss", "policy_loss" (the policy term alone, same aggregation),
            "kl" (masked token mean of the per-token KL; only when ref_logprobs is given),
            "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "ratio_min", "ratio_max",
            "tokens" (number of unmasked tokens).

    Raises:
        ValueError: on mismatched shapes, unknown variant names, or kl_coef != 0 without ref_logprobs.
    """
    # Resolve every name first, so a typo fails before any work (and even when a branch is unused).
    _lookup(KL_ESTIMATORS, kl_estimator, "KL estimator")
    _lookup(RATIO_LEVELS, ratio_level, "ratio level")
    _lookup(LOSS_AGGREGATIONS, agg_mode, "loss aggregation")
    if ref_logprobs is None and kl_coef != 0:
        raise ValueError(
            f"kl_coef={kl_coef} but no ref_logprobs were given: compute the reference log-probs, "
            "or set kl_coef to 0 to train without the KL term"
        )
    mask = mask.bool()
    pg_loss, stats = policy_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        clip_eps_low=clip_eps_low,
        clip_eps_high=clip_eps_high,
        ratio_level=ratio_level,
    )  # [N, T]
    loss_per_token = pg_loss
    kl = None
    if ref_logprobs is not None:
        _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
        kl = kl_penalty(_zero_masked(logprobs, mask), _zero_masked(ref_logprobs, mask), kl_estimator)  # [N, T]
        kl = _zero_masked(kl, mask)
        if kl_coef != 0:
            loss_per_token = pg_loss + kl_coef * kl
    loss = aggregate(loss_per_token, mask, agg_mode, max_tokens=max_tokens)

    with torch.no_grad():
        metrics = {
            "loss": loss.item(),
            "policy_loss": aggregate(pg_loss, mask, agg_mode, max_tokens=max_tokens).item(),
        }
        if kl is not None:
            metrics["kl"] = masked_mean(kl, mask).item()
        metrics.update({name: value.item() for name, value in stats.items()})
        metrics["tokens"] = float(mask.sum().item())
    return loss, metrics


def microbatch_weight(mask: Tensor, rows: Tensor, mode: str) -> float:
    """Weight of a micro-batch's aggregated loss in the whole batch's loss.

    Splitting N rows into micro-batches and back-propagating `aggregate(mb) * weight` for each
    gives the gradient of `aggregate(all rows)`:
        seq_mean_token_mean: (non-empty rows in mb) / (non-empty rows in batch)
        token_mean:          (unmasked tokens in mb) / (unmasked tokens in batch)
        seq_mean_token_sum_norm: (rows in mb) / N

    Args:
        mask: [N, T] bool for the whole batch.
        rows: [n] indices of the micro-batch's rows.
        mode: aggregation name (LOSS_AGGREGATIONS).
    """
    _lookup(LOSS_AGGREGATIONS, mode, "loss aggregation")
    mask = mask.bool()
    if mode == "token_mean":
        total = mask.sum()
        part = mask[rows].sum()
    elif mode == "seq_mean_token_mean":
        total = mask.any(-1).sum()
        part = mask[rows].any(-1).sum()
    else:
        total = torch.tensor(mask.shape[0])
        part = torch.tensor(len(rows))
    return float(part) / float(total) if float(total) > 0 else 0.0
