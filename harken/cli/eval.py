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

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    table = compare_runs(args.dirs, names)
    print_compare(table)
    if args.out:
        out = Path(args.out)
        write_compare(table, out)
        print(f"written to {out}/ (compare.md, compare.json, compare.png)")
    return 0


def _add_run(ev) -> None:
    from harken.cli.data import DATASET_TABLES, add_field_option
    from harken.eval.benchmarks import RUN_BENCHMARKS

    p = ev.add_parser(
        "run",
        help="generate answers for a benchmark with a model and score them",
        description=(
            "Greedy answers for every item, scored with the benchmark's official rule. Clips are "
            "checked before anything is generated. Items are saved after each batch: run the same "
            "command again to continue an interrupted run. A --data file without answers (a test "
            "split) gets predictions.json for submission and no accuracy."
        ),
    )
    p.add_argument("--benchmark", required=True, choices=list(RUN_BENCHMARKS),
                   help="mmau-test-mini (the shipped file v05.15.25), mmau-test-mini-v2503 (the paper's file), "
                        "or with --data: mmau or mmar (a file in that benchmark's layout), "
                        "jsonl (a canonical / generic file)")
    p.add_argument("--model", required=True, metavar="PATH", help="model checkpoint folder")
    p.add_argument("--data", default=None, metavar="FILE",
                   help=f"dataset for mmau, mmar and jsonl: a JSON / JSON-lines file or a table ({DATASET_TABLES})")
    p.add_argument("--audio-root", default=None, metavar="DIR",
                   help="folder relative clip paths are joined to (MMAU: the folder holding test-mini-audios/; "
                        "default with --data: the --data file's folder)")
    add_field_option(p)
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder (reused to continue a run)")
    p.add_argument("--template", default=None,
                   help="prompt template (default: the one the model was trained on, saved by `harken train` "
                        "in its folder; else prompt2, the paper's best)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation budget per answer (default: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="items per generation batch (default: 8)")
    p.add_argument("--adapter", default=None, metavar="PATH", help="LoRA adapter folder to apply")
    p.add_argument("--skip-missing", action="store_true",
                   help="evaluate the items whose clip exists and report the coverage, instead of stopping")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N items")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="weights precision (auto: bfloat16 on a GPU that supports it, else float32)")
    p.set_defaults(func=_cmd_run)


def _add_score(ev) -> None:
    p = ev.add_parser(
        "score",
        help="score a predictions file in the benchmark's own format (no model)",
        description=(
            "Apply the official word-match rule to the prediction field as it stands (MMAU: "
            "model_output or model_prediction; MMAR: answer_prediction). Items without a "
            "prediction count as wrong and are reported; --official-skip leaves them out, as the "
            "official scripts do."
        ),
    )
    p.add_argument("predictions", metavar="PREDICTIONS", help="JSON list (or JSON lines) of items with predictions")
    p.add_argument("--benchmark", required=True, choices=["mmau", "mmar"])
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--official-skip", action="store_true",
                   help="skip items without a prediction (the official scripts' behaviour) instead of counting them wrong")
    p.set_defaults(func=_cmd_score)


def _add_compare(ev) -> None:
    p = ev.add_parser(
        "compare",
        help="put several evaluation folders side by side",
        description="One table, a row per run and a column per task (or modality) plus the average.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders written by `eval run` or `eval score`")
    p.add_argument("--names", default=None, help="comma-separated row names (default: the folder names)")
    p.add_argument("--out", default=None, metavar="DIR", help="also write compare.md, compare.json and compare.png here")
    p.set_defaults(func=_cmd_compare)


def register(top, groups) -> None:
    """Add `harken eval run | score | compare`."""
    _add_run(groups["eval"])
    _add_score(groups["eval"])
    _add_compare(groups["eval"])
