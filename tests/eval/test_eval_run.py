"""`harken eval run` end to end on a real toy model (every family, and a LoRA adapter)."""

from __future__ import annotations

import json

import pytest

from harken.cli import main


def _items(out):
    return [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni", "audio-flamingo-3", "qwen3-omni", "voxtral"])
def test_eval_run_then_continue(tmp_path, synth_dir, tiny_dirs, family):
    out = tmp_path / "eval"
    args = ["eval", "run", "--benchmark", "jsonl", "--data", str(synth_dir / "test.jsonl"),
            "--model", str(tiny_dirs[family]), "--out", str(out), "--max-new-tokens", "4", "--batch-size", "3"]
    assert main(args + ["--limit", "3"]) == 0
    first = _items(out)
    assert len(first) == 3
    assert main(args + ["--limit", "6"]) == 0  # continues: the first 3 are not generated again
    items = _items(out)
    assert len(items) == 6 and items[:3] == first
    for it in items:
        assert {"id", "prediction", "correct", "raw_output"} <= it.keys()
        assert isinstance(it["correct"], bool)
    results = json.loads((out / "results.json").read_text())
    assert results["n_items"] == 6 and results["n_correct"] == sum(it["correct"] for it in items)
    assert (out / "predictions.json").exists() and (out / "results.md").exists()
    assert list(out.glob("accuracy_*.png"))


def test_eval_run_with_lora_adapter(tmp_path, synth_dir, tiny_dirs):
    from harken.config import load_config
    from harken.train.grpo import train_grpo
    from harken.schema import GRPOConfig

    base = str(tiny_dirs["qwen2-audio"])
    cfg = load_config(GRPOConfig, "tiny", [
        f"model.path={base}", "model.lora=true", f"data.path={synth_dir / 'train.jsonl'}",
        f"run.out_dir={tmp_path / 'run'}", "run.max_steps=1", "run.progress=false", "run.save_every=0",
        "rollout.group_size=2", "rollout.prompts_per_step=1", "rollout.max_new_tokens=3",
    ])
    adapter = train_grpo(cfg)
    out = tmp_path / "eval"
    assert main(["eval", "run", "--benchmark", "jsonl", "--data", str(synth_dir / "test.jsonl"), "--model", base,
                 "--adapter", str(adapter), "--out", str(out), "--limit", "2", "--max-new-tokens", "3"]) == 0
    assert len(_items(out)) == 2


def test_eval_run_uses_the_training_template(tmp_path, synth_dir, tiny_dirs, caplog):
    """A model trained on prompt1 is evaluated with prompt1 unless told otherwise; told otherwise, a warning."""
    from harken.config import load_config
    from harken.schema import SFTConfig
    from harken.train.sft import train_sft

    cfg = load_config(SFTConfig, "tiny-sft", [
        f"model.path={tiny_dirs['qwen2-audio']}", f"data.path={synth_dir / 'train.jsonl'}", "prompt.template=prompt1",
        f"run.out_dir={tmp_path / 'run'}", "run.max_steps=1", "run.progress=false", "run.save_every=0",
        "run.eval_every=0", "train.eval_before=false", "val.path=",
    ])
    final = train_sft(cfg)
    assert json.loads((final / "harken.json").read_text()) == {
        "trainer": "sft", "template": "prompt1", "max_audio_seconds": cfg.prompt.max_audio_seconds}
    args = ["eval", "run", "--benchmark", "jsonl", "--data", str(synth_dir / "test.jsonl"), "--model", str(final),
            "--limit", "2", "--max-new-tokens", "3"]
    assert main(args + ["--out", str(tmp_path / "same")]) == 0
    assert json.loads((tmp_path / "same" / "results.json").read_text())["run"]["template"] == "prompt1"
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert main(args + ["--out", str(tmp_path / "other"), "--template", "prompt2"]) == 0
    assert json.loads((tmp_path / "other" / "results.json").read_text())["run"]["template"] == "prompt2"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("differs from the template the model was trained on (prompt1)" in w for w in warnings)


def test_eval_run_without_training_settings_uses_prompt2(tmp_path, synth_dir, tiny_dirs):
    out = tmp_path / "eval"
    assert main(["eval", "run", "--benchmark", "jsonl", "--data", str(synth_dir / "test.jsonl"),
                 "--model", str(tiny_dirs["qwen2-audio"]), "--out", str(out), "--limit", "1",
                 "--max-new-tokens", "2"]) == 0
    assert json.loads((out / "results.json").read_text())["run"]["template"] == "prompt2"
