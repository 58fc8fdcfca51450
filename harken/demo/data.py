"""The demo's data: a broad warm-up mixture, one small narrow training set, and a test in parts.

Owns: which skills and which way of asking make each set of `harken demo` (the data half of the
design in `harken.demo.run`; the sizes are its `DemoSize`), the test's parts (`PARTS`: what each
one changes from training, stored in every test question's meta["category"] so evaluation breaks
accuracy down by part), and writing the sets with `harken.data.synth.make_questions`.
Does not own: the clips and questions (`harken.data.synth`, `harken.data.realaudio`), the sizes
and stages (`harken.demo.run`).

    warmup   every skill below, every phrasing, 2-4 options in any order (real skills: train-side
             sources): the base's broad prior
    train    count and timbre only, one phrasing, 3 options in their natural order: the small,
             narrow set both arms train on
    val      as train (held out): the arms' validation curves
    test     the parts of `PARTS`, each its own questions and clips (real skills: test-side sources)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harken.data.synth import Style
from harken.io import iter_jsonl, write_jsonl

NARROW_SKILLS = ("count", "timbre")  # synthetic; the skills of the training set
REAL_SKILLS = ("drum", "alert-count", "word-count")  # harken.data.realaudio.real_skills; warm-up only
BROAD = Style(n_choices=(2, 3, 4))  # every phrasing, 2-4 options, the answer anywhere
NARROW = Style(phrasings=(0,), n_choices=(3,), order="canonical")  # one phrasing, 3 options in value order


@dataclass(frozen=True)
class Part:
    """One part of the test: which skills, asked how, and what differs from the training set."""

    key: str
    title: str
    skills: tuple[str, ...]
    style: Style
    shift: str  # "none" or what the part changes: wording, options, skill, source

    @property
    def real(self) -> bool:
        return any(s in REAL_SKILLS for s in self.skills)


PARTS = (
    Part("in-domain", "in-domain: the training skills, phrasing and options", NARROW_SKILLS, NARROW, "none"),
    Part("rephrased", "rephrased: the training skills in the warm-up's other phrasings", NARROW_SKILLS,
         Style(phrasings=(1, 2, 3), n_choices=(3,), order="canonical"), "wording"),
    Part("options", "re-ordered options, one more: the training skills with 4 shuffled options", NARROW_SKILLS,
         Style(phrasings=(0,), n_choices=(4,)), "option order and count"),
    Part("drum", "a skill seen only in the warm-up: kick, snare or cymbal (held-out real samples)", ("drum",), BROAD,
         "skill; real audio"),
    Part("real-count", "real audio: counting desktop alerts and spoken words (held-out sources)",
         ("alert-count", "word-count"), BROAD, "real audio; wording; options"),
)
SHIFTED = tuple(p.key for p in PARTS if p.shift != "none")


def make_data(out: Path, seed: int, n_warmup: int, n_train: int, n_val: int, n_test_part: int) -> dict[str, Any]:
    """Write warmup.jsonl, train.jsonl, val.jsonl and test.jsonl (all parts) with their clips under `out`.

    Returns:
        {"files": {set: path}, "parts": [{key, title, skills, shift, n}], "skipped": [notices],
         "real_skills": [the real-audio skills in the warm-up]}; a part whose skills all need a
        missing package is left out, with a notice.
    """
    from harken.data.realaudio import PACKAGES, REAL_SKILL_PACKAGES, install_hint, real_skills
    from harken.data.synth import make_questions

    real = {side: real_skills(side, seed) for side in ("train", "test")}
    files = {
        "warmup": make_questions(out, "warmup", n_warmup, seed, [*NARROW_SKILLS, *real["train"].values()], BROAD),
        "train": make_questions(out, "train", n_train, seed, NARROW_SKILLS, NARROW),
        "val": make_questions(out, "val", n_val, seed, NARROW_SKILLS, NARROW),
    }
    rows: list[Any] = []
    parts: list[dict[str, Any]] = []
    skipped: list[str] = []
    for part in PARTS:
        skills = [real["test"].get(s) or s for s in part.skills if s not in REAL_SKILLS or s in real["test"]]
        if not skills:
            missing = sorted({REAL_SKILL_PACKAGES[s] for s in part.skills})
            skipped.append(f"test part '{part.key}' skipped: {', '.join(missing)} not installed ({install_hint(missing)})")
            continue
        path = make_questions(out, f"test-{part.key}", n_test_part, seed, skills, part.style, {"category": part.key})
        part_rows = [row for _, row in iter_jsonl(path)]
        path.unlink()  # its questions go to test.jsonl; the clips stay, named after the part
        rows += part_rows
        parts.append({"key": part.key, "title": part.title, "skills": [getattr(s, "name", s) for s in skills],
                      "shift": part.shift, "n": len(part_rows)})
    files["test"] = out / "test.jsonl"
    write_jsonl(files["test"], rows)
    if not real["train"]:
        skipped.append("the warm-up has no real audio: " + install_hint(PACKAGES.values()))
    return {"files": {k: str(v) for k, v in files.items()}, "parts": parts, "skipped": skipped,
            "real_skills": sorted(real["train"])}
