"""`harken eval run|score|compare`: evaluate a model on a benchmark, score a predictions file, compare runs.

Owns: the options of the three commands and what they print. The work lives in
`harken.eval.run` (`run_benchmark`), `harken.eval.score_file` (`score_file`) and
`harken.eval.compare` (`compare_runs`); the folder they write is described in `harken.eval.results`.
"""

from __future__ import annotations

from pathlib import Path


def _cmd_run(args) -> int:
    from harken.cli.data import parse_field_args
    from harken.eval.results import print_summary
    from harken.eval.run import run_benchmark

    fields = parse_field_args(args.field) or None
    try:
        results = run_benchmark(
            args.benchmark, args.model, args.out, data=args.data, audio_root=args.audio_root, template=args.template,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, adapter=args.adapter,
            skip_missing=args.skip_missing, limit=args.limit, device=args.device, dtype=args.dtype, fields=fields,
            audio=args.audio,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished items are kept in {args.out}/items.jsonl; run the same command again to continue")
        return 130
    print_summary(results, Path(args.out))
    return 0


def _cmd_score(args) -> int:
    from harken.eval.results import print_summary
    from harken.eval.score_file import score_file

    results = score_file(args.predictions, args.benchmark, args.out, official_skip=args.official_skip)
    print_summary(results, Path(args.out))
    return 0


def _cmd_compare(args) -> int:
    from harken.eval.compare import compare_runs, print_compare, write_compare

    if args.audio_gain:
        return _audio_gain(args)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    table = compare_runs(args.dirs, names)
    print_compare(table)
    if args.out:
        out = Path(args.out)
        write_compare(table, out)
        print(f"written to {out}/ (compare.md, compare.json, compare.png)")
    return 0


def _audio_gain(args) -> int:
    from harken.config import ConfigError
    from harken.eval.compare import audio_gain, print_audio_gain, write_audio_gain

    if args.names:
        raise ConfigError("--names does not apply with --audio-gain: its columns are the runs' audio modes")
    gain = audio_gain(args.dirs)
    print_audio_gain(gain)
    if args.out:
        out = Path(args.out)
        write_audio_gain(gain, out)
        print(f"written to {out}/ (audio_gain.md, audio_gain.json, audio_gain.png)")
    return 0


def _add_run(ev) -> None:
    from harken.cli.data import (
        BENCHMARK_HELP, DATASET_TABLES, add_audio_root_option, add_benchmark_option, add_data_option, add_field_option,
        benchmark_names,
    )
    from harken.eval.ablation import AUDIO_MODES

    p = ev.add_parser(
        "run",
        help="generate answers for a benchmark with a model and score them",
        description=(
            "Greedy answers for every item, scored with the benchmark's official rule. Clips are "
            "checked before anything is generated. Items are saved after each batch: run the same "
            "command again to continue an interrupted run. A --data file without answers (a test "
            "split) gets predictions.json for submission and no accuracy. `harken data validate` with the "
            "same --benchmark, --data, --audio-root and --field checks the set first. --audio none, silence or "
            "shuffled evaluates the same model without the clip: `eval compare --audio-gain` then shows how "
            "much of the score needs the audio."
            "\n\n"
            "  harken eval run --benchmark mmau-test-mini --model runs/r1aqa/final --audio-root mmau/ --out eval/grpo\n"
            "  harken eval run --benchmark mmar --data MMAR-Benchmark.json --model runs/r1aqa/final --out eval/mmar\n"
            "  harken eval run --benchmark mmau-test-mini --model runs/r1aqa/final --audio none --out eval/grpo-none"
        ),
    )
    add_benchmark_option(p, benchmark_names(), True, BENCHMARK_HELP)
    p.add_argument("--model", required=True, metavar="MODEL", help="model checkpoint folder (or a cached hub id)")
    add_data_option(p, f"the dataset for mmau, mmar and jsonl: a JSON / JSON-lines file or a table ({DATASET_TABLES})")
    add_audio_root_option(p, "with --data, the --data file's folder; MMAU: give the folder holding test-mini-audios/")
    add_field_option(p)
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder (reused to continue a run)")
    p.add_argument("--template", default=None,
                   help="prompt template (default: the one the model was trained on, saved by `harken train` "
                        "in its folder; else prompt2, the paper's best)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="generation budget per answer")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="items per generation batch")
    p.add_argument("--adapter", default=None, metavar="DIR", help="LoRA adapter folder to apply")
    p.add_argument("--audio", default="real", choices=list(AUDIO_MODES),
                   help="what the model hears: " + "; ".join(f"{m}: {what}" for m, what in AUDIO_MODES.items())
                        + " (a setting of the --out folder, like the model)")
    p.add_argument("--skip-missing", action="store_true",
                   help="evaluate the items whose clip exists and report the coverage, instead of stopping")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="weights precision (auto: bfloat16 on a GPU that supports it, else float32)")
    p.set_defaults(func=_cmd_run)


def _add_score(ev) -> None:
    from harken.cli.data import add_benchmark_option, benchmark_names

    p = ev.add_parser(
        "score",
        help="score a predictions file in the benchmark's own format (no model)",
        description=(
            "Apply the official word-match rule to the prediction field as it stands (MMAU: "
            "model_output or model_prediction; MMAR: answer_prediction). Items without a "
            "prediction count as wrong and are reported; --official-skip leaves them out, as the "
            "official scripts do. --benchmark takes the names of `eval run` whose files carry a "
            "prediction field: mmau, mmar."
        ),
    )
    p.add_argument("predictions", metavar="FILE", help="predictions: a JSON list (or JSON lines) of items with predictions")
    add_benchmark_option(p, [n for n in benchmark_names() if n in ("mmau", "mmar")], True,
                         "the file's layout, as in `eval run --benchmark`")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--official-skip", action="store_true",
                   help="skip items without a prediction (the official scripts' behaviour) instead of counting them wrong")
    p.set_defaults(func=_cmd_score)


def _add_compare(ev) -> None:
    p = ev.add_parser(
        "compare",
        help="put several evaluation folders side by side",
        description="One table, a row per run and a column per task (or modality) plus the average. With "
        "--audio-gain, folders of one model evaluated with different `eval run --audio` modes (one of them "
        "real): per value of every group, accuracy with the clip, in each other mode, and the difference, the "
        "score that needs the audio (over the items judged in every run)."
        "\n\n"
        "  harken eval compare eval/grpo eval/sft --names grpo,sft\n"
        "  harken eval compare eval/grpo eval/grpo-none --audio-gain --out eval/listen",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders written by `eval run` or `eval score`")
    p.add_argument("--names", default=None, metavar="LIST", help="comma-separated row names (default: the folder names)")
    p.add_argument("--audio-gain", action="store_true",
                   help="the runs are one model in several --audio modes: show how much of the score needs the audio")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write compare.md, compare.json and compare.png here (--audio-gain: audio_gain.*)")
    p.set_defaults(func=_cmd_compare)


def register(top, groups) -> None:
    """Add `harken eval run | score | compare`."""
    _add_run(groups["eval"])
    _add_score(groups["eval"])
    _add_compare(groups["eval"])
