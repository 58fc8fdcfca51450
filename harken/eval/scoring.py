"""Answer extraction and the benchmarks' word-match scoring rule.

Owns: pulling the answer out of a model's raw output (`extract_answer`), the official
MMAU / MMAR correctness rule (`is_correct`) and its one-line description in result files
(`RULE`), and the exact-match accuracy rewards: harken's (`answer_reward_exact`) and the R1-AQA
release's, quirks included (`answer_reward_r1aqa`). Evaluation and the GRPO rewards both call these, so answer parsing
exists in exactly one place. Pure Python, no torch, no I/O.

Does not own: reading benchmark files, aggregating accuracies (`harken.eval.results`), or turning a
correctness into a reward value with a weight (`harken.rl.rewards`).

The rule (MMAU `evaluation.py`, Sakshi113/MMAU; MMAR `code/evaluation.py`, ddlBoJack/MMAR; the
two functions are identical): lowercase, split into `\\b\\w+\\b` words, and call a prediction
correct when

1. it has at least one word,
2. it contains every word of the answer, and
3. it contains no word that belongs only to a wrong choice, i.e. no word that appears in some
   other choice but not in the answer.

So "Man" is right for the answer "Man", "the speaker is a man" is right unless "the", "is" or
"a" is a word of a wrong choice, and a bare letter "A" is wrong (unless the answer itself is
the word "a"). Choices whose words equal the answer's words contribute nothing to rule 3, as in
the official code.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from harken.data.prompts import LETTERS

__all__ = [
    "RULE",
    "WORD_PATTERN",
    "answer_reward_exact",
    "answer_reward_r1aqa",
    "answer_span",
    "extract_answer",
    "is_correct",
    "letter_to_choice",
    "tokenize",
]

# How results files describe `is_correct`: keep it in step with the rule.
RULE = (
    "official MMAU/MMAR word match: lowercase \\b\\w+\\b words; correct when the prediction has "
    "every word of the answer and no word found only in a wrong choice; no word at all is wrong"
)

# The official scripts' word pattern; Python's `\w` is Unicode-aware, as theirs.
WORD_PATTERN = re.compile(r"\b\w+\b")

# First `<answer>...</answer>`; DOTALL so that an answer broken over lines is still found.
# (R1-AQA's release used the same pattern without DOTALL; only multi-line tag contents differ.)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

# The R1-AQA release's pattern (src/utils/rewards.py): no DOTALL, so a tag spanning a newline is no match.
_RELEASE_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>")

# A bare option letter as a lettered template's answer: "A", "A.", "A)", "A:", "(A)", "(A).".
_BARE_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:)]?$")
# A letter followed by the option's text: "A. Man", "(A) Man", "A) Man", "A: Man".
_LETTER_AND_TEXT = re.compile(r"^\(?([A-Za-z])[.:)]\)?\s+(\S.*)$", re.DOTALL)


def tokenize(text: str) -> set[str]:
    """The set of lowercase `\\b\\w+\\b` words of `text` (lowercased first, as the official code)."""
    return set(WORD_PATTERN.findall(text.lower()))


def _words(text: str) -> frozenset[str]:
    return frozenset(WORD_PATTERN.findall(text.lower()))


@lru_cache(maxsize=65536)
def _rule_sets(answer: str, choices: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """(answer words, words found only in wrong choices) for one question; cached because a
    GRPO group scores many completions against the same question."""
    answer_words = _words(answer)
    wrong_only: set[str] = set()
    for choice in choices:
        wrong_only |= _words(choice) - answer_words
    return answer_words, frozenset(wrong_only)


def is_correct(prediction: str | None, answer: str, choices: Sequence[str]) -> bool:
    """The official MMAU / MMAR rule (see the module docstring).

    Args:
        prediction: the text to judge, as it stands (no extraction happens here); None or a
            string without any word is wrong.
        answer: the correct option's text.
        choices: all options, the answer included, in any order.

    Returns:
        True when the prediction has every word of the answer and no word that belongs only to
        a wrong choice.
    """
    if prediction is None:
        return False
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a string or None, got {type(prediction).__name__}: {prediction!r}")
    words = tokenize(prediction)
    if not words:
        return False
    answer_words, wrong_only = _rule_sets(answer, tuple(choices))
    return answer_words <= words and words.isdisjoint(wrong_only)


def answer_span(output: str) -> str | None:
    """The stripped text inside the first `<answer>...</answer>`, or None when there is none."""
    match = _ANSWER_TAG.search(output)
    return match.group(1).strip() if match else None


def letter_to_choice(text: str, choices: Sequence[str]) -> str:
    """Map a lettered answer to its option's text; anything else is returned unchanged.

    "A", "A.", "(A)", "A)" and lowercase "a" map to `choices[0]`, and so on. "B. Woman" maps to
    "Woman" only when "Woman" really is option B (case-insensitively); a letter and text that
    disagree, or a letter past the last option, are left for the word rule to judge.
    """
    stripped = text.strip()
    bare = _BARE_LETTER.match(stripped)
    if bare:
        index = LETTERS.index(bare.group(1).upper())
        return choices[index] if index < len(choices) else stripped
    with_text = _LETTER_AND_TEXT.match(stripped)
    if with_text:
        index = LETTERS.index(with_text.group(1).upper())
        if index < len(choices) and with_text.group(2).strip().lower() == choices[index].strip().lower():
            return choices[index]
    return stripped


def extract_answer(output: str | None, choices: Sequence[str] | None = None, lettered: bool = False) -> str:
    """The answer a model gave: the first `<answer>` tag's text, else the whole output; stripped.

    Args:
        output: the raw generated text (None is treated as empty).
        choices: the question's options; needed only when `lettered` is True.
        lettered: the prompt asked for an option letter; a bare letter is mapped to its text
            (see `letter_to_choice`) so that the word rule can judge it.

    Returns:
        The answer text ("" when the output is empty).
    """
    if not output:
        return ""
    span = answer_span(output)
    text = span if span is not None else output.strip()
    if lettered and choices:
        text = letter_to_choice(text, choices)
    return text


def answer_reward_exact(completion: str, answer: str) -> bool:
    """R1-AQA's accuracy check: the first `<answer>` tag's stripped text equals the answer.

    A completion without the tags is not correct. (The released code, inherited from R1-V,
    compared the whole stripped completion when no tag was found, so a bare "Man" earned the
    accuracy reward there; here the answer must be tagged, which the format reward asks for
    anyway.) Use `float(...)` for a 0/1 reward.
    """
    span = answer_span(completion)
    return span is not None and span == answer.strip()


def answer_reward_r1aqa(completion: str, answer: str) -> bool:
    """The R1-AQA release's accuracy check (`accuracy_reward`, src/utils/rewards.py), quirks included.

    The release's solution is `<answer>{answer}</answer>`; both it and the completion are reduced
    to the stripped text of their first `<answer>...</answer>` match, with a pattern that is NOT
    DOTALL (a tag spanning a newline does not match), or to the whole stripped text when there is
    no match. So a bare "Man" is correct for "Man", `"<answer>\\nMan\\n</answer>"` is not, and
    `"<answer>a\\nb</answer><answer>Man</answer>"` is. The release first tries a math-expression
    verifier (math_verify 0.7) and counts a match as correct; it is left out here, because it parses
    nothing in the solution `<answer>text</answer>` (so it never matches) unless the answer text
    itself holds LaTeX math (`$2$`, `\\frac{1}{2}`) or a phrase like "the answer is 3", which AVQA
    answers do not.
    """
    solution = f"<answer>{answer}</answer>"
    sol_match = _RELEASE_ANSWER_TAG.search(solution)
    ground_truth = sol_match.group(1).strip() if sol_match else solution.strip()
    content_match = _RELEASE_ANSWER_TAG.search(completion)
    student = content_match.group(1).strip() if content_match else completion.strip()
    return student == ground_truth
