"""The canonical record for an audio question, and its JSON-lines form.

Owns: the `Example` dataclass every reader produces and every trainer/evaluator consumes, and
plain reading/writing of canonical JSON lines. Does not own: benchmark-specific readers
(`harken.data`), audio decoding (`harken.audio`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator


@dataclass
class Example:
    """One multiple-choice audio question.

    The audio is referenced by path and decoded lazily (never held in memory by the record).
    """

    id: str  # unique within its dataset
    audio: str  # path to the clip (absolute, or as given when the reader had no root)
    question: str  # question text as shown to the model (AVQA: "video" already -> "audio")
    choices: list[str]  # 2-8 answer options, in the dataset's order
    answer: str  # the correct option's text, always one of `choices`
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
            answer=str(d["answer"]),
            meta=dict(d.get("meta") or {}),
        )

    @property
    def answer_index(self) -> int:
        return self.choices.index(self.answer)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any] | Example]) -> None:
    """Write rows as JSON lines atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                if isinstance(row, Example):
                    row = row.to_dict()
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-empty line; malformed JSON names file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
            yield lineno, obj


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write one JSON document atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=indent)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
