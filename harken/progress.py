"""Progress of long loops, readable in a terminal and in a log file alike.

Owns: `Progress`, the one way a loop of harken shows how far it is: a tqdm bar with the loop's
numbers in its postfix when stderr is a terminal (log lines meanwhile written above the bar with
`tqdm.write`, so nothing glues onto it); otherwise, or with the bar turned off, one plain log line
every `every` units, e.g.

    grpo: step 20/100  reward 0.620  acc 0.550  kl 0.00121  2.1 s/step  eta 2m48s

(no carriage returns). Those lines go through the `harken.progress` logger, so a run's
train.log holds them even while the console shows a bar. Also owns turning off the progress
bars of transformers and huggingface_hub ("Loading weights", "Writing model shards"): for good
when stderr is not a terminal (`quiet_library_bars`), and always while a model is saved
(`no_library_bars`).
Does not own: what the numbers are (the loops: `harken.train.trainer`, `harken.eval.run`,
`harken.data.avqa`, `harken.bench.harness`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from typing import Iterator

log = logging.getLogger(__name__)

_SHOWN_ON_BAR = "harken_shown_on_bar"  # log-record attribute: the line's numbers are on the bar already


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (not a file, a pipe or a CI log)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """A short duration: "48s", "2m48s", "1h02m"."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """How far a loop of `total` units is: a bar on a terminal, else a plain line every `every` units.

    Args:
        total: units in all.
        desc: what runs ("grpo", "eval mmau"): the bar's label and the start of a line.
        unit: what is counted ("step", "item", "clip").
        initial: units already done (a resumed run).
        bar: a bar when stderr is a terminal; False: plain lines there too.
        every: units between plain lines (a line is also written at the last unit); default:
            about one line per 5% of the loop.
        enabled: False shows nothing (the other processes of a run).
        leave: keep the finished bar on screen.
    """

    def __init__(self, total: int, desc: str, unit: str = "step", *, initial: int = 0, bar: bool = True,
                 every: int | None = None, enabled: bool = True, leave: bool = True):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = self.start = initial
        self.every = max(1, every if every is not None else math.ceil(total / 20))
        self.t0 = time.perf_counter()
        self._bar = None
        self._stack = contextlib.ExitStack()
        if enabled and bar and stderr_is_terminal():
            from tqdm.auto import tqdm

            self._bar = self._stack.enter_context(tqdm(total=total, initial=initial, desc=desc, unit=unit,
                                                       dynamic_ncols=True, leave=leave, file=sys.stderr))
            self._stack.enter_context(_logs_above_bar())

    def update(self, n: int = 1, fields: dict[str, str] | None = None) -> None:
        """`n` more units done; `fields` (label -> formatted value) are shown on the bar or in the line."""
        before, self.done = self.done, self.done + n
        if not self.enabled:
            return
        if self._bar is not None:
            if fields:
                self._bar.set_postfix(fields, refresh=False)
            self._bar.update(n)
        if self.done // self.every > before // self.every or (self.done >= self.total > before):
            log.info("%s", self.line(fields or {}), extra={_SHOWN_ON_BAR: self._bar is not None})

    def line(self, fields: dict[str, str]) -> str:
        """The plain line: "DESC: UNIT N/TOTAL  label value ...  S s/UNIT  eta D"."""
        parts = [f"{self.desc}: {self.unit} {self.done}/{self.total}", *(f"{k} {v}" for k, v in fields.items())]
        if self.done > self.start:
            per_unit = (time.perf_counter() - self.t0) / (self.done - self.start)
            parts += [f"{per_unit:.3g} s/{self.unit}", f"eta {format_duration(per_unit * max(0, self.total - self.done))}"]
        return "  ".join(parts)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _AboveBar(logging.Handler):
    """A console handler's records written with `tqdm.write` (above the bar); lines the bar shows are dropped."""

    def __init__(self, console: logging.StreamHandler):
        super().__init__(console.level)
        self.console = console
        self.setFormatter(console.formatter)
        self.filters = list(console.filters)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, _SHOWN_ON_BAR, False):
            return
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=self.console.stream)
        except Exception:  # logging's rule: a handler never raises
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


@contextlib.contextmanager
def _logs_above_bar() -> Iterator[None]:
    """The root logger's console handlers write above the bar while it is shown (levels and formats kept)."""
    root = logging.getLogger()
    kept = root.handlers
    root.handlers = [_AboveBar(h) if _is_console(h) else h for h in kept]
    try:
        yield
    finally:
        root.handlers = kept


def quiet_library_bars() -> None:
    """Turn off transformers' and huggingface_hub's progress bars for good when stderr is not a terminal."""
    if not stderr_is_terminal():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # huggingface_hub's too


@contextlib.contextmanager
def no_library_bars() -> Iterator[None]:
    """transformers' and huggingface_hub's progress bars off inside (e.g. "Writing model shards"), restored after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
