"""`harken presets`, the presets each trainer's --help lists, the other trainer's preset refused in
one line, and `--print-config` keeping the preset's comments."""

from __future__ import annotations

import subprocess
import sys

import yaml

from harken.cli import build_parser, main
from harken.cli.presets import DEMO_PREFIX, preset_trainer
from harken.config import list_presets, load_config, preset_purpose, resolve_preset
from harken.schema import GRPOConfig


def _sections(text: str) -> dict[str, str]:
    """The listing split at its headings: heading line -> the block below it."""
    out, head = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            head = line
            out[head] = ""
        elif head is not None:
            out[head] += line + "\n"
    return out


def _names(block: str) -> set[str]:
    return {line.split()[0] for line in block.splitlines() if line.startswith("  ") and not line.startswith("   ")}


def test_listing_puts_each_preset_under_its_trainer(capsys):
    assert main(["presets"]) == 0
    sections = _sections(capsys.readouterr().out)
    grpo = _names(next(v for k, v in sections.items() if k.startswith("GRPO presets")))
    sft = _names(next(v for k, v in sections.items() if k.startswith("SFT presets")))
    demo = _names(next(v for k, v in sections.items() if k.startswith("Stages of `harken demo`")))
    assert {"tiny", "r1aqa", "r1aqa-think"} <= grpo and {"tiny-sft", "tiny-sft-lora", "r1aqa-sft-full"} <= sft
    assert demo == {n for n in list_presets() if n.startswith(DEMO_PREFIX)} == {"demo-warmup", "demo-sft", "demo-grpo"}
    assert grpo | sft | demo == set(list_presets()) and not grpo & sft and not (grpo | sft) & demo
    for name in grpo:
        assert preset_trainer(name) == "grpo", name
    for name in sft:
        assert preset_trainer(name) == "sft", name


def test_listing_gives_each_preset_its_first_comment_line(capsys):
    main(["presets"])
    out = " ".join(capsys.readouterr().out.split())
    for name in list_presets():
        purpose = preset_purpose(resolve_preset(name))
        assert purpose, f"{name}.yaml opens without a comment line saying what it is for"
        assert f"{name} " in out and " ".join(purpose.split()) in out, name
    assert "(inherits tiny-sft)" in out and "(inherits r1aqa)" in out


def test_one_preset_is_its_file_then_the_resolved_chain(capsys, tmp_path):
    assert main(["presets", "tiny"]) == 0
    out = capsys.readouterr().out
    assert resolve_preset("tiny").read_text() in out and "resolved" not in out
    assert main(["presets", "r1aqa-think"]) == 0
    out = capsys.readouterr().out
    file_text, _, resolved = out.partition("# ---- resolved `inherit:` chain r1aqa-think <- r1aqa")
    assert resolve_preset("r1aqa-think").read_text() in file_text
    assert "#   template: prompt3  # " in resolved  # the child's value and comment
    assert "#   group_size: 8  # G" in resolved  # the parent's key, with its comment
    copy = tmp_path / "copy.yaml"  # the output is still a copy of the file: the resolved part is comments
    copy.write_text(out)
    assert load_config(GRPOConfig, str(copy)) == load_config(GRPOConfig, "r1aqa-think")
    assert main(["presets", "no-such"]) == 2
    assert "unknown preset 'no-such'" in capsys.readouterr().err


def _config_help(trainer: str) -> str:
    top = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    sub = next(a for a in top._actions if a.dest == "subcommand").choices[trainer]
    return next(a.help for a in sub._actions if "--config" in a.option_strings)


def test_each_trainers_help_lists_only_its_presets():
    grpo, sft = _config_help("grpo"), _config_help("sft")
    grpo_names = {n.strip(" ,;()") for n in grpo.replace(";", ",").split(",")}
    sft_names = {n.strip(" ,;()") for n in sft.replace(";", ",").split(",")}
    assert "tiny" in grpo_names and "r1aqa" in grpo_names and "tiny-sft" not in grpo and "r1aqa-sft" not in grpo
    assert "tiny-sft" in sft_names and "r1aqa-sft-lora" in sft_names and "r1aqa-think" not in sft
    assert "tiny" not in sft_names


def test_the_other_trainers_preset_is_one_line_and_no_traceback():
    out = subprocess.run([sys.executable, "-m", "harken", "train", "grpo", "--config", "tiny-sft"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "harken: error: tiny-sft is an SFT preset, not a GRPO one: use `harken train sft --config tiny-sft`"]


def test_print_config_keeps_the_presets_comments_and_reloads(capsys, tmp_path):
    assert main(["train", "grpo", "--config", "r1aqa", "--print-config", "--out", "runs/x", "algo.kl_coef=0.001"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].startswith("# ---- r1aqa ") and lines[2].startswith("# R1-AQA (arXiv 2503.11197)")
    assert "  group_size: 8  # G" in lines
    assert "  kl_coef: 0.001  # set on the command line" in lines  # not the preset's comment on 0.04
    assert "  out_dir: runs/x  # set on the command line" in lines
    saved = tmp_path / "printed.yaml"
    saved.write_text(out)
    assert yaml.safe_load(out)["algo"]["kl_coef"] == 0.001
    assert load_config(GRPOConfig, str(saved)) == load_config(GRPOConfig, "r1aqa", ["run.out_dir=runs/x", "algo.kl_coef=0.001"])


def test_an_own_preset_inherits_and_its_trainer_is_read_from_its_sections(capsys, tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("# My run: r1aqa with smaller groups.\ninherit: r1aqa\nrollout:\n  group_size: 4\n")
    assert preset_trainer(str(own)) == "grpo"
    assert main(["train", "grpo", "--config", str(own), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "# My run: r1aqa with smaller groups." in out and "# R1-AQA (arXiv 2503.11197)" in out
    assert "  group_size: 4" in out.splitlines()  # set again without a comment: the parent's "# G" is gone
    assert "  prompts_per_step: 1  # per device per micro-step" in out.splitlines()
    sft = tmp_path / "sft.yaml"
    sft.write_text("# An SFT run.\ntrain:\n  batch_size: 2\n")
    assert preset_trainer(str(sft)) == "sft"
    assert main(["train", "grpo", "--config", str(sft)]) == 2
    assert "is an SFT preset" in capsys.readouterr().err


def test_out_and_run_out_dir_together_are_refused(capsys):
    assert main(["train", "sft", "--config", "tiny-sft", "--out", "a", "run.out_dir=b", "--print-config"]) == 2
    assert "--out DIR or run.out_dir=DIR" in capsys.readouterr().err
