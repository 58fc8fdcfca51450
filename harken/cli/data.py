"""`harken data validate|synth|real|avqa|split|stats|curate`: prepare, inspect, validate and curate datasets.

Owns: the options of the data commands and what they print, and the `--field NAME=KEY` option
every command that reads a dataset shares (`add_field_option`, `parse_field_args`, also used by
`harken eval run`); the dataset options every command that reads one shares (`--data` with
`add_data_option` / `data_arg`, `--format`, `--audio-root`, `--benchmark` with the names of
`eval run`); each command calls one library function. Does not own: reading and checking
datasets (`harken.data.readers`, tables in `harken.data.tables`), the synthetic and
real-audio builders (`harken.data.synth`, `harken.data.realaudio`), AVQA preparation
(`harken.data.avqa`), split and stats (`harken.data.split`, `harken.data.stats`), curation with a
model (`harken.eval.curate`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# How the dataset arguments name the table layouts (`harken.data.tables`).
DATASET_TABLES = ".parquet, .arrow, a save_to_disk folder, a folder or quoted glob of shards"

# ---------------------------------------------------------------------------------------------
# The options every command that reads a dataset shares
# ---------------------------------------------------------------------------------------------


def add_data_option(p: Any, help_text: str, *, positional_too: bool = False) -> None:
    """`--data DATA`; with `positional_too`, DATA may also come first without `--data` (the
    spelling `harken data validate|split|stats` had before), read back by `data_arg`."""
    p.add_argument("--data", default=None, metavar="DATA", help=help_text)
    if positional_too:
        p.add_argument("data_positional", nargs="?", default=None, metavar="DATA", help=argparse.SUPPRESS)


def data_arg(args, required: bool = True) -> str | None:
    """The dataset of `--data DATA` or of the positional DATA; a ConfigError if both or, when
    `required`, neither was given."""
    from harken.config import ConfigError

    given = [v for v in (args.data, getattr(args, "data_positional", None)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"two datasets given ({given[0]!r} and {given[1]!r}): give one, with --data DATA")
    if required and not given:
        raise ConfigError("no dataset given: pass --data DATA (a JSON / JSON-lines file or a table)")
    return given[0] if given else None


def add_format_option(p: Any) -> None:
    """`--format`: the dataset's layout, as `data.format` in a training config."""
    from harken.data.readers import FORMATS

    p.add_argument("--format", choices=FORMATS, default="canonical",
                   help="the dataset's layout, as data.format in a training config: canonical (harken's own), "
                        "avqa, mmau, mmar, or jsonl (generic, with --field)")


def add_audio_root_option(p: Any, default_text: str) -> None:
    """`--audio-root DIR`; `default_text` says what None means for this command."""
    p.add_argument("--audio-root", default=None, metavar="DIR",
                   help=f"folder relative clip paths are joined to (default: {default_text})")


def benchmark_names() -> list[str]:
    """The `--benchmark` names, the same for every command (those of `eval run`)."""
    from harken.eval.benchmarks import RUN_BENCHMARKS

    return list(RUN_BENCHMARKS)


def add_benchmark_option(p: Any, names: list[str], required: bool, help_text: str) -> None:
    """`--benchmark NAME` with `names` (all of `benchmark_names()` or those a command can use)."""
    p.add_argument("--benchmark", required=required, choices=names, metavar="BENCHMARK",
                   help=f"{help_text}; one of: {', '.join(names)}")


# What the `--benchmark` names mean, said once for `data validate` and `eval run`.
BENCHMARK_HELP = (
    "mmau-test-mini (the shipped MMAU test-mini file, v05.15.25) or mmau-test-mini-v2503 (the paper's file) "
    "need no --data; mmau or mmar: the --data file is in that benchmark's layout; jsonl: a canonical or generic "
    "--data file (with --field)"
)


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


# ---------------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------------


def _validate_target(args) -> tuple[str, str, str | None]:
    """(what to read: a path or a shipped benchmark name, its format, the shipped benchmark or None)."""
    from harken.config import ConfigError
    from harken.data.benchmarks import MMAU_VERSIONS, is_shipped_benchmark
    from harken.eval.benchmarks import RUN_BENCHMARKS

    data = data_arg(args, required=False)
    bench = args.benchmark
    if bench is None and data is not None and is_shipped_benchmark(data):
        bench, data = data, None  # `harken data validate mmau-test-mini`: the earlier spelling
    if bench in MMAU_VERSIONS:
        if args.format not in ("canonical", "mmau"):  # "canonical" is the default, i.e. not chosen
            raise ConfigError(f"{bench} is a shipped MMAU benchmark; read it with format 'mmau', not {args.format!r}")
        if data is not None:
            raise ConfigError(f"--benchmark {bench} is a shipped file: give no --data (or --benchmark mmau with it)")
        return bench, "mmau", bench
    if data is None:
        what = f"--benchmark {bench} reads" if bench else "validate needs"
        raise ConfigError(f"{what} a dataset: pass --data DATA (or --benchmark {' / '.join(MMAU_VERSIONS)})")
    return data, (RUN_BENCHMARKS[bench] if bench else args.format), None


def _clip_check(audio_root: str | None, fmt: str, file: Path, as_eval_run: bool) -> tuple[str | None, str]:
    """(the audio root clips are checked under, or None when they are not checked; what it is).
    `as_eval_run`: a --data file read with --benchmark, whose clips `eval run` looks for next to it."""
    from harken.data.readers import dataset_folder
    from harken.data.tables import is_table

    if audio_root is not None:
        if not os.path.isdir(audio_root):
            raise FileNotFoundError(f"--audio-root is not a folder: {audio_root}")
        return audio_root, "--audio-root"
    if fmt == "mmau" and not is_table(file) and not as_eval_run:
        return None, ("NOT checked (schema only): MMAU audio is distributed separately; "
                      "pass --audio-root DIR (the folder holding test-mini-audios/) to check every clip")
    # Relative clip paths in a file written by hand or by a prepare step point next to it; a
    # table's embedded clips need no folder.
    return str(dataset_folder(file)), "the dataset's folder"


def _long_clips_line(ds, window_seconds: float) -> str | None:
    """The long-clip warning `eval run` logs, counted over the items whose clip decoded."""
    from harken.data.audio import AudioLoader

    loader = AudioLoader(max_seconds=window_seconds)
    for ex in ds:
        if ex.audio in ds.clip_seconds:
            loader.count(ex.audio, ds.clip_seconds[ex.audio])
    return f"warning: {loader.long_line(ahead=True)}" if loader.n_long else None


@contextmanager
def _reader_warnings_off():
    """`data validate` prints the whole report; the reader's one-line warning would repeat it."""
    log = logging.getLogger("harken.data.readers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _clips_lines(ds, root: str | None, root_what: str) -> list[str]:
    """What was found about the clips: every one decoded, some bad (counted in the last line), or
    why none was opened; and a hint when no clip was found at all."""
    from harken.data.checks import AUDIO_KINDS

    if root is None:
        return [f"clips: {root_what}"]
    where = f"relative paths under {root}, {root_what}"
    bad_clips = sum(ds.report.counts.get(kind, 0) for kind in AUDIO_KINDS)
    if not bad_clips:
        return [f"clips: every clip opened and decoded ({len(ds.clip_seconds)} clips; {where})"]
    lines = [f"clips: {len(ds.clip_seconds)} opened and decoded, {bad_clips} items have a bad clip ({where})"]
    if ds.report.counts.get("missing_audio") == ds.report.items:
        lines.append(f"hint: no clip was found under {root}: is it the folder the clip paths are relative to? "
                     "(MMAU: the folder holding test-mini-audios/)")
    return lines


def _cmd_validate(args) -> int:
    from harken.data.benchmarks import mmau_metadata_path
    from harken.data.readers import read_dataset
    from harken.data.tables import is_table

    target, fmt, shipped = _validate_target(args)
    fields = parse_field_args(args.field)
    file = mmau_metadata_path(shipped) if shipped else Path(target)
    if not (file.is_file() or is_table(file)):
        raise FileNotFoundError(f"dataset file not found: {file}")
    if not args.window_seconds > 0:
        raise ValueError(f"--window-seconds must be a positive number of seconds, got {args.window_seconds}")
    root, root_what = _clip_check(args.audio_root, fmt, file, as_eval_run=args.benchmark is not None and not shipped)

    with _reader_warnings_off():
        ds = read_dataset(target if shipped else file, fmt, root, skip_bad=True, fields=fields or None,
                          check_audio=root is not None, allow_unanswered=True)
    label = f"{shipped}: MMAU test-mini {ds.source['version']}, " if shipped else ""
    print(f"dataset: {label}{ds.source['path']} (format {fmt}, sha256 {ds.source['sha256'][:16]})")
    lines = _clips_lines(ds, root, root_what) + ds.report.listing(root)
    long_line = _long_clips_line(ds, args.window_seconds) if root is not None else None
    if long_line:
        lines.append(long_line)
    if ds.unanswered:
        lines.append("answers: none (a test split): `harken eval run` writes its predictions for submission; "
                     "training needs answers")
    lines.append(f"{'OK' if ds.report.clean else 'FAILED'}: {ds.report.counts_line()}")
    print("\n".join(lines))
    return 0 if ds.report.clean else 1


def _register_validate(data: Any) -> None:
    p = data.add_parser(
        "validate",
        help="check a dataset item by item (and its clips), print one summary",
        description=(
            "Read the whole dataset, skipping and counting bad items, and check every clip: relative clip "
            "paths under --audio-root (default: the dataset's folder; the clips of a shipped MMAU file or of "
            "a --format mmau JSON file only with --audio-root, as MMAU's audio is distributed separately), a "
            "table's embedded clips always. "
            "Read it as `eval run` does (--benchmark, with --data for mmau, mmar, jsonl) or as training "
            "does (--data and --format, as data.path and data.format). Clips longer than --window-seconds "
            "are reported as `eval run` reports them, and a set without answers as a test split."
            "\n\n"
            "Prints the bad items (the first 10, where in the file, clip paths relative to the audio root), "
            "then one line: OK or FAILED, with the counts per problem kind."
            "\n\n"
            "Exit codes: 0 every item is good (a warning does not change it); 1 an item is bad, or the "
            "file cannot be read as a dataset; 2 nothing was checked: a bad option, or the dataset or the "
            "--audio-root folder does not exist."
            "\n\n"
            "  harken data validate --benchmark mmau-test-mini --audio-root mmau/\n"
            "  harken data validate --data data/avqa/train.jsonl\n"
            "  harken data validate --data own.json --benchmark mmau --audio-root clips/"
        ),
    )
    add_data_option(p, f"the dataset: a JSON / JSON-lines file or a table ({DATASET_TABLES}); "
                       "also accepted first, without --data", positional_too=True)
    which = p.add_mutually_exclusive_group()
    add_benchmark_option(which, benchmark_names(), False, f"read as `eval run --benchmark` does: {BENCHMARK_HELP}")
    add_format_option(which)
    add_audio_root_option(p, "the dataset's folder; a shipped MMAU file or --format mmau JSON: none, clips not "
                             "checked")
    add_field_option(p)
    p.add_argument("--window-seconds", type=float, default=30.0, metavar="SECONDS",
                   help="encoder window: longer clips are reported, as `eval run` and training cut them")
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
        description="Generate deterministic synthetic audio questions (" + ", ".join(SKILLS) + "), answerable "
        "only from the audio: train.jsonl, test.jsonl, warmup.jsonl, audio/ and info.json in the --out folder.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--train", type=int, default=DEFAULT_COUNTS["train"], metavar="N", help="training questions")
    p.add_argument("--test", type=int, default=DEFAULT_COUNTS["test"], metavar="N", help="held-out test questions")
    p.add_argument("--warmup", type=int, default=DEFAULT_COUNTS["warmup"], metavar="N",
                   help="supervised warm-up questions")
    p.add_argument("--skills", default=None, metavar="LIST",
                   help=f"comma-separated subset of: {','.join(SKILLS)} (default: all)")
    p.set_defaults(func=_cmd_synth)

    p = data.add_parser(
        "real",
        help="build the small real-audio test set from Debian packages",
        description="Build a real-audio QA test set from sonic-pi-samples, sound-theme-freedesktop and flite "
        "(whichever are installed). Exit 1 when none is installed (nothing is written).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, metavar="N",
                   help="at most this many clips per answer class")
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

    info = split_dataset(data_arg(args), args.val, args.seed, args.format, args.audio_root, args.out,
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

    dataset = data_arg(args)
    stats = file_stats(dataset, args.format, args.audio_root, window_seconds=args.window_seconds, bins=args.bins,
                       fields=parse_field_args(args.field) or None)
    print_stats(stats)
    out = Path(args.out) if args.out else Path(dataset).resolve().parent
    png, js = write_stats(stats, out)
    print(f"wrote {js} and {png}")
    return 0


def _register_avqa(data: Any) -> None:
    from harken.data.avqa import default_workers

    p = data.add_parser(
        "avqa",
        help="extract AVQA audio from the videos and write a canonical dataset",
        description="Extract one 16 kHz mono wav per AVQA video (PyAV decode, soxr resample) and "
        "write train.jsonl (--name), manifest.jsonl, report.json and info.json in the --out folder. Rerunning "
        "continues an "
        "interrupted run: complete clips are reused. Exit 1 when no question has a usable clip.",
    )
    p.add_argument("--annotations", nargs="+", required=True, metavar="FILE",
                   help="AVQA annotation files (JSON list or JSON lines)")
    p.add_argument("--videos", required=True, metavar="DIR", help="folder with the videos (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                   help="extraction processes (1: in this process)")
    p.add_argument("--sampling-rate", type=int, default=16000, metavar="HZ", help="clip sampling rate")
    p.add_argument("--name", default="train", help="dataset file stem: NAME.jsonl in the --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_avqa)


def _register_split_stats(data: Any) -> None:
    data_help = (f"the dataset: a JSON / JSON-lines file or a table ({DATASET_TABLES}); "
                 "also accepted first, without --data")
    p = data.add_parser(
        "split",
        help="hold out a validation split that shares no clip with training",
        description="Assign whole clips (all their questions) to validation, in a seeded shuffle, "
        "until it has at least --val questions; write train.jsonl and val.jsonl in the --out folder.",
    )
    add_data_option(p, data_help, positional_too=True)
    p.add_argument("--val", type=int, required=True, metavar="N", help="minimum number of validation questions")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    add_format_option(p)
    add_audio_root_option(p, "the dataset's folder")
    add_field_option(p)
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the dataset)")
    p.set_defaults(func=_cmd_split)

    p = data.add_parser(
        "stats",
        help="question types, answer balance, clip durations",
        description="Counts per question type/task and number of choices, answer-position balance, "
        "clip-duration histogram (terminal + durations.png) and clips longer than the encoder window; "
        "writes stats.json and durations.png in the --out folder.",
    )
    add_data_option(p, data_help, positional_too=True)
    add_format_option(p)
    add_audio_root_option(p, "the dataset's folder")
    add_field_option(p)
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the dataset)")
    p.add_argument("--window-seconds", type=float, default=30.0, metavar="SECONDS",
                   help="encoder window (Whisper: 30 s)")
    p.add_argument("--bins", type=int, default=20, metavar="N", help="histogram bins")
    p.set_defaults(func=_cmd_stats)


# ---------------------------------------------------------------------------------------------
# curate
# ---------------------------------------------------------------------------------------------


def _cmd_curate(args) -> int:
    from harken.eval.curate import curate_dataset

    try:
        summary = curate_dataset(
            data_arg(args), args.model, args.out, format=args.format, audio_root=args.audio_root,
            fields=parse_field_args(args.field) or None, adapter=args.adapter, template=args.template,
            samples=args.samples, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            accuracy_rule=args.accuracy_rule, without=args.without, seed=args.seed, batch_size=args.batch_size,
            text_threshold=args.text_threshold, strong_gain=args.strong_gain, limit=args.limit,
            skip_bad=args.skip_bad, device=args.device, dtype=args.dtype,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished items are kept in {args.out}/items.jsonl; run the same command again to continue")
        return 130
    width = max(len(k) for k in summary["counts"])
    for split, n in summary["counts"].items():
        print(f"{split:{width}s} {n:6d}")
    m = summary["mean"]
    print(f"mean p_audio {m['p_audio']:.3f}, p_text {m['p_text']:.3f}, audio contribution {m['audio_gain']:.3f} "
          f"over {summary['items']} items" + (f"; {len(summary['skipped'])} skipped (bad clip)" if summary["skipped"] else ""))
    print(f"wrote {args.out}/ (splits/*.jsonl, splits.json, items.jsonl, curate.json, curate.md, pass_rates.png)")
    return 0


def _register_curate(data: Any) -> None:
    from harken.eval.ablation import WITHOUT_AUDIO
    from harken.eval.curate import DEFAULT_SAMPLES, DEFAULT_STRONG_GAIN, DEFAULT_TEXT_THRESHOLD
    from harken.rl.rewards import ACCURACY_RULES

    p = data.add_parser(
        "curate",
        help="how much each training item needs its audio: pass rates with and without it, and splits",
        description=(
            "For every item, --samples completions with the clip and as many without it (a text-only prompt), "
            "each as one group of the shared-prefix rollout (one prompt pass per group), scored with the "
            "training reward's --accuracy-rule. Writes per-item pass rates p_audio and p_text and the audio "
            "contribution p_audio - p_text, and four splits, the first that applies: text_answerable "
            "(p_text >= --text-threshold), zero_variance (all right or all wrong with the clip: no GRPO "
            "gradient), strong_audio (p_audio - p_text >= --strong-gain), weak_audio (the rest). Each split is "
            "a canonical dataset in --out/splits/ and a list of ids in splits.json, which a training config "
            "reads with data.filter.curation=DIR and data.filter.keep=[SPLIT, ...]. Items are saved after each "
            "batch: run the same command again to continue; other thresholds re-split without sampling again."
            "\n\n"
            "  harken data curate --data data/avqa/train.jsonl --model runs/sft/final --out curation/avqa\n"
            "  harken train grpo --config r1aqa data.path=data/avqa/train.jsonl data.filter.curation=curation/avqa "
            "'data.filter.keep=[weak_audio,strong_audio]'"
        ),
    )
    add_data_option(p, f"the training set: a JSON / JSON-lines file or a table ({DATASET_TABLES})")
    add_format_option(p)
    add_audio_root_option(p, "canonical: the dataset's folder; other formats: paths as given")
    add_field_option(p)
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="the policy: a checkpoint folder, a cached hub id, tiny:FAMILY or tiny-warm:FAMILY")
    p.add_argument("--adapter", default=None, metavar="DIR", help="LoRA adapter folder to apply")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (reused to continue a run)")
    p.add_argument("--template", default=None,
                   help="prompt template (default: the one the model was trained on, else prompt2)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="K",
                   help="completions per item with the clip, and as many without (as rollout.group_size)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N",
                   help="completion length cap (as rollout.max_new_tokens)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (as rollout.temperature)")
    p.add_argument("--accuracy-rule", default="exact", choices=list(ACCURACY_RULES),
                   help="what counts as right (as reward.accuracy_rule)")
    p.add_argument("--without", default="none", choices=list(WITHOUT_AUDIO),
                   help="what the second group hears: none, a text-only prompt; silence of the clip's length (for a "
                        "model never trained without audio, whose text-only answers may suffer for other reasons)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed and batch size, same samples)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="items per generation call")
    p.add_argument("--text-threshold", type=float, default=DEFAULT_TEXT_THRESHOLD, metavar="P",
                   help="p_text at or above this: text_answerable")
    p.add_argument("--strong-gain", type=float, default=DEFAULT_STRONG_GAIN, metavar="D",
                   help="p_audio - p_text at or above this: strong_audio (below: weak_audio)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and report) items whose clip is missing or does not decode, instead of stopping")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="weights precision (auto: bfloat16 on a GPU that supports it, else float32)")
    p.set_defaults(func=_cmd_curate)


def register(top, groups) -> None:
    """Add `harken data validate | synth | real | avqa | split | stats | curate`."""
    data = groups["data"]
    _register_validate(data)
    _register_builders(data)
    _register_avqa(data)
    _register_split_stats(data)
    _register_curate(data)
