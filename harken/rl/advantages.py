"""Group-relative advantages: how each completion's reward compares with its group's.

Owns: pure tensor functions turning the [B*G] rewards of B groups of G completions into one
advantage per completion, picked by name from ADVANTAGE_ESTIMATORS, and per-group statistics
(for logging and DAPO's dynamic sampling). Does not own: the loss (`harken.rl.algorithm`),
rewards (`harken.rl.rewards`).

Shapes: B prompts, G completions per prompt (the G rows of one prompt are CONTIGUOUS).

Textbook GRPO and where this module differs from it:
    1. Advantage "grpo" (DeepSeekMath): A_i = (r_i - mean_g) / (std_g + eps), std UNBIASED
       (Bessel's correction, torch.std's default), eps = 1e-4 as in the R1-AQA release.
       Deviation: a group whose rewards are all exactly equal gets advantage exactly 0 (the
       floating-point mean of equal numbers need not equal them exactly); a group of size 1 has
       std 0 instead of NaN.
    2. Advantage "dr_grpo" (Dr.GRPO, "Understanding R1-Zero-Like Training", arXiv 2503.20783):
       A_i = r_i - mean_g, no division by the std (which over-weights nearly-solved and
       nearly-hopeless prompts).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from harken.rl.masks import lookup


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
    estimator = lookup(ADVANTAGE_ESTIMATORS, method, "advantage method")
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
