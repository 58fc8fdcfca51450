"""The `harken` command line: the only place with argparse, one module per command group.

Owns: the top-level parser and dispatch, and turning user errors into one-line messages. Each
command module (`harken.cli.data`, `model`, `train`, `eval`, `bench`, `demo`, `report`) exposes
`register(top, groups)`, where `top` is the top-level sub-parser action and `groups` maps a group
name (`data`, `model`, `train`, `eval`) to that group's sub-parser action; it adds parsers whose
default `func(args) -> int | None` runs the command. Command modules import the library lazily,
inside each command, so `harken --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harken import __version__
from harken.cli import bench, data, demo, eval, model, plan, report, train

# The command modules, in the order their commands are listed by `harken --help`.
COMMAND_MODULES = (model, data, eval, train, plan, bench, demo, report)

GROUPS = {
    "data": "prepare, inspect and validate datasets",
    "model": "build and inspect models",
    "train": "train a model (grpo, sft)",
    "eval": "evaluate models and score predictions",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harken", description="Reinforcement-learning post-training and evaluation of audio-language models.")
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {}
    for name, help_text in GROUPS.items():
        gp = top.add_parser(name, help=help_text, description=help_text)
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


