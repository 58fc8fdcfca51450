"""The checks every dataset item must pass, and the report of the items that did not.

Owns: the problem kinds (`PROBLEM_KINDS`), the exception a failed check raises (`ItemProblem`),
the field checks shared by every reader (`require_field`, `text_field`, `choices_field`,
`answer_field`), and the per-file report of bad items (`BadItem`, `BadItemReport`): counts per
kind and the first few offenders, with where they are (file, line or list position, id), written
either with the file's path on each line (`summary`, for logs) or under one heading with clip
paths relative to the audio root (`listing`, for `harken data validate`).

Does not own: reading files or mapping a format's fields (`harken.data.readers`), decoding clips
(`harken.data.audio`, whose `AudioError.kind` names the audio problem kinds listed here).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Problem kinds counted in a BadItemReport.
PROBLEM_KINDS = (
    "malformed_json",  # a JSON line that does not parse
    "not_an_object",  # an item that is not a JSON object
    "missing_field",  # a required field absent, null or empty
    "bad_field",  # a field of the wrong type (e.g. choices not a list, a choice that is not text)
    "too_few_choices",  # fewer than 2 choices
    "answer_not_in_choices",  # answer text not exactly one of the choices
    "answer_index_out_of_range",  # integer answer outside 0..len(choices)-1
    "duplicate_id",  # an id seen earlier in the same file (the first one is kept)
    "missing_audio",  # clip not found (only with check_audio)
    "corrupt_audio",  # clip not decodable (only with check_audio)
    "empty_audio",  # clip with no samples (only with check_audio)
    "nonfinite_audio",  # clip with NaN or infinite samples (only with check_audio)
)

# The problem kinds of a bad clip (`harken.data.audio.AudioError.kind`).
AUDIO_KINDS = ("missing_audio", "corrupt_audio", "empty_audio", "nonfinite_audio")


class ItemProblem(Exception):
    """An item that failed a check; the reader turns it into a `BadItem` (or an error)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # one of PROBLEM_KINDS
        self.message = message


# ---------------------------------------------------------------------------------------------
# Field checks
# ---------------------------------------------------------------------------------------------


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def require_field(obj: dict, key: str, hint: str = "") -> Any:
    """`obj[key]`, which must be present and not null."""
    if key not in obj or obj[key] is None:
        raise ItemProblem("missing_field", f"missing field {key!r}{hint}")
    return obj[key]


def text_field(obj: dict, key: str, hint: str = "") -> str:
    """`obj[key]` as non-empty text (a number is accepted and converted)."""
    value = require_field(obj, key, hint)
    if not _is_text(value):
        raise ItemProblem("bad_field", f"field {key!r} should be text, got {type(value).__name__} {value!r}")
    text = str(value)
    if not text.strip():
        raise ItemProblem("missing_field", f"field {key!r} is empty{hint}")
    return text


def choices_field(obj: dict, key: str, hint: str = "") -> list[str]:
    """`obj[key]` as a list of at least 2 non-empty texts."""
    value = require_field(obj, key, hint)
    if not isinstance(value, list):
        raise ItemProblem("bad_field", f"field {key!r} should be a list of choices, got {type(value).__name__} {value!r}")
    out = []
    for i, c in enumerate(value):
        if not _is_text(c):
            raise ItemProblem("bad_field", f"choice {i} of {key!r} should be text, got {type(c).__name__} {c!r}")
        if not str(c).strip():
            raise ItemProblem("bad_field", f"choice {i} of {key!r} is empty: {value!r}")
        out.append(str(c))
    if len(out) < 2:
        raise ItemProblem("too_few_choices", f"{len(out)} choice(s) in {key!r} {out!r}; at least 2 are needed")
    return out


def answer_field(value: Any, choices: list[str], key: str, allow_index: bool) -> str:
    """The answer's text. An int is an index into `choices` where the format says so."""
    if value is None:
        raise ItemProblem("missing_field", f"missing field {key!r}")
    if not _is_text(value):
        raise ItemProblem(
            "bad_field", f"field {key!r} should be the answer text or index, got {type(value).__name__} {value!r}"
        )
    if allow_index and isinstance(value, int):
        if not 0 <= value < len(choices):
            raise ItemProblem(
                "answer_index_out_of_range",
                f"answer index {value} is out of range for {len(choices)} choices {choices!r} (0-based)",
            )
        return choices[value]
    text = str(value)
    if text not in choices:
        raise ItemProblem("answer_not_in_choices", f"answer {text!r} is not among the choices {choices!r}")
    return text


# ---------------------------------------------------------------------------------------------
# Bad-item report
# ---------------------------------------------------------------------------------------------


def _under_root(message: str, root: str) -> str:
    """`message` with each path that starts with `root` (at the start of the message or after a
    space, quote, bracket or colon) written relative to it; readers join clip paths with normpath."""
    prefix = os.path.join(os.path.normpath(root), "")
    if prefix in (os.curdir + os.sep, os.sep):
        return message
    return re.sub(r"(?<![^\s'\"(:])" + re.escape(prefix), "", message)


@dataclass
class BadItem:
    """One item that failed a check."""

    kind: str  # one of PROBLEM_KINDS
    file: str  # the dataset file as given
    line: int | None  # 1-based line number (JSON lines), else None
    index: int | None  # 0-based position in the list (JSON list files), else None
    item_id: str | None  # the item's id when it could be read
    message: str  # what is wrong

    def where(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}[{self.index}]"
        return f"{loc} (id {self.item_id!r})" if self.item_id is not None else loc

    def describe(self) -> str:
        return f"{self.where()}: {self.message}"

    def describe_in_file(self, audio_root: str | None = None) -> str:
        """`describe` without the file ("line 4 (id 'x'): ..."), paths under `audio_root` relative to it."""
        loc = f"line {self.line}" if self.line is not None else f"item [{self.index}]"
        who = f"{loc} (id {self.item_id!r})" if self.item_id is not None else loc
        return f"{who}: {_under_root(self.message, audio_root) if audio_root is not None else self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "line": self.line,
            "index": self.index,
            "id": self.item_id,
            "message": self.message,
        }


@dataclass
class BadItemReport:
    """Counts of bad items per problem kind, and the first few offenders."""

    file: str  # the dataset file as given
    items: int = 0  # items read (good and bad)
    ok: int = 0  # items kept
    counts: Counter = field(default_factory=Counter)  # problem kind -> number of bad items
    offenders: list[BadItem] = field(default_factory=list)  # the first `max_offenders` bad items
    max_offenders: int = 10  # how many offenders to keep
    audio_checked: bool = False  # whether every clip was opened and decoded

    @property
    def bad(self) -> int:
        return sum(self.counts.values())

    @property
    def clean(self) -> bool:
        return self.bad == 0

    def add(self, item: BadItem) -> None:
        self.counts[item.kind] += 1
        if len(self.offenders) < self.max_offenders:
            self.offenders.append(item)

    def counts_line(self) -> str:
        """e.g. "340 items, 338 ok, 2 bad (duplicate_id 1, missing_audio 1)": the counts per problem kind."""
        line = f"{self.items} items, {self.ok} ok, {self.bad} bad"
        if self.counts:
            line += " (" + ", ".join(f"{k} {n}" for k, n in self.counts.most_common()) + ")"
        return line

    def summary_line(self) -> str:
        """e.g. "data.jsonl: 340 items, 338 ok, 2 bad (duplicate_id 1, missing_audio 1)"."""
        return f"{self.file}: {self.counts_line()}"

    def summary(self) -> str:
        """The summary line, then one line per listed offender (and how many more there are)."""
        lines = [self.summary_line()]
        lines += [f"  {b.describe()}" for b in self.offenders]
        if self.bad > len(self.offenders):
            lines.append(f"  ... and {self.bad - len(self.offenders)} more")
        return "\n".join(lines)

    def listing(self, audio_root: str | None = None) -> list[str]:
        """A heading, then one line per listed offender without the file's path (`describe_in_file`,
        clip paths relative to `audio_root`), then how many more there are; [] when clean."""
        if self.clean:
            return []
        shown = len(self.offenders)
        which = f"all {shown}" if shown == self.bad else f"the first {shown} of {self.bad}"
        where = f"; clip paths relative to {audio_root}" if audio_root is not None else ""
        lines = [f"bad items ({which}; where in {os.path.basename(self.file)}{where}):"]
        lines += [f"  {b.describe_in_file(audio_root)}" for b in self.offenders]
        if self.bad > shown:
            lines.append(f"  ... and {self.bad - shown} more")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "items": self.items,
            "ok": self.ok,
            "bad": self.bad,
            "counts": dict(self.counts),
            "offenders": [b.to_dict() for b in self.offenders],
            "audio_checked": self.audio_checked,
        }
