"""Several processes: one per GPU under accelerate, or per CPU process under torchrun (gloo).

Owns: the `Accelerator` of a run, averaging gradients over processes, and the end-of-run check
that every process holds the same weights. Each process holds a full copy of the model and draws
its own disjoint prompts; gradients are averaged before every optimizer step, so all copies stay
identical.
Does not own: what a step computes (`harken.train.grpo`, `harken.train.sft`).
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch

from harken.models.audio_lm import AudioLM

log = logging.getLogger(__name__)


def make_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def average_gradients(params: Iterable[torch.nn.Parameter], accelerator) -> None:
    """Mean of every gradient over processes (no-op with one process)."""
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= accelerator.num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def check_replicas_agree(lm: AudioLM, accelerator) -> None:
    """With several processes, verify every copy of the model holds the same weights."""
    if accelerator.num_processes == 1:
        return
    local = torch.stack([p.detach().double().sum() for p in lm.model.parameters() if p.requires_grad]).sum()
    everyone = accelerator.gather(local.reshape(1).to(accelerator.device))
    if not torch.allclose(everyone, everyone[0].expand_as(everyone), rtol=1e-9, atol=0):
        raise RuntimeError(f"model replicas diverged across processes: {everyone.tolist()}")
    log.info("all %d model replicas agree (parameter checksum %.9g)", accelerator.num_processes, float(everyone[0]))
