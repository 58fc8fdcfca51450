"""Named prompt templates (the user turn's text; the chat layout belongs to `harken.models.families`).

Owns: the paper's prompts 1-3 (reference: R1-AQA, arXiv 2503.11197) and a lettered-options
variant, the SFT target for each, and which reward/format pattern goes with each. Does not own:
answer extraction and scoring (`harken.eval.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harken.data.records import Example

_CHOOSE = "{question} Please choose the answer from the following options: {choices}."


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str  # str.format template over question, choices (Python list repr) and lettered (A. x\nB. y)
    target: str  # SFT target template over answer (text) and letter
    format_pattern: str | None  # regex the whole completion must match for the format reward
    lettered: bool = False  # the model answers with a letter that maps to a choice

    def render(self, example: Example) -> str:
        return self.text.format(
            question=example.question,
            choices=repr(list(example.choices)),
            lettered=lettered_options(example.choices),
        )

    def render_target(self, example: Example) -> str:
        return self.target.format(answer=example.answer, letter=LETTERS[example.answer_index])


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def lettered_options(choices: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))


ANSWER_PATTERN = r"<answer>.*?</answer>"
THINK_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"

TEMPLATES: dict[str, PromptTemplate] = {
    # Prompt 1 (SFT): the paper did not publish its exact wording; this is the question and
    # the options without any tag instruction, the SFT target carries the tags.
    "prompt1": PromptTemplate("prompt1", _CHOOSE, "<answer>{answer}</answer>", ANSWER_PATTERN),
    # Prompt 2: the paper's best GRPO prompt.
    "prompt2": PromptTemplate(
        "prompt2",
        _CHOOSE + " Output the final answer in <answer> </answer>.",
        "<answer>{answer}</answer>",
        ANSWER_PATTERN,
    ),
    # Prompt 3: with an explicit thinking step (did not help in the paper).
    "prompt3": PromptTemplate(
        "prompt3",
        _CHOOSE + " Output the thinking process in <think> </think> and final answer in <answer> </answer>.",
        "<think></think><answer>{answer}</answer>",
        THINK_PATTERN,
    ),
    # Lettered options: the model answers with the letter; evaluation maps it to the choice.
    "lettered": PromptTemplate(
        "lettered",
        "{question}\n{lettered}\nAnswer with the option's letter in <answer> </answer>.",
        "<answer>{letter}</answer>",
        ANSWER_PATTERN,
        lettered=True,
    ),
}


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; choose one of: {', '.join(TEMPLATES)}") from None
