"""`harken train grpo|sft`: command-line entry points of the trainers.

Owns: parsing `--config PRESET [key=value ...]` into the trainers' typed configs and
`--print-config`. The loops live in `harken.train.grpo` and `harken.train.sft`.
"""

from __future__ import annotations

from harken.config import list_presets, load_config, to_yaml


def _add(groups, name: str, help_text: str, default_preset: str, func) -> None:
    p = groups["train"].add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", default=default_preset,
                   help=f"preset name ({', '.join(list_presets())}) or a YAML path (default: {default_preset})")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint (same as run.resume=auto)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-5")
    p.set_defaults(func=func)


def _resolve(schema, args):
    overrides = list(args.overrides) + (["run.resume=auto"] if args.resume else [])
    return load_config(schema, args.config, overrides)


def _run(schema_name: str, module: str, fn: str):
    """Build the command for one trainer; the trainer module is imported only when it runs."""

    def cmd(args) -> int:
        import importlib

        import harken.schema as schema

        cfg = _resolve(getattr(schema, schema_name), args)
        if args.print_config:
            print(to_yaml(cfg))
            return 0
        getattr(importlib.import_module(module), fn)(cfg)
        return 0

    return cmd


def register(top, groups) -> None:
    _add(groups, "grpo", "GRPO (and Dr.GRPO / DAPO / GSPO variants) for audio-language models", "tiny", _run("GRPOConfig", "harken.train.grpo", "train_grpo"))
    _add(groups, "sft", "supervised fine-tuning baseline (full or LoRA)", "tiny-sft", _run("SFTConfig", "harken.train.sft", "train_sft"))
