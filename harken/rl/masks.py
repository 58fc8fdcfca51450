"""Masked-tensor helpers and the completion mask, shared by the GRPO math.

Owns: `completion_mask_from_eos` (the ONE place that decides which generated tokens belong to a
completion), `masked_mean`, shape checks and registry look-ups with errors that list the valid
names. Pure tensor functions, like the rest of `harken.rl`'s math.
Does not own: advantages (`harken.rl.advantages`), the loss (`harken.rl.algorithm`).

Shapes: N completions (rows), T completion tokens (right padded).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def lookup(registry: dict[str, Callable], name: str, what: str) -> Callable:
    """Return registry[name], or raise an error that lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(repr(k) for k in registry)
        raise ValueError(f"unknown {what} {name!r}; expected one of: {valid}") from None


def check_same_shape(**tensors: Tensor) -> None:
    """Raise a ValueError naming every argument's shape unless all shapes are equal."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n}={s}" for n, s in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; all must be [N, T]")


def zero_masked(x: Tensor, mask: Tensor) -> Tensor:
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
    total = zero_masked(x, mask).sum() if dim is None else zero_masked(x, mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp_min(1).to(total.dtype)


# The completion mask: the ONE place it is computed.


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
