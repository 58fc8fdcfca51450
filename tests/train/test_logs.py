"""Logs a person can read: plain progress lines off a terminal, a bar with log lines above it on one,
and several processes that read as one run (each line once, the synthetic set made once, a refused
resume printed once and naming the fix)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harken import progress
from harken.progress import Progress, format_duration

# "grpo: step 2/4  reward 0.000  acc 0.000  kl 0.0012  0.08 s/step  eta 0s"
NUMBER = r"-?[0-9.e+-]+|nan|inf"
TIMING = r"  [0-9.e+-]+ s/step  eta [0-9hms]+$"
RANDOM_TOY = "model.path=tiny:qwen2-audio"  # built in memory: no warmed-up toy to build first


def _line_re(kind: str, labels: tuple[str, ...]) -> re.Pattern:
    fields = "".join(rf"  {label} (?:{NUMBER})" for label in labels)
    return re.compile(rf"{kind}: step (\d+)/(\d+){fields}{TIMING}")


def _cli(args: list[str], stderr: Path, *, nproc: int = 0, timeout: int = 240) -> subprocess.CompletedProcess:
    """`harken ARGS` (under torchrun with `nproc` processes), stderr into a file as in CI."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARKEN_TEST_THREADS": "1"}
    with open(stderr, "w") as err:
        return subprocess.run([*launch, "-m", "harken.cli", *args], stdout=subprocess.PIPE, stderr=err, text=True,
                              env=env, timeout=timeout)


# --------------------------------------------------------------------------------------------
# harken.progress
# --------------------------------------------------------------------------------------------


def test_duration_format():
    assert [format_duration(s) for s in (0, 48.4, 168, 3600 + 125)] == ["0s", "48s", "2m48s", "1h02m"]


def test_plain_lines_off_a_terminal(caplog, capsys):
    """Not a terminal: a line every `every` units and at the last, with the fields, the rate and the ETA; no bar."""
    caplog.set_level(logging.INFO, "harken.progress")
    with Progress(5, "grpo", "step", every=2) as p:
        for i in range(5):
            p.update(1, {"reward": f"{i / 10:.3f}", "kl": "0.0012"})
    lines = [r.getMessage() for r in caplog.records if r.name == "harken.progress"]
    assert [int(_line_re("grpo", ("reward", "kl")).match(x).group(1)) for x in lines] == [2, 4, 5], lines
    assert "reward 0.300" in lines[1]
    assert "\r" not in capsys.readouterr().err


def test_other_processes_and_resumed_runs(caplog):
    caplog.set_level(logging.INFO, "harken.progress")
    with Progress(4, "grpo", every=1, enabled=False) as p:  # not the main process: nothing
        p.update(1)
    with Progress(10, "eval x", "item", initial=6, every=3) as p:  # resumed at 6: lines at 9 and 10 only
        p.update(2)
        p.update(2)
    assert [r.getMessage().split("  ")[0] for r in caplog.records] == ["eval x: item 10/10"]
    with Progress(10, "eval x", "item", initial=6, every=3) as p:
        p.update(3)
    assert caplog.records[-1].getMessage().startswith("eval x: item 9/10  ")


@contextlib.contextmanager
def _terminal(monkeypatch):
    """stderr taken for a terminal, with a console log handler on it as `harken.cli` sets up."""
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(old)
        root.removeHandler(handler)


def test_bar_on_a_terminal_with_log_lines_above_it(monkeypatch, capsys, caplog):
    caplog.set_level(logging.INFO, "harken.progress")
    with _terminal(monkeypatch), Progress(4, "grpo", "step", every=2) as p:
        for i in range(4):
            p.update(1, {"reward": "0.500"})
            if i == 1:
                logging.getLogger("harken.train.trainer").info("step 2: validation accuracy 0.250")
    err = capsys.readouterr().err
    assert "grpo: " in err and "reward=0.500" in err  # the bar, its postfix
    # the log line on a line of its own: what follows the bar's last carriage return is the record alone
    assert "\rINFO step 2: validation accuracy 0.250\n" in err, repr(err)
    assert "grpo: step 2/4" not in err  # the bar shows those numbers; the lines still reach train.log
    assert [r.getMessage().split("  ")[0] for r in caplog.records if r.name == "harken.progress"] == \
        ["grpo: step 2/4", "grpo: step 4/4"]


def test_bar_turned_off_on_a_terminal_keeps_plain_lines(monkeypatch, capsys):
    with _terminal(monkeypatch), Progress(4, "grpo", "step", bar=False, every=2) as p:
        for _ in range(4):
            p.update(1, {"loss": "1.2000"})
    err = capsys.readouterr().err
    assert "\r" not in err and "|" not in err
    assert [line.split("  ")[0] for line in err.splitlines()] == ["INFO grpo: step 2/4", "INFO grpo: step 4/4"]


# --------------------------------------------------------------------------------------------
# A run with its output redirected (CI)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, preset, labels, extra", [
    ("grpo", "tiny", ("reward", "acc", "kl"), [RANDOM_TOY, "rollout.group_size=2", "rollout.max_new_tokens=4"]),
    ("sft", "tiny-sft", ("loss", "tok_acc"), ["run.eval_every=2", "run.eval_limit=4", "val.limit=4"]),
])
def test_redirected_run_writes_plain_lines(tmp_path, kind, preset, labels, extra):
    """stderr to a file: no carriage return anywhere, one plain line per run.log_every steps (and the last)."""
    out, err = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _cli(["train", kind, "--config", preset, f"run.out_dir={out}", "run.max_steps=5", "run.log_every=2",
                 "run.save_every=3", "run.sample_every=0", "run.tensorboard=false", *extra], err)
    text = err.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    assert "Writing model shards" not in text  # transformers' bar, not ours
    pattern = _line_re(kind, labels)
    steps = [int(m.group(1)) for line in text.splitlines() if (m := pattern.search(line))]
    assert steps == [2, 4, 5], text
    assert len([line for line in text.splitlines() if f"{kind}: step " in line]) == 3
    assert f"{kind}: step 2/5" in (out / "train.log").read_text()


# --------------------------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------------------------


class _OtherProcess:
    """The accelerator of a process that is not the main one."""

    is_main_process = False
    num_processes = 2

    def __init__(self):
        self.waited = False

    def wait_for_everyone(self):
        self.waited = True


def test_synthetic_set_is_made_by_the_main_process_only(tmp_path):
    from harken.data.readers import DatasetConfig
    from harken.train.stream import resolve_dataset

    other = _OtherProcess()
    with pytest.raises((ValueError, OSError)):  # nothing there to read: it only waited for the main process
        resolve_dataset(DatasetConfig(path="synthetic:train"), tmp_path, 0, other)
    assert other.waited and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_two_processes_read_as_one_run(tmp_path):
    """torchrun with 2 processes: each log line once, the synthetic set made once; a refused resume printed once."""
    out = tmp_path / "run"
    common = ["train", "grpo", "--config", "tiny", RANDOM_TOY, f"run.out_dir={out}", "rollout.group_size=2",
              "rollout.prompts_per_step=1", "rollout.max_new_tokens=4", "run.max_steps=2", "run.log_every=1",
              "run.save_every=0", "run.tensorboard=false"]
    err = tmp_path / "stderr.txt"
    proc = _cli(common, err, nproc=2)
    text = err.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    for once in ("synthetic data: 1080 clips", "GRPO: ", "grpo: step 1/2  ", "grpo: step 2/2  ",
                 "per process: trained weights", "all 2 model replicas agree", "done: 2 steps"):
        assert text.count(once) == 1, (once, text)
    assert (out / "data" / "info.json").exists()

    # The same run with another learning rate: refused, the fix named, printed by one process.
    proc = _cli([*common, "optim.lr=0.5"], err, nproc=2)
    text = err.read_text()
    assert proc.returncode != 0
    errors = [line for line in text.splitlines() if line.startswith("harken: error:")]
    assert len(errors) == 1, text
    assert "optim.lr" in errors[0] and "run.resume=never" in errors[0] and "run.out_dir=" in errors[0]

    # Its checkpoint on one process: refused, saying what to do.
    proc = _cli(common, err)
    text = err.read_text()
    assert proc.returncode == 1
    errors = [line for line in text.splitlines() if line.startswith("harken: error:")]
    assert len(errors) == 1 and "written by 2 process(es) and cannot resume on 1" in errors[0], text
    assert "run.resume=never" in errors[0]
