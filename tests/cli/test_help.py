"""Every command's --help: it runs, describes the command, explains every option and shows its
default; one metavar and one set of benchmark names per kind of thing; global options anywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from harken.cli import build_parser, main

PARSER = build_parser()


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the top-level parser and every group and command below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


COMMANDS = dict(_walk(PARSER))
LEAVES = [path for path, p in COMMANDS.items()
          if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]


def _options(parser):
    """The actions a user sees in --help (not -h itself, not hidden ones, not sub-command lists)."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help is not argparse.SUPPRESS]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_tree_holds_every_command():
    assert {("data", "validate"), ("train", "grpo"), ("train", "sft"), ("eval", "run"), ("eval", "score"),
            ("presets",), ("plan",), ("bench",), ("demo",), ("report",), ("model", "tiny")} <= set(LEAVES)


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "harken")
def test_help_runs_with_a_description_and_every_option_explained(path, capsys):
    with pytest.raises(SystemExit) as e:
        PARSER.parse_args([*path, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: harken {' '.join(path)}".rstrip())
    parser = COMMANDS[path]
    assert parser.description and parser.description.strip(), f"`harken {' '.join(path)}` has no description"
    for action in _options(parser):
        name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        assert action.help and action.help.strip(), f"`harken {' '.join(path)}`: {name} has no help text"
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for choice in sub._choices_actions:
            assert choice.help, f"`harken {' '.join(path)} {choice.dest}` has no one-line help"


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_defaults_are_shown(path):
    parser = COMMANDS[path]
    text = _flat(parser.format_help())
    for action in _options(parser):
        if action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            continue
        assert f"(default: {action.default})" in text, f"`harken {' '.join(path)}` {action.option_strings[0]}"


def test_one_metavar_per_kind_of_thing():
    kinds = {"--out": "DIR", "--audio-root": "DIR", "--adapter": "DIR", "--videos": "DIR", "--data": "DATA",
             "--config": "PRESET", "--model": "MODEL"}
    seen = set()
    for path in LEAVES:
        for action in _options(COMMANDS[path]):
            for opt in action.option_strings:
                if opt in kinds:
                    assert action.metavar == kinds[opt], f"`harken {' '.join(path)}` {opt} {action.metavar}"
                    seen.add(opt)
    assert seen == set(kinds)


def _choices(path, option):
    return next(a.choices for a in COMMANDS[path]._actions if option in a.option_strings)


def test_benchmark_names_are_the_same_everywhere():
    run = list(_choices(("eval", "run"), "--benchmark"))
    assert run == list(_choices(("data", "validate"), "--benchmark"))
    assert {"mmau-test-mini", "mmau-test-mini-v2503", "mmau", "mmar", "jsonl"} == set(run)
    assert set(_choices(("eval", "score"), "--benchmark")) == {"mmau", "mmar"}  # those with a prediction field


@pytest.mark.parametrize("argv", [
    ["-v", "data", "validate", "--data", "x.jsonl"],
    ["data", "-v", "validate", "--data", "x.jsonl"],
    ["data", "validate", "--data", "x.jsonl", "-v"],
    ["data", "validate", "--verbose", "--data", "x.jsonl"],
])
def test_verbose_is_accepted_before_or_after_the_command(argv):
    assert PARSER.parse_args(argv).verbose is True


def test_verbose_defaults_to_off_and_reaches_the_command(capsys):
    assert PARSER.parse_args(["data", "validate", "--data", "x.jsonl"]).verbose is False
    assert main(["train", "grpo", "--config", "tiny", "--print-config", "-v"]) == 0
    assert "group_size: 4" in capsys.readouterr().out


def test_importing_the_command_line_loads_no_torch():
    code = "import sys, harken.cli; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
