"""A crash campaign for evaluation: `harken eval run` killed with SIGKILL (before its first item,
after some items, with a last line cut short) and rerun ends with the items and results of an
uninterrupted run, each item once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harken.cli import main

ITEMS = 10


def _args(out: Path, data: Path, model: Path) -> list[str]:
    # One item per batch: every item is generated alone in every run, so the outputs compare exactly.
    return ["eval", "run", "--benchmark", "jsonl", "--data", str(data / "test.jsonl"), "--model", str(model),
            "--out", str(out), "--limit", str(ITEMS), "--batch-size", "1", "--max-new-tokens", "6"]


def _kill_when(args: list[str], ready) -> None:
    """Start `harken eval run`, SIGKILL it as soon as `ready()` holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harken.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the evaluation ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _lines(out: Path) -> list[str]:
    path = out / "items.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def _items(out: Path) -> list[dict]:
    return [json.loads(line) for line in _lines(out)]


def _scores(out: Path) -> dict:
    """What results.json says about the model, without how the run was invoked."""
    results = json.loads((out / "results.json").read_text())
    return {k: v for k, v in results.items() if k not in ("run", "created", "time", "harken_version")}


def test_killed_evaluations_resume_to_the_uninterrupted_items(tmp_path, synth_dir, tiny_dirs):
    model = tiny_dirs["qwen2-audio"]
    straight = tmp_path / "straight"
    assert main(_args(straight, synth_dir, model)) == 0
    expected = _items(straight)
    assert len(expected) == ITEMS

    killed = tmp_path / "killed"
    args = _args(killed, synth_dir, model)
    _kill_when(args, lambda: (killed / "run.json").exists())  # settings written, the model loading
    assert len(_lines(killed)) < ITEMS
    _kill_when(args, lambda: len(_lines(killed)) >= 3)  # some items written
    done = _lines(killed)
    assert 3 <= len(done) < ITEMS and not (killed / "results.json").exists()
    # A crash in the middle of writing a line: its first half is on disk.
    with open(killed / "items.jsonl", "a") as f:
        f.write(_lines(straight)[len(done)][:40])

    assert main(args) == 0
    items = _items(killed)
    assert [it["id"] for it in items] == [it["id"] for it in expected]  # each item once, in order
    assert items == expected
    assert _scores(killed) == _scores(straight)
    assert json.loads((killed / "predictions.json").read_text()) == json.loads((straight / "predictions.json").read_text())
