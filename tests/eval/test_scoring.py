"""Answer extraction and the official word-match rule: hand-written cases, then parity with a
literal copy of the official rule over every item of both packaged MMAU test-mini files."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import harken
from harken.eval.scoring import answer_reward_exact, extract_answer, is_correct, letter_to_choice, tokenize

VOICE = ["Man", "Woman", "Child", "Robot"]


# ---------------------------------------------------------------------------------------------
# tokenize
# ---------------------------------------------------------------------------------------------


def test_tokenize_lowercases_and_splits_on_non_word_characters():
    assert tokenize("The Man, the MAN!") == {"the", "man"}
    assert tokenize("Hip-hop (80's)") == {"hip", "hop", "80", "s"}
    assert tokenize("snake_case stays") == {"snake_case", "stays"}  # `\w` includes the underscore
    assert tokenize("Éclair café") == {"éclair", "café"}  # Unicode words, as Python's `re`
    assert tokenize("  ...  ") == set()


# ---------------------------------------------------------------------------------------------
# is_correct: the rule
# ---------------------------------------------------------------------------------------------


def test_exact_answer_is_right_and_every_other_choice_wrong():
    for answer in VOICE:
        for prediction in VOICE:
            assert is_correct(prediction, answer, VOICE) is (prediction == answer)


@pytest.mark.parametrize(
    "prediction",
    ["The speaker is a man.", "man", "I think it is a man's voice", "Answer: Man", "<answer>Man</answer>"],
)
def test_extra_words_are_fine_when_none_belongs_to_a_wrong_choice(prediction):
    assert is_correct(prediction, "Man", VOICE)


@pytest.mark.parametrize("prediction", ["Man or woman", "a man, not a robot", "Man (child?)", "Woman"])
def test_a_word_of_a_wrong_choice_makes_it_wrong(prediction):
    assert not is_correct(prediction, "Man", VOICE)


def test_extra_word_is_wrong_only_if_it_belongs_to_a_wrong_choice():
    choices = ["A dog barking", "A cat meowing", "Birds singing"]
    # "a" is in the answer as well as in a wrong choice: shared, so allowed.
    assert is_correct("a dog barking", "A dog barking", choices)
    # "I", "think" are in no choice at all: allowed.
    assert is_correct("I think a dog barking", "A dog barking", choices)
    # Every word of the answer is needed, articles included.
    assert not is_correct("the dog barking", "A dog barking", choices)
    # "singing" belongs only to a wrong choice.
    assert not is_correct("a dog barking and singing", "A dog barking", choices)


def test_words_shared_between_choices():
    choices = ["Dog barking", "Cat barking", "Dog howling"]
    assert is_correct("dog barking", "Dog barking", choices)
    assert is_correct("barking dog", "Dog barking", choices)  # order does not matter: sets of words
    assert is_correct("a dog is barking loudly", "Dog barking", choices)
    assert not is_correct("barking", "Dog barking", choices)  # the answer's word "dog" is missing
    assert not is_correct("dog", "Dog barking", choices)  # the answer's word "barking" is missing
    assert not is_correct("dog barking, not howling", "Dog barking", choices)  # "howling" is wrong-only
    assert is_correct("cat barking", "Cat barking", choices)
    assert not is_correct("cat barking dog", "Cat barking", choices)  # "dog" is not in the answer


def test_answer_contained_in_a_wrong_choice_and_the_reverse():
    # The answer's words are a subset of a wrong choice's.
    choices = ["Man", "Man and woman", "Child"]
    assert is_correct("Man", "Man", choices)
    assert not is_correct("Man and woman", "Man", choices)
    # A wrong choice's words are a subset of the answer's: the wrong choice has no word of its own.
    assert is_correct("man and woman", "Man and woman", choices)
    assert not is_correct("man", "Man and woman", choices)  # misses "and", "woman"
    assert not is_correct("man and woman, or a child", "Man and woman", choices)


def test_duplicate_choices_and_choices_equal_to_the_answer_in_words():
    # Seen in the real files: ['thirteen', 'twenty', 'thirteen', 'five'], answer 'thirteen'.
    choices = ["thirteen", "twenty", "thirteen", "five"]
    assert is_correct("thirteen", "thirteen", choices)
    assert not is_correct("twenty", "thirteen", choices)
    # A differently written choice with the same words as the answer adds no wrong word.
    assert is_correct("MAN", "Man", ["Man", "man.", "Woman"])


@pytest.mark.parametrize("prediction", ["MAN", "man", "mAn", "Man.", "man!", "(man)", "'Man'", "**Man**", " \n Man\t"])
def test_case_and_punctuation_do_not_matter(prediction):
    assert is_correct(prediction, "Man", VOICE)


def test_punctuation_inside_choices():
    choices = ["Hip-hop", "Rock 'n' roll", "Jazz"]
    assert is_correct("hip hop", "Hip-hop", choices)
    assert is_correct("HIP-HOP.", "Hip-hop", choices)
    assert not is_correct("hip", "Hip-hop", choices)
    assert is_correct("rock n roll", "Rock 'n' roll", choices)
    assert not is_correct("rock n roll or jazz", "Rock 'n' roll", choices)


@pytest.mark.parametrize("letter", ["A", "(A)", "A.", "a", "B"])
def test_bare_letters_are_wrong_for_the_rule(letter):
    assert not is_correct(letter, "Man", VOICE)


def test_a_letter_is_right_only_when_it_is_the_answers_word():
    # The rule knows nothing of letters: "A" is the word "a".
    assert is_correct("A", "A", ["A", "B", "C"])
    assert not is_correct("A", "B", ["A", "B", "C"])


@pytest.mark.parametrize("prediction", ["", "   ", "\n", "...", "?!", None])
def test_empty_and_missing_predictions_are_wrong(prediction):
    assert not is_correct(prediction, "Man", VOICE)


def test_empty_prediction_is_wrong_even_when_the_answer_has_no_word():
    assert not is_correct("", "?", ["?", "!"])
    assert not is_correct("...", "?", ["?", "!"])


def test_non_string_prediction_is_a_type_error():
    with pytest.raises(TypeError, match="prediction must be a string"):
        is_correct(3, "3", ["3", "4"])  # type: ignore[arg-type]


INSTRUMENTS = ["violin", "piano", "drums", "flute", "electric guitar", "cello", "harp", "trumpet"]


@pytest.mark.parametrize("n", range(2, 9))
def test_two_to_eight_choices(n):
    choices = INSTRUMENTS[:n]
    for answer in choices:
        for prediction in choices:
            assert is_correct(prediction, answer, choices) is (prediction == answer)
        assert is_correct(f"It sounds like a {answer}.", answer, choices)
        for other in choices:
            if other != answer:
                assert not is_correct(f"{answer} and {other}", answer, choices)


def test_choices_may_be_a_tuple_or_a_list():
    assert is_correct("Man", "Man", tuple(VOICE))
    assert is_correct("Man", "Man", list(VOICE))


# ---------------------------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------------------------


def test_extract_the_first_answer_tag_stripped():
    assert extract_answer("<answer>Man</answer>") == "Man"
    assert extract_answer("<answer>  Man \n</answer>") == "Man"
    assert extract_answer("<think>hmm, a woman?</think><answer>Man</answer>") == "Man"
    assert extract_answer("<answer>Man</answer> or <answer>Woman</answer>") == "Man"
    assert extract_answer("I think <answer>Woman</answer>, no, <answer>Man</answer>") == "Woman"
    assert extract_answer("<answer>\nA man\nspeaking\n</answer>") == "A man\nspeaking"
    assert extract_answer("<answer></answer>") == ""


def test_extract_without_tags_returns_the_whole_output_stripped():
    assert extract_answer("  Man \n") == "Man"
    assert extract_answer("The answer is Man.") == "The answer is Man."
    assert extract_answer("<answer>Man") == "<answer>Man"  # an unclosed tag is not a tag
    assert extract_answer("") == ""
    assert extract_answer(None) == ""


def test_extract_maps_a_bare_letter_only_for_lettered_templates():
    for text, expected in [("A", "Man"), ("B", "Woman"), ("(C)", "Child"), ("D.", "Robot"), ("b", "Woman"), ("C)", "Child")]:
        assert extract_answer(f"<answer>{text}</answer>", VOICE, lettered=True) == expected
        assert extract_answer(f"<answer>{text}</answer>", VOICE, lettered=False) == text
    assert extract_answer("  B  ", VOICE, lettered=True) == "Woman"  # untagged, still a bare letter
    # A bare letter scores wrong, its mapped option right.
    assert not is_correct(extract_answer("<answer>A</answer>", VOICE), "Man", VOICE)
    assert is_correct(extract_answer("<answer>A</answer>", VOICE, lettered=True), "Man", VOICE)


def test_letter_mapping_edge_cases():
    assert letter_to_choice("E", VOICE) == "E"  # past the last option: left alone
    assert letter_to_choice("B. Woman", VOICE) == "Woman"
    assert letter_to_choice("(b) woman", VOICE) == "Woman"
    assert letter_to_choice("B. Man", VOICE) == "B. Man"  # letter and text disagree: the rule judges
    assert letter_to_choice("Man", VOICE) == "Man"
    assert letter_to_choice("AB", VOICE) == "AB"
    assert letter_to_choice("H", INSTRUMENTS) == "trumpet"  # 8 choices
    assert extract_answer("<answer>A</answer>", None, lettered=True) == "A"  # nothing to map to


# ---------------------------------------------------------------------------------------------
# answer_reward_exact (R1-AQA's accuracy reward)
# ---------------------------------------------------------------------------------------------


def test_answer_reward_exact():
    assert answer_reward_exact("<answer>Man</answer>", "Man")
    assert answer_reward_exact("<answer> Man \n</answer>", " Man ")
    assert answer_reward_exact("<think>x</think> <answer>Man</answer>", "Man")
    assert answer_reward_exact("<answer>Man</answer><answer>Woman</answer>", "Man")  # the first tag
    assert not answer_reward_exact("<answer>Woman</answer><answer>Man</answer>", "Man")
    assert not answer_reward_exact("<answer>man</answer>", "Man")  # exact: case matters
    assert not answer_reward_exact("<answer>A man</answer>", "Man")
    assert not answer_reward_exact("Man", "Man")  # no tags: not correct
    assert not answer_reward_exact("", "Man")
    assert float(answer_reward_exact("<answer>Man</answer>", "Man")) == 1.0


# ---------------------------------------------------------------------------------------------
# Parity with the official rule on the real MMAU test-mini items
# ---------------------------------------------------------------------------------------------


def official_string_match(answer, prediction, choices):
    """The official rule, transcribed literally in the structure of MMAU's `evaluation.py`
    (`string_match`; MMAR's copy is identical). Kept independent of harken on purpose."""

    def tokenize(text):
        return set(re.findall(r"\b\w+\b", text.lower()))

    prediction_tokens = tokenize(prediction)
    answer_tokens = tokenize(answer)
    if not prediction_tokens:
        return False
    incorrect_tokens = set()
    for choice in choices:
        choice_tokens = tokenize(choice)
        if choice_tokens != answer_tokens:
            incorrect_tokens.update(choice_tokens - answer_tokens)
    cond1 = answer_tokens.issubset(prediction_tokens)
    cond2 = prediction_tokens.isdisjoint(incorrect_tokens)
    return cond1 and cond2


def candidate_predictions(item: dict, rng: random.Random) -> list[str]:
    """Many ways a model could answer one item: right, wrong, padded, mixed, mangled, empty."""
    answer, choices = item["answer"], item["choices"]
    words_of = lambda s: re.findall(r"\b\w+\b", s)  # noqa: E731
    all_words = sorted({w for c in choices for w in words_of(c)})
    preds: list[str] = ["", " ", "...", "A", "(B)", "c.", "E", f"{'ABCDEFGH'[choices.index(answer)]}. {answer}"]
    for c in choices:
        preds += [c, c.upper(), f"({c.lower()})!", f"The answer is {c}.", f"<answer>{c}</answer>", c.replace(" ", "-")]
    for c in choices:
        if c == answer:
            continue
        preds.append(f"{answer} or {c}")
        for w in words_of(c):
            preds.append(f"{answer} {w}")  # answer + each word of a wrong choice (unique or shared)
    for w in words_of(answer):
        preds.append(w.title())  # part of the answer only
    for _ in range(4):
        pick = rng.sample(all_words, rng.randint(1, min(4, len(all_words))))
        preds.append(" ".join(pick))  # random words from all choices
        preds.append(", ".join(pick) + " " + answer)
    return list(dict.fromkeys(preds))


PACKAGED = Path(harken.__file__).parent / "resources" / "mmau"
MMAU_FILES = ["test-mini-v2503.json", "test-mini-v05.15.25.json"]


@pytest.mark.parametrize("name", MMAU_FILES)
def test_parity_with_the_official_rule_on_every_mmau_item(name):
    path = PACKAGED / name
    assert path.is_file(), f"packaged MMAU metadata missing: {path}"
    items = json.loads(path.read_text(encoding="utf-8"))
    assert len(items) == 1000
    rng = random.Random(name)
    n_checked = n_true = 0
    for item in items:
        for pred in candidate_predictions(item, rng):
            expected = official_string_match(item["answer"], pred, item["choices"])
            got = is_correct(pred, item["answer"], item["choices"])
            assert got == expected, f"{name} item {item['id']}: prediction {pred!r}, official {expected}, harken {got}"
            n_checked += 1
            n_true += expected
        # The answer itself is always right; every wrong choice with a word of its own is wrong.
        assert is_correct(item["answer"], item["answer"], item["choices"])
        for c in item["choices"]:
            if tokenize(c) - tokenize(item["answer"]):
                assert not is_correct(c, item["answer"], item["choices"])
    assert n_checked > 30_000
    assert 0.05 < n_true / n_checked < 0.6  # both outcomes are well exercised
