"""The `harken` command line: the only place with argparse, one module per command group.

Owns: the top-level parser and dispatch, and turning user errors into one-line messages. Each
command module (`harken.cli.data`, `model`, `train`, `eval`, `presets`, `plan`, `bench`, `demo`,
`report`) exposes
`register(top, groups)`, where `top` is the top-level sub-parser action and `groups` maps a group
name (`data`, `model`, `train`, `eval`) to that group's sub-parser action; it adds parsers whose
default `func(args) -> int | None` runs the command. Command modules import the library lazily,
inside each command, so `import harken.cli` does not load torch. Every parser is a
`harken.cli.parser.Parser`: the same help layout everywhere and the global options (`-v`) before or
after any command name.

The vocabulary every command shares: `--data DATA` (a dataset: a JSON / JSON-lines file or a
table), `--format` (its layout, as `data.format` in a training config), `--benchmark` (the
benchmark names of `eval run`: the shipped MMAU test-mini files, or mmau / mmar / jsonl for a
`--data` file in that layout), `--audio-root DIR`, `--field NAME=KEY`, `--out DIR` (the folder a
command writes; `harken train`: run.out_dir), `--config PRESET` (`harken presets`); metavars name
the kind of value: DIR a folder, FILE a file, DATA a dataset, MODEL a checkpoint, PRESET a preset,
N a count. The shared options are added by `harken.cli.data` (`add_data_option`, ...).

Exit codes: `EXIT_CODES`, printed by `harken --help`.
"""

from __future__ import annotations

import logging
import os
import sys

from harken import __version__
from harken.cli import bench, data, demo, eval, model, plan, presets, report, train
from harken.cli.parser import GLOBAL_OPTIONS_HELP, Parser

# The command modules, in the order their commands are listed by `harken --help`.
COMMAND_MODULES = (model, data, eval, train, presets, plan, bench, demo, report)

EXIT_CODES = (
    "Exit codes: 0 done; 1 the command met a problem in the data or the files (bad items, a failed check, "
    "a full disk); 2 it could not start (a bad option or config, a file or folder that does not exist); "
    "130 `eval run` interrupted (the same command continues it)."
)

GROUPS = {
    "data": "prepare, inspect and validate datasets",
    "model": "build and inspect models",
    "train": "train a model (grpo, sft)",
    "eval": "evaluate models and score predictions",
}


def build_parser() -> Parser:
    parser = Parser(
        prog="harken", global_default=False,
        description="Reinforcement-learning post-training and evaluation of audio-language models.",
        epilog=f"`harken COMMAND --help` describes a command. {GLOBAL_OPTIONS_HELP}\n\n{EXIT_CODES}",
    )
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {}
    for name, help_text in GROUPS.items():
        gp = top.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                            epilog=f"`harken {name} SUBCOMMAND --help` describes a sub-command.")
        groups[name] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        gp.set_defaults(func=lambda a, _gp=gp: (_gp.print_help(), 2)[1])
    for module in COMMAND_MODULES:
        module.register(top, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from harken.config import ConfigError
    from harken.io import describe_os_error

    try:
        rc = args.func(args)
    except ConfigError as e:
        if os.environ.get("RANK", "0") == "0":  # every process of a launch reads the same config: say it once
            print(f"harken: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"harken: error: {describe_os_error(e) if e.filename is not None else e}", file=sys.stderr)
        return 2
    except ValueError as e:
        # Data errors are raised as ValueError with the file and item in the message.
        print(f"harken: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # harken.io.PathError, or a file-system error from anywhere: the path, what to do
        print(f"harken: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    return int(rc or 0)


