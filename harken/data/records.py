"""The canonical record for an audio question.

Owns: the `Example` dataclass every reader produces and every trainer/evaluator consumes.
Does not own: benchmark-specific readers (`harken.data.readers`), file reading and atomic writing
(`harken.io`), audio decoding (`harken.data.audio`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Example:
    """One multiple-choice audio question.

    The audio is referenced by path and decoded lazily (never held in memory by the record).
    """

    id: str  # unique within its dataset
    # Path to the clip (absolute, or as given when the reader had no root), or a clip embedded in
    # a parquet / Arrow table (`harken.data.tables.embedded_ref`).
    audio: str
    question: str  # question text as shown to the model (AVQA: "video" already -> "audio")
    choices: list[str]  # 2-8 answer options, in the dataset's order
    # The correct option's text, always one of `choices`; None only in a test split (read with
    # allow_unanswered, for `eval run` and `data validate`: training never sees one).
    answer: str | None
    meta: dict[str, Any] = field(default_factory=dict)  # task, category, sub-category, difficulty, dataset...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Example":
        return cls(
            id=str(d["id"]),
            audio=str(d["audio"]),
            question=str(d["question"]),
            choices=[str(c) for c in d["choices"]],
            answer=None if d.get("answer") is None else str(d["answer"]),
            meta=dict(d.get("meta") or {}),
        )

    @property
    def answer_index(self) -> int:
        if self.answer is None:
            raise ValueError(f"item {self.id!r} has no answer (a test split)")
        return self.choices.index(self.answer)
