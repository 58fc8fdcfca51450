"""Failing loudly without losing work: non-finite training stops with the last good checkpoint
(or, with optim.on_nonfinite=skip, drops that step's update, counted, on every process alike), bad settings and bad paths end in one-line errors, resumes refuse changed settings, metrics are
cut back to the resumed step."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harken.cli import main
from harken.io import PathError, describe_os_error

QUIET = ["run.progress=false", "run.tensorboard=false"]


def _error(capsys) -> str:
    """The one `harken: error:` line of a failed command (no traceback on stderr)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("harken: error:")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("harken: error: ")


def _finite_checkpoint(ckpt: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(ckpt / "trainable.safetensors")).values())


# --------------------------------------------------------------------------------------------
# Non-finite training
# --------------------------------------------------------------------------------------------


def _assert_stopped_with_finite_checkpoint(msg: str, out: Path) -> None:
    assert msg.startswith("non-finite loss at step "), msg
    last = Path(msg.split("; last good checkpoint: ")[1])
    assert last.parent == out / "checkpoints" and last.is_dir()
    assert [p.name for p in (out / "checkpoints").iterdir()] == [last.name]  # keep_last=1 kept the good one
    assert _finite_checkpoint(last)
    assert not (out / "final").exists()
    step = int(msg.split()[4].rstrip(";"))
    assert max(json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()) == step - 1


def test_sft_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, synth_dir, capsys):
    out = tmp_path / "sft"
    rc = main(["train", "sft", "--config", "tiny-sft", f"run.out_dir={out}", f"data.path={synth_dir / 'train.jsonl'}",
               "val.path=", "optim.lr=1e3", "optim.warmup_steps=0", "run.max_steps=30", "run.save_every=1",
               "run.keep_last=1", "run.sample_every=0", *QUIET])
    assert rc == 1
    _assert_stopped_with_finite_checkpoint(_error(capsys), out)


def test_grpo_non_finite_sampling_stops_and_keeps_the_last_good_checkpoint(tmp_path, synth_dir, capsys):
    out = tmp_path / "grpo"
    rc = main(["train", "grpo", "--config", "tiny", f"run.out_dir={out}", f"data.path={synth_dir / 'train.jsonl'}",
               "optim.lr=1e8", "optim.max_grad_norm=0", "rollout.group_size=3", "rollout.max_new_tokens=6",
               "run.max_steps=10", "run.save_every=1", "run.keep_last=1", "run.sample_every=0",
               "reward.rewards=[{name: test_grpo:length_reward, weight: 1.0}]", *QUIET])
    assert rc == 1
    _assert_stopped_with_finite_checkpoint(_error(capsys), out)


def _nonfinite_run(out: Path, data: Path, bad_step: int, on_nonfinite: str):
    from nonfinite_step import make_trainer

    return make_trainer(str(out), str(data / "train.jsonl"), bad_step, on_nonfinite)


def test_a_nan_gradient_stops_before_the_update(tmp_path, synth_dir):
    from harken.train.optim import NonFiniteError
    from nonfinite_step import optimizer_steps

    trainer = _nonfinite_run(tmp_path / "stop", synth_dir, 2, "stop")
    with pytest.raises(NonFiniteError, match="non-finite loss at step 2; last good checkpoint: none"):
        trainer.train()
    assert optimizer_steps(trainer) == 1 and trainer.scheduler.last_epoch == 1
    assert all(torch.isfinite(p).all() for p in trainer.params)


def test_skip_drops_a_nan_step_and_counts_it(tmp_path, synth_dir):
    from nonfinite_step import optimizer_steps

    out = tmp_path / "skip"
    trainer = _nonfinite_run(out, synth_dir, 2, "skip")
    trainer.train()  # no error: step 2 is skipped, step 3 trains
    assert optimizer_steps(trainer) == 2 and trainer.scheduler.last_epoch == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [0, 1, 1]
    assert [r["grad_norm"] is None for r in rows] == [False, True, False]  # NaN is written as null
    assert _finite_checkpoint(out / "checkpoints" / "step-000003")
    # The count goes on after a resume (a fourth step, from the step-3 checkpoint).
    assert main(["train", "sft", "--config", "tiny-sft", f"run.out_dir={out}", f"data.path={synth_dir / 'train.jsonl'}",
                 "val.path=", "run.max_steps=4", "run.save_every=0", "run.sample_every=0", "run.eval_every=0",
                 "optim.warmup_steps=0", "optim.on_nonfinite=skip", *QUIET]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [0, 1, 1, 1]


def test_skip_with_a_huge_rate_keeps_the_weights_finite(tmp_path, synth_dir):
    """lr 1e3 blows the gradients up from the second step on (which stops the run by default); skipping,
    every such step is dropped and the run ends with the last finite weights."""
    out = tmp_path / "sft"
    assert main(["train", "sft", "--config", "tiny-sft", f"run.out_dir={out}", f"data.path={synth_dir / 'train.jsonl'}",
                 "val.path=", "optim.lr=1e3", "optim.warmup_steps=0", "optim.on_nonfinite=skip", "run.max_steps=5",
                 "run.save_every=0", "run.sample_every=0", *QUIET]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in rows if r["grad_norm"] is None]
    assert skipped and rows[-1]["train/skipped_steps"] == len(skipped)
    assert _finite_checkpoint(out / "checkpoints" / "step-000005")
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "final" / "model.safetensors")).values())


@pytest.mark.slow
def test_two_processes_skip_the_same_step(tmp_path, synth_dir):
    """A NaN gradient on process 1 only: averaged, it is NaN on both, and both skip that step (no hang;
    the run's end checks that the replicas agree)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    script = Path(__file__).parent / "nonfinite_step.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path), str(synth_dir / "train.jsonl"), "2", "skip", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained steps=3 optimizer_steps=2 scheduler_steps=2 finite=True" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [0, 1, 1]


def test_on_nonfinite_is_checked(capsys):
    assert main(["train", "grpo", "--print-config", "optim.on_nonfinite=ignore"]) == 2
    assert _error(capsys) == "optim.on_nonfinite='ignore' is not one of: stop, skip"


# --------------------------------------------------------------------------------------------
# One-line errors: settings, paths, a full disk, a corrupt checkpoint
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, override, key", [
    ("grpo", "rollout.prompts_per_step=0", "rollout.prompts_per_step"),
    ("grpo", "optim.grad_accum=0", "optim.grad_accum"),
    ("grpo", "run.log_every=0", "run.log_every"),
    ("grpo", "rollout.max_new_tokens=0", "rollout.max_new_tokens"),
    ("grpo", "rollout.top_p=0", "rollout.top_p"),
    ("grpo", "rollout.top_p=1.5", "rollout.top_p"),
    ("grpo", "optim.lr=-1", "optim.lr"),
    ("grpo", "optim.lr=0", "optim.lr"),
    ("grpo", "run.max_steps=-5", "run.max_steps"),
    ("grpo", "run.max_steps=0", "run.max_steps"),
    ("sft", "run.max_steps=-5", "run.max_steps"),
    ("sft", "train.batch_size=0", "train.batch_size"),
    ("grpo", "run.resume_changed=maybe", "run.resume_changed"),
])
def test_bad_settings_name_the_key(capsys, kind, override, key):
    assert main(["train", kind, "--print-config", override]) == 2
    assert _error(capsys).startswith(key)


def test_an_empty_value_is_the_empty_string(capsys):
    assert main(["train", "grpo", "--print-config", "val.path="]) == 0
    assert "path: ''" in capsys.readouterr().out


def _grpo(out: Path, data: Path, *overrides: str) -> list[str]:
    return ["train", "grpo", "--config", "tiny", f"run.out_dir={out}", f"data.path={data / 'train.jsonl'}",
            "rollout.group_size=3", "rollout.max_new_tokens=6", "run.max_steps=1", "run.sample_every=1",
            "reward.rewards=[{name: test_grpo:length_reward, weight: 1.0}]", *QUIET, *overrides]


def test_path_problems_are_one_line(tmp_path, synth_dir, tiny_dirs, capsys):
    missing = tmp_path / "no-such-model"
    assert main(_grpo(tmp_path / "a", synth_dir, f"model.path={missing}")) == 1
    msg = _error(capsys)
    assert str(missing) in msg and "tiny:FAMILY" in msg
    # A model folder without its tokenizer.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dirs["qwen2-audio"], bare)
    for f in bare.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens", "vocab", "merges", "added_tokens")):
            f.unlink()
    assert main(_grpo(tmp_path / "b", synth_dir, f"model.path={bare}")) == 1
    assert _error(capsys).startswith(f"tokenizer missing in {bare}")
    # An output folder whose parent is a file.
    (tmp_path / "a-file").write_text("x")
    assert main(_grpo(tmp_path / "a-file" / "run", synth_dir)) == 1
    msg = _error(capsys)
    assert str(tmp_path / "a-file" / "run") in msg and "run.out_dir" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_run_folder_is_one_line(tmp_path, synth_dir, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(_grpo(ro, synth_dir)) == 1
    finally:
        ro.chmod(0o755)
    msg = _error(capsys)
    assert str(ro) in msg and "ermission denied" in msg


def test_os_errors_are_described_with_the_path_and_what_to_do():
    e = PermissionError(errno.EACCES, "Permission denied", "/data/run")
    assert describe_os_error(e) == ("/data/run: Permission denied (permission denied: make it writable (readable) "
                                    "for this user or choose another folder)")
    assert "free some space" in describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert describe_os_error(PathError("model /m: no such folder")) == "model /m: no such folder"


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


def test_a_full_disk_during_a_checkpoint_is_one_line(tmp_path, synth_dir, warm_toy):  # the toy built before the limit
    out = tmp_path / "full"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "harken.cli", *_grpo(out, synth_dir, "run.sample_every=0")],
                       capture_output=True, text=True, preexec_fn=_limit_file_size, env=env, timeout=600)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("harken: error:")]
    assert f"could not write checkpoint {out / 'checkpoints' / 'step-000001'}" in line and "--resume" in line
    assert list((out / "checkpoints").iterdir()) == []  # no half-written folder left behind
    assert not (out / "final").exists()


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, synth_dir, capsys, caplog):
    caplog.set_level(logging.INFO, logger="harken")
    out = tmp_path / "run"
    assert main(_grpo(out, synth_dir, "run.max_steps=2", "run.save_every=1")) == 0
    bad = out / "checkpoints" / "step-000002" / "trainable.safetensors"
    bad.write_bytes(bad.read_bytes()[:100])
    # Given explicitly, the checkpoint is an error naming the bad file.
    assert main(_grpo(tmp_path / "other", synth_dir, "run.max_steps=3", f"run.resume={bad.parent}")) == 1
    assert _error(capsys).startswith(f"checkpoint file {bad} does not load")
    # Found by run.resume=auto, it is skipped (logged) for the one before.
    capsys.readouterr()
    assert main(_grpo(out, synth_dir, "run.max_steps=3")) == 0
    assert f"checkpoint file {bad} does not load" in caplog.text
    assert f"falling back to {out / 'checkpoints' / 'step-000001'}" in caplog.text
    assert "resumed from" in caplog.text and "at step 1" in caplog.text
    assert _steps(out / "metrics.jsonl") == [1, 2, 3]
    assert _steps(out / "samples.jsonl") == [1, 2, 3]


def _steps(path: Path) -> list[int]:
    return sorted({json.loads(line)["step"] for line in path.read_text().splitlines()})


# --------------------------------------------------------------------------------------------
# Resume: changed settings, metrics cut back to the resumed step
# --------------------------------------------------------------------------------------------


def test_resume_refuses_changed_settings_unless_told(tmp_path, synth_dir, capsys):
    out = tmp_path / "run"
    common = ("optim.schedule=constant", "optim.lr=1e-3")
    assert main(_grpo(out, synth_dir, *common)) == 0
    assert (out / "checkpoints" / "step-000001" / "config.yaml").exists()
    changed = _grpo(out, synth_dir, "optim.schedule=constant", "optim.lr=1e-4", "run.max_steps=2")
    assert main(changed) == 2
    msg = _error(capsys)
    assert "optim.lr: 0.001 -> 0.0001" in msg and "run.resume_changed=warn" in msg and "max_steps" not in msg
    # Allowed, the run continues with the new rate (not the checkpoint's).
    assert main(changed + ["run.resume_changed=warn"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["lr"] == 1e-3 and rows[1]["lr"] == 1e-4
    # Exempt keys (length, folder, logging) may change freely: into another folder, to a later step.
    assert main(_grpo(tmp_path / "branch", synth_dir, *common, "run.max_steps=2", "run.save_every=5",
                      f"run.resume={out / 'checkpoints' / 'step-000001'}")) == 0


def test_a_run_killed_before_its_first_checkpoint_starts_clean(tmp_path, synth_dir):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("metrics.jsonl", "samples.jsonl"):  # rows of a run killed at step 3, before any checkpoint
        (out / name).write_text("".join(json.dumps({"step": s, "x": 1}) + "\n" for s in (1, 2, 3)))
    assert main(_grpo(out, synth_dir, "run.max_steps=2")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all("x" not in r for r in rows)
    assert _steps(out / "samples.jsonl") == [1, 2]


# --------------------------------------------------------------------------------------------
# Files: the umask's permissions, whole folders replaced
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umasks_permissions(tmp_path, umask, mode):
    from harken.io import atomic_save, write_json_atomic

    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        atomic_save(tmp_path / "b.bin", lambda p: Path(p).write_bytes(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_saved_models_get_the_umasks_permissions(tmp_path, umask, mode):
    """safetensors writes its file 0600 whatever the umask; a saved model folder must not keep that."""
    from harken.models.toy import build_tiny

    old = os.umask(umask)
    try:
        build_tiny("qwen2-audio", tmp_path / "model", seed=0)
    finally:
        os.umask(old)
    files = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "model").iterdir()}
    assert "model.safetensors" in files and set(files.values()) == {mode}, files


def test_replace_folder_swaps_a_whole_folder(tmp_path):
    from harken.io import replace_folder

    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old.txt").write_text("old")
    (tmp_path / ".tmp" / "sub").mkdir(parents=True)
    (tmp_path / ".tmp" / "sub" / "new.txt").write_text("new")
    replace_folder(tmp_path / ".tmp", tmp_path / "final")
    assert [p.name for p in (tmp_path / "final").rglob("*")] == ["sub", "new.txt"]
    assert not (tmp_path / ".tmp").exists()


# --------------------------------------------------------------------------------------------
# Bad clips: checked at start, skipped and counted with data.skip_bad
# --------------------------------------------------------------------------------------------


def _bad_clip_set(tmp_path: Path, synth_dir: Path, *kinds: str) -> Path:
    """Six items of the synthetic set with their clips copied; the first len(kinds) made bad."""
    import numpy as np
    import soundfile as sf

    out = tmp_path / "bad-clips"
    (out / "audio").mkdir(parents=True)
    rows = [json.loads(line) for line in (synth_dir / "train.jsonl").read_text().splitlines()[:6]]
    for row in rows:
        shutil.copy(synth_dir / row["audio"], out / row["audio"])
    for row, kind in zip(rows, kinds):
        clip = out / row["audio"]
        if kind == "missing":
            clip.unlink()
        elif kind == "corrupt":
            clip.write_bytes(b"RIFF not a wave file at all")
        elif kind == "nan":  # a good header, NaN samples: found only when decoded
            sf.write(clip, np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_a_bad_clip_is_found_at_start_and_named(tmp_path, synth_dir, capsys):
    data = _bad_clip_set(tmp_path, synth_dir, "good", "corrupt")
    assert main(_grpo(tmp_path / "run", data)) == 1
    msg = _error(capsys)
    assert msg.startswith(f"{data / 'train.jsonl'}: item 'synth-train-000001': clip {data / 'audio'}")
    assert "data.skip_bad=true" in msg
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # before the first step


def test_a_clip_failing_to_decode_is_named(tmp_path, synth_dir, capsys):
    data = _bad_clip_set(tmp_path, synth_dir, "nan")
    assert main(_grpo(tmp_path / "run", data, "run.max_steps=3")) == 1
    msg = _error(capsys)
    assert msg.startswith(f"{data / 'train.jsonl'}: item 'synth-train-000000': clip ") and "NaN" in msg


def test_skip_bad_skips_clips_failing_at_start_or_when_decoded(tmp_path, synth_dir):
    data = _bad_clip_set(tmp_path, synth_dir, "missing", "corrupt", "nan")
    out = tmp_path / "run"
    assert main(_grpo(out, data, "run.max_steps=3", "data.skip_bad=true")) == 0
    skipped = json.loads((out / "run.json").read_text())["skipped_clips"]
    assert skipped["at_start"] == {"missing_audio": 1, "corrupt_audio": 1}
    assert skipped["when_decoded"]["nonfinite_audio"] >= 1
