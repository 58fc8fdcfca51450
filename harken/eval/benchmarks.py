"""The benchmarks evaluation knows: how each is grouped and where its prediction lives.

Owns: the benchmark specs (`SPECS`: the item fields accuracy is broken down by, the keys the
benchmark's own scripts read the prediction from, and where a test split's predictions are
submitted, for MMAU, MMAR and canonical / generic files), the `harken eval run --benchmark` names
(`RUN_BENCHMARKS`: the shipped MMAU test-mini files, or any MMAU / MMAR / generic file given with
`--data`), the display order of known group values, reading the items of a benchmark-format file
or table as they stand (`read_items`), recognising which shipped MMAU file a predictions file was
made on (`identify_mmau`), and loading a benchmark for `eval run` (`load_benchmark`).

Does not own: the shipped MMAU files and file checksums (`harken.data.benchmarks`), parsing
benchmark files and tables into examples (`harken.data.readers`, `harken.data.tables`), the correctness rule
(`harken.eval.scoring`), result files and tables (`harken.eval.results`).

To add a benchmark: a `BenchmarkSpec` in `SPECS`, its `--benchmark` name(s) in `RUN_BENCHMARKS`,
a reader in `harken.data.readers`, and the order of its group values in `VALUE_ORDER` if the
alphabetical order does not suit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harken.data.benchmarks import MMAU_VERSIONS, mmau_metadata_path
from harken.data.readers import dataset_folder, read_dataset
from harken.data.records import Example
from harken.data.tables import is_table, table_items
from harken.io import iter_records, read_json


@dataclass(frozen=True)
class BenchmarkSpec:
    kind: str  # mmau | mmar | jsonl
    groups: tuple[str, ...]  # item fields accuracy is broken down by; the first is the headline
    prediction_keys: tuple[str, ...]  # where the benchmark's scripts read the prediction, preferred first
    submission: str = ""  # where predictions for a split without answers are scored ("": nowhere known)


SPECS: dict[str, BenchmarkSpec] = {
    # MMAU's evaluation.py reads `model_output`; its older README says `model_prediction`. The
    # answers of its 9000-item test split are withheld: the README (2026-01) sends submissions to
    # a Hugging Face Space (before: EvalAI).
    "mmau": BenchmarkSpec("mmau", ("task", "difficulty", "sub-category"), ("model_output", "model_prediction"),
                          "the MMAU-Eval Hugging Face Space (https://huggingface.co/spaces/sonalkum/MMAU-Eval)"),
    "mmar": BenchmarkSpec("mmar", ("modality", "category", "sub-category"), ("answer_prediction",)),
    # Canonical / generic files: whichever of these meta fields the items carry.
    "jsonl": BenchmarkSpec("jsonl", ("task", "modality", "difficulty", "category", "sub-category"), ("prediction",)),
}

# `eval run --benchmark` choices -> kind. The MMAU test-mini names are the shipped, pinned files
# (harken.data.benchmarks.MMAU_VERSIONS): mmau-test-mini is the current v05.15.25, -v2503 the paper's.
# mmau, mmar and jsonl read the --data file (or table) in that layout.
RUN_BENCHMARKS = {**{name: "mmau" for name in MMAU_VERSIONS}, "mmau": "mmau", "mmar": "mmar", "jsonl": "jsonl"}

# Display order of known group values; other values follow alphabetically.
VALUE_ORDER = {
    "task": ["sound", "music", "speech"],
    "modality": [
        "sound", "music", "speech", "mix-sound-music", "mix-sound-speech", "mix-music-speech", "mix-sound-music-speech",
    ],
    "difficulty": ["easy", "medium", "hard"],
    "category": ["Signal Layer", "Perception Layer", "Semantic Layer", "Cultural Layer"],
}


def ordered_values(group: str, values: Sequence[str]) -> list[str]:
    """The distinct `values` of a group field in display order (`VALUE_ORDER`, then alphabetical)."""
    known = VALUE_ORDER.get(group, [])
    present = set(values)
    return [v for v in known if v in present] + sorted(present - set(known))


def read_items(path: Path) -> list[dict[str, Any]]:
    """The items of a benchmark-format file (a JSON list, or one JSON object per line) or table
    (rows, audio cells as their paths), as they stand."""
    items = table_items(path) if is_table(path) else [obj for _, obj in iter_records(path)]
    if not items:
        raise ValueError(f"{path}: no items (expected a JSON list of objects or one JSON object per line)")
    for i, obj in enumerate(items):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: item [{i}] is a {type(obj).__name__}, expected a JSON object")
    return items


def _question_key(obj: dict) -> tuple[Any, list, Any]:
    return obj.get("question"), list(obj.get("choices") or []), obj.get("answer")


def identify_mmau(items: Sequence[dict]) -> list[str]:
    """The shipped MMAU test-mini files (benchmark names) whose questions, choices and answers
    agree with every item here; MMAU's two versions differ on about a quarter of the items."""
    matches = []
    for name in MMAU_VERSIONS:
        path = mmau_metadata_path(name)
        if not path.is_file():
            continue
        ref = {str(o["id"]): _question_key(o) for o in read_json(path)}
        if all(ref.get(str(o.get("id"))) == _question_key(o) for o in items):
            matches.append(name)
    return matches


@dataclass
class Benchmark:
    """A benchmark loaded for `eval run`."""

    name: str  # the --benchmark value
    spec: BenchmarkSpec
    source: dict[str, Any]  # harken.data.readers Dataset.source: path, name, sha256, format, ...
    examples: list[Example]
    raw_by_id: dict[str, dict]  # the file's own items, for predictions.json
    groups: tuple[str, ...]  # the spec's groups that the items carry
    unanswered: bool = False  # a test split: no item has an answer, predictions only


_DATA_WHAT = {
    "mmau": "a file or table in MMAU's layout (e.g. mmau-test.json)",
    "mmar": "the MMAR metadata (MMAR-Benchmark.json) or a file or table in its layout",
    "jsonl": "a canonical or generic file or table",
}


def _benchmark_file(benchmark: str, spec: BenchmarkSpec, data: str | None, audio_root: str | None):
    """(file, format, audio root) of a benchmark: the shipped MMAU metadata, or the --data file."""
    if benchmark in MMAU_VERSIONS:
        if data is not None:
            raise ValueError(
                f"--data is for mmau, mmar and jsonl; {benchmark} always uses the shipped, pinned metadata "
                f"({mmau_metadata_path(benchmark)}): use --benchmark mmau --data FILE for another MMAU-format file"
            )
        return mmau_metadata_path(benchmark), "mmau", audio_root
    if data is None:
        raise ValueError(f"--benchmark {benchmark} needs --data FILE: {_DATA_WHAT[spec.kind]}")
    path = Path(data)
    if not (path.is_file() or is_table(path)):
        raise FileNotFoundError(f"--data file not found: {path}")
    # As `harken data validate`: relative clip paths of a hand-made file point next to it.
    return path, spec.kind, audio_root if audio_root is not None else str(dataset_folder(path.resolve()))


def load_benchmark(benchmark: str, data: str | None, audio_root: str | None,
                   fields: dict[str, str] | None = None) -> Benchmark:
    """Read a `--benchmark` (with `--data` for mmau / mmar / jsonl, and an optional field mapping)
    into examples and the file's own items. A file whose items have no answers is a test split."""
    if benchmark not in RUN_BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(RUN_BENCHMARKS)}")
    spec = SPECS[RUN_BENCHMARKS[benchmark]]
    path, fmt, audio_root = _benchmark_file(benchmark, spec, data, audio_root)
    dataset = read_dataset(path, fmt, audio_root, fields=fields, allow_unanswered=True)
    id_key = (fields or {}).get("id", "id")
    raw_by_id = {str(o.get(id_key)): o for o in read_items(Path(dataset.source["path"]))}
    groups = spec.groups
    if spec.kind == "jsonl":
        groups = tuple(g for g in spec.groups if any(g in ex.meta for ex in dataset))
    return Benchmark(benchmark, spec, dict(dataset.source), list(dataset), raw_by_id, groups, dataset.unanswered)
