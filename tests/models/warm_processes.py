"""Under torchrun: every process asks for the warmed-up toy (a 2-step warm-up) in an empty cache
(run by test_warm.py); one builds it, all load it. Prints `loaded FOLDER` per process."""

from __future__ import annotations

import logging

import torch.distributed as dist


def main() -> None:
    from harken.models import warm
    from harken.models.loading import load_audio_lm

    logging.basicConfig(level=logging.INFO)
    warm.WARM_UP.update(steps=2, questions=12)
    dist.init_process_group("gloo")
    try:
        lm = load_audio_lm("tiny-warm:qwen2-audio")
        print(f"loaded {lm.path}", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
