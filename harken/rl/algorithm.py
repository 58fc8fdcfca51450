"""The GRPO loss math: KL to the reference, importance ratios, the clipped policy loss and its
aggregation over tokens.

Owns: pure tensor functions only. Plain floats and names in, tensors out; no config objects, no
models, no I/O, no device or distributed logic. Does not own: computing log-probs from logits
(`harken.rl.rollout` / the trainer does the logit/label shift), rewards (`harken.rl.rewards`), choosing
which variant to run (the config names it, the trainer passes the name through), group
advantages (`harken.rl.advantages`), the completion mask and masked means (`harken.rl.masks`).

Shape vocabulary (used in every docstring below):
    B  prompts in the batch
    G  completions per prompt (`group_size`); the G rows of one prompt are CONTIGUOUS
    N  = B*G rows, one per completion
    T  completion tokens (right-padded; `mask` says which are real)

Every variant is picked BY NAME from a small registry (a dict of name -> function):
    ADVANTAGE_ESTIMATORS  "grpo" | "dr_grpo"   (in harken.rl.advantages)
    KL_ESTIMATORS         "k3" | "k1"
    RATIO_LEVELS          "token" | "sequence"
    LOSS_AGGREGATIONS     "seq_mean_token_mean" | "token_mean" | "seq_mean_token_sum_norm"
    NORMALISER_COUNTS     the same names: what each aggregation divides by (step-wide weights)
Callers look names up here (or call the public functions with the name); there are no if/elif
chains over variants in the trainer. A new variant is one function plus one registry entry.

Textbook GRPO (DeepSeekMath, arXiv 2402.03300, as used by R1-AQA arXiv 2503.11197) and where this
module differs from it, variant by variant (1-2, the advantages, are in `harken.rl.advantages`):
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

Note on micro-batches: the aggregations normalise within the tensors they are given. A step whose
completions are split into micro-batches (completion chunks, accumulation micro-steps, processes)
gets the gradient of ONE aggregation over all of them by scaling each part's aggregate with
`microbatch_weight(mask, rows, mode, total)`, where `total` is `normaliser_count` summed over the
whole step (NORMALISER_COUNTS: unmasked tokens, non-empty rows, or rows).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from harken.rl.masks import check_same_shape, lookup, masked_mean, zero_masked



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
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    return lookup(KL_ESTIMATORS, estimator, "KL estimator")(logprobs, ref_logprobs)


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
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    fn = lookup(RATIO_LEVELS, level, "ratio level")
    mask = mask.bool()
    return fn(zero_masked(logprobs, mask), zero_masked(old_logprobs, mask), mask)


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
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
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
    loss = zero_masked(loss, mask)

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
    return zero_masked(loss, mask).sum() / (loss.shape[0] * max_tokens)


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
    check_same_shape(loss_per_token=loss_per_token, mask=mask)
    fn = lookup(LOSS_AGGREGATIONS, mode, "loss aggregation")
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
    lookup(KL_ESTIMATORS, kl_estimator, "KL estimator")
    lookup(RATIO_LEVELS, ratio_level, "ratio level")
    lookup(LOSS_AGGREGATIONS, agg_mode, "loss aggregation")
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
        check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
        kl = kl_penalty(zero_masked(logprobs, mask), zero_masked(ref_logprobs, mask), kl_estimator)  # [N, T]
        kl = zero_masked(kl, mask)
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


# name -> fn(mask [N, T] bool) -> the count the aggregation divides by (a 0-dim tensor)
NORMALISER_COUNTS: dict[str, Callable[[Tensor], Tensor]] = {
    "seq_mean_token_mean": lambda mask: mask.any(-1).sum(),  # completions with at least one token
    "token_mean": lambda mask: mask.sum(),  # unmasked tokens
    "seq_mean_token_sum_norm": lambda mask: torch.tensor(mask.shape[0]),  # rows (times the constant max_tokens)
}


def normaliser_count(mask: Tensor, mode: str) -> float:
    """What aggregation `mode` divides by in these rows: non-empty rows, unmasked tokens, or rows.

    Summed over every part of a step (micro-batches, accumulation micro-steps, processes), it is the
    step-wide `total` of `microbatch_weight`.
    """
    return float(lookup(NORMALISER_COUNTS, mode, "loss aggregation")(mask.bool()))


def microbatch_weight(mask: Tensor, rows: Tensor, mode: str, total: float | None = None) -> float:
    """Weight of a micro-batch's aggregated loss in the loss of the whole step.

    Back-propagating `aggregate(rows of mb) * weight` for every micro-batch of the step gives the
    gradient of `aggregate(all the step's rows)`, with weight = part / total:
        seq_mean_token_mean: (non-empty rows in mb) / (non-empty rows in the step)
        token_mean:          (unmasked tokens in mb) / (unmasked tokens in the step)
        seq_mean_token_sum_norm: (rows in mb) / (rows in the step)

    Args:
        mask: [N, T] bool for the batch the micro-batch belongs to.
        rows: [n] indices of the micro-batch's rows.
        mode: aggregation name (LOSS_AGGREGATIONS).
        total: the step's `normaliser_count`, summed over all its batches (and processes); default:
            this batch's own count (the step is this one batch).
    Returns:
        part / total (0 when total is 0: nothing in the step has a token).
    """
    part = normaliser_count(mask[rows], mode)
    total = normaliser_count(mask, mode) if total is None else float(total)
    return part / total if total > 0 else 0.0
