"""`harken bench`: what sharing each group's prompt saves in a GRPO step, measured in one process;
with `--decode`, what one decode step costs against the previous loop and transformers' `generate`.

Owns: the command's options, turning them into a `harken.bench.workload.BenchConfig` (or, with
`--decode`, a `harken.bench.decode.DecodeConfig`), and `main`,
the same command without the rest of harken's commands (`python3 -m harken.bench`, for machines
that only have torch, transformers, numpy and tqdm, like the GPU image). The benchmark itself
lives in `harken.bench` (`harken.bench.harness` defines what it measures).
"""

from __future__ import annotations

import argparse
import logging
import sys


DESCRIPTION = (
    "What sharing each group's prompt saves in a GRPO step, measured in one process: the same step "
    "(generation, reference and policy passes, backward, optimizer) timed along the shared-prefix path and "
    "the naive one, interleaved; their log-probs and gradients compared; the results written to "
    "bench.json and bench.md in the --out folder. Exit 1 when the paths disagree beyond the tolerance (speed-ups are "
    "then withheld).\n\n"
    "With --decode: milliseconds per decode step at every --completion-tokens length and --group-size given "
    "(comma-separated lists), for harken's decode loop, the loop it replaced and transformers' generate (static "
    "and dynamic cache), and a profile of where a step's time goes; written to decode.json and decode.md. Exit 1 "
    "when harken's loop and the previous one sample different tokens."
)

STEP_DEFAULTS = {"group_size": (8,), "completion_tokens": (32,)}
DECODE_DEFAULTS = {"group_size": (8, 16), "completion_tokens": (32, 128, 256, 512)}


def _paths_arg(text: str) -> tuple[str, ...]:
    from harken.bench.workload import PATHS

    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in paths if p not in PATHS]
    if not paths or bad or len(set(paths)) != len(paths):
        raise argparse.ArgumentTypeError(f"--paths takes shared, naive or shared,naive; got {text!r}")
    return paths


def _counts_arg(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or comma-separated counts, got {text!r}") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"counts must be at least 1, got {text!r}")
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    from harken.models.families import FAMILIES
    from harken.models.toy import SIZES

    which = p.add_mutually_exclusive_group()
    which.add_argument("--size", choices=[*SIZES, "7b"], default="small",
                       help="named random-weight model (7b: Qwen2-Audio-7B at full size, CUDA only)")
    which.add_argument("--model", metavar="MODEL",
                       help="checkpoint folder instead of --size (a folder with only a config gets random weights)")
    p.add_argument("--family", default="qwen2-audio", choices=sorted(FAMILIES), help="architecture of a --size model")
    p.add_argument("--clip-seconds", type=float, default=10.0, metavar="SECONDS", help="length of each prompt's clip")
    p.add_argument("--group-size", type=_counts_arg, default=None, metavar="N",
                   help="completions per prompt (G; default 8; with --decode a list, default 8,16)")
    p.add_argument("--completion-tokens", type=_counts_arg, default=None, metavar="N",
                   help="tokens per completion (default 32; with --decode a list, default 32,128,256,512)")
    p.add_argument("--prompts", type=int, default=1, metavar="N", help="prompts per step")
    p.add_argument("--reps", type=int, default=3, metavar="N", help="timed repetitions per path (medians reported)")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed repetitions before the timed ones")
    p.add_argument("--paths", type=_paths_arg, default="shared,naive", metavar="LIST",
                   help="comma-separated paths to time: shared, naive")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="compute dtype")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--freeze-encoder", action="store_true", help="freeze the audio encoder and reuse its output")
    p.add_argument("--micro-batch", type=int, default=None, metavar="N",
                   help="completion rows per forward in the loss passes (default: all rows at once)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch.set_num_threads (default: torch's)")
    p.add_argument("--matmul-size", type=int, default=None, metavar="N",
                   help="side of the square matrix product timed as the reference rate (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--tolerance", type=float, default=None, metavar="X",
                   help="max |log-prob difference| between the paths (default: per dtype)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    p.add_argument("--decode", action="store_true",
                   help="time decode steps instead of whole GRPO steps (see above; writes decode.json and decode.md)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for bench.json and bench.md (decode.json and decode.md with --decode)")


def _counts(args: argparse.Namespace, name: str, defaults: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    return getattr(args, name) or defaults[name]


def config_from_args(args: argparse.Namespace):
    """The `BenchConfig` of parsed options (a `DecodeConfig` with --decode); ValueError for counts out of range."""
    from harken.bench.workload import BenchConfig

    if args.decode:
        return decode_config_from_args(args)
    group, tokens = _counts(args, "group_size", STEP_DEFAULTS), _counts(args, "completion_tokens", STEP_DEFAULTS)
    if len(group) > 1 or len(tokens) > 1:
        raise ValueError("--group-size and --completion-tokens take one value each (lists only with --decode)")
    for name in ("prompts", "reps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.clip_seconds <= 0:
        raise ValueError("--warmup must be >= 0 and --clip-seconds > 0")
    return BenchConfig(
        size=None if args.model else args.size, model=args.model, family=args.family, clip_seconds=args.clip_seconds,
        group_size=group[0], completion_tokens=tokens[0], prompts=args.prompts, reps=args.reps,
        warmup=args.warmup, paths=tuple(args.paths), dtype=args.dtype, device=args.device,
        freeze_encoder=args.freeze_encoder, micro_batch=args.micro_batch, threads=args.threads, matmul_size=args.matmul_size,
        tolerance=args.tolerance, seed=args.seed, out=args.out,
    )


def decode_config_from_args(args: argparse.Namespace):
    """The `DecodeConfig` of parsed options; ValueError for options of the step benchmark only."""
    from harken.bench.decode import DecodeConfig
    from harken.bench.workload import PATHS

    step_only = [name for name, given in (("--paths", tuple(args.paths) != PATHS), ("--freeze-encoder", args.freeze_encoder),
                                          ("--micro-batch", args.micro_batch is not None),
                                          ("--tolerance", args.tolerance is not None)) if given]
    if step_only:
        raise ValueError(f"{', '.join(step_only)}: options of the step benchmark, not of --decode")
    if args.clip_seconds <= 0:
        raise ValueError("--clip-seconds must be > 0")
    return DecodeConfig(
        size=None if args.model else args.size, model=args.model, family=args.family, clip_seconds=args.clip_seconds,
        group_sizes=_counts(args, "group_size", DECODE_DEFAULTS), lengths=_counts(args, "completion_tokens", DECODE_DEFAULTS),
        prompts=args.prompts, reps=args.reps, warmup=args.warmup, dtype=args.dtype, device=args.device,
        threads=args.threads, matmul_size=args.matmul_size, seed=args.seed, out=args.out,
    )


def _cmd_decode(args: argparse.Namespace) -> int:
    from harken.bench.decode import run_decode_bench
    from harken.bench.results import format_decode_markdown, write_decode_results

    cfg = decode_config_from_args(args)
    res = run_decode_bench(cfg)
    out = write_decode_results(res, cfg.out)
    print(format_decode_markdown(res))
    print(f"wrote {out / 'decode.json'} and {out / 'decode.md'}")
    if not res["ok"]:
        print("harken bench: harken's decode loop and the previous one sampled different tokens; ratios withheld",
              file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from harken.bench.harness import run_bench
    from harken.bench.results import format_markdown, write_results

    if args.decode:
        return _cmd_decode(args)
    cfg = config_from_args(args)
    res = run_bench(cfg)
    out = write_results(res, cfg.out)
    print(format_markdown(res))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    if res["check"] is not None and not res["check"]["ok"]:
        print("harken bench: the two paths disagree beyond the tolerance; speed-ups withheld", file=sys.stderr)
        return 1
    return 0


def register(top, groups) -> None:
    p = top.add_parser("bench", help="time a GRPO step with and without prompt sharing, or decode steps (--decode)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=_cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """`python3 -m harken.bench ...`: the same command without importing every harken command
    (for machines that only have torch, transformers and numpy, like the GPU image)."""
    from harken.cli.parser import Parser

    parser = Parser(prog="harken bench", description=DESCRIPTION, global_default=False)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return _cmd_bench(parser.parse_args(argv))
