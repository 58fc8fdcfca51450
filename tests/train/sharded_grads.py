"""Gradients of a GRPO-style loss on fixed rollouts, written to a file (run by test_sharding.py).

`python sharded_grads.py OUT FAMILY [fsdp]`, alone or under torchrun: builds the toy model, samples
fixed completions with a fixed seed, backpropagates a weighted sum of their log-probs over
micro-batches (prompt shared), and saves the full gradients (gathered from the shards) on rank 0.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def main(out: str, family: str, sharded: bool) -> None:
    import torch.distributed as dist

    from harken.models.toy import build_tiny
    from harken.rl.rollout import SamplingParams, completion_logprobs, generate
    from harken.train.sharding import ensure_process_group, shard_audio_lm

    torch.manual_seed(0)
    lm = build_tiny(family, seed=0)
    if sharded:
        ensure_process_group()
        shard_audio_lm(lm, torch.float32)
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(16000 * s)).astype(np.float32) for s in (1, 2)]
    batch = lm.encode_prompts(["How many beeps?", "Which is louder, the first or the second?"], clips)
    ids = generate(lm, batch, 3, SamplingParams(max_new_tokens=6), generator=torch.Generator().manual_seed(0))
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    lm.model.train()
    completion_logprobs(lm, batch, ids, 3, micro_batch=2, loss_fn=lambda lp, rows: (lp * weights[rows]).sum())
    grads = {}
    for name, p in lm.model.named_parameters():
        if p.grad is not None:
            grads[name] = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"ids": ids, "grads": grads}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "fsdp")
