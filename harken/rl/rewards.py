"""Rewards: small functions from completions to numbers, and the weighted sum GRPO uses.

Owns: the built-in rewards (accuracy, format), loading user rewards given as
`module:function`, and calling them safely. Answer parsing is shared with evaluation
(`harken.eval.scoring`), never written twice.

Protocol (TRL's): `fn(completions: list[str], examples: list[Example]) -> list[float]`, one
number per completion; NaN means "no opinion" and counts as 0 in the sum (it is left out of that
reward's logged mean).
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from harken.data.prompts import PromptTemplate
from harken.data.records import Example
from harken.eval.scoring import answer_reward_exact, extract_answer, is_correct

RewardFn = Callable[[list[str], list[Example]], list[float]]


def accuracy_exact(completions: list[str], examples: list[Example]) -> list[float]:
    """R1-AQA: the first <answer>...</answer> text equals the answer after stripping."""
    return [float(answer_reward_exact(c, ex.answer)) for c, ex in zip(completions, examples)]


def accuracy_benchmark(completions: list[str], examples: list[Example], lettered: bool = False) -> list[float]:
    """The benchmark's word-match rule on the extracted answer (the evaluator's code)."""
    return [
        float(is_correct(extract_answer(c, ex.choices, lettered), ex.answer, ex.choices))
        for c, ex in zip(completions, examples)
    ]


def format_reward(pattern: str) -> RewardFn:
    """1 when the whole completion matches the template's pattern (stripped, dot matches newline)."""
    rx = re.compile(pattern, re.DOTALL)

    def fmt(completions: list[str], examples: list[Example]) -> list[float]:
        return [float(rx.fullmatch(c.strip()) is not None) for c in completions]

    fmt.__name__ = "format"
    return fmt


def load_user_reward(spec: str) -> RewardFn:
    """`package.module:function` -> the function."""
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise ValueError(f"reward {spec!r}: expected 'module:function'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"reward {spec!r}: cannot import module {mod_name!r} ({e})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: module {mod_name!r} has no function {fn_name!r}")
    return fn


@dataclass
class Reward:
    name: str
    fn: RewardFn
    weight: float


def build_rewards(specs, template: PromptTemplate, accuracy_rule: str) -> list[Reward]:
    out = []
    for spec in specs:
        if spec.name == "accuracy":
            if accuracy_rule == "benchmark":
                fn = lambda c, e, _l=template.lettered: accuracy_benchmark(c, e, _l)  # noqa: E731
            else:
                fn = accuracy_exact
        elif spec.name == "format":
            if not template.format_pattern:
                raise ValueError(f"template {template.name!r} has no format pattern for the format reward")
            fn = format_reward(template.format_pattern)
        else:
            fn = load_user_reward(spec.name)
        out.append(Reward(spec.name, fn, float(spec.weight)))
    return out


def score(rewards: Sequence[Reward], completions: list[str], examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of every reward per completion, and each reward's mean for logging.

    Returns:
        total [N] float32, {"reward/NAME": mean over completions with an opinion}.
    """
    total = torch.zeros(len(completions))
    logs: dict[str, float] = {}
    for r in rewards:
        try:
            values = r.fn(list(completions), list(examples))
        except Exception as e:
            raise RuntimeError(f"reward {r.name!r} raised {type(e).__name__}: {e} (first item: {examples[0].id!r})") from e
        if values is None or len(values) != len(completions):
            got = "None" if values is None else f"{len(values)} values"
            raise ValueError(f"reward {r.name!r} returned {got} for {len(completions)} completions")
        clean = []
        for v, ex in zip(values, examples):
            if not isinstance(v, numbers.Real):
                raise ValueError(
                    f"reward {r.name!r} returned {v!r} ({type(v).__name__}) for item {ex.id!r}; expected a number"
                )
            clean.append(float(v))
        t = torch.tensor(clean, dtype=torch.float32)
        has = ~torch.isnan(t)
        logs[f"reward/{r.name}"] = float(t[has].mean()) if bool(has.any()) else math.nan
        total += r.weight * torch.nan_to_num(t, nan=0.0)
    return total, logs
