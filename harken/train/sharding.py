"""Sharding a model across processes with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Owns: `shard_audio_lm`, which makes one FSDP unit per encoder layer and per decoder layer and puts
the rest (embeddings, final norm, head, encoder stem, projector) at the root; the root's
registered forward method every pass of the model runs through (`AudioLM.call`); gathering the
whole model for a rollout; the process group a single process needs to shard; a tensor's local
shard.

Why a registered root method: the shared-prefix path calls the model's pieces one by one
(encoder, embeddings, language model, head) instead of the model's own `forward`. Running each
pass as a forward of the root lets FSDP gather the root's weights for the pass, register the
hooks that gather each layer again in backward, and reduce-scatter every gradient, exactly as
for a plain forward. A pass's tensor outputs must be what later backward passes start from.

Storage and compute: parameters are stored sharded in their load dtype (fp32 master weights by
default) and gathered in the compute dtype (`MixedPrecisionPolicy(param_dtype=compute,
reduce_dtype=fp32)`); gradients and the optimizer state live on the shards.
Does not own: which dtype is which (`harken.train.policy`), checkpoints (`harken.train.checkpoint`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import types
from typing import Iterator

import torch
from torch import nn

from harken.models.audio_lm import AudioLM
from harken.models.families import base_model

PASS_METHOD = "harken_pass"  # name of the root's registered forward method


def ensure_process_group() -> None:
    """A one-process group when the run was not started by torchrun/accelerate (FSDP needs one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    with socket.socket() as s:  # a free local port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a sharded tensor (a DTensor); any other tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(base_model(model), FSDPModule)


def _units(lm: AudioLM) -> list[nn.Module]:
    """The layers that become their own FSDP units: every encoder layer, then every decoder layer."""
    encoder = lm.family.module(lm.model, "audio_tower")
    decoder = lm.family.module(lm.model, "language_model")
    return [*encoder.layers, *decoder.layers]


def _run_pass(self, fn, *args, **kwargs):
    return fn(*args, **kwargs)


def shard_audio_lm(lm: AudioLM, compute_dtype: torch.dtype) -> None:
    """Shard `lm.model` in place across the default process group and route its passes through the root.

    Args:
        compute_dtype: the dtype weights are gathered in for compute (their storage dtype stays).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    import torch.distributed as dist

    root = base_model(lm.model)
    storage = next(root.parameters()).dtype
    mesh = init_device_mesh(lm.device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=None if compute_dtype == storage else compute_dtype,
                              reduce_dtype=torch.float32)
    for unit in _units(lm):
        fully_shard(unit, mesh=mesh, mp_policy=mp)
    fully_shard(root, mesh=mesh, mp_policy=mp)
    setattr(root, PASS_METHOD, types.MethodType(_run_pass, root))
    register_fsdp_forward_method(root, PASS_METHOD)
    lm.entry = getattr(root, PASS_METHOD)
    lm.gather = lambda: gathered(root)


@contextlib.contextmanager
def gathered(root: nn.Module) -> Iterator[None]:
    """Gather every unit's weights once and keep them until the block ends (a rollout's decode loop)."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in root.modules() if isinstance(m, FSDPModule) and m is not root]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)
