"""Datasets: reading benchmark and training files into canonical `Example` records, and checking them.

Owns: the readers for canonical JSON lines, AVQA / R1-AQA, MMAU, MMAR and generic JSON files
with a field mapping; resolving each item's clip path against an audio root; the checks every
item must pass (and the report of those that did not: `BadItemReport`); the shipped MMAU
test-mini metadata (`harken/resources/mmau/`, pinned by version); `harken data validate`.

Does not own: the `Example` record and JSON-lines writing (`harken.data.records`), decoding audio
(`harken.data.audio`; clips are only opened here when a check is asked for), prompts, scoring.

Every reader accepts both a JSON list file and JSON lines (one object per line). An item is bad
when its line is not valid JSON, a required field is missing or empty, it has fewer than 2
choices, its answer is not one of its choices (or an answer index is out of range), its id
repeats an earlier one, or (with `check_audio`) its clip is missing, undecodable, empty or holds
NaN/inf samples. A bad item raises a ValueError naming the file, the line (JSON lines) or list
position (JSON list), the item id and the problem; with `skip_bad` it is skipped and counted in
`Dataset.report` instead, and one summary line is logged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, overload

from harken.data.audio import AudioError, verify_audio
from harken.config import ConfigError
from harken.data.records import Example

logger = logging.getLogger(__name__)

FORMATS = ("canonical", "avqa", "mmau", "mmar", "jsonl")
CANONICAL_FIELDS = ("id", "audio", "question", "choices", "answer")  # what `fields` may map

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

# ---------------------------------------------------------------------------------------------
# Shipped MMAU test-mini metadata
# ---------------------------------------------------------------------------------------------

MMAU_DIR = Path(__file__).parent.parent / "resources" / "mmau"

# Benchmark name -> version of the test-mini file. The two are NOT comparable: about a quarter of
# the questions, choices or answers changed between them. R1-AQA's paper used v2503.
MMAU_VERSIONS = {"mmau-test-mini": "v05.15.25", "mmau-test-mini-v2503": "v2503"}


def mmau_metadata_path(benchmark_or_version: str) -> Path:
    """The shipped MMAU test-mini JSON for a benchmark name or a version.

    Args:
        benchmark_or_version: "mmau-test-mini" (current, v05.15.25), "mmau-test-mini-v2503"
            (the paper's), or a bare version "v05.15.25" / "v2503".
    """
    version = MMAU_VERSIONS.get(benchmark_or_version, benchmark_or_version)
    if version not in MMAU_VERSIONS.values():
        valid = sorted(MMAU_VERSIONS) + sorted(MMAU_VERSIONS.values())
        raise ConfigError(f"unknown MMAU benchmark or version {benchmark_or_version!r}; valid: {', '.join(valid)}")
    return MMAU_DIR / f"test-mini-{version}.json"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    """Where a dataset is and how to read it (a section of the train/eval configs)."""

    path: str = ""  # dataset file, or a shipped benchmark: mmau-test-mini, mmau-test-mini-v2503
    format: str = "canonical"  # one of canonical | avqa | mmau | mmar | jsonl (generic, uses `fields`)
    audio_root: Optional[str] = None  # folder relative clip paths are joined to; None: canonical -> the file's folder, others as given
    fields: dict[str, str] = field(default_factory=dict)  # jsonl only: canonical name -> source key, e.g. {question: q}
    skip_bad: bool = False  # skip bad items (counted in the report) instead of stopping at the first
    check_audio: bool = False  # open and fully decode every clip at load time
    limit: Optional[int] = None  # keep only the first N good items (None: all)


# ---------------------------------------------------------------------------------------------
# Bad-item report
# ---------------------------------------------------------------------------------------------


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

    def summary_line(self) -> str:
        """e.g. "data.jsonl: 340 items, 338 ok, 2 bad (duplicate_id 1, missing_audio 1)"."""
        line = f"{self.file}: {self.items} items, {self.ok} ok, {self.bad} bad"
        if self.counts:
            line += " (" + ", ".join(f"{k} {n}" for k, n in self.counts.most_common()) + ")"
        return line

    def summary(self) -> str:
        """The summary line, then one line per listed offender (and how many more there are)."""
        lines = [self.summary_line()]
        lines += [f"  {b.describe()}" for b in self.offenders]
        if self.bad > len(self.offenders):
            lines.append(f"  ... and {self.bad - len(self.offenders)} more")
        return "\n".join(lines)

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


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


class Dataset(Sequence[Example]):
    """The examples read from one file, where they came from, and what was skipped."""

    def __init__(self, examples: list[Example], source: dict[str, Any], report: BadItemReport):
        self.examples = examples  # in file order
        self.source = source  # path, name, sha256, format, audio_root (+ benchmark, version for shipped MMAU)
        self.report = report  # bad items (non-empty only with skip_bad)

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


# ---------------------------------------------------------------------------------------------
# Field checks (shared by every reader)
# ---------------------------------------------------------------------------------------------


class _Bad(Exception):
    """An item problem, raised inside the readers and turned into a BadItem by `read_dataset`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def _require(obj: dict, key: str, hint: str = "") -> Any:
    if key not in obj or obj[key] is None:
        raise _Bad("missing_field", f"missing field {key!r}{hint}")
    return obj[key]


def _text(obj: dict, key: str, hint: str = "") -> str:
    value = _require(obj, key, hint)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad("bad_field", f"field {key!r} should be text, got {type(value).__name__} {value!r}")
    text = str(value)
    if not text.strip():
        raise _Bad("missing_field", f"field {key!r} is empty{hint}")
    return text


def _choices(obj: dict, key: str, hint: str = "") -> list[str]:
    value = _require(obj, key, hint)
    if not isinstance(value, list):
        raise _Bad("bad_field", f"field {key!r} should be a list of choices, got {type(value).__name__} {value!r}")
    out = []
    for i, c in enumerate(value):
        if isinstance(c, bool) or not isinstance(c, (str, int, float)):
            raise _Bad("bad_field", f"choice {i} of {key!r} should be text, got {type(c).__name__} {c!r}")
        if not str(c).strip():
            raise _Bad("bad_field", f"choice {i} of {key!r} is empty: {value!r}")
        out.append(str(c))
    if len(out) < 2:
        raise _Bad("too_few_choices", f"{len(out)} choice(s) in {key!r} {out!r}; at least 2 are needed")
    return out


def _answer(value: Any, choices: list[str], key: str, allow_index: bool) -> str:
    """The answer's text. An int is an index into `choices` where the format says so."""
    if value is None:
        raise _Bad("missing_field", f"missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad("bad_field", f"field {key!r} should be the answer text or index, got {type(value).__name__} {value!r}")
    if allow_index and isinstance(value, int):
        if not 0 <= value < len(choices):
            raise _Bad(
                "answer_index_out_of_range",
                f"answer index {value} is out of range for {len(choices)} choices {choices!r} (0-based)",
            )
        return choices[value]
    text = str(value)
    if text not in choices:
        raise _Bad("answer_not_in_choices", f"answer {text!r} is not among the choices {choices!r}")
    return text


def _join_root(audio: str, audio_root: str | None) -> str:
    """Relative clip paths are joined to the audio root; absolute ones and rootless ones are kept."""
    if audio_root is None or os.path.isabs(audio):
        return audio
    return os.path.normpath(os.path.join(audio_root, audio))


def _keep(obj: dict, keys: Sequence[str]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if obj.get(k) is not None}


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


def _read_canonical(obj: dict, ctx: _Ctx) -> Example:
    choices = _choices(obj, "choices")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise _Bad("bad_field", f"field 'meta' should be an object, got {type(meta).__name__}")
    return Example(
        id=_text(obj, "id"),
        audio=_join_root(_text(obj, "audio"), ctx.audio_root),
        question=_text(obj, "question"),
        choices=choices,
        answer=_answer(obj.get("answer"), choices, "answer", allow_index=False),
        meta=dict(meta),
    )


def _read_avqa(obj: dict, ctx: _Ctx) -> Example:
    ex_id = _text(obj, "id")
    choices = _choices(obj, "multi_choice")
    if obj.get("audio_path"):
        audio = _text(obj, "audio_path")
    else:
        # The released AVQA metadata has no audio; users extract <video_name>.wav themselves.
        audio = _text(obj, "video_name", " (needed for the clip path when there is no 'audio_path')") + ".wav"
    meta = _keep(obj, ("question_type", "question_relation", "video_name", "video_id"))
    meta["dataset"] = obj.get("dataset_name") or "AVQA"
    return Example(
        id=ex_id,
        audio=_join_root(audio, ctx.audio_root),
        question=video_to_audio(_text(obj, "question_text")),
        choices=choices,
        answer=_answer(obj.get("answer"), choices, "answer", allow_index=True),
        meta=meta,
    )


def _read_mmau(obj: dict, ctx: _Ctx) -> Example:
    choices = _choices(obj, "choices")
    return Example(
        id=_text(obj, "id"),
        audio=_join_root(_text(obj, "audio_id"), ctx.audio_root),
        question=_text(obj, "question"),
        choices=choices,
        answer=_answer(obj.get("answer"), choices, "answer", allow_index=False),
        meta=_keep(obj, ("task", "category", "sub-category", "difficulty", "dataset", "split")),
    )


def _read_mmar(obj: dict, ctx: _Ctx) -> Example:
    choices = _choices(obj, "choices")
    return Example(
        id=_text(obj, "id"),
        audio=_join_root(_text(obj, "audio_path"), ctx.audio_root),
        question=_text(obj, "question"),
        choices=choices,
        answer=_answer(obj.get("answer"), choices, "answer", allow_index=False),
        meta=_keep(obj, ("modality", "category", "sub-category", "language", "source")),
    )


def _read_generic(obj: dict, ctx: _Ctx) -> Example:
    src = {name: ctx.fields.get(name, name) for name in CANONICAL_FIELDS}

    def hint(name: str) -> str:
        return f" (the source of {name!r}; map another key with fields.{name}=KEY or --field {name}=KEY)"

    choices = _choices(obj, src["choices"], hint("choices"))
    meta: dict[str, Any] = {}
    rest = {k: v for k, v in obj.items() if k not in src.values()}
    if isinstance(rest.get("meta"), dict):  # a canonical-style nested meta is flattened in
        meta.update(rest.pop("meta"))
    meta.update(rest)
    return Example(
        id=_text(obj, src["id"], hint("id")),
        audio=_join_root(_text(obj, src["audio"], hint("audio")), ctx.audio_root),
        question=_text(obj, src["question"], hint("question")),
        choices=choices,
        answer=_answer(_require(obj, src["answer"], hint("answer")), choices, src["answer"], allow_index=True),
        meta=meta,
    )


_READERS: dict[str, Callable[[dict, _Ctx], Example]] = {
    "canonical": _read_canonical,
    "avqa": _read_avqa,
    "mmau": _read_mmau,
    "mmar": _read_mmar,
    "jsonl": _read_generic,
}
_ID_KEY = {"canonical": "id", "avqa": "id", "mmau": "id", "mmar": "id"}


# ---------------------------------------------------------------------------------------------
# File reading
# ---------------------------------------------------------------------------------------------


def _iter_items(path: Path, text: str) -> Iterator[tuple[int | None, int | None, Any]]:
    """Yield (line, index, object-or-_Bad) for a JSON list file or a JSON-lines file.

    Not `records.iter_jsonl`: that stops at the first malformed line, and skip-bad reading must
    count the line and go on.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            # A broken JSON list cannot be read item by item: this is fatal even with skip_bad.
            raise ValueError(f"{path}:{e.lineno}: malformed JSON list ({e.msg} at column {e.colno})") from None
        for i, obj in enumerate(items):
            yield None, i, obj
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, None, json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == 1 and stripped.startswith("{") and _is_single_object(text):
                raise ValueError(
                    f"{path}: the file holds one JSON object; expected a JSON list of items or one item per line"
                ) from None
            yield lineno, None, _Bad("malformed_json", f"malformed JSON line ({e.msg} at column {e.colno})")


def _is_single_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _raw_id(obj: Any, key: str | None) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) and key else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _resolve_path(path: str | os.PathLike, fmt: str) -> tuple[Path, str, str | None]:
    """A file path, or a shipped benchmark name (which implies the MMAU format)."""
    name = os.fspath(path)
    if name in MMAU_VERSIONS and not os.path.exists(name):
        if fmt not in ("mmau", "canonical"):  # "canonical" is the default, i.e. not chosen
            raise ConfigError(f"{name} is a shipped MMAU benchmark; read it with format 'mmau', not {fmt!r}")
        return mmau_metadata_path(name), "mmau", name
    return Path(name), fmt, None


def read_dataset(
    path: str | os.PathLike,
    format: str = "canonical",
    audio_root: str | os.PathLike | None = None,
    *,
    skip_bad: bool = False,
    fields: dict[str, str] | None = None,
    check_audio: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Read a dataset file into canonical examples.

    Args:
        path: a JSON list or JSON-lines file, or a shipped benchmark name ("mmau-test-mini",
            "mmau-test-mini-v2503"), which implies format "mmau".
        format: canonical | avqa | mmau | mmar | jsonl (generic with `fields`).
        audio_root: folder relative clip paths are joined to (normalised). When None, canonical
            files (written by harken with paths relative to themselves, e.g. `harken data
            synth`) resolve them against the dataset file's folder; the benchmark and generic
            formats keep them as given (AVQA without `audio_path`: "<video_name>.wav").
        skip_bad: skip bad items and count them in `Dataset.report` instead of raising.
        fields: jsonl only: canonical name (id, audio, question, choices, answer) -> source key;
            unmapped names are read from the key of the same name, other keys go to `meta`.
            An integer answer is an index into the choices.
        check_audio: open and decode every clip (each distinct path once): it must exist, decode,
            be non-empty and finite. Never done otherwise.
        limit: stop after this many good examples.

    Raises:
        FileNotFoundError: no such dataset file.
        ConfigError: unknown format, or a bad `fields` mapping.
        ValueError: a bad item (without skip_bad), naming the file, line or list position, id
            and problem; an unreadable file; a file with no items.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    file, fmt, benchmark = _resolve_path(path, format)
    fields = dict(fields or {})
    if fields and fmt != "jsonl":
        raise ConfigError(f"a field mapping applies to format 'jsonl' only (got format {fmt!r} and fields {fields})")
    unknown = sorted(set(fields) - set(CANONICAL_FIELDS))
    if unknown:
        raise ConfigError(f"unknown canonical field(s) {', '.join(unknown)} in the mapping; valid: {', '.join(CANONICAL_FIELDS)}")
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0 or None, got {limit}")
    if not file.is_file():
        raise FileNotFoundError(f"dataset file not found: {file}")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: not UTF-8 text (byte {e.start}); expected JSON or JSON lines") from None

    root = os.fspath(audio_root) if audio_root is not None else None
    if root is None and fmt == "canonical":
        root = os.path.abspath(file.parent)
    ctx = _Ctx(audio_root=root, fields=fields)
    reader = _READERS[fmt]
    id_key = _ID_KEY.get(fmt) or fields.get("id", "id")
    report = BadItemReport(file=str(file), audio_checked=check_audio)
    examples: list[Example] = []
    first_seen: dict[str, str] = {}  # id -> where it was first read
    clip_checked: dict[str, AudioError | None] = {}  # AVQA asks several questions per clip

    empty = True
    for line, index, obj in _iter_items(file, text):
        empty = False
        if limit is not None and len(examples) >= limit:
            break
        report.items += 1
        item_id = _raw_id(obj, id_key)
        try:
            if isinstance(obj, _Bad):
                raise obj
            if not isinstance(obj, dict):
                raise _Bad("not_an_object", f"expected a JSON object, got {type(obj).__name__} {obj!r:.60}")
            ex = reader(obj, ctx)
            if ex.id in first_seen:
                raise _Bad("duplicate_id", f"duplicate id {ex.id!r} (first at {first_seen[ex.id]})")
            if check_audio:
                if ex.audio not in clip_checked:
                    try:
                        verify_audio(ex.audio)
                        clip_checked[ex.audio] = None
                    except AudioError as e:
                        clip_checked[ex.audio] = e
                err = clip_checked[ex.audio]
                if err is not None:
                    raise _Bad(err.kind, f"clip {err.path}: {err.problem}")
        except _Bad as b:
            bad = BadItem(b.kind, str(file), line, index, item_id, b.message)
            if not skip_bad:
                raise ValueError(f"{bad.describe()} (skip_bad=True / data.skip_bad=true skips and counts bad items)") from None
            report.add(bad)
            continue
        first_seen[ex.id] = f"line {line}" if line is not None else f"item [{index}]"
        examples.append(ex)
        report.ok += 1

    if empty:
        raise ValueError(f"{file}: no items found (expected a JSON list of objects or one JSON object per line)")
    if report.bad:
        logger.warning("skipped bad items: %s", report.summary_line())

    source: dict[str, Any] = {
        "path": str(file.resolve()),
        "name": file.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "format": fmt,
        "audio_root": root,
    }
    if benchmark is not None:
        source["benchmark"] = benchmark
        source["version"] = MMAU_VERSIONS[benchmark]
    return Dataset(examples, source, report)


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


# ---------------------------------------------------------------------------------------------
# Command line: harken data validate
# ---------------------------------------------------------------------------------------------


def _parse_field_args(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, key = item.partition("=")
        if not sep or not name or not key:
            raise ConfigError(f"--field expects NAME=KEY (e.g. --field question=q), got {item!r}")
        out[name] = key
    return out


def _cmd_validate(args: argparse.Namespace) -> int:
    shipped = args.dataset in MMAU_VERSIONS and not os.path.exists(args.dataset)
    fmt = args.format or ("mmau" if shipped else "canonical")
    fields = _parse_field_args(args.field)
    file = mmau_metadata_path(args.dataset) if shipped else Path(args.dataset)
    if not file.is_file():
        raise FileNotFoundError(f"dataset file not found: {file}")

    if args.audio_root is not None:
        root, check = args.audio_root, True
        if not os.path.isdir(root):
            raise FileNotFoundError(f"--audio-root is not a folder: {root}")
        clips_note = f"every clip opened and decoded (relative paths under {root})"
    elif fmt == "mmau":
        root, check = None, False
        clips_note = (
            "NOT checked (schema only): MMAU audio is distributed separately; "
            "pass --audio-root DIR (the folder holding test-mini-audios/) to check every clip"
        )
    else:
        # Relative clip paths in a file written by hand or by a prepare step point next to it.
        root, check = str(file.parent), True
        clips_note = f"every clip opened and decoded (relative paths under the file's folder {file.parent})"

    ds = read_dataset(args.dataset if shipped else file, fmt, root, skip_bad=True, fields=fields or None, check_audio=check)
    label = f"{args.dataset}: MMAU test-mini {ds.source['version']}, " if shipped else ""
    print(f"dataset: {label}{ds.source['path']} (format {fmt}, sha256 {ds.source['sha256'][:16]})")
    print(ds.report.summary())
    print(f"clips: {clips_note}")
    if ds.report.clean:
        print(f"OK: {len(ds)} items")
        return 0
    print(f"FAILED: {ds.report.bad} of {ds.report.items} items are bad")
    return 1


def register(top: Any, groups: dict[str, Any]) -> None:
    """Add `harken data validate`."""
    p = groups["data"].add_parser(
        "validate",
        help="check a dataset file item by item (and its clips), print a summary",
        description=(
            "Read the whole file, skipping and counting bad items; check every clip when "
            "--audio-root is given (or, except for MMAU, relative to the file's folder). "
            "Exit 1 when anything is wrong, 0 otherwise."
        ),
    )
    p.add_argument(
        "dataset", metavar="DATASET",
        help=f"a dataset file, or a shipped benchmark: {', '.join(MMAU_VERSIONS)}",
    )
    p.add_argument(
        "--format", choices=FORMATS, default=None,
        help="file format (default: mmau for the shipped benchmarks, canonical otherwise)",
    )
    p.add_argument("--audio-root", default=None, metavar="DIR", help="folder relative clip paths are joined to")
    p.add_argument(
        "--field", action="append", default=[], metavar="NAME=KEY",
        help="jsonl format: read canonical field NAME (id, audio, question, choices, answer) from KEY; repeatable",
    )
    p.set_defaults(func=_cmd_validate)
