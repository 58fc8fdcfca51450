"""Tests for harken.rl.algorithm: hand-derived values on tiny tensors (expected numbers worked out in the
comments), masking and NaN-safety, and a python-loop reference that every vectorised variant must match.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harken.rl.advantages import ADVANTAGE_ESTIMATORS, group_advantages, group_stats
from harken.rl.algorithm import (
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    RATIO_LEVELS,
    aggregate,
    grpo_loss,
    importance_ratio,
    kl_penalty,
    microbatch_weight,
    normaliser_count,
    policy_loss,
)
from harken.rl.masks import completion_mask_from_eos, masked_mean

LN = math.log


def _t(rows, dtype=torch.float64, grad=False):
    x = torch.tensor(rows, dtype=dtype)
    return x.requires_grad_(grad) if grad else x


def _mask(lengths, t):
    """[N, T] bool mask with the first lengths[i] tokens of row i set."""
    return torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]


# ----------------------------------------------------------------------------------------------
# masked_mean
# ----------------------------------------------------------------------------------------------


def test_masked_mean_whole_and_per_row_and_empty_row():
    x = _t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], grad=True)
    mask = _t([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    # whole: (1 + 2) / 2 = 1.5; per row: [1.5, 0 (no token -> 0, not NaN)]
    assert masked_mean(x, mask).item() == pytest.approx(1.5)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), _t([1.5, 0.0]))
    masked_mean(x, mask).backward()
    # d/dx of (x00 + x01) / 2
    torch.testing.assert_close(x.grad, _t([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))


# ----------------------------------------------------------------------------------------------
# completion mask
# ----------------------------------------------------------------------------------------------

EOS, PAD = 9, 0


@pytest.mark.parametrize(
    "row, eos_ids, pad_id, expected_mask, expected_truncated",
    [
        # eos in the middle: kept, everything after it masked (even non-pad tokens)
        ([5, 9, 7, 7], [EOS], PAD, [1, 1, 0, 0], False),
        ([5, 6, 9, 0], [EOS], PAD, [1, 1, 1, 0], False),
        # eos as the very first token: a one-token completion
        ([9, 0, 0, 0], [EOS], PAD, [1, 0, 0, 0], False),
        # no eos, full length: truncated, all kept
        ([5, 6, 7, 8], [EOS], PAD, [1, 1, 1, 1], True),
        # no eos, trailing right-padding: truncated, padding dropped
        ([5, 6, 0, 0], [EOS], PAD, [1, 1, 0, 0], True),
        # no eos, a pad id sampled mid-completion is a generated token and stays
        ([5, 0, 6, 0], [EOS], PAD, [1, 1, 1, 0], True),
        # several eos ids: the first of any of them ends the completion
        ([5, 8, 9, 0], [EOS, 8], PAD, [1, 1, 0, 0], False),
        ([5, 6, 9, 8], [8, EOS], PAD, [1, 1, 1, 0], False),
        # pad id is also an eos id (Qwen2's <|endoftext|>): the first one ends the completion and counts
        ([5, 0, 0, 0], [EOS, PAD], PAD, [1, 1, 0, 0], False),
        # no pad id at all
        ([5, 6, 7, 0], [EOS], None, [1, 1, 1, 1], True),
    ],
)
def test_completion_mask_from_eos_cases(row, eos_ids, pad_id, expected_mask, expected_truncated):
    mask, truncated = completion_mask_from_eos(torch.tensor([row]), eos_ids, pad_id)
    assert mask.dtype == torch.bool and truncated.dtype == torch.bool
    assert mask[0].tolist() == [bool(v) for v in expected_mask]
    assert truncated.tolist() == [expected_truncated]


def test_completion_mask_from_eos_batch_and_errors():
    tokens = torch.tensor([[5, 9, 7], [9, 0, 0], [5, 6, 7], [0, 0, 0]])
    mask, truncated = completion_mask_from_eos(tokens, [EOS], PAD)
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True], [False, False, False]]
    # the all-pad row has no eos: truncated with nothing in it
    assert truncated.tolist() == [False, False, True, True]
    empty_mask, empty_trunc = completion_mask_from_eos(torch.zeros(2, 0, dtype=torch.long), [EOS], PAD)
    assert empty_mask.shape == (2, 0) and empty_trunc.tolist() == [True, True]
    with pytest.raises(ValueError, match="eos_ids is empty"):
        completion_mask_from_eos(tokens, [], PAD)
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        completion_mask_from_eos(tokens[0], [EOS], PAD)


# ----------------------------------------------------------------------------------------------
# advantages
# ----------------------------------------------------------------------------------------------


def test_grpo_and_dr_grpo_hand_example():
    rewards = _t([1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0, 1.0])  # B=2, G=4
    # group 0: mean 0.5, deviations ±0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.577350
    #   grpo: ±0.5 / (0.577350 + 1e-4) = ±0.865875
    # group 1: mean 1.0, deviations [1, -1, 0, 0], unbiased var = 2 / 3, std = 0.816497
    #   grpo: ±1 / (0.816497 + 1e-4) = ±1.224595
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    b = 1.0 / (math.sqrt(2 / 3) + 1e-4)
    assert a == pytest.approx(0.865875, abs=1e-6) and b == pytest.approx(1.224595, abs=1e-6)
    torch.testing.assert_close(group_advantages(rewards, 4, "grpo"), _t([a, -a, -a, a, b, -b, 0.0, 0.0]))
    # dr_grpo: r - mean only
    torch.testing.assert_close(
        group_advantages(rewards, 4, "dr_grpo"), _t([0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0])
    )


@pytest.mark.parametrize("method", sorted(ADVANTAGE_ESTIMATORS))
def test_all_equal_group_gives_exactly_zero(method):
    # 0.7 is not exactly representable: a float mean of eight copies need not equal 0.7 bit for bit.
    rewards = torch.tensor([0.7] * 8 + [1.0, 0.0] * 4, dtype=torch.float32)
    adv = group_advantages(rewards, 8, method)
    assert adv.dtype == torch.float32
    assert torch.equal(adv[:8], torch.zeros(8))
    assert (adv[8:] != 0).all()


def test_advantages_edge_cases_and_errors():
    # integer rewards become float; G = 1 has no spread -> 0, not NaN
    assert torch.equal(group_advantages(torch.tensor([1, 0, 2]), 1, "grpo"), torch.zeros(3))
    with pytest.raises(ValueError, match="not a multiple of group_size=4"):
        group_advantages(_t([1.0, 0.0, 1.0]), 4)
    with pytest.raises(ValueError, match="unknown advantage method 'rloo'.*'grpo'"):
        group_advantages(_t([1.0, 0.0]), 2, "rloo")


def test_group_stats():
    rewards = _t([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0 + 1e-8])
    stats = group_stats(rewards, 4)
    torch.testing.assert_close(stats["mean"], _t([0.5, 1.0 + 0.25e-8]))
    # group 0: unbiased std sqrt(1/3) = 0.57735; group 1: almost 0
    torch.testing.assert_close(stats["std"], _t([math.sqrt(1 / 3), 0.5e-8]), atol=1e-8, rtol=0)
    torch.testing.assert_close(stats["min"], _t([0.0, 1.0]))
    torch.testing.assert_close(stats["max"], _t([1.0, 1.0 + 1e-8]))
    # group 1 differs only by 1e-8 <= 1e-6: zero variance
    assert stats["zero_variance"].tolist() == [False, True]


# ----------------------------------------------------------------------------------------------
# KL
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", sorted(KL_ESTIMATORS))
def test_kl_is_zero_when_policy_equals_reference(estimator):
    logp = _t([[-0.1, -2.0, -5.0]], grad=True)
    kl = kl_penalty(logp, logp.detach().clone(), estimator)
    assert torch.equal(kl, torch.zeros_like(kl))
    kl.sum().backward()
    # k3: d/dlogp = 1 - exp(ref - logp) = 0; k1: d/dlogp = 1
    expected_grad = 0.0 if estimator == "k3" else 1.0
    torch.testing.assert_close(logp.grad, torch.full_like(logp, expected_grad))


def test_kl_hand_values():
    logp = _t([[LN(0.5), LN(0.25)]])
    ref = _t([[LN(0.25), LN(0.5)]])
    # token 0: ref - logp = ln 0.5 = -0.693147 -> k3 = 0.5 + 0.693147 - 1 = 0.193147; k1 = +0.693147
    # token 1: ref - logp = ln 2  = +0.693147 -> k3 = 2 - 0.693147 - 1 = 0.306853; k1 = -0.693147
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), _t([[0.5 - LN(0.5) - 1, 2 - LN(2) - 1]]))
    assert kl_penalty(logp, ref, "k3")[0, 0].item() == pytest.approx(0.193147, abs=1e-6)
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), _t([[LN(2), -LN(2)]]))
    with pytest.raises(ValueError, match="unknown KL estimator 'k9'"):
        kl_penalty(logp, ref, "k9")


# ----------------------------------------------------------------------------------------------
# clipped policy loss
# ----------------------------------------------------------------------------------------------


def _ratio_inputs(ratios):
    """One-token rows whose ratio is exactly `ratios[i]`: old = 0, logp = ln(ratio)."""
    logp = _t([[LN(r)] for r in ratios], grad=True)
    old = torch.zeros_like(logp)
    return logp, old, torch.ones_like(logp, dtype=torch.bool)


def test_policy_loss_clips_on_both_sides():
    # (A, ratio) per row, clip range [0.8, 1.2]:
    #   (+1, 1.5): above 1+eps with A>0 -> clipped: -min(1.5, 1.2)   = -1.2, grad 0
    #   (-1, 0.5): below 1-eps with A<0 -> clipped: -min(-0.5, -0.8) =  0.8, grad 0
    #   (+1, 1.1): inside               -> -1.1,                        grad -A*r = -1.1
    #   (-1, 1.5): above, but A<0       -> -min(-1.5, -1.2) = 1.5,      grad -A*r = +1.5 (pessimistic side)
    #   (+1, 0.5): below, but A>0       -> -min(0.5, 0.8)  = -0.5,      grad -A*r = -0.5
    logp, old, mask = _ratio_inputs([1.5, 0.5, 1.1, 1.5, 0.5])
    adv = _t([1.0, -1.0, 1.0, -1.0, 1.0])
    loss, stats = policy_loss(logp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.2)
    torch.testing.assert_close(loss, _t([[-1.2], [0.8], [-1.1], [1.5], [-0.5]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, _t([[0.0], [0.0], [-1.1], [1.5], [-0.5]]))
    # one high clip (row 0), one low clip (row 1) out of 5 tokens; ratio mean = 5.1 / 5
    assert stats["clip_frac_high"].item() == pytest.approx(0.2)
    assert stats["clip_frac_low"].item() == pytest.approx(0.2)
    assert stats["clip_frac"].item() == pytest.approx(0.4)
    assert stats["ratio_mean"].item() == pytest.approx(1.02)
    assert stats["ratio_min"].item() == pytest.approx(0.5)
    assert stats["ratio_max"].item() == pytest.approx(1.5)


def test_policy_loss_clip_higher_is_asymmetric():
    # DAPO clip-higher: range [1 - 0.2, 1 + 0.28] = [0.8, 1.28]
    #   (+1, 1.25): 1.25 < 1.28 -> NOT clipped: -1.25, grad -1.25 (a symmetric 0.2 would clip it)
    #   (-1, 0.75): 0.75 < 0.80 -> clipped low: -min(-0.75, -0.8) = 0.8, grad 0
    #   (+1, 1.30): 1.30 > 1.28 -> clipped high: -1.28, grad 0
    logp, old, mask = _ratio_inputs([1.25, 0.75, 1.3])
    adv = _t([1.0, -1.0, 1.0])
    loss, stats = policy_loss(logp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.28)
    torch.testing.assert_close(loss, _t([[-1.25], [0.8], [-1.28]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, _t([[-1.25], [0.0], [0.0]]))
    assert stats["clip_frac_low"].item() == pytest.approx(1 / 3)
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 3)

    # the same first row under the symmetric clip: -min(1.25, 1.2) = -1.2, and it counts as clipped
    logp_sym, old_sym, mask_sym = _ratio_inputs([1.25])
    loss_sym, stats_sym = policy_loss(logp_sym, old_sym, _t([1.0]), mask_sym, 0.2, 0.2)
    torch.testing.assert_close(loss_sym, _t([[-1.2]]))
    assert stats_sym["clip_frac_high"].item() == 1.0


def test_policy_loss_on_policy_equals_paper_loss():
    # old == logp.detach(): ratio == 1, nothing clips, loss_t = -(exp(logp - logp.detach()) * A) = -A,
    # gradient -A per token (the paper's surrogate).
    logp = _t([[-0.3, -1.2, -0.7], [-2.0, -0.1, -0.4]], grad=True)
    adv = _t([0.5, -2.0])
    mask = torch.ones(2, 3, dtype=torch.bool)
    loss, stats = policy_loss(logp, logp.detach(), adv, mask, 0.2, 0.2)
    paper = -(torch.exp(logp - logp.detach()) * adv[:, None])
    torch.testing.assert_close(loss, paper)
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, _t([[-0.5] * 3, [2.0] * 3]))
    assert stats["clip_frac"].item() == 0.0 and stats["ratio_mean"].item() == 1.0


def test_paper_loss_gradient_is_minus_advantage_over_length():
    # Ragged lengths 3, 1, 2; A = [1, -2, 0.5]; seq_mean_token_mean, one update (old = logp.detach()).
    # loss = mean_i (1/len_i) sum_t -A_i * ratio_t  ->  d loss / d logp_i,t = -A_i / (len_i * N_seq):
    # the test multiplies by N_seq = 3 to read off -A_i / len_i:
    #   row 0: -1/3 on 3 tokens; row 1: +2 on 1 token; row 2: -0.25 on 2 tokens; masked: 0
    # value: each sequence's mean is -A_i -> loss = -(1 - 2 + 0.5) / 3 = 0.166667
    logp = _t([[-0.5, -1.0, -1.5], [-0.2, 7.0, 7.0], [-0.9, -0.4, 7.0]], grad=True)
    mask = _mask([3, 1, 2], 3)
    adv = _t([1.0, -2.0, 0.5])
    loss, _ = grpo_loss(
        logp, logp.detach(), None, adv, mask, kl_coef=0.0, kl_estimator="k3",
        clip_eps_low=0.2, clip_eps_high=0.2, ratio_level="token", agg_mode="seq_mean_token_mean",
    )
    assert loss.item() == pytest.approx(0.5 / 3)
    loss.backward()
    torch.testing.assert_close(logp.grad * 3, _t([[-1 / 3] * 3, [2.0, 0.0, 0.0], [-0.25, -0.25, 0.0]]))


@pytest.mark.parametrize("ratio_level", sorted(RATIO_LEVELS))
@pytest.mark.parametrize("agg_mode", sorted(LOSS_AGGREGATIONS))
def test_masked_tokens_contribute_nothing(ratio_level, agg_mode):
    g = torch.Generator().manual_seed(0)
    n, t = 4, 5
    mask = _mask([5, 2, 3, 1], t)
    logp0 = -torch.rand(n, t, generator=g, dtype=torch.float64) * 2
    old0 = logp0 + 0.2 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref0 = logp0 + 0.3 * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.2], dtype=torch.float64)

    def run(garbage):
        logp = torch.where(mask, logp0, garbage).requires_grad_(True)
        old = torch.where(mask, old0, -garbage)
        ref = torch.where(mask, ref0, garbage * 3)
        loss, metrics = grpo_loss(
            logp, old, ref, adv, mask, kl_coef=0.1, kl_estimator="k3", clip_eps_low=0.1,
            clip_eps_high=0.15, ratio_level=ratio_level, agg_mode=agg_mode, max_tokens=6,
        )
        loss.backward()
        return loss.detach(), logp.grad, metrics

    base_loss, base_grad, base_metrics = run(torch.tensor(0.0, dtype=torch.float64))
    assert torch.isfinite(base_loss)
    # masked positions get exactly zero gradient
    assert torch.equal(base_grad[~mask], torch.zeros_like(base_grad[~mask]))
    # values that would overflow exp, -inf (a common padding value for log-probs), even NaN
    for garbage in (3.0, 1e4, -math.inf, math.nan):
        loss, grad, metrics = run(torch.tensor(garbage, dtype=torch.float64))
        torch.testing.assert_close(loss, base_loss, rtol=0, atol=0)
        torch.testing.assert_close(grad, base_grad, rtol=0, atol=0)
        assert metrics == base_metrics


# ----------------------------------------------------------------------------------------------
# aggregation
# ----------------------------------------------------------------------------------------------

# Ragged per-token losses, lengths 3, 1, 2; 100 marks masked positions that must be ignored.
RAGGED = [[1.0, 2.0, 3.0], [4.0, 100.0, 100.0], [5.0, 6.0, 100.0]]


def test_aggregate_seq_mean_token_mean():
    # row means: (1+2+3)/3 = 2, 4/1 = 4, (5+6)/2 = 5.5 -> mean over 3 sequences = 11.5 / 3 = 3.833333
    assert aggregate(_t(RAGGED), _mask([3, 1, 2], 3), "seq_mean_token_mean").item() == pytest.approx(11.5 / 3)
    # an extra empty row is left out of the count (not a 0 that drags the mean): still 3.833333
    with_empty = _t(RAGGED + [[100.0] * 3])
    assert aggregate(with_empty, _mask([3, 1, 2, 0], 3), "seq_mean_token_mean").item() == pytest.approx(11.5 / 3)


def test_aggregate_token_mean():
    # all 6 unmasked tokens: (1+2+3+4+5+6) / 6 = 21 / 6 = 3.5 (long rows weigh more)
    assert aggregate(_t(RAGGED), _mask([3, 1, 2], 3), "token_mean").item() == pytest.approx(3.5)
    with_empty = _t(RAGGED + [[100.0] * 3])
    assert aggregate(with_empty, _mask([3, 1, 2, 0], 3), "token_mean").item() == pytest.approx(3.5)


def test_aggregate_seq_mean_token_sum_norm():
    # Dr.GRPO: 21 / (N * max_tokens) = 21 / (3 * 4) = 1.75
    mask = _mask([3, 1, 2], 3)
    assert aggregate(_t(RAGGED), mask, "seq_mean_token_sum_norm", max_tokens=4).item() == pytest.approx(1.75)
    # the normaliser is constant: an empty row still counts in N -> 21 / (4 * 4) = 1.3125
    with_empty = _t(RAGGED + [[100.0] * 3])
    got = aggregate(with_empty, _mask([3, 1, 2, 0], 3), "seq_mean_token_sum_norm", max_tokens=4)
    assert got.item() == pytest.approx(1.3125)
    with pytest.raises(ValueError, match="needs max_tokens"):
        aggregate(_t(RAGGED), mask, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_aggregate_with_no_tokens_is_zero_with_grad(mode):
    loss = _t([[1.0, 2.0], [3.0, 4.0]], grad=True)
    out = aggregate(loss, torch.zeros(2, 2, dtype=torch.bool), mode, max_tokens=2)
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.equal(loss.grad, torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("mode", sorted(LOSS_AGGREGATIONS))
def test_parts_weighted_by_the_step_normaliser_give_the_whole_aggregate(mode):
    """Rows split into parts (micro-batches, micro-steps, processes): sum of aggregate(part) * weight(part,
    total = the counts summed over the parts) == aggregate(all rows), however unequal the parts' counts."""
    loss = _t(RAGGED + [[7.0, 8.0, 9.0], [100.0] * 3, [2.0, 100.0, 100.0]])
    mask = _mask([3, 1, 2, 3, 0, 1], 3)
    whole = aggregate(loss, mask, mode, max_tokens=3)
    for split in ([[0, 1, 2, 3, 4, 5]], [[0, 1], [2, 3, 4, 5]], [[0], [1], [2], [3], [4], [5]], [[4], [0, 5, 1, 2, 3]]):
        total = sum(normaliser_count(mask[part], mode) for part in split)
        parts = [aggregate(loss[part], mask[part], mode, max_tokens=3)
                 * microbatch_weight(mask, torch.tensor(part), mode, total=total) for part in split]
        assert sum(parts).item() == pytest.approx(whole.item()), split
    # counts: non-empty rows, tokens, rows
    expected = {"seq_mean_token_mean": 5.0, "token_mean": 10.0, "seq_mean_token_sum_norm": 6.0}[mode]
    assert normaliser_count(mask, mode) == expected
    assert microbatch_weight(mask, torch.tensor([4]), mode, total=0.0) == 0.0  # nothing in the step: weight 0


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        aggregate(_t(RAGGED), _mask([3, 1, 2], 3), "sum")


# ----------------------------------------------------------------------------------------------
# GSPO sequence ratio
# ----------------------------------------------------------------------------------------------

GSPO_LOGP = [[-1.0, -2.0, -0.5], [-0.3, -0.4, -0.5]]
GSPO_OLD = [[-1.2, -1.7, -9.0], [-0.5, -0.6, -0.9]]
GSPO_LENGTHS = [2, 3]
# row 0: log ratios 0.2, -0.3 (third token masked) -> mean -0.05     -> s_0 = exp(-0.05)  = 0.951229
# row 1: log ratios 0.2, 0.2, 0.4                  -> mean 0.266667  -> s_1 = exp(0.8/3)  = 1.305605
S0, S1 = math.exp(-0.05), math.exp(0.8 / 3)


def test_sequence_ratio_value_and_gradient():
    logp = _t(GSPO_LOGP, grad=True)
    mask = _mask(GSPO_LENGTHS, 3)
    ratio = importance_ratio(logp, _t(GSPO_OLD), mask, level="sequence")
    assert S0 == pytest.approx(0.951229, abs=1e-6) and S1 == pytest.approx(1.305605, abs=1e-6)
    torch.testing.assert_close(ratio[mask], _t([S0, S0, S1, S1, S1]))
    # GSPO-token: d s_i,t / d logp_t = s_i, and no cross-token terms:
    # d/dlogp of sum_t w_t * s_i,t = s_i * w_t on unmasked tokens
    w = _t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (ratio * w * mask).sum().backward()
    torch.testing.assert_close(logp.grad, _t([[S0, 2 * S0, 0.0], [4 * S1, 5 * S1, 6 * S1]]))


def test_sequence_ratio_reproduces_gspo_objective_and_gradient():
    # GSPO: J = mean_i -min(s_i A_i, clip(s_i, 0.8, 1.2) A_i), s_i = exp(mean_t log ratio) WITH gradient.
    # A = [+1, +1]: s_0 = 0.951 unclipped (grad -A s_0 / |y_0| = -0.475615 per token, / 2 sequences);
    #               s_1 = 1.306 > 1.2 clipped (value -1.2, zero gradient).
    adv = _t([1.0, 1.0])
    mask = _mask(GSPO_LENGTHS, 3)

    logp = _t(GSPO_LOGP, grad=True)
    pg, stats = policy_loss(logp, _t(GSPO_OLD), adv, mask, 0.2, 0.2, ratio_level="sequence")
    loss = aggregate(pg, mask, "seq_mean_token_mean")
    loss.backward()

    logp_ref = _t(GSPO_LOGP, grad=True)
    s = torch.exp(masked_mean(logp_ref - _t(GSPO_OLD), mask, dim=-1))  # [N], differentiable
    gspo = (-torch.minimum(s * adv, s.clamp(0.8, 1.2) * adv)).mean()
    gspo.backward()

    assert loss.item() == pytest.approx((-S0 - 1.2) / 2)
    torch.testing.assert_close(loss, gspo)
    torch.testing.assert_close(logp.grad, logp_ref.grad)
    torch.testing.assert_close(logp.grad, _t([[-S0 / 4, -S0 / 4, 0.0], [0.0, 0.0, 0.0]]))
    # one of the two sequences is clipped: its 3 tokens out of 5 count as clipped
    assert stats["clip_frac_high"].item() == pytest.approx(3 / 5)


# ----------------------------------------------------------------------------------------------
# grpo_loss
# ----------------------------------------------------------------------------------------------


def test_grpo_loss_kl_term_hand_value():
    # A = 0 so the policy term is 0; one update so ratio = 1.
    # k3 per token: [0.193147 (logp = ln .5, ref = ln .25), 0 (equal)]
    # seq_mean_token_mean: 0.1 * (0.193147 + 0) / 2 = 0.00965736
    logp = _t([[LN(0.5), LN(0.5)]], grad=True)
    ref = _t([[LN(0.25), LN(0.5)]])
    kw = dict(clip_eps_low=0.2, clip_eps_high=0.2, ratio_level="token", agg_mode="seq_mean_token_mean")
    loss, metrics = grpo_loss(
        logp, logp.detach(), ref, _t([0.0]), torch.ones(1, 2, dtype=torch.bool), kl_coef=0.1, kl_estimator="k3", **kw
    )
    k3 = 0.5 - LN(0.5) - 1
    assert loss.item() == pytest.approx(0.1 * k3 / 2)
    assert metrics["kl"] == pytest.approx(k3 / 2) and metrics["policy_loss"] == 0.0
    assert metrics["tokens"] == 2.0
    assert set(metrics) == {
        "loss", "policy_loss", "kl", "clip_frac", "clip_frac_low", "clip_frac_high",
        "ratio_mean", "ratio_min", "ratio_max", "tokens",
    }
    assert all(isinstance(v, float) for v in metrics.values())
    # d/dlogp_0 of 0.1 * k3 / 2 = 0.1 * (1 - exp(ref - logp)) / 2 = 0.1 * 0.5 / 2 = 0.025
    loss.backward()
    torch.testing.assert_close(logp.grad, _t([[0.025, 0.0]]))

    # kl_coef = 0: KL logged, not trained on
    loss0, metrics0 = grpo_loss(
        logp, logp.detach(), ref, _t([0.0]), torch.ones(1, 2, dtype=torch.bool), kl_coef=0.0, kl_estimator="k3", **kw
    )
    assert loss0.item() == 0.0 and metrics0["kl"] == pytest.approx(k3 / 2)
    # no reference: no KL term and no "kl" metric
    _, metrics_none = grpo_loss(
        logp, logp.detach(), None, _t([0.0]), torch.ones(1, 2, dtype=torch.bool), kl_coef=0.0, kl_estimator="k3", **kw
    )
    assert "kl" not in metrics_none


def test_grpo_loss_errors_speak():
    logp = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    kw = dict(kl_estimator="k3", clip_eps_low=0.2, clip_eps_high=0.2, ratio_level="token", agg_mode="token_mean")
    with pytest.raises(ValueError, match="no ref_logprobs"):
        grpo_loss(logp, logp, None, torch.zeros(2), mask, kl_coef=0.04, **kw)
    with pytest.raises(ValueError, match="unknown ratio level 'seq'.*'sequence'"):
        grpo_loss(logp, logp, None, torch.zeros(2), mask, kl_coef=0.0, **{**kw, "ratio_level": "seq"})
    with pytest.raises(ValueError, match="unknown KL estimator"):
        grpo_loss(logp, logp, None, torch.zeros(2), mask, kl_coef=0.0, **{**kw, "kl_estimator": "kl"})
    with pytest.raises(ValueError, match=r"advantages must be \[N\] with N = 2"):
        grpo_loss(logp, logp, None, torch.zeros(3), mask, kl_coef=0.0, **kw)
    with pytest.raises(ValueError, match="shape mismatch"):
        grpo_loss(logp, torch.zeros(2, 4), None, torch.zeros(2), mask, kl_coef=0.0, **kw)


# ----------------------------------------------------------------------------------------------
# loop reference vs vectorised
# ----------------------------------------------------------------------------------------------


def _loop_grpo_loss(logp, old, ref, adv, lengths, kl_coef, kl_estimator, low, high, ratio_level, agg_mode, max_tokens):
    """Token-by-token python reference of grpo_loss (scalar tensor ops only, no masks)."""
    n = logp.shape[0]
    rows = []
    clipped_low = clipped_high = count = 0
    for i in range(n):
        length = lengths[i]
        seq_ratio = None
        if ratio_level == "sequence" and length > 0:
            seq_ratio = torch.exp(sum(logp[i, t] - old[i, t] for t in range(length)) / length)
        terms = []
        for t in range(length):
            if ratio_level == "token":
                r = torch.exp(logp[i, t] - old[i, t])
            else:
                r = seq_ratio.detach() * torch.exp(logp[i, t] - logp[i, t].detach())
            a = adv[i]
            term = -torch.minimum(r * a, torch.clamp(r, 1 - low, 1 + high) * a)
            clipped_low += int(a < 0 and r.item() < 1 - low)
            clipped_high += int(a > 0 and r.item() > 1 + high)
            count += 1
            if ref is not None and kl_coef != 0:
                if kl_estimator == "k3":
                    d = ref[i, t] - logp[i, t]
                    kl = torch.exp(d) - d - 1
                else:
                    kl = logp[i, t] - ref[i, t]
                term = term + kl_coef * kl
            terms.append(term)
        rows.append(terms)
    if agg_mode == "seq_mean_token_mean":
        seq_means = [sum(terms) / len(terms) for terms in rows if terms]
        loss = sum(seq_means) / len(seq_means)
    elif agg_mode == "token_mean":
        loss = sum(sum(terms) for terms in rows if terms) / count
    else:
        loss = sum(sum(terms) for terms in rows if terms) / (n * max_tokens)
    return loss, clipped_low / count, clipped_high / count


@pytest.mark.parametrize(
    "kl_estimator, ratio_level, agg_mode, clip, kl_setting",
    list(
        itertools.product(
            sorted(KL_ESTIMATORS),
            sorted(RATIO_LEVELS),
            sorted(LOSS_AGGREGATIONS),
            [(0.2, 0.2), (0.05, 0.08)],
            ["kl", "kl_coef_zero", "no_ref"],
        )
    ),
)
def test_loop_reference_matches_vectorised(kl_estimator, ratio_level, agg_mode, clip, kl_setting):
    g = torch.Generator().manual_seed(1234)
    group_size, t = 3, 5
    lengths = [5, 1, 3, 0, 2, 4]  # ragged, with an empty completion
    n = len(lengths)
    mask = _mask(lengths, t)
    logp0 = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    old = logp0 + 0.15 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref = logp0 + 0.4 * torch.randn(n, t, generator=g, dtype=torch.float64)
    # junk at padded positions, as a real padded batch may hold
    logp0 = torch.where(mask, logp0, torch.tensor(50.0, dtype=torch.float64))
    old = torch.where(mask, old, torch.tensor(-math.inf, dtype=torch.float64))
    rewards = torch.randint(0, 3, (n,), generator=g).to(torch.float64)
    adv = group_advantages(rewards, group_size, "grpo")
    kl_coef = 0.0 if kl_setting != "kl" else 0.3
    ref_in = None if kl_setting == "no_ref" else ref
    low, high = clip

    logp = logp0.clone().requires_grad_(True)
    loss, metrics = grpo_loss(
        logp, old, ref_in, adv, mask, kl_coef=kl_coef, kl_estimator=kl_estimator, clip_eps_low=low,
        clip_eps_high=high, ratio_level=ratio_level, agg_mode=agg_mode, max_tokens=t,
    )
    loss.backward()

    logp_loop = logp0.clone().requires_grad_(True)
    loss_loop, frac_low, frac_high = _loop_grpo_loss(
        logp_loop, old, ref_in, adv, lengths, kl_coef, kl_estimator, low, high, ratio_level, agg_mode, t
    )
    loss_loop.backward()

    torch.testing.assert_close(loss, loss_loop)
    torch.testing.assert_close(logp.grad, logp_loop.grad)
    assert metrics["clip_frac_low"] == pytest.approx(frac_low)
    assert metrics["clip_frac_high"] == pytest.approx(frac_high)
    assert metrics["tokens"] == float(sum(lengths))


def test_loop_reference_advantages():
    g = torch.Generator().manual_seed(7)
    group_size = 4
    rewards = torch.randint(0, 3, (5 * group_size,), generator=g).to(torch.float64)
    for method in sorted(ADVANTAGE_ESTIMATORS):
        expected = []
        for b in range(5):
            group = rewards[b * group_size:(b + 1) * group_size].tolist()
            mean = sum(group) / group_size
            std = math.sqrt(sum((r - mean) ** 2 for r in group) / (group_size - 1))
            for r in group:
                expected.append((r - mean) / (std + 1e-4) if method == "grpo" else r - mean)
        torch.testing.assert_close(group_advantages(rewards, group_size, method), _t(expected))
