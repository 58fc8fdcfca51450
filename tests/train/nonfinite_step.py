"""A toy SFT run whose gradients are made NaN on one step (run by test_failures.py).

`python nonfinite_step.py OUT DATA STEP ON_NONFINITE [RANK]`, alone or under torchrun: trains the
`tiny-sft` preset for 3 steps and puts a NaN into one gradient after the backward of step STEP, on
process RANK only (default: every process), with `optim.on_nonfinite=ON_NONFINITE`. Prints
`trained steps=N optimizer_steps=N scheduler_steps=N finite=BOOL` on the main process when the run
ends.
"""

from __future__ import annotations

import sys


def make_trainer(out: str, data: str, bad_step: int, on_nonfinite: str, rank: int | None = None):
    """The SFT trainer, its backward wrapped to spoil one step's gradients on `rank` (None: everywhere)."""
    import torch

    from harken.config import load_config
    from harken.schema import SFTConfig
    from harken.train.sft import SFTTrainer

    cfg = load_config(SFTConfig, "tiny-sft", [
        f"run.out_dir={out}", f"data.path={data}", "val.path=", "run.max_steps=3", "run.save_every=0",
        "run.sample_every=0", "run.eval_every=0", "run.progress=false", "run.tensorboard=false",
        "optim.warmup_steps=0", f"optim.on_nonfinite={on_nonfinite}",
    ])
    trainer = SFTTrainer(cfg)
    backward = trainer.backward

    def spoiled(batch, num_tokens):
        result = backward(batch, num_tokens)
        if trainer.step + 1 == bad_step and rank in (None, trainer.acc.process_index):
            p = next(p for p in trainer.params if p.grad is not None)
            p.grad.view(-1)[0] = float("nan")
        return result

    trainer.backward = spoiled
    torch.manual_seed(0)
    return trainer


def optimizer_steps(trainer) -> int:
    """Steps AdamW took (its per-parameter step count)."""
    return int(next(iter(trainer.optimizer.state.values()))["step"])


def main(out: str, data: str, bad_step: int, on_nonfinite: str, rank: int | None) -> None:
    import torch.distributed as dist

    from harken.train.optim import all_finite

    trainer = make_trainer(out, data, bad_step, on_nonfinite, rank)
    try:
        trainer.train()
        if trainer.acc.is_main_process:
            print(f"trained steps={trainer.step} optimizer_steps={optimizer_steps(trainer)} "
                  f"scheduler_steps={trainer.scheduler.last_epoch} finite={all_finite(trainer.params)}", flush=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else None)
