"""Datasets: reading benchmark and training files into canonical `Example` records, and checking them.

Owns: the readers for canonical JSON lines, AVQA / R1-AQA, MMAU, MMAR and generic files with a
field mapping (which also renames the MMAU and MMAR keys); resolving each item's clip path
against an audio root (by default the dataset's folder: `dataset_folder`); running the item
checks over a whole dataset, a JSON / JSON-lines file or a table (`read_dataset`, `load_dataset`,
`load_examples`) and the `Dataset` it returns; items without answers (a test split), read only
where asked; the AVQA video -> audio question rule (`video_to_audio`).

Does not own: the `Example` record (`harken.data.records`), reading JSON list / JSON lines text
(`harken.io.iter_records`), the field checks and the bad-item report (`harken.data.checks`), the
shipped MMAU files and checksums (`harken.data.benchmarks`), parquet / Arrow files and `save_to_disk`
folders and the clips embedded in them (`harken.data.tables`), decoding audio (`harken.data.audio`;
clips are only opened here when a check is asked for), prompts, scoring, `harken data validate`
(`harken.cli.data`).

Every reader accepts a JSON list file, JSON lines (one object per line) and a table's rows. An
item is bad
when its line is not valid JSON, a required field is missing or empty, it has fewer than 2
choices, its answer is not one of its choices (or an answer index is out of range), its id
repeats an earlier one, or (with `check_audio`) its clip is missing, undecodable, empty or holds
NaN/inf samples. A bad item raises a ValueError naming the file, the line (JSON lines) or list
position (JSON list, table row), the item id and the problem; with `skip_bad` it is skipped and
counted in `Dataset.report` instead, and one summary line is logged. With `allow_unanswered`, a
dataset whose items all lack an answer is a test split (`Example.answer` None); a file where only
some lack one is an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, overload

from harken.config import ConfigError
from harken.data.audio import AudioError, verify_audio
from harken.data.benchmarks import MMAU_VERSIONS, resolve_dataset_path
from harken.data.checks import (
    BadItem,
    BadItemReport,
    ItemProblem,
    answer_field,
    choices_field,
    require_field,
    text_field,
)
from harken.data.records import Example
from harken.data.tables import is_embedded, is_table, iter_table_rows, table_sha256
from harken.io import MalformedLine, iter_records

logger = logging.getLogger(__name__)

FORMATS = ("canonical", "avqa", "mmau", "mmar", "jsonl")
CANONICAL_FIELDS = ("id", "audio", "question", "choices", "answer")  # what `fields` may map
MAPPED_FORMATS = ("jsonl", "mmau", "mmar")  # the formats `fields` applies to


@dataclass
class DatasetConfig:
    """Where a dataset is and how to read it (a section of the train/eval configs)."""

    # A dataset file, a table (.parquet, .arrow, a save_to_disk folder, a glob of shards), or a
    # shipped benchmark: mmau-test-mini, mmau-test-mini-v2503.
    path: str = ""
    format: str = "canonical"  # one of canonical | avqa | mmau | mmar | jsonl (generic, uses `fields`)
    audio_root: Optional[str] = None  # folder relative clip paths are joined to; None: canonical -> the file's folder, others as given
    fields: dict[str, str] = field(default_factory=dict)  # jsonl, mmau, mmar: canonical name -> source key, e.g. {question: q}
    skip_bad: bool = False  # skip bad items (counted in the report) instead of stopping at the first
    check_audio: bool = False  # open and fully decode every clip at load time
    limit: Optional[int] = None  # keep only the first N good items (None: all)


class Dataset(Sequence[Example]):
    """The examples read from one file, where they came from, and what was skipped."""

    def __init__(self, examples: list[Example], source: dict[str, Any], report: BadItemReport,
                 clip_seconds: dict[str, float] | None = None):
        self.examples = examples  # in file order
        self.source = source  # path, name, sha256, format, audio_root (+ benchmark, version for shipped MMAU)
        self.report = report  # bad items (non-empty only with skip_bad)
        self.clip_seconds = clip_seconds or {}  # clip -> decoded duration (only with check_audio)

    @property
    def unanswered(self) -> bool:
        """A test split: no item has an answer (read with allow_unanswered)."""
        return bool(self.examples) and self.examples[0].answer is None

    def __len__(self) -> int:
        return len(self.examples)

    @overload
    def __getitem__(self, i: int) -> Example: ...

    @overload
    def __getitem__(self, i: slice) -> list[Example]: ...

    def __getitem__(self, i):
        return self.examples[i]

    def __repr__(self) -> str:
        return f"Dataset({self.source.get('name')!r}, format={self.source.get('format')!r}, {len(self)} examples)"

    def meta_counts(self, key: str) -> Counter:
        """How many examples have each value of `meta[key]` (e.g. "task" -> sound/music/speech)."""
        return Counter(ex.meta.get(key) for ex in self.examples)


_VIDEO_WORD = re.compile(r"\b(video|Video|VIDEO)\b")
_AUDIO_WORD = {"video": "audio", "Video": "Audio", "VIDEO": "AUDIO"}


def video_to_audio(question: str) -> str:
    """AVQA questions were written for videos; the model only hears the clip.

    Replaces the whole word video / Video / VIDEO with audio / Audio / AUDIO. Plurals and
    compounds ("videos", "videotape") are left untouched on purpose: AVQA questions use the
    singular ("What is the main sound in the video?").
    """
    return _VIDEO_WORD.sub(lambda m: _AUDIO_WORD[m.group(1)], question)


# ---------------------------------------------------------------------------------------------
# Readers: one function per format, raw JSON object -> Example
# ---------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    audio_root: str | None
    fields: dict[str, str]
    allow_unanswered: bool = False


def _join_root(audio: str, audio_root: str | None) -> str:
    """Relative clip paths are joined to the audio root; absolute, rootless and embedded ones are kept."""
    if audio_root is None or os.path.isabs(audio) or is_embedded(audio):
        return audio
    return os.path.normpath(os.path.join(audio_root, audio))


def _keep(obj: dict, keys: Sequence[str]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if obj.get(k) is not None}


def _answer(obj: dict, key: str, choices: list[str], ctx: _Ctx, allow_index: bool, hint: str = "") -> str | None:
    """The answer's text; None for an item without one (absent, null or blank) where allowed."""
    value = obj.get(key)
    if ctx.allow_unanswered and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    return answer_field(require_field(obj, key, hint), choices, key, allow_index)


def _hint(name: str) -> str:
    return f" (the source of {name!r}; map another key with fields.{name}=KEY or --field {name}=KEY)"


def _read_canonical(obj: dict, ctx: _Ctx) -> Example:
    choices = choices_field(obj, "choices")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise ItemProblem("bad_field", f"field 'meta' should be an object, got {type(meta).__name__}")
    return Example(
        id=text_field(obj, "id"),
        audio=_join_root(text_field(obj, "audio"), ctx.audio_root),
        question=text_field(obj, "question"),
        choices=choices,
        answer=_answer(obj, "answer", choices, ctx, allow_index=False),
        meta=dict(meta),
    )


def _read_avqa(obj: dict, ctx: _Ctx) -> Example:
    ex_id = text_field(obj, "id")
    choices = choices_field(obj, "multi_choice")
    if obj.get("audio_path"):
        audio = text_field(obj, "audio_path")
    else:
        # The released AVQA metadata has no audio; users extract <video_name>.wav themselves.
        audio = text_field(obj, "video_name", " (needed for the clip path when there is no 'audio_path')") + ".wav"
    meta = _keep(obj, ("question_type", "question_relation", "video_name", "video_id"))
    meta["dataset"] = obj.get("dataset_name") or "AVQA"
    return Example(
        id=ex_id,
        audio=_join_root(audio, ctx.audio_root),
        question=video_to_audio(text_field(obj, "question_text")),
        choices=choices,
        answer=_answer(obj, "answer", choices, ctx, allow_index=True),
        meta=meta,
    )


def _read_benchmark(audio_key: str, meta_keys: tuple[str, ...], obj: dict, ctx: _Ctx) -> Example:
    """MMAU and MMAR: canonical-like names, the clip under `audio_key`, chosen keys kept as meta;
    `fields` renames any of them (e.g. audio=audio for a Hugging Face copy with an audio column)."""
    src = {name: ctx.fields.get(name, audio_key if name == "audio" else name) for name in CANONICAL_FIELDS}

    def hint(name: str) -> str:
        return _hint(name) if ctx.fields or name == "audio" else ""

    return _mapped(obj, ctx, src, hint, False, _keep(obj, meta_keys))


def _read_generic(obj: dict, ctx: _Ctx) -> Example:
    src = {name: ctx.fields.get(name, name) for name in CANONICAL_FIELDS}
    meta: dict[str, Any] = {}
    rest = {k: v for k, v in obj.items() if k not in src.values()}
    if isinstance(rest.get("meta"), dict):  # a canonical-style nested meta is flattened in
        meta.update(rest.pop("meta"))
    meta.update(rest)
    return _mapped(obj, ctx, src, _hint, True, meta)


def _mapped(obj: dict, ctx: _Ctx, src: dict[str, str], hint: Callable[[str], str], allow_index: bool,
            meta: dict[str, Any]) -> Example:
    """An Example from the keys `src` names for each canonical field (an int answer is an index
    where `allow_index`); `hint(name)` follows a missing field's message."""
    choices = choices_field(obj, src["choices"], hint("choices"))
    return Example(
        id=text_field(obj, src["id"], hint("id")),
        audio=_join_root(text_field(obj, src["audio"], hint("audio")), ctx.audio_root),
        question=text_field(obj, src["question"], hint("question")),
        choices=choices,
        answer=_answer(obj, src["answer"], choices, ctx, allow_index, hint("answer")),
        meta=meta,
    )


_READERS: dict[str, Callable[[dict, _Ctx], Example]] = {
    "canonical": _read_canonical,
    "avqa": _read_avqa,
    "mmau": partial(_read_benchmark, "audio_id", ("task", "category", "sub-category", "difficulty", "dataset", "split")),
    "mmar": partial(_read_benchmark, "audio_path", ("modality", "category", "sub-category", "language", "source")),
    "jsonl": _read_generic,
}


# ---------------------------------------------------------------------------------------------
# File reading
# ---------------------------------------------------------------------------------------------


class _ItemChecker:
    """Turns each raw item into an Example, or raises the ItemProblem that makes it bad."""

    def __init__(self, fmt: str, ctx: _Ctx, check_audio: bool):
        self.reader = _READERS[fmt]
        self.ctx = ctx
        self.check_audio = check_audio
        self.first_seen: dict[str, str] = {}  # id -> where it was first read
        self.clip_errors: dict[str, AudioError | None] = {}  # AVQA asks several questions per clip
        self.clip_seconds: dict[str, float] = {}  # clip -> decoded duration, for the clips that decode

    def example(self, obj: Any, line: int | None, index: int | None) -> Example:
        if isinstance(obj, MalformedLine):
            raise ItemProblem("malformed_json", f"malformed JSON line ({obj.msg} at column {obj.colno})")
        if not isinstance(obj, dict):
            raise ItemProblem("not_an_object", f"expected a JSON object, got {type(obj).__name__} {obj!r:.60}")
        ex = self.reader(obj, self.ctx)
        if ex.id in self.first_seen:
            raise ItemProblem("duplicate_id", f"duplicate id {ex.id!r} (first at {self.first_seen[ex.id]})")
        if self.check_audio:
            self._check_clip(ex.audio)
        self.first_seen[ex.id] = f"line {line}" if line is not None else f"item [{index}]"
        return ex

    def _check_clip(self, audio: str) -> None:
        if audio not in self.clip_errors:
            try:
                self.clip_seconds[audio] = verify_audio(audio)["duration"]
                self.clip_errors[audio] = None
            except AudioError as e:
                self.clip_errors[audio] = e
        err = self.clip_errors[audio]
        if err is not None:
            raise ItemProblem(err.kind, f"clip {err.path}: {err.problem}")


def _position(where: str) -> tuple[int | None, int | None]:
    """(line, index) of an `iter_records` location: "PATH:LINE" or "PATH: item [INDEX]"."""
    head, sep, tail = where.rpartition(": item [")
    if sep and tail.endswith("]"):
        return None, int(tail[:-1])
    return int(where.rpartition(":")[2]), None


def _raw_id(obj: Any, key: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _check_options(format: str, fields: dict[str, str], limit: int | None) -> None:
    if fields and format not in MAPPED_FORMATS:
        raise ConfigError(f"a field mapping applies to formats {', '.join(MAPPED_FORMATS)} only "
                          f"(got format {format!r} and fields {fields})")
    unknown = sorted(set(fields) - set(CANONICAL_FIELDS))
    if unknown:
        raise ConfigError(f"unknown canonical field(s) {', '.join(unknown)} in the mapping; valid: {', '.join(CANONICAL_FIELDS)}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0 or None, got {limit}")


def _read_bytes(file: Path) -> tuple[bytes, str]:
    if not file.is_file():
        raise FileNotFoundError(f"dataset file not found: {file}")
    raw = file.read_bytes()
    try:
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 text (byte {e.start}); expected JSON or JSON lines") from None


def read_dataset(
    path: str | os.PathLike,
    format: str = "canonical",
    audio_root: str | os.PathLike | None = None,
    *,
    skip_bad: bool = False,
    fields: dict[str, str] | None = None,
    check_audio: bool = False,
    limit: int | None = None,
    allow_unanswered: bool = False,
) -> Dataset:
    """Read a dataset into canonical examples.

    Args:
        path: a JSON list or JSON-lines file; a table (`harken.data.tables.is_table`: a .parquet
            or .arrow file, a `save_to_disk` folder, a folder or glob of shards), whose audio
            columns may hold the clips themselves; or a shipped benchmark name
            ("mmau-test-mini", "mmau-test-mini-v2503"), which implies format "mmau".
        format: canonical | avqa | mmau | mmar | jsonl (generic with `fields`): the items' keys.
        audio_root: folder relative clip paths are joined to (normalised). When None, canonical
            files (written by harken with paths relative to themselves, e.g. `harken data
            synth`) resolve them against the dataset's folder (`dataset_folder`); the benchmark
            and generic formats keep them as given (AVQA without `audio_path`: "<video_name>.wav").
            Embedded clips need no root.
        skip_bad: skip bad items and count them in `Dataset.report` instead of raising.
        fields: jsonl, mmau, mmar: canonical name (id, audio, question, choices, answer) -> source
            key. jsonl: unmapped names are read from the key of the same name, other keys go to
            `meta`, and an integer answer is an index into the choices; mmau / mmar: the mapping
            replaces the format's own key for that name.
        check_audio: open and decode every clip (each distinct path once): it must exist, decode,
            be non-empty and finite. Never done otherwise. Durations go to `Dataset.clip_seconds`.
        limit: stop after this many good examples.
        allow_unanswered: items without an answer (absent, null or blank) are read with
            `answer=None` when none of the items has one (a test split, `Dataset.unanswered`).

    Raises:
        FileNotFoundError: no such dataset file.
        ConfigError: unknown format, or a bad `fields` mapping.
        ValueError: a bad item (without skip_bad), naming the file, line or list position, id
            and problem; an unreadable file; a file with no items; some items without an answer
            and some with one (allow_unanswered).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    file, fmt, benchmark = resolve_dataset_path(path, format)
    fields = dict(fields or {})
    _check_options(fmt, fields, limit)
    if is_table(file):
        records: Any = ((f"{file}: item [{i}]", row) for i, row in iter_table_rows(file))
        sha256 = table_sha256(file)
    else:
        raw, text = _read_bytes(file)
        records, sha256 = iter_records(file, text, strict=False), hashlib.sha256(raw).hexdigest()

    root = os.fspath(audio_root) if audio_root is not None else None
    if root is None and fmt == "canonical":
        root = os.path.abspath(dataset_folder(file))
    checker = _ItemChecker(fmt, _Ctx(audio_root=root, fields=fields, allow_unanswered=allow_unanswered), check_audio)
    id_key = fields.get("id", "id")
    report = BadItemReport(file=str(file), audio_checked=check_audio)
    examples: list[Example] = []
    empty = True
    for where, obj in records:
        empty = False
        if limit is not None and len(examples) >= limit:
            break
        report.items += 1
        line, index = _position(where)
        try:
            examples.append(checker.example(obj, line, index))
        except ItemProblem as p:
            bad = BadItem(p.kind, str(file), line, index, _raw_id(obj, id_key), p.message)
            if not skip_bad:
                raise ValueError(f"{bad.describe()} (skip_bad=True / data.skip_bad=true skips and counts bad items)") from None
            report.add(bad)
            continue
        report.ok += 1

    if empty:
        what = "rows" if is_table(file) else "a JSON list of objects or one JSON object per line"
        raise ValueError(f"{file}: no items found (expected {what})")
    unanswered = [ex for ex in examples if ex.answer is None]
    if unanswered and len(unanswered) < len(examples):
        raise ValueError(
            f"{file}: {len(unanswered)} of {len(examples)} items have no answer (first: id {unanswered[0].id!r}); "
            "a scored set needs every answer, a test split none"
        )
    if report.bad:
        logger.warning("skipped bad items: %s", report.summary_line())
    return Dataset(examples, _source(file, sha256, fmt, root, benchmark), report, checker.clip_seconds)


def dataset_folder(path: str | os.PathLike) -> Path:
    """The folder a dataset's relative clip paths point into by default: a file's (or a glob's)
    folder, or a dataset folder (`save_to_disk`, shards) itself."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def _source(file: Path, sha256: str, fmt: str, root: str | None, benchmark: str | None) -> dict[str, Any]:
    source: dict[str, Any] = {
        "path": str(file.resolve()),
        "name": file.name,
        "sha256": sha256,
        "format": fmt,
        "audio_root": root,
    }
    if benchmark is not None:
        source["benchmark"] = benchmark
        source["version"] = MMAU_VERSIONS[benchmark]
    return source


def load_dataset(cfg: DatasetConfig) -> Dataset:
    """`read_dataset` driven by a `DatasetConfig`."""
    if not cfg.path:
        raise ConfigError("no dataset path: set data.path=FILE (or a shipped benchmark such as mmau-test-mini)")
    return read_dataset(
        cfg.path,
        cfg.format,
        cfg.audio_root,
        skip_bad=cfg.skip_bad,
        fields=dict(cfg.fields) if cfg.fields else None,
        check_audio=cfg.check_audio,
        limit=cfg.limit,
    )


def load_examples(path: str | os.PathLike, format: str = "canonical", audio_root: str | None = None,
                  fields: dict[str, str] | None = None) -> list[Example]:
    """The examples of a dataset (file or table), relative clip paths resolved for every format.

    Relative clip paths are resolved against `audio_root`, by default the dataset's folder
    (`dataset_folder`), so a split written elsewhere still points at the clips (used by
    `harken data split|stats`). `fields` as for `read_dataset`.
    """
    if audio_root is None and (os.path.isfile(path) or is_table(path)):
        audio_root = str(dataset_folder(Path(path).resolve()))
    return list(read_dataset(path, format=format, audio_root=audio_root, fields=fields))
