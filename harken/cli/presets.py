"""`harken presets [NAME]`: the shipped training presets by trainer, or one preset with its comments.

Owns: which trainer a preset is for (`preset_trainer`: the trainer whose config has every section
the preset and what it inherits set, `harken.config.preset_trainers`), the refusal of a preset
given to the other trainer (`check_trainer`), the catalogue the `--config` help texts list
(`preset_names`), the demo's stages (`demo-*`, listed apart), and the command. Does not own:
reading presets (`harken.config`), the config schemas (`harken.schema`).
"""

from __future__ import annotations

import shutil
import textwrap
from functools import lru_cache

TRAINER_TITLES = {"grpo": "GRPO", "sft": "SFT"}
A_TRAINER = {"grpo": "a GRPO", "sft": "an SFT"}

# Presets named demo-* are the stages of `harken demo`, which fills in their model, data and run
# folder: listed apart from the presets a user starts a run from.
DEMO_PREFIX = "demo-"

INHERIT_HELP = (
    "A preset is a YAML file of config sections (model:, data:, prompt:, optim:, run:, and rollout:, algo:, "
    "reward: for GRPO or train: for SFT; `harken train grpo|sft --print-config` shows every key). It is a GRPO "
    "preset when it sets a GRPO-only section, an SFT one when it sets train:. `inherit: PRESET` at its top (a "
    "shipped preset or a YAML path) starts from that preset, whose own `inherit:` is followed in turn, and "
    "changes only the keys it sets; command-line key=value overrides come last. A preset's first comment line "
    "is its purpose. To make your own: `harken presets PRESET > my.yaml`, edit, and pass `--config my.yaml`."
)


def trainer_schemas() -> dict[str, type]:
    """Trainer name -> its config dataclass."""
    from harken.schema import GRPOConfig, SFTConfig

    return {"grpo": GRPOConfig, "sft": SFTConfig}


def preset_trainer(preset: str) -> str | None:
    """The trainer a preset (name or path) is for; the first when it fits both, None when neither."""
    from harken.config import preset_trainers

    fits = preset_trainers(preset, trainer_schemas())
    return fits[0] if fits else None


def check_trainer(preset: str, trainer: str) -> None:
    """A ConfigError when `preset` is a preset of another trainer than `trainer`."""
    from harken.config import ConfigError, preset_trainers

    fits = preset_trainers(preset, trainer_schemas())
    if fits and trainer not in fits:
        other = fits[0]
        raise ConfigError(f"{preset} is {A_TRAINER[other]} preset, not {A_TRAINER[trainer]} one: "
                          f"use `harken train {other} --config {preset}`")


@lru_cache(maxsize=None)
def _catalogue() -> tuple[tuple[str, tuple[str, ...], str, str | None], ...]:
    """(name, trainers, purpose, the preset it inherits from) of every shipped preset."""
    from harken.config import list_presets, preset_chain, preset_purpose, preset_trainers

    out = []
    for name in list_presets():
        chain = preset_chain(name)
        parent = chain[1].stem if len(chain) > 1 else None
        out.append((name, tuple(preset_trainers(name, trainer_schemas())), preset_purpose(chain[0]), parent))
    return tuple(out)


def preset_names(trainer: str | None = None, demo: bool = False) -> list[str]:
    """The shipped presets of `trainer` (None: every trainer), the demo's stages or the others."""
    return [name for name, trainers, _, _ in _catalogue()
            if (trainer is None or trainer in trainers) and name.startswith(DEMO_PREFIX) == demo]


def _entry(name: str, trainers: tuple[str, ...], purpose: str, parent: str | None, show_trainer: bool) -> str:
    width = shutil.get_terminal_size((100, 24)).columns
    kind = f"[{'/'.join(trainers) or '?'}] " if show_trainer else ""
    text = kind + (purpose or "(no comment line)") + (f" (inherits {parent})" if parent else "")
    return textwrap.fill(text, max(width, 60), initial_indent=f"  {name:18s} ", subsequent_indent=" " * 21,
                         break_on_hyphens=False)


def listing() -> str:
    """Every shipped preset, GRPO ones, SFT ones, then the demo's stages, each with its purpose."""
    lines = []
    for trainer, title in TRAINER_TITLES.items():
        lines.append(f"{title} presets (harken train {trainer} --config PRESET):")
        lines += [_entry(*e, show_trainer=False) for e in _catalogue()
                  if trainer in e[1] and not e[0].startswith(DEMO_PREFIX)]
        lines.append("")
    lines.append("Stages of `harken demo` (internal: the demo fills in their model, data and run folder):")
    lines += [_entry(*e, show_trainer=True) for e in _catalogue() if e[0].startswith(DEMO_PREFIX)]
    unfit = [e[0] for e in _catalogue() if not e[1]]
    if unfit:
        lines.append(f"\nfits neither trainer's config: {', '.join(unfit)}")
    lines.append("\n`harken presets PRESET` prints one with its comments.")
    return "\n".join(lines)


def show(preset: str) -> str:
    """A preset's file as written; when it inherits, then what the whole chain sets, with comments,
    as comment lines (the output stays a copy of the file: `harken presets NAME > my.yaml`)."""
    from harken.config import preset_chain, preset_label, preset_yaml

    chain = preset_chain(preset)
    trainer = preset_trainer(preset)
    use = f"{A_TRAINER[trainer]} preset: `harken train {trainer} --config {preset}`" if trainer \
        else "fits neither trainer's config"
    text = chain[0].read_text(encoding="utf-8") + f"\n# ---- {chain[0]}: {use} ----\n"
    if len(chain) > 1:
        names = " <- ".join(preset_label(p) for p in chain)
        resolved = "".join(f"# {line}\n" for line in preset_yaml(preset).splitlines())
        text += (f"# ---- resolved `inherit:` chain {names}: every key the chain sets, "
                 f"with the comment of the file that sets it ----\n" + resolved)
    return text


def _cmd_presets(args) -> int:
    print(show(args.name) if args.name else listing(), end="" if args.name else "\n")
    return 0


def register(top, groups) -> None:
    p = top.add_parser(
        "presets",
        help="list the training presets by trainer, or print one with its comments",
        description="Without PRESET: the shipped presets of each trainer (GRPO, SFT) with their purpose, then "
                    "the stages of `harken demo`. With PRESET: the preset's file with its comments and, when it "
                    "inherits, what the whole chain sets (as comments).\n\n" + INHERIT_HELP,
    )
    p.add_argument("name", nargs="?", default=None, metavar="PRESET",
                   help="a shipped preset name or a YAML path (default: list them all)")
    p.set_defaults(func=_cmd_presets)
