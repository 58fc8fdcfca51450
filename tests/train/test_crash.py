"""A crash campaign: a GRPO run killed with SIGKILL (before its first checkpoint, after a
checkpoint, twice in a row) and rerun ends with the weights of an uninterrupted run and metrics
without a repeated step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent


def _command(out: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "harken.cli", "train", "grpo", "--config", "tiny", f"run.out_dir={out}",
            f"data.path={data / 'train.jsonl'}", "rollout.group_size=3", "rollout.max_new_tokens=6", "run.max_steps=6",
            "run.save_every=2", "run.keep_last=0", "run.sample_every=1", "run.progress=false", "run.tensorboard=false",
            "reward.rewards=[{name: test_grpo:length_reward, weight: 1.0}]"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}


def _run(out: Path, data: Path) -> None:
    proc = subprocess.run(_command(out, data), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_when(out: Path, data: Path, ready) -> None:
    """Start the run, SIGKILL it as soon as `ready()` holds."""
    proc = subprocess.Popen(_command(out, data), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def _logged(out: Path, step: int):
    return lambda: (out / "metrics.jsonl").exists() and step in _steps(out / "metrics.jsonl")


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "step-000006" / "trainable.safetensors"))


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_weights(tmp_path, synth_dir):
    straight = tmp_path / "straight"
    _run(straight, synth_dir)
    killed = tmp_path / "killed"
    _kill_when(killed, synth_dir, _logged(killed, 1))  # before the first checkpoint (step 2)
    assert not (killed / "checkpoints").exists() or not list((killed / "checkpoints").glob("step-*"))
    _kill_when(killed, synth_dir, _logged(killed, 3))  # after the step-2 checkpoint
    _kill_when(killed, synth_dir, _logged(killed, 5))  # after the step-4 checkpoint, rerun from step 2
    _run(killed, synth_dir)
    assert _steps(killed / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]
    assert sorted(set(_steps(killed / "samples.jsonl"))) == [1, 2, 3, 4, 5, 6]
    assert not list((killed / "checkpoints").glob(".tmp-*"))
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
