"""`harken train grpo|sft`: the trainers' command lines.

Owns: parsing `--config PRESET [key=value ...]` into the trainers' typed configs, `--resume` and
`--print-config`. The trainers live in `harken.train.grpo` and `harken.train.sft`; each is
imported only when its command runs.
"""

from __future__ import annotations


def _add(groups, name: str, help_text: str, default_preset: str, func) -> None:
    from harken.config import list_presets

    p = groups["train"].add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", default=default_preset,
                   help=f"preset name ({', '.join(list_presets())}) or a YAML path (default: {default_preset})")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint (same as run.resume=auto)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-5")
    p.set_defaults(func=func)


def _config(schema, args):
    """The resolved config, or None after printing it for `--print-config`."""
    from harken.config import load_config, to_yaml

    overrides = list(args.overrides) + (["run.resume=auto"] if args.resume else [])
    cfg = load_config(schema, args.config, overrides)
    if args.print_config:
        print(to_yaml(cfg))
        return None
    return cfg


def _cmd_grpo(args) -> int:
    from harken.schema import GRPOConfig

    cfg = _config(GRPOConfig, args)
    if cfg is not None:
        from harken.train.grpo import train_grpo

        train_grpo(cfg)
    return 0


def _cmd_sft(args) -> int:
    from harken.schema import SFTConfig

    cfg = _config(SFTConfig, args)
    if cfg is not None:
        from harken.train.sft import train_sft

        train_sft(cfg)
    return 0


def register(top, groups) -> None:
    _add(groups, "grpo", "GRPO (and Dr.GRPO / DAPO / GSPO variants) for audio-language models", "tiny", _cmd_grpo)
    _add(groups, "sft", "supervised fine-tuning baseline (full or LoRA)", "tiny-sft", _cmd_sft)
