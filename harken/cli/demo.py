"""`harken demo`: GRPO vs SFT on audio QA in miniature, end to end on a CPU.

Owns: the command's options and keeping its console output to stage headers, progress bars and
the summary. The demo itself is `harken.demo.run.run_demo`.
"""

from __future__ import annotations

import argparse
import logging


def _cmd_demo(args: argparse.Namespace) -> int:
    from harken.demo.run import run_demo

    quiet: dict[logging.Handler, int] = {}
    if not args.verbose:
        # Keep the console to the stage headers, progress bars and the summary: the trainers'
        # INFO lines still go to each run's train.log and to OUT/demo.log.
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                quiet[h] = h.level
                h.setLevel(logging.WARNING)
    from harken.progress import no_library_bars

    try:
        with no_library_bars():  # transformers' "Loading weights" bars, one per model load
            run_demo(args.out, quick=args.quick, seed=args.seed, threads=args.threads)
    finally:
        for h, level in quiet.items():
            h.setLevel(level)
    return 0


def register(top, groups) -> None:
    p = top.add_parser(
        "demo",
        help="GRPO vs SFT on audio QA in miniature, end to end on a CPU (~6 min; --quick: ~1 min)",
        description=(
            "Make offline data (synthetic skills + real audio from Debian packages), build a toy "
            "Qwen2-Audio, warm it up into a base model, train an SFT arm and a GRPO arm from it on the "
            "same questions, evaluate all three, and write a report (tables, charts, index.html)."
        ),
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="demo folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes: every stage runs in about a minute, nothing learns")
    p.add_argument("--seed", type=int, default=0, help="seed of data, model, data order and sampling")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (the toy gains nothing from more, and on 2 busy cores a second "
                        "thread made steps ~3x slower; 0 = torch's default)")
    p.set_defaults(func=_cmd_demo)
