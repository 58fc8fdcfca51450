"""The whole command tree registers together, and top-level errors are user-facing."""

from __future__ import annotations

import pytest

from harken.cli import build_parser, main


def test_every_command_registers():
    parser = build_parser()
    top = next(a for a in parser._actions if a.dest == "command")
    assert {"data", "model", "train", "eval", "bench", "demo", "report"} <= set(top.choices)
    sub = {name: next(a for a in p._actions if a.dest == "subcommand").choices for name, p in top.choices.items()
           if name in ("data", "model", "train", "eval")}
    assert {"validate", "synth", "real", "avqa", "split", "stats"} <= set(sub["data"])
    assert {"tiny", "info"} <= set(sub["model"])
    assert {"grpo", "sft"} <= set(sub["train"])
    assert {"run", "score", "compare"} <= set(sub["eval"])


def test_config_error_exits_2_with_message(capsys):
    assert main(["train", "grpo", "--config", "tiny", "--print-config", "rollout.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'rollout.nope'" in err and "group_size" in err
    assert main(["train", "grpo", "--config", "no-such-preset", "--print-config"]) == 2
    assert "shipped presets" in capsys.readouterr().err


def test_print_config_resolves_overrides(capsys):
    assert main(["train", "grpo", "--config", "r1aqa-think", "--print-config", "algo.kl_coef=0.001"]) == 0
    out = capsys.readouterr().out
    assert "template: prompt3" in out and "kl_coef: 0.001" in out and "group_size: 8" in out


@pytest.mark.parametrize("module", ["harken", "harken.cli"])
def test_python_dash_m_runs_the_command_line(module):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("harken "), out.stderr
