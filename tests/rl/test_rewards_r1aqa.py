"""The `r1aqa` reward rules against the R1-AQA release's two reward functions, row by row.

Expected values are what the release's code gives: `accuracy_reward` and `format_reward` of
src/utils/rewards.py in xiaomi-research/r1-aqa (commit 9e582a2), run on each row with its
pinned math-verify 0.7.0, the solution built as the release's dataset builds it
(`f"<answer>{answer}</answer>"`, src/dataset/dataset.py) and the prompt-2 format pattern. Each row
names the line of that file that decides it (release line numbers):
    L17-19  math_verify.parse(content) / verify(..., parse(sol)): parses nothing in the solution
            `<answer>text</answer>`, so it never decides a reward here (its rows say why)
    L27-28  sol_match = re.search(r"<answer>(.*?)</answer>", sol); ground_truth = group(1).strip()
    L31     content_match = re.search(r"<answer>(.*?)</answer>", content): first match, NOT DOTALL
    L32     student_answer = group(1).strip() if content_match else content.strip()
    L35     if student_answer == ground_truth: exact, case-sensitive
    L55     re.fullmatch(r"<answer>.*?</answer>", content, re.DOTALL): the RAW completion
The one case where the release's verifier does decide (an answer text that itself holds LaTeX math
or "the answer is 3") is documented in `harken.eval.scoring.answer_reward_r1aqa`.
"""

from __future__ import annotations

import pytest

from harken.data.prompts import get_template
from harken.data.records import Example
from harken.rl.rewards import build_rewards, score
from harken.schema import RewardSpec

# (completion, answer, accuracy, accuracy's deciding line, format, format's deciding line)
ROWS = [
    ("<answer>Man</answer>", "Man", 1, "L32 tag text 'Man' == L35", 1, "L55"),
    ("Man", "Man", 1, "L32 no tag: whole stripped completion", 0, "L55 no tag"),
    ("  Man \n", "Man", 1, "L32 no tag: whole completion, stripped", 0, "L55 no tag"),
    ("man", "Man", 0, "L35 case-sensitive", 0, "L55 no tag"),
    ("<answer>man</answer>", "Man", 0, "L35 case-sensitive", 1, "L55"),
    ("<answer> Man </answer>", "Man", 1, "L32 .strip() of the tag text", 1, "L55"),
    ("<answer>\nMan\n</answer>", "Man", 0, "L31 not DOTALL: no match, L32 whole text != 'Man'", 1, "L55 DOTALL"),
    ("<answer>Man\n</answer>", "Man", 0, "L31 not DOTALL: no match, L32 whole text", 1, "L55 DOTALL"),
    ("<answer>a\nb</answer><answer>Man</answer>", "Man", 1, "L31 first one-line match is the second tag", 1,
     "L55 lazy .*? stretches over both tags"),
    ("<answer>Man</answer>\n", "Man", 1, "L32", 0, "L55 raw: trailing newline"),
    ("\n<answer>Man</answer>", "Man", 1, "L32", 0, "L55 raw: leading newline"),
    ("<answer>Man</answer> ", "Man", 1, "L32", 0, "L55 raw: trailing space"),
    ("<answer>Man</answer>.", "Man", 1, "L32", 0, "L55 raw: trailing period"),
    ("<answer>Woman</answer><answer>Man</answer>", "Man", 0, "L31 first tag: 'Woman'", 1, "L55 lazy .*? stretches"),
    ("<answer>Man</answer><answer>Woman</answer>", "Man", 1, "L31 first tag: 'Man'", 1, "L55 lazy .*? stretches"),
    ("<answer>Man</answer>\n<answer>Woman</answer>", "Man", 1, "L31 first tag", 1, "L55 DOTALL stretches"),
    ("Man\n<answer>Woman</answer>", "Man", 0, "L31 the tag wins over the bare text", 0, "L55 text before the tag"),
    ("", "Man", 0, "L32 empty != 'Man'", 0, "L55 empty"),
    ("\n", "Man", 0, "L32 stripped to empty", 0, "L55"),
    ("<answer></answer>", "Man", 0, "L32 empty tag text", 1, "L55 .*? matches nothing"),
    ("<answer>A</answer>", "Man", 0, "L35 a letter is not the answer text", 1, "L55"),
    ("A", "Man", 0, "L35 letter", 0, "L55 no tag"),
    ("A. Man", "Man", 0, "L32 whole text 'A. Man'", 0, "L55 no tag"),
    ("<think>a male voice</think><answer>Man</answer>", "Man", 1, "L31 search finds the tag anywhere", 0,
     "L55 fullmatch must start at <answer>"),
    ("The answer is <answer>Man</answer>", "Man", 1, "L31", 0, "L55 text before the tag"),
    ("<ANSWER>Man</ANSWER>", "Man", 0, "L31 case-sensitive tag: no match; L32 whole text", 0, "L55"),
    ("<answer>Man", "Man", 0, "L31 unclosed: no match; L32 whole text", 0, "L55 unclosed"),
    ("Man</answer>", "Man", 0, "L31 no opening tag; L32 whole text", 0, "L55"),
    ("<answer>Man</answer", "Man", 0, "L31 broken closing tag; L32 whole text", 0, "L55"),
    ("<answer>Man.</answer>", "Man", 0, "L35 'Man.' != 'Man'", 1, "L55"),
    ("<answer>The man</answer>", "Man", 0, "L35", 1, "L55"),
    ("<answer>\tMan\t</answer>", "Man", 1, "L31 '.' matches a tab; L32 strip", 1, "L55"),
    ("<answer>Man\r</answer>", "Man", 1, "L31 '.' matches \\r (only \\n is excluded); L32 strip", 1, "L55"),
    ("<answer>\u00a0Man\u00a0</answer>", "Man", 1, "L32 str.strip() removes no-break spaces", 1, "L55"),
    ("<answer><answer>Man</answer></answer>", "Man", 0, "L31 first match's text is '<answer>Man'", 1,
     "L55 lazy .*? stretches to the last tag"),
    ("<answer>Sailboat set sail</answer>", "Sailboat set sail", 1, "L35", 1, "L55"),
    ("<answer>Sailboat  set sail</answer>", "Sailboat set sail", 0, "L35 inner spaces are not stripped", 1, "L55"),
    ("Yacht consignment", "Yacht consignment", 1, "L32 no tag: whole text", 0, "L55"),
    ("Man", " Man ", 1, "L28 the solution's tag text is stripped too", 0, "L55"),
    ("<answer>2</answer>", "2", 1, "L17-19 parse(sol) finds nothing; L35", 1, "L55"),
    ("2.0", "2", 0, "L18 parse(sol) finds nothing, so the verifier cannot match; L35 '2.0' != '2'", 0, "L55"),
    ("\\boxed{2}", "2", 0, "L18 parse(sol) finds nothing; L35", 0, "L55"),
]


def _rewards(rule: str, template: str = "prompt2"):
    specs = [RewardSpec("accuracy"), RewardSpec("format")]
    return build_rewards(specs, get_template(template), rule, rule if rule == "r1aqa" else "stripped")


@pytest.mark.parametrize("completion, answer, acc, acc_line, fmt, fmt_line", ROWS)
def test_r1aqa_rules_give_the_release_values(completion, answer, acc, acc_line, fmt, fmt_line):
    accuracy, format_ = _rewards("r1aqa")
    ex = Example(id="q", audio="a.wav", question="Who speaks?", choices=["Man", "Woman", answer], answer=answer)
    assert accuracy.fn([completion], [ex]) == [float(acc)], acc_line
    assert format_.fn([completion], [ex]) == [float(fmt)], fmt_line


def test_table_is_large_and_covers_both_values():
    assert len(ROWS) >= 30
    assert {r[2] for r in ROWS} == {0, 1} and {r[4] for r in ROWS} == {0, 1}


def test_harken_rules_keep_their_names_and_behaviour():
    """`exact` and `stripped` are unchanged: where the release differs, they stay strict (or forgiving)."""
    accuracy, format_ = _rewards("exact")
    ex = Example(id="q", audio="a.wav", question="Who speaks?", choices=["Man", "Woman"], answer="Man")
    cases = {  # completion: (exact accuracy, stripped format)
        "Man": (0.0, 0.0),  # untagged: no accuracy
        "<answer>\nMan\n</answer>": (1.0, 1.0),  # the tag's text may span lines
        "<answer>a\nb</answer><answer>Man</answer>": (0.0, 1.0),  # the first tag, across lines
        "<answer>Man</answer>\n": (1.0, 1.0),  # a trailing newline is forgiven
    }
    for completion, (a, f) in cases.items():
        assert accuracy.fn([completion], [ex]) == [a], completion
        assert format_.fn([completion], [ex]) == [f], completion
    total, logs = score(_rewards("r1aqa"), ["Man", "<answer>Man</answer>\n"], [ex, ex])
    assert total.tolist() == [1.0, 1.0] and logs == {"reward/accuracy": 1.0, "reward/format": 0.0}


def test_r1aqa_format_rule_keeps_the_thinking_template_pattern():
    _, format_ = _rewards("r1aqa", "prompt3")
    ex = Example(id="q", audio="a.wav", question="?", choices=["Man", "Woman"], answer="Man")
    assert format_.fn(["<think>low voice</think>\n<answer>Man</answer>"], [ex]) == [1.0]
    assert format_.fn(["<think>low voice</think>\n<answer>Man</answer>\n"], [ex]) == [0.0]  # raw: trailing newline
