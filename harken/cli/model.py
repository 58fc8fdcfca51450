"""`harken model tiny|info`: build a toy model of a real architecture, or inspect a checkpoint."""

from __future__ import annotations

import json


def _cmd_tiny(args) -> int:
    from harken.models.loading import count_parameters
    from harken.models.toy import build_tiny

    lm = build_tiny(args.family, args.out, size=args.size, seed=args.seed)
    n = count_parameters(lm.model)["total"]
    print(f"built a {args.size} {args.family} model ({n / 1e6:.2f} M parameters, {lm.window_seconds:.0f} s audio window) in {args.out}")
    return 0


def _cmd_info(args) -> int:
    from harken.models.loading import count_parameters, load_audio_lm

    lm = load_audio_lm(args.path, trust_remote_code=args.trust_remote_code)
    info = {
        "path": args.path,
        "family": lm.family.name,
        "parameters": count_parameters(lm.model)["total"],
        "audio_window_seconds": lm.window_seconds,
        "vocab": len(lm.tokenizer),
        "eos_ids": lm.eos_ids,
    }
    print(json.dumps(info, indent=2))
    return 0


def register(top, groups) -> None:
    from harken.models.families import FAMILIES
    from harken.models.toy import SIZES

    p = groups["model"].add_parser("tiny", help="build a toy-size model of a real architecture, offline")
    p.add_argument("--family", default="qwen2-audio", choices=sorted(FAMILIES))
    p.add_argument("--size", default="toy", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_tiny)
    p = groups["model"].add_parser("info", help="load a model and print its family and size")
    p.add_argument("path")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=_cmd_info)
