"""`harken train grpo|sft`: the trainers' command lines.

Owns: parsing `--config PRESET [key=value ...]` into the trainers' typed configs, refusing a preset
of the other trainer (`harken.cli.presets.check_trainer`), `--out` (run.out_dir), `--resume` and
`--print-config` (the resolved config with the preset's comments). The trainers live in
`harken.train.grpo` and `harken.train.sft`; each is imported only when its command runs.
"""

from __future__ import annotations

DESCRIPTIONS = {
    "grpo": "GRPO (and Dr.GRPO / DAPO / GSPO variants) for audio-language models: sample a group of answers "
            "per question, reward them, and move the policy toward the better ones.",
    "sft": "Supervised fine-tuning baseline (full or LoRA): teacher-forced cross-entropy on "
           "\"<answer>{answer}</answer>\" targets.",
}

USAGE = (
    "The config is built from the schema's defaults, then the preset (and what it inherits), then --out, "
    "--resume and the key=value overrides. `harken presets` lists the presets; `--print-config` shows every "
    "key and stops."
)


def _add(groups, name: str, help_text: str, default_preset: str, func) -> None:
    from harken.cli.presets import A_TRAINER, preset_names

    shipped = ", ".join(preset_names(name))
    demo = ", ".join(preset_names(name, demo=True))
    p = groups["train"].add_parser(name, help=help_text, description=f"{DESCRIPTIONS[name]}\n\n{USAGE}")
    p.add_argument("--config", default=default_preset, metavar="PRESET",
                   help=f"{A_TRAINER[name]} preset ({shipped}; the demo's stages: {demo}) or a YAML path")
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (run.out_dir; default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint (run.resume=auto)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every key, with the preset's comments) and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-5")
    p.set_defaults(func=func, trainer=name)


def _overrides(args) -> list[str]:
    """The command line's overrides: --out, --resume, then key=value (a run folder given twice is an error)."""
    from harken.config import ConfigError

    given = list(args.overrides)
    if args.out is not None:
        if any(o.startswith("run.out_dir=") for o in given):
            raise ConfigError("the run folder is given twice: pass --out DIR or run.out_dir=DIR, not both")
        given.insert(0, f"run.out_dir={args.out}")
    return given + (["run.resume=auto"] if args.resume else [])


def print_config(cfg, preset: str, overrides: list[str], title: str) -> None:
    """The resolved config as YAML: the headers of the preset and what it inherits, then every key,
    with the preset's comment beside each key it sets and the command line's overrides marked."""
    from harken.config import chain_comments, commented_yaml, preset_chain, preset_header, preset_label, to_yaml

    lines = [f"# {title}: the resolved config (every key, defaults included)"]
    for path in preset_chain(preset):
        lines.append(f"# ---- {preset_label(path)} ({path}) ----")
        lines += preset_header(path)
    if overrides:
        lines.append(f"# ---- the command line: {' '.join(overrides)} ----")
    marks = {o.partition("=")[0]: "set on the command line" for o in overrides}
    print("\n".join(lines))
    print(commented_yaml(to_yaml(cfg), chain_comments(preset), marks), end="")


def _config(schema, args):
    """The resolved config, or None after printing it for `--print-config`."""
    from harken.cli.presets import check_trainer
    from harken.config import load_config

    check_trainer(args.config, args.trainer)
    overrides = _overrides(args)
    cfg = load_config(schema, args.config, overrides)
    if args.print_config:
        print_config(cfg, args.config, overrides, f"harken train {args.trainer} --config {args.config}")
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
