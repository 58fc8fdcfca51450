"""The optimizer step: AdamW, the learning-rate schedule, gradient averaging and clipping.

Owns: building the optimizer and schedule from `optim.*`, and one optimizer step (average
gradients over processes, clip, step, zero) returning the pre-clip gradient norm; a step whose
gradient norm is NaN or infinite is not taken (the weights and the schedule stay as they were,
the gradients are dropped) and its norm returned for the trainer to stop or skip on
(`optim.on_nonfinite`, `NonFiniteError`); `all_finite` checks weights.
Does not own: the loss (`harken.rl.algorithm`, `harken.train.sft`).
"""

from __future__ import annotations

import torch

from harken.train.processes import average_gradients
from harken.train.sharding import local_shard


def build_optimizer(params: list[torch.nn.Parameter], optim_cfg, total_steps: int):
    from transformers import get_scheduler

    opt = torch.optim.AdamW(
        params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, betas=(optim_cfg.adam_beta1, optim_cfg.adam_beta2)
    )
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[optim_cfg.schedule]
    sched = get_scheduler(name, opt, num_warmup_steps=optim_cfg.warmup_steps, num_training_steps=max(total_steps, 1))
    return opt, sched


class NonFiniteError(ValueError):
    """A loss, gradient norm, sampling distribution or weight that is NaN or infinite.

    Raised before anything non-finite reaches the weights; the trainer turns it into
    "non-finite loss at step N; last good checkpoint: DIR".
    """


def all_finite(tensors) -> bool:
    """True when every element of every tensor (a sharded one: this process's shard) is finite."""
    local = [local_shard(t) for t in tensors]
    return all(bool(torch.isfinite(t.detach()).all()) for t in local if t.numel())


def clip_and_step(params, optimizer, scheduler, max_grad_norm: float, accelerator, sharded: bool = False) -> float:
    """Average gradients over processes, clip, step, zero. Returns the pre-clip grad norm.

    A NaN or infinite norm takes no step: the gradients are dropped, the weights, the optimizer
    state and the schedule stay as they were, and the norm is returned as it is. Every process
    returns the same norm (the gradients are averaged, or the shards' norms reduced), so every
    process takes the same decision.

    Sharded gradients arrive already averaged (FSDP reduce-scatters them); their norm is the
    norm of the whole gradient (the shards' squares are summed over processes).
    """
    if not sharded:
        average_gradients(params, accelerator)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm and max_grad_norm > 0 else float("inf"))
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return float(norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def apply_settings(optimizer, scheduler, optim_cfg) -> None:
    """Put `optim.*` (rate, weight decay, betas) into an optimizer and schedule restored from a checkpoint.

    Loading a checkpoint restores the rate and betas it was written with; a resume allowed to
    change them (`run.resume_changed`) continues with the configured ones, at the same point of
    the schedule.
    """
    scheduler.base_lrs = [optim_cfg.lr for _ in optimizer.param_groups]
    for group, lr_lambda in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group.update(initial_lr=optim_cfg.lr, lr=optim_cfg.lr * lr_lambda(scheduler.last_epoch),
                     weight_decay=optim_cfg.weight_decay, betas=(optim_cfg.adam_beta1, optim_cfg.adam_beta2))
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def state_bytes(params: list[torch.nn.Parameter], optimizer) -> dict[str, int]:
    """Bytes this process holds for the trained weights, their gradients and the optimizer state.

    Sharded tensors count their local shard only. Gradients are counted as the weights' size in
    the gradient dtype (they are freed between steps).
    """
    weights = sum(local_shard(p).numel() * p.element_size() for p in params)
    optim = sum(local_shard(v).numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0)
    return {"weights": weights, "gradients": weights, "optimizer": optim}
