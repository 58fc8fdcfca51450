"""One GRPO step's gradient on FIXED completions, however the step is split (used by test_step_normaliser.py).

In process, `step_grads(trainer, micro_steps)` gives the (process-averaged) gradient of one step
whose accumulation micro-steps hold the given prompts. Under torchrun,
`python -m torch.distributed.run --nproc_per_node 2 step_grads.py OUT DATA` runs every loss_agg,
with and without mask_truncated, with process r taking prompts 2r and 2r+1 as one micro-step
(1 x 2) or two (2 x 1); rank 0 saves {(loss_agg, mask_truncated, split): gradients} to OUT.

The completions are fixed (sampling would differ with the split): 4 prompts x G = 3, ragged, with
prompt 2's completions all truncated, so token and row counts differ between micro-steps.
"""

from __future__ import annotations

import sys

import torch

G = 3
PROMPTS = 4
T = 6
# End-of-turn position of each completion row; T = truncated (no end-of-turn token).
ENDS = [1, T, 2, 3, 0, 5, T, T, T, 2, 4, T]
REWARDS = [1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 3.0, 0.0, 1.0, 2.0, 2.0, 0.0]
SPLITS_2_PROCESSES = {"1x2": lambda r: [[2 * r, 2 * r + 1]], "2x1": lambda r: [[2 * r], [2 * r + 1]]}


def make_trainer(out, data, *extra):
    from harken.config import load_config
    from harken.schema import GRPOConfig
    from harken.train.grpo import GRPOTrainer

    cfg = load_config(GRPOConfig, "tiny", [
        f"run.out_dir={out}", f"data.path={data}", f"rollout.group_size={G}", f"rollout.max_new_tokens={T}",
        "run.max_steps=1", "run.progress=false", "run.tensorboard=false", "reward.rewards=[{name: accuracy}]", *extra,
    ])
    return GRPOTrainer(cfg)


def fixed_completions(trainer) -> torch.Tensor:
    """[PROMPTS * G, T] completion ids, the same on every process."""
    lm = trainer.lm
    ids = torch.randint(10, len(lm.tokenizer) - 10, (PROMPTS * G, T), generator=torch.Generator().manual_seed(0))
    special = torch.tensor(list(lm.eos_ids) + [lm.pad_id])
    ids[torch.isin(ids, special)] = 11
    for row, end in enumerate(ENDS):
        if end < T:
            ids[row, end] = lm.eos_ids[0]
            ids[row, end + 1:] = lm.pad_id
    return ids


def step_grads(trainer, micro_steps: list[list[int]]) -> dict[str, torch.Tensor]:
    """Gradient of one step whose accumulation micro-steps (this process's) hold the given prompts.

    Runs the trainer's own path: `build_batch`, `score_logprobs`, `step_normaliser`, `backward`,
    then the processes' gradient averaging that `clip_and_step` does.
    """
    from harken.train.processes import average_gradients

    examples, ids, rewards = trainer.stream.examples[:PROMPTS], fixed_completions(trainer), torch.tensor(REWARDS)
    rollouts = []
    for idx in micro_steps:
        exs = [examples[i] for i in idx]
        rows = [i * G + j for i in idx for j in range(G)]
        prompts = trainer.lm.encode_prompts([trainer.template.render(ex) for ex in exs],
                                            [trainer.audio.load(ex.audio) for ex in exs])
        rb = trainer.build_batch(exs, prompts, None, ids[rows], [""] * len(rows), rewards[rows])
        trainer.score_logprobs(rb)
        rollouts.append(rb)
    normaliser = trainer.step_normaliser(rollouts)
    trainer.optimizer.zero_grad(set_to_none=True)
    for rb in rollouts:
        trainer.backward(rb, normaliser)
    average_gradients(trainer.params, trainer.acc)
    return {n: p.grad.detach().clone() for n, p in trainer.lm.model.named_parameters() if p.grad is not None}


def main(out: str, data: str, run_dir: str) -> None:
    import torch.distributed as dist

    from harken.rl.algorithm import LOSS_AGGREGATIONS

    trainer = make_trainer(run_dir, data)
    rank = trainer.acc.process_index
    results = {}
    for agg in LOSS_AGGREGATIONS:
        for masked in (False, True):
            trainer.cfg.algo.loss_agg, trainer.cfg.rollout.mask_truncated = agg, masked
            for name, split in SPLITS_2_PROCESSES.items():
                results[(agg, masked, name)] = step_grads(trainer, split(rank))
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(results, out)
    trainer.metrics.close()
    if dist.is_initialized():  # an open gloo group at interpreter exit can abort the process
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
