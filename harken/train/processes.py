"""Several processes: one per GPU under accelerate, or per CPU process under torchrun (gloo).

Owns: the `Accelerator` of a run, averaging gradients over processes, and the end-of-run check
that every process holds the same weights. Each process holds a full copy of the model and draws
its own disjoint prompts; gradients are averaged before every optimizer step, so all copies stay
identical.
Several processes read as one run: only the main process logs below ERROR (`make_accelerator`),
and an error every process meets alike (a config, a resume refusal, a missing file) is reported
by the main process alone (`errors_from_main`).
Does not own: what a step computes (`harken.train.grpo`, `harken.train.sft`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterable, Iterator

import torch

from harken.models.audio_lm import AudioLM

log = logging.getLogger(__name__)


def make_accelerator():
    """The run's `Accelerator`; the other processes than the main one log errors only."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if not accelerator.is_main_process:
        _log_errors_only()
    return accelerator


def _log_errors_only() -> None:
    """A process other than the main one: its log lines would repeat the main process's."""
    from transformers.utils import logging as hf_logging

    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("harken").setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()


OTHERS_WAIT_S = 30.0  # how long another process waits to be stopped after an error of its own


@contextlib.contextmanager
def errors_from_main(accelerator) -> Iterator[None]:
    """A user error (ValueError, OSError: what the command line prints in one line) is reported once.

    The main process raises it; another process that meets it too waits for the launcher
    (torchrun, accelerate) to stop it when the main process exits, so the message is printed once
    and the main process is named the first failure. One still running after `OTHERS_WAIT_S` met
    an error of its own (e.g. a clip only it draws) and raises it then.
    """
    try:
        yield
    except (ValueError, OSError):
        if accelerator.num_processes > 1 and not accelerator.is_main_process:
            time.sleep(OTHERS_WAIT_S)
        raise


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
