"""`harken demo`: GRPO vs SFT on audio QA in miniature, end to end on a CPU.

Owns: the command's options and keeping its console output readable: stage headers, the
summary, and progress (bars on a terminal; in a log file or a pipe, a line per tenth of each
loop, at most one every 10 s). The demo itself is `harken.demo.run.run_demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
from typing import Iterator

_PROGRESS_LINE = re.compile(r"^(?P<desc>.+?): \S+ (?P<done>\d+)/(?P<total>\d+)\b")


class EveryTenth(logging.Filter):
    """Lets warnings through, and of the progress lines (`harken.progress`) each loop's first one
    and then one per tenth of the loop, at least `gap_s` seconds apart (a loop of a few seconds
    shows only its first line, with its ETA).

    A loop is known by its label ("sft", "grpo", "eval jsonl"); one whose count falls back (the
    next run under the same label) starts afresh. Other INFO lines stay in the log files.
    """

    def __init__(self, gap_s: float = 10.0) -> None:
        super().__init__()
        self.gap_s = gap_s
        self.last: dict[str, tuple[int, float]] = {}  # label -> (tenth, time) of the last line let through

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        m = _PROGRESS_LINE.match(record.getMessage()) if record.name == "harken.progress" else None
        if m is None:
            return False
        desc, done, total = m["desc"], int(m["done"]), max(1, int(m["total"]))
        tenth = 10 * done // total
        last, at = self.last.get(desc, (-1, -math.inf))
        if tenth < last:  # a new loop under the same label
            last, at = -1, -math.inf
        if last < 0 or (tenth > last and record.created - at >= self.gap_s):
            self.last[desc] = (tenth, record.created)
            return True
        return False


@contextlib.contextmanager
def _console(verbose: bool) -> Iterator[None]:
    """The console shows warnings and (off a terminal) a progress line per tenth; restored on exit."""
    from harken.progress import stderr_is_terminal

    if verbose:
        yield
        return
    consoles = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    levels = {h: h.level for h in consoles}
    tenth = EveryTenth()
    for h in consoles:
        # On a terminal the bars show progress; the trainers' INFO lines still go to each run's
        # train.log and to OUT/demo.log.
        if stderr_is_terminal():
            h.setLevel(logging.WARNING)
        else:
            h.setLevel(logging.INFO)
            h.addFilter(tenth)
    try:
        yield
    finally:
        for h, level in levels.items():
            h.setLevel(level)
            h.removeFilter(tenth)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed, e.g. 0,1,2")
    return seeds


def _cmd_demo(args: argparse.Namespace) -> int:
    from harken.demo.run import run_demo
    from harken.progress import no_library_bars

    with _console(args.verbose), no_library_bars():  # no_library_bars: transformers' "Loading weights" bars
        run_demo(args.out, quick=args.quick, seeds=args.seeds, data_seed=args.data_seed, threads=args.threads)
    return 0


def register(top, groups) -> None:
    p = top.add_parser(
        "demo",
        help="GRPO vs SFT on audio QA in miniature, end to end on a CPU (~5 min; --quick: ~1 min)",
        description=(
            "Make offline data (synthetic skills and real audio from Debian packages), build a toy "
            "Qwen2-Audio, warm it up on a broad mixture into a base model, train an SFT arm and a GRPO arm "
            "from it on the same small, narrow training set for several seeds, evaluate them on an "
            "in-domain test part and on shifted parts, and write a report (tables, charts, index.html)."
        ),
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="demo folder")
    p.add_argument("--quick", action="store_true", help="tiny sizes, two seeds: every stage runs in about a minute, nothing learns")
    p.add_argument("--seeds", type=_seeds, default=None, metavar="S,S,...",
                   help="the arms' seeds (data order, sampling); default 0,1,2 (--quick: 0,1)")
    p.add_argument("--data-seed", type=int, default=0, metavar="S",
                   help="seed of the data sets, the toy's initialisation and the base's warm-up (one base for every seed)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (the toy gains nothing from more, and on 2 busy cores a second "
                        "thread made steps ~3x slower; 0 = torch's default)")
    p.set_defaults(func=_cmd_demo)
