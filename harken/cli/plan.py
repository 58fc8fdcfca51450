"""`harken plan`: the per-GPU memory of a training run, part by part, without and with sharding.

Owns: the command's options (a preset and dotted overrides as for `harken train`, the number of
GPUs and their memory), the table, the verdicts and `--json`. The formula lives in
`harken.train.plan` (imported when the command runs).
"""

from __future__ import annotations

import argparse
import json

MODES = ("none", "fsdp")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _load(preset: str, overrides: list[str]):
    """The run's config: SFT for an SFT preset, GRPO otherwise (`harken.cli.presets.preset_trainer`)."""
    from harken.cli.presets import TRAINER_TITLES, preset_trainer, trainer_schemas
    from harken.config import load_config

    trainer = preset_trainer(preset) or "grpo"  # neither: GRPO's error names the unknown key
    return load_config(trainer_schemas()[trainer], preset, overrides), TRAINER_TITLES[trainer]


def _cmd_plan(args) -> int:
    from harken.train.plan import GIB, HEADROOM, PARTS, TEXT_TOKENS, advise, model_sizes, plan_memory

    cfg, kind = _load(args.config, list(args.overrides))
    sizes = model_sizes(cfg.model.path)
    kw = dict(text_tokens=args.text_tokens or TEXT_TOKENS)
    plans = {mode: plan_memory(cfg, args.gpus, sizes, sharding=mode, **kw) for mode in MODES}
    verdicts = {mode: advise(cfg, args.gpus, args.gpu_memory_gb, sizes, mode, **kw) for mode in MODES}
    usable = HEADROOM * args.gpu_memory_gb
    if args.json:
        out = {
            "config": args.config, "kind": kind, "model": cfg.model.path, "configured_sharding": cfg.model.sharding,
            "gpus": args.gpus, "gpu_memory_gib": args.gpu_memory_gb, "usable_gib": usable,
            "inputs": plans["none"].inputs,
            "modes": {
                mode: {"parts": {k: int(v) for k, v in p.parts.items()}, "phases": {k: int(v) for k, v in p.phases.items()},
                       "peak_gib": round(p.peak / GIB, 3), "peak_phase": p.peak_phase,
                       "fits": verdicts[mode] == "fits", "advice": verdicts[mode]}
                for mode, p in plans.items()
            },
        }
        print(json.dumps(out, indent=2))
        return 0
    inp = plans["none"].inputs
    m = cfg.model
    what = "LoRA" if m.lora else ("full fine-tuning" + (", encoder frozen" if m.freeze_encoder else ""))
    weights = "fp32 master weights" if inp["storage_bytes"] == 4 and inp["compute_bytes"] == 2 else "no master copy"
    print(f"{kind} run {args.config!r} on {args.gpus} GPU(s) of {args.gpu_memory_gb:g} GiB: {m.path}, "
          f"{inp['parameters'] / 1e9:.2f} B parameters, {what}, {inp['compute_bytes'] * 8}-bit compute, {weights}")
    new = "new" if kind == "GRPO" else "target"
    print(f"prompt {inp['prompt_tokens']} tokens ({inp['audio_tokens']} audio), {inp['rows']} rows x "
          f"{inp['completion_tokens']} {new} tokens, {inp['micro_batch_rows']} rows per micro-batch; per GPU:")
    unit, scale = ("GiB", GIB) if max(p.peak for p in plans.values()) >= GIB / 4 else ("MiB", 2**20)
    names = {mode: mode + (" *" if mode == m.sharding else "") for mode in MODES}
    width = max(len(x) for x in PARTS.values()) + 2
    print(f"\n{'':{width}}" + "".join(f"{names[mode] + ' (' + unit + ')':>16}" for mode in MODES))
    for key, label in PARTS.items():
        print(f"{label:{width}}" + "".join(f"{plans[mode].parts[key] / scale:16.2f}" for mode in MODES))
    print()
    for phase in plans["none"].phases:
        print(f"{'phase: ' + phase:{width}}" + "".join(f"{plans[mode].phases[phase] / scale:16.2f}" for mode in MODES))
    print(f"{'peak':{width}}" + "".join(f"{plans[mode].peak / scale:16.2f}" for mode in MODES))
    print(f"\n(* configured; a run fits when its peak is at most {HEADROOM:.0%} of the card: {usable:.1f} GiB)")
    for mode in MODES:
        p = plans[mode]
        print(f"{mode}: {verdicts[mode]} (peak {p.peak / scale:.2f} {unit} in the {p.peak_phase})")
    return 0


def register(top, groups) -> None:
    from harken.cli.presets import preset_names

    text = "per-GPU memory of a training run, part by part, without and with FSDP sharding"
    p = top.add_parser(
        "plan", help=text,
        description=text[0].upper() + text[1:] + ", from the model's config (no weights are loaded). Takes "
        "the presets and key=value overrides of `harken train`; an SFT preset plans an SFT run.",
    )
    p.add_argument("--config", default="r1aqa", metavar="PRESET",
                   help=f"a preset ({', '.join(preset_names())}) or a YAML path")
    p.add_argument("--gpus", type=_positive(int), default=8, metavar="N", help="number of GPUs (processes)")
    p.add_argument("--gpu-memory-gb", type=_positive(float), default=80.0, metavar="GB",
                   help="memory of one GPU, as marketed (80 for an H100, 141 for an H200; read as GiB)")
    p.add_argument("--text-tokens", type=_positive(int), default=None, metavar="N",
                   help="text tokens of a prompt besides its audio (default: 100)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (bytes per part and phase)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. rollout.micro_batch=4")
    p.set_defaults(func=_cmd_plan)
