"""Rewards: small functions from completions to numbers, and the weighted sum GRPO uses.

Owns: the built-in rewards (accuracy, format) and their rules by name (`ACCURACY_RULES`,
`FORMAT_RULES`: harken's own, and `r1aqa`, the R1-AQA release's two functions with their quirks),
loading user rewards given as `module:function`, and calling them safely. Answer parsing is shared
with evaluation (`harken.eval.scoring`), never written twice.

Protocol (TRL's): `fn(completions: list[str], examples: list[Example]) -> list[float]`, one
number per completion; NaN means "no opinion" and counts as 0 in the sum (it is left out of that
reward's logged mean).
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from harken.data.prompts import PromptTemplate
from harken.data.records import Example
from harken.eval.scoring import answer_reward_exact, answer_reward_r1aqa, extract_answer, is_correct

RewardFn = Callable[[list[str], list[Example]], list[float]]


def accuracy_exact(completions: list[str], examples: list[Example]) -> list[float]:
    """harken's exact rule: the first <answer>...</answer> text (across lines too) equals the answer after
    stripping; an untagged completion scores 0."""
    return [float(answer_reward_exact(c, ex.answer)) for c, ex in zip(completions, examples)]


def accuracy_benchmark(completions: list[str], examples: list[Example], lettered: bool = False) -> list[float]:
    """The benchmark's word-match rule on the extracted answer (the evaluator's code)."""
    return [
        float(is_correct(extract_answer(c, ex.choices, lettered), ex.answer, ex.choices))
        for c, ex in zip(completions, examples)
    ]


def accuracy_r1aqa(completions: list[str], examples: list[Example]) -> list[float]:
    """The R1-AQA release's rule: untagged completions compared whole, tags not DOTALL (see `answer_reward_r1aqa`)."""
    return [float(answer_reward_r1aqa(c, ex.answer)) for c, ex in zip(completions, examples)]


# name -> fn(completions, examples, lettered) -> rewards; `lettered`: the template asks for an option letter
ACCURACY_RULES: dict[str, Callable[[list[str], list[Example], bool], list[float]]] = {
    "exact": lambda c, e, lettered: accuracy_exact(c, e),  # the first <answer> tag's text == the answer
    "benchmark": accuracy_benchmark,  # the benchmark's word match on the extracted answer
    "r1aqa": lambda c, e, lettered: accuracy_r1aqa(c, e),  # the release's accuracy_reward
}

# name -> whether the completion is stripped before the full match (the pattern always lets dot match newline)
FORMAT_RULES: dict[str, bool] = {
    "stripped": True,  # harken: surrounding whitespace (a trailing newline) is forgiven
    "r1aqa": False,  # the release's format_reward: the raw completion, so a trailing newline scores 0
}


def format_reward(pattern: str, rule: str = "stripped") -> RewardFn:
    """1 when the whole completion matches the template's pattern (dot matches newline; `rule` in FORMAT_RULES)."""
    rx = re.compile(pattern, re.DOTALL)
    strip = FORMAT_RULES[rule]

    def fmt(completions: list[str], examples: list[Example]) -> list[float]:
        return [float(rx.fullmatch(c.strip() if strip else c) is not None) for c in completions]

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


def build_rewards(specs, template: PromptTemplate, accuracy_rule: str, format_rule: str = "stripped") -> list[Reward]:
    """The weighted rewards of `reward.rewards`; `accuracy` and `format` follow the named rules."""
    out = []
    for spec in specs:
        if spec.name == "accuracy":
            fn = functools.partial(ACCURACY_RULES[accuracy_rule], lettered=template.lettered)
        elif spec.name == "format":
            if not template.format_pattern:
                raise ValueError(f"template {template.name!r} has no format pattern for the format reward")
            fn = format_reward(template.format_pattern, format_rule)
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
