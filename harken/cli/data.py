"""`harken data validate|synth|real|avqa|split|stats`: prepare, inspect and validate datasets.

Owns: the options of the data commands and what they print, and the `--field NAME=KEY` option
every command that reads a dataset shares (`add_field_option`, `parse_field_args`, also used by
`harken eval run`); each command calls one library function. Does not own: reading and checking
datasets (`harken.data.readers`, tables in `harken.data.tables`), the synthetic and
real-audio builders (`harken.data.synth`, `harken.data.realaudio`), AVQA preparation
(`harken.data.avqa`), split and stats (`harken.data.split`, `harken.data.stats`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

# How the dataset arguments name the table layouts (`harken.data.tables`).
DATASET_TABLES = ".parquet, .arrow, a save_to_disk folder, a folder or quoted glob of shards"

# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------


def add_field_option(p: Any) -> None:
    """`--field NAME=KEY` (repeatable): the same mapping as the config's `data.fields`."""
    p.add_argument(
        "--field", action="append", default=[], metavar="NAME=KEY",
        help="read canonical field NAME (id, audio, question, choices, answer) from the data's KEY "
             "(formats jsonl, mmau, mmar; as data.fields.NAME=KEY); repeatable",
    )


def parse_field_args(items: list[str]) -> dict[str, str]:
    """{NAME: KEY} from the `--field` values; a value that is not NAME=KEY is a ConfigError."""
    from harken.config import ConfigError

    out = {}
    for item in items:
        name, sep, key = item.partition("=")
        if not sep or not name or not key:
            raise ConfigError(f"--field expects NAME=KEY (e.g. --field question=q), got {item!r}")
        out[name] = key
    return out


def _clip_check(audio_root: str | None, fmt: str, file: Path) -> tuple[str | None, bool, str]:
    """(audio root, whether to open every clip, the line saying so) for `data validate`."""
    from harken.data.readers import dataset_folder
    from harken.data.tables import is_table

    if audio_root is not None:
        if not os.path.isdir(audio_root):
            raise FileNotFoundError(f"--audio-root is not a folder: {audio_root}")
        return audio_root, True, f"every clip opened and decoded (relative paths under {audio_root})"
    if fmt == "mmau" and not is_table(file):
        note = (
            "NOT checked (schema only): MMAU audio is distributed separately; "
            "pass --audio-root DIR (the folder holding test-mini-audios/) to check every clip"
        )
        return None, False, note
    # Relative clip paths in a file written by hand or by a prepare step point next to it; a
    # table's embedded clips need no folder.
    home = dataset_folder(file)
    return str(home), True, f"every clip opened and decoded (relative paths under the dataset's folder {home})"


def _long_clips_line(ds, window_seconds: float) -> str | None:
    """The long-clip warning `eval run` logs, counted over the items whose clip decoded."""
    from harken.data.audio import AudioLoader

    loader = AudioLoader(max_seconds=window_seconds)
    for ex in ds:
        if ex.audio in ds.clip_seconds:
            loader.count(ex.audio, ds.clip_seconds[ex.audio])
    return f"warning: {loader.long_line(ahead=True)}" if loader.n_long else None


def _cmd_validate(args) -> int:
    from harken.data.benchmarks import is_shipped_benchmark, mmau_metadata_path
    from harken.data.readers import read_dataset
    from harken.data.tables import is_table

    shipped = is_shipped_benchmark(args.dataset)
    fmt = args.format or ("mmau" if shipped else "canonical")
    fields = parse_field_args(args.field)
    file = mmau_metadata_path(args.dataset) if shipped else Path(args.dataset)
    if not (file.is_file() or is_table(file)):
        raise FileNotFoundError(f"dataset file not found: {file}")
    if not args.window_seconds > 0:
        raise ValueError(f"--window-seconds must be a positive number of seconds, got {args.window_seconds}")
    root, check, clips_note = _clip_check(args.audio_root, fmt, file)

    ds = read_dataset(args.dataset if shipped else file, fmt, root, skip_bad=True, fields=fields or None,
                      check_audio=check, allow_unanswered=True)
    label = f"{args.dataset}: MMAU test-mini {ds.source['version']}, " if shipped else ""
    print(f"dataset: {label}{ds.source['path']} (format {fmt}, sha256 {ds.source['sha256'][:16]})")
    print(ds.report.summary())
    print(f"clips: {clips_note}")
    long_line = _long_clips_line(ds, args.window_seconds) if check else None
    if long_line:
        print(long_line)
    if ds.unanswered:
        print("answers: none (a test split): `harken eval run` writes its predictions for submission; "
              "training needs answers")
    if ds.report.clean:
        print(f"OK: {len(ds)} items")
        return 0
    print(f"FAILED: {ds.report.bad} of {ds.report.items} items are bad")
    return 1


def _register_validate(data: Any) -> None:
    from harken.data.benchmarks import MMAU_VERSIONS
    from harken.data.readers import FORMATS

    p = data.add_parser(
        "validate",
        help="check a dataset file item by item (and its clips), print a summary",
        description=(
            "Read the whole file, skipping and counting bad items; check every clip when "
            "--audio-root is given (or, except for an MMAU JSON file, relative to the dataset's folder; "
            "a table's embedded clips always). Clips longer than --window-seconds are reported as "
            "`eval run` reports them, and a set without answers as a test split. "
            "Exit 1 when an item is bad, 0 otherwise (a warning does not change it)."
        ),
    )
    p.add_argument(
        "dataset", metavar="DATASET",
        help=f"a dataset file (JSON, JSON lines), a table ({DATASET_TABLES}), or a shipped benchmark: "
             f"{', '.join(MMAU_VERSIONS)}",
    )
    p.add_argument(
        "--format", choices=FORMATS, default=None,
        help="file format (default: mmau for the shipped benchmarks, canonical otherwise)",
    )
    p.add_argument("--audio-root", default=None, metavar="DIR", help="folder relative clip paths are joined to")
    add_field_option(p)
    p.add_argument("--window-seconds", type=float, default=30.0,
                   help="encoder window: longer clips are reported, as `eval run` and training cut them (default: 30)")
    p.set_defaults(func=_cmd_validate)


# ---------------------------------------------------------------------------------------------
# synth, real
# ---------------------------------------------------------------------------------------------


def _cmd_synth(args) -> int:
    from harken.data.synth import format_counts, make_synthetic
    from harken.io import read_json

    t0 = time.perf_counter()
    make_synthetic(
        args.out, seed=args.seed, n_train=args.train, n_test=args.test, n_warmup=args.warmup, skills=args.skills
    )
    info = read_json(Path(args.out) / "info.json")
    print(format_counts(info["counts"]))
    print(f"wrote {args.out}/{{train,test,warmup}}.jsonl, audio/ and info.json in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_real(args) -> int:
    from harken.data.realaudio import PACKAGES, install_hint, make_real
    from harken.io import read_json

    path = make_real(args.out, seed=args.seed, per_class=args.per_class)
    if path is None:
        print(f"no real-audio source installed; nothing written. Install with: {install_hint(PACKAGES.values())}")
        return 1
    info = read_json(path.parent / "info.json")
    for task, n in info["counts"].items():
        print(f"{task:14s} {n:5d}")
    print(f"wrote {path} and {path.parent / 'audio'}/")
    return 0


def _register_builders(data: Any) -> None:
    from harken.data.realaudio import DEFAULT_PER_CLASS
    from harken.data.synth import DEFAULT_COUNTS, SKILLS

    p = data.add_parser(
        "synth",
        help="generate the synthetic audio-QA splits (beeps, tones, sweeps)",
        description="Generate deterministic synthetic audio questions: " + ", ".join(SKILLS) + ".",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--train", type=int, default=DEFAULT_COUNTS["train"], help="training questions")
    p.add_argument("--test", type=int, default=DEFAULT_COUNTS["test"], help="held-out test questions")
    p.add_argument("--warmup", type=int, default=DEFAULT_COUNTS["warmup"], help="supervised warm-up questions")
    p.add_argument("--skills", default=None, help=f"comma-separated subset of: {','.join(SKILLS)}")
    p.set_defaults(func=_cmd_synth)

    p = data.add_parser(
        "real",
        help="build the small real-audio test set from Debian packages",
        description="Build a real-audio QA test set from sonic-pi-samples, sound-theme-freedesktop and flite "
        "(whichever are installed).",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, help="at most this many clips per answer class")
    p.set_defaults(func=_cmd_real)


# ---------------------------------------------------------------------------------------------
# avqa, split, stats
# ---------------------------------------------------------------------------------------------


def _cmd_avqa(args) -> int:
    from harken.data.avqa import prepare_avqa, print_avqa_summary

    summary = prepare_avqa(
        args.annotations,
        args.videos,
        args.out,
        workers=args.workers,
        sampling_rate=args.sampling_rate,
        name=args.name,
        progress=not args.no_progress,
    )
    print_avqa_summary(summary)
    if summary["questions"]["written"] == 0:
        print("harken: error: no question has a usable clip; see the report", file=sys.stderr)
        return 1
    return 0


def _cmd_split(args) -> int:
    from harken.data.split import split_dataset

    info = split_dataset(args.dataset, args.val, args.seed, args.format, args.audio_root, args.out,
                         fields=parse_field_args(args.field) or None)
    train, val = info["train"], info["val"]
    print(
        f"train: {train['questions']} questions ({train['clips']} clips) -> {train['path']}\n"
        f"val:   {val['questions']} questions ({val['clips']} clips) -> {val['path']}\n"
        f"no clip is shared between them (seed {args.seed})"
    )
    return 0


def _cmd_stats(args) -> int:
    from harken.data.stats import file_stats, print_stats, write_stats

    stats = file_stats(args.dataset, args.format, args.audio_root, window_seconds=args.window_seconds, bins=args.bins,
                       fields=parse_field_args(args.field) or None)
    print_stats(stats)
    out = Path(args.out) if args.out else Path(args.dataset).resolve().parent
    png, js = write_stats(stats, out)
    print(f"wrote {js} and {png}")
    return 0


def _register_avqa(data: Any) -> None:
    from harken.data.avqa import default_workers

    p = data.add_parser(
        "avqa",
        help="extract AVQA audio from the videos and write a canonical dataset",
        description="Extract one 16 kHz mono wav per AVQA video (PyAV decode, soxr resample) and "
        "write OUT/train.jsonl, manifest.jsonl, report.json, info.json. Rerunning continues an "
        "interrupted run: complete clips are reused.",
    )
    p.add_argument("--annotations", nargs="+", required=True, metavar="FILE", help="AVQA annotation files (JSON list or JSON lines)")
    p.add_argument("--videos", required=True, metavar="DIR", help="folder with the videos (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--workers", type=int, default=default_workers(), help="extraction processes (1: in this process)")
    p.add_argument("--sampling-rate", type=int, default=16000, help="clip sampling rate in Hz")
    p.add_argument("--name", default="train", help="dataset file stem: OUT/NAME.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_avqa)


def _register_split_stats(data: Any) -> None:
    from harken.data.readers import FORMATS

    root_help = "folder relative clip paths are joined to (default: the dataset's folder)"
    p = data.add_parser(
        "split",
        help="hold out a validation split that shares no clip with training",
        description="Assign whole clips (all their questions) to validation, in a seeded shuffle, "
        "until it has at least --val questions; write train.jsonl and val.jsonl.",
    )
    p.add_argument("dataset", help=f"dataset file (JSON, JSON lines) or table ({DATASET_TABLES})")
    p.add_argument("--val", type=int, required=True, help="minimum number of validation questions")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--format", choices=FORMATS, default="canonical", help="dataset format")
    p.add_argument("--audio-root", default=None, help=root_help)
    add_field_option(p)
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the dataset)")
    p.set_defaults(func=_cmd_split)

    p = data.add_parser(
        "stats",
        help="question types, answer balance, clip durations",
        description="Counts per question type/task and number of choices, answer-position balance, "
        "clip-duration histogram (terminal + OUT/durations.png) and clips longer than the encoder window; "
        "writes OUT/stats.json.",
    )
    p.add_argument("dataset", help=f"dataset file (JSON, JSON lines) or table ({DATASET_TABLES})")
    p.add_argument("--format", choices=FORMATS, default="canonical", help="dataset format")
    p.add_argument("--audio-root", default=None, help=root_help)
    add_field_option(p)
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the dataset)")
    p.add_argument("--window-seconds", type=float, default=30.0, help="encoder window (Whisper: 30 s)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins")
    p.set_defaults(func=_cmd_stats)


def register(top, groups) -> None:
    """Add `harken data validate | synth | real | avqa | split | stats`."""
    data = groups["data"]
    _register_validate(data)
    _register_builders(data)
    _register_avqa(data)
    _register_split_stats(data)
