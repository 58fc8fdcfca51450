"""`harken model tiny|info`: build a toy model of a real architecture, or inspect a checkpoint.

Owns: the two commands' options and what they print. The models are `harken.models.toy.build_tiny`
and `harken.models.loading.load_audio_lm`.
"""

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

    p = groups["model"].add_parser(
        "tiny", help="build a toy-size model of a real architecture, offline",
        description="Build a randomly initialised model of a supported family at a named size (its real "
                    "classes, few and narrow layers) and save it with its tokenizer and feature extractor, "
                    "loadable with from_pretrained. Needs no download.",
    )
    p.add_argument("--family", default="qwen2-audio", choices=sorted(FAMILIES), help="architecture to copy")
    p.add_argument("--size", default="toy", choices=sorted(SIZES), help="named size (layers and widths)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to save the model in")
    p.set_defaults(func=_cmd_tiny)
    p = groups["model"].add_parser(
        "info", help="load a model and print its family and size",
        description="Load a checkpoint and print, as JSON, its family, parameter count, audio window, "
                    "vocabulary size and end-of-turn token ids.",
    )
    p.add_argument("path", metavar="MODEL", help="model checkpoint folder (or a cached hub id)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the checkpoint's own Python code (never needed for the supported families)")
    p.set_defaults(func=_cmd_info)
