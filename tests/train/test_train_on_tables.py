"""Training reads a parquet / save_to_disk dataset with embedded clips like any other dataset file.

The tables are built from the synthetic set (its clips re-encoded as flac and ogg); a toy model
takes SFT and GRPO steps on them, validating on a table too.
"""

from __future__ import annotations

import json
from pathlib import Path

from harken.config import load_config
from harken.data.synth import load_split
from harken.schema import GRPOConfig, SFTConfig
from harken.train.grpo import train_grpo
from harken.train.sft import train_sft
from table_files import embedded_rows, save_to_disk, write_parquet

COMMON = ["model.path=tiny:qwen2-audio", "run.save_every=0", "run.sample_every=0", "run.progress=false", "run.tensorboard=false"]


def _rows(synth_dir, split: str, n: int):
    rows = embedded_rows(load_split(synth_dir, split)[:n], codecs=("flac", "ogg"))
    for r in rows:  # a Hugging Face-style set: its own key names, mapped with data.fields
        r["options"] = r.pop("choices")
    return rows


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sft_and_grpo_on_tables(tmp_path, synth_dir):
    train = write_parquet(tmp_path / "train.parquet", _rows(synth_dir, "train", 16), row_group_size=5)
    val = save_to_disk(tmp_path / "val", _rows(synth_dir, "test", 4), shards=2)
    data = [f"data.path={train}", "data.format=jsonl", "data.fields.choices=options",
            f"val.path={val}", "val.format=jsonl", "val.fields.choices=options"]

    sft = load_config(SFTConfig, "tiny-sft", data + COMMON + [
        f"run.out_dir={tmp_path / 'sft'}", "run.max_steps=2", "run.eval_every=2", "run.eval_limit=4",
        "run.eval_max_new_tokens=4", "train.batch_size=2",
    ])
    assert train_sft(sft).is_dir()
    rows = _metrics(tmp_path / "sft")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert any("val/accuracy" in r for r in rows)  # validated on the save_to_disk folder

    grpo = load_config(GRPOConfig, "tiny", data + COMMON + [
        f"run.out_dir={tmp_path / 'grpo'}", "run.max_steps=1", "run.eval_every=0",
        "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=3",
    ])
    assert train_grpo(grpo).is_dir()
    assert len([r for r in _metrics(tmp_path / "grpo") if "step" in r]) >= 1
