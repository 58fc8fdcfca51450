"""The warmed-up toy (`tiny-warm:FAMILY`, the `tiny` preset's model): GRPO from it gets rewards and
moves; it is built once into its cache folder, atomically (a killed or failed build leaves no model),
and by one process under torchrun."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harken.config import load_config
from harken.schema import GRPOConfig

HERE = Path(__file__).parent


def test_the_tiny_preset_gets_rewards_and_moves(tmp_path, synth_dir, warm_toy):
    from harken.train.grpo import GRPOTrainer

    cfg = load_config(GRPOConfig, "tiny", [f"run.out_dir={tmp_path}", f"data.path={synth_dir / 'train.jsonl'}",
                                           "run.max_steps=3", "run.save_every=0", "run.sample_every=0",
                                           "run.progress=false", "run.tensorboard=false"])
    assert cfg.model.path == "tiny-warm:qwen2-audio"
    trainer = GRPOTrainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.lm.model.named_parameters()}
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert all(r["reward/format"] > 0 for r in rows)  # it answers in the format from the start
    assert any(r["reward/accuracy"] > 0 for r in rows)
    assert any(r["grad_norm"] > 0 for r in rows)
    changed = [n for n, p in trainer.lm.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert len(changed) > len(before) // 2


@pytest.fixture
def small_recipe(monkeypatch, tmp_path):
    """A fresh cache folder and a warm-up of 2 steps (the recipe is part of the folder's name)."""
    from harken.models import warm

    monkeypatch.setenv(warm.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(warm.WARM_UP, "steps", 2)
    monkeypatch.setitem(warm.WARM_UP, "questions", 12)
    return tmp_path / "cache" / "warm-toy"


def test_built_once_then_read_from_the_cache(small_recipe, caplog):
    from harken.models.loading import load_audio_lm
    from harken.models.warm import ensure_warm_toy

    caplog.set_level(logging.INFO, logger="harken")
    folder = ensure_warm_toy("qwen2-audio")
    assert folder.parent == small_recipe and folder.name.startswith("qwen2-audio-seed0-")
    assert f"building the warmed-up toy tiny-warm:qwen2-audio (once, cached in {folder})" in caplog.text
    assert json.loads((folder / "warm-up.json").read_text())["steps"] == 2
    assert [p.name for p in small_recipe.iterdir()] == [folder.name]  # no temporary folder left
    caplog.clear()
    lm = load_audio_lm("tiny-warm:qwen2-audio")
    assert "building" not in caplog.text and lm.family.name == "qwen2-audio"
    # Its weights are the cached ones, not a new toy's.
    from harken.models.toy import build_tiny

    random = dict(build_tiny("qwen2-audio", seed=0).model.named_parameters())
    warmed = dict(lm.model.named_parameters())
    assert any(not torch.equal(random[n], warmed[n]) for n in warmed)
    # Another seed or another recipe is another folder.
    assert ensure_warm_toy("qwen2-audio", seed=1) != folder


def test_the_build_leaves_the_callers_random_state_alone(small_recipe):
    from harken.models.warm import ensure_warm_toy

    torch.manual_seed(123)
    state = torch.get_rng_state()
    ensure_warm_toy("qwen2-audio")
    assert torch.equal(torch.get_rng_state(), state)


def test_a_failed_build_leaves_no_model(small_recipe, monkeypatch):
    from harken.models import warm

    def fail(lm, out, *args, **kwargs):
        Path(out).mkdir(parents=True)
        (Path(out) / "config.json").write_text("{}")  # half a model
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(warm, "save_audio_lm", fail)
    with pytest.raises(OSError, match="cannot build the warmed-up toy in .*set HARKEN_CACHE to a writable folder"):
        warm.ensure_warm_toy("qwen2-audio")
    assert list(small_recipe.iterdir()) == []


def test_a_killed_build_leaves_no_model(small_recipe):
    """SIGKILL when the model is written but not yet renamed into place: no model folder; the next
    build removes what the killed one left once it is stale, and completes."""
    from harken.models.warm import ensure_warm_toy

    kill = ("import os, signal, harken.io; from harken.models import warm; "
            "warm.WARM_UP.update(steps=2, questions=12); "
            "harken.io.replace_folder = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
            "warm.ensure_warm_toy('qwen2-audio')")
    proc = subprocess.run([sys.executable, "-c", kill], env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    (left,) = small_recipe.iterdir()
    assert left.name.startswith(".build-") and (left / "model" / "config.json").exists()  # nothing to load
    stale = time.time() - 2 * 3600
    os.utime(left, (stale, stale))
    folder = ensure_warm_toy("qwen2-audio")
    assert [p.name for p in small_recipe.iterdir()] == [folder.name]


def test_two_processes_build_it_once(tmp_path):
    env = {**os.environ, "HARKEN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "warm_processes.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("building the warmed-up toy") == 1, proc.stderr[-3000:]
    folders = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("loaded ")]
    assert len(folders) == 2 and len(set(folders)) == 1  # both processes load the one folder
    assert Path(folders[0]).parent == tmp_path / "cache" / "warm-toy"
