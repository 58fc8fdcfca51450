"""The optimizer step: AdamW, the learning-rate schedule, gradient averaging and clipping.

Owns: building the optimizer and schedule from `optim.*`, and one optimizer step (average
gradients over processes, clip, step, zero) returning the pre-clip gradient norm.
Does not own: the loss (`harken.rl.algorithm`, `harken.train.sft`).
"""

from __future__ import annotations

import torch

from harken.train.processes import average_gradients


def build_optimizer(params: list[torch.nn.Parameter], optim_cfg, total_steps: int):
    from transformers import get_scheduler

    opt = torch.optim.AdamW(
        params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, betas=(optim_cfg.adam_beta1, optim_cfg.adam_beta2)
    )
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[optim_cfg.schedule]
    sched = get_scheduler(name, opt, num_warmup_steps=optim_cfg.warmup_steps, num_training_steps=max(total_steps, 1))
    return opt, sched


def clip_and_step(params, optimizer, scheduler, max_grad_norm: float, accelerator) -> float:
    """Average gradients over processes, clip, step, zero. Returns the pre-clip grad norm."""
    average_gradients(params, accelerator)
    if max_grad_norm and max_grad_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    else:
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        norm = float(torch.stack(grads).norm()) if grads else 0.0
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
