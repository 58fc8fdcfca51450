"""Real-audio QA from Debian packages: clip format, answers, determinism, and skipping when absent."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harken.cli import data as data_cli
from harken.data import realaudio

from harken.data import synth

HAVE = realaudio.available_sources()
needs_any = pytest.mark.skipif(not any(HAVE.values()), reason="no Debian audio package installed (make audio-packages)")


def _hashes(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    if not any(HAVE.values()):
        pytest.skip("no Debian audio package installed")
    out = tmp_path_factory.mktemp("real")
    assert realaudio.make_real(out, seed=0, per_class=1) == out / "test.jsonl"
    return out


def _no(monkeypatch, tmp_path, *which: str) -> None:
    """Make the named sources look uninstalled."""
    if "instrument" in which:
        monkeypatch.setattr(realaudio, "SONIC_PI_DIR", tmp_path / "no-sonic-pi")
    if "system-sound" in which:
        monkeypatch.setattr(realaudio, "FREEDESKTOP_DIR", tmp_path / "no-freedesktop")
    if "spoken-word" in which:
        monkeypatch.setattr(realaudio, "FLITE_BIN", "harken-no-such-flite")


@needs_any
def test_items_are_16k_mono_short_and_answerable(real_dir):
    rows = synth.load_split(real_dir, "test")
    info = json.loads((real_dir / "info.json").read_text())
    tasks = Counter(ex.meta["task"] for ex in rows)
    for task, package in realaudio.PACKAGES.items():
        assert (tasks[task] > 0) == HAVE[package], (task, tasks)
    assert info["counts"] == {**{t: tasks[t] for t in realaudio.PACKAGES}, "total": len(rows)}
    confusable = {
        "instrument": realaudio._confusable_map(realaudio.INSTRUMENT_CONFUSABLE),
        "system-sound": realaudio._confusable_map(realaudio.SYSTEM_SOUND_CONFUSABLE),
        "spoken-word": {},
    }
    for ex in rows:
        x, sr = sf.read(ex.audio, dtype="float32")
        assert sr == 16_000 and x.ndim == 1, ex.id
        assert realaudio.MIN_CLIP_S <= len(x) / sr <= realaudio.MAX_CLIP_S, ex.id
        assert np.abs(x).max() > 1e-3, ex.id  # not silent
        assert ex.meta["dataset"] == "debian-real"
        assert ex.answer in ex.choices and len(set(ex.choices)) == len(ex.choices) == realaudio.N_CHOICES, ex
        # No distractor shares sounds with the answer, so exactly one choice is defensible.
        assert not set(ex.choices) & confusable[ex.meta["task"]].get(ex.answer, frozenset()), ex
        if ex.meta["task"] == "spoken-word":
            assert ex.meta["source"] == ex.answer and set(ex.choices) <= set(realaudio.DIGITS + realaudio.WORDS)
        else:
            assert Path(ex.meta["source"]).is_file(), ex


@needs_any
def test_labels_follow_the_source_names(real_dir):
    for ex in synth.load_split(real_dir, "test"):
        name = Path(ex.meta["source"]).name
        if ex.meta["task"] == "instrument":
            assert realaudio.INSTRUMENT_FAMILIES[name.split("_")[0]] == ex.answer, name
        elif ex.meta["task"] == "system-sound":
            assert realaudio._system_class(name.removesuffix(".oga")) == ex.answer, name


@needs_any
def test_answer_positions_balanced_per_task(real_dir):
    rows = synth.load_split(real_dir, "test")
    for task in realaudio.PACKAGES:
        pos = Counter(ex.answer_index for ex in rows if ex.meta["task"] == task)
        if pos:
            counts = [pos.get(p, 0) for p in range(realaudio.N_CHOICES)]
            assert max(counts) - min(counts) <= 1, (task, counts)


@pytest.mark.skipif(not HAVE["sonic-pi-samples"], reason="sonic-pi-samples not installed")
def test_instrument_answers_balanced(real_dir):
    rows = synth.load_split(real_dir, "test")
    fams = Counter(ex.answer for ex in rows if ex.meta["task"] == "instrument")
    assert set(fams) == set(realaudio.INSTRUMENT_FAMILIES.values()) and set(fams.values()) == {1}


@needs_any
def test_same_seed_same_bytes_other_seed_other_questions(real_dir, tmp_path, monkeypatch, caplog):
    again = tmp_path / "again"
    realaudio.make_real(again, seed=0, per_class=1)
    assert _hashes(again) == _hashes(real_dir)

    # Another seed, flite left out (faster, and exercises skipping one package).
    _no(monkeypatch, tmp_path, "spoken-word")
    other = tmp_path / "other"
    with caplog.at_level(logging.WARNING, logger="harken.data.realaudio"):
        path = realaudio.make_real(other, seed=1, per_class=1)
    if not (HAVE["sonic-pi-samples"] or HAVE["sound-theme-freedesktop"]):
        assert path is None
        return
    assert "flite is not installed" in caplog.text and "apt-get install --no-install-recommends flite" in caplog.text
    rows = synth.load_split(other, "test")
    assert rows and all(ex.meta["task"] != "spoken-word" for ex in rows)
    assert (other / "test.jsonl").read_bytes() != (real_dir / "test.jsonl").read_bytes()
    info = json.loads((other / "info.json").read_text())
    assert info["sources"]["flite"]["available"] is False and info["counts"]["spoken-word"] == 0


def test_nothing_available_returns_none_with_notice(tmp_path, monkeypatch, caplog):
    _no(monkeypatch, tmp_path, "instrument", "system-sound", "spoken-word")
    assert realaudio.available_sources() == {"sonic-pi-samples": False, "sound-theme-freedesktop": False, "flite": False}
    with caplog.at_level(logging.WARNING, logger="harken.data.realaudio"):
        assert realaudio.make_real(tmp_path / "out", seed=0) is None
    for package in ("sonic-pi-samples", "sound-theme-freedesktop", "flite"):
        assert f"{package} is not installed" in caplog.text
    assert "apt-get install --no-install-recommends sonic-pi-samples sound-theme-freedesktop flite" in caplog.text
    assert not (tmp_path / "out" / "test.jsonl").exists()


def test_to_clip_resamples_mixes_and_cuts():
    sr = 48_000
    t = np.arange(int(6 * sr)) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    clip = realaudio.to_clip(stereo.mean(axis=1), sr)
    assert clip.dtype == np.float32 and len(clip) == int(4.5 * 16_000)
    assert abs(float(np.abs(clip[16_000:32_000]).max()) - 0.5) < 0.02  # averaged channels: half amplitude
    assert abs(float(clip[-1])) < 1e-3  # faded out where cut
    short = realaudio.to_clip(np.ones(800, dtype=np.float32) * 0.1, 8_000)  # 0.1 s at 8 kHz
    assert len(short) == 8_000 and short[-1] == 0.0  # padded to 0.5 s at 16 kHz


@pytest.mark.skipif(not HAVE["sound-theme-freedesktop"], reason="sound-theme-freedesktop not installed")
def test_cli_real(tmp_path, monkeypatch, capsys):
    _no(monkeypatch, tmp_path, "instrument", "spoken-word")  # system sounds only: quick
    parser = argparse.ArgumentParser()
    top = parser.add_subparsers()
    data = top.add_parser("data").add_subparsers()
    data_cli.register(top, {"data": data})
    args = parser.parse_args(["data", "real", "--out", str(tmp_path / "r"), "--seed", "3", "--per-class", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "system-sound" in out and "total" in out
    _no(monkeypatch, tmp_path, "system-sound")
    assert args.func(args) == 1
    assert "nothing written" in capsys.readouterr().out


# --- learnable real-audio skills, split by source (real_skills) -------------------------------

needs_all = pytest.mark.skipif(not all(HAVE.values()), reason="needs all three Debian audio packages (make audio-packages)")


def test_split_sources_deals_each_class_to_both_sides_once():
    by_class = {"a": list(range(9)), "b": ["x", "y"], "c": ["only"]}
    sides = realaudio.split_sources(by_class, seed=0, task="t")
    assert set(sides["train"]) == set(sides["test"]) == {"a", "b"}  # one source cannot be on both sides
    assert len(sides["test"]["a"]) == 3 and len(sides["train"]["a"]) == 6  # a third on the test side
    assert len(sides["test"]["b"]) == len(sides["train"]["b"]) == 1
    for label in ("a", "b"):
        assert not set(sides["train"][label]) & set(sides["test"][label])
        assert sorted(sides["train"][label] + sides["test"][label], key=str) == sorted(by_class[label], key=str)
    assert realaudio.split_sources(by_class, seed=0, task="t") == sides
    assert realaudio.split_sources(by_class, seed=1, task="t")["test"]["a"] != sides["test"]["a"]


def _count_events(x: np.ndarray, sr: int = 16_000) -> int:
    """Sounding stretches separated by at least 150 ms of near-silence (10 ms frames)."""
    hop = sr // 100
    env = np.sqrt(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    active = env > 0.05 * env.max()
    events, quiet = 0, 99
    for a in active:
        if a:
            events += quiet >= 15
            quiet = 0
        else:
            quiet += 1
    return events


@needs_all
def test_real_skills_write_answerable_clips_from_their_side_only(tmp_path):
    sources = {}
    for side in realaudio.SIDES:
        skills = realaudio.real_skills(side, seed=0)
        assert list(skills) == list(realaudio.REAL_SKILL_PACKAGES)
        path = synth.make_questions(tmp_path, side, 36, 0, list(skills.values()), synth.Style(n_choices=(2, 3, 4)))
        rows = synth.load_split(path)
        assert Counter(ex.meta["task"] for ex in rows) == {name: 12 for name in skills}
        for ex in rows:
            x, sr = sf.read(ex.audio, dtype="float32")
            assert sr == 16_000 and x.ndim == 1 and len(x) / sr <= realaudio.MAX_CLIP_S, ex.id
            assert ex.meta["dataset"] == "debian-real" and ex.answer in ex.choices
            task = ex.meta["task"]
            if task == "drum":
                stem = Path(ex.meta["source"]).stem
                assert any(fnmatch.fnmatchcase(stem, p) for p in realaudio.DRUM_PIECES[ex.answer]), ex
            else:
                assert _count_events(x) == realaudio.COUNTS.index(ex.answer) + 1, ex
                assert ex.meta["plays" if task == "alert-count" else "words"] == realaudio.COUNTS.index(ex.answer) + 1
        sources[side] = {(ex.meta["task"], s) for ex in rows for s in
                         (ex.meta["source"].split() if ex.meta["task"] == "word-count" else [ex.meta["source"]])}
    assert not sources["train"] & sources["test"]  # no sample file, alert file or spoken word on both sides


@needs_all
def test_real_skills_same_seed_same_bytes(tmp_path):
    for folder in ("a", "b"):
        synth.make_questions(tmp_path / folder, "t", 9, 3, list(realaudio.real_skills("test", seed=3).values()))
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_real_skills_leave_out_a_missing_package(tmp_path, monkeypatch, caplog):
    _no(monkeypatch, tmp_path, "instrument", "spoken-word")
    with caplog.at_level(logging.WARNING, logger="harken.data.realaudio"):
        skills = realaudio.real_skills("train", seed=0)
    assert list(skills) == (["alert-count"] if HAVE["sound-theme-freedesktop"] else [])
    assert "sonic-pi-samples is not installed; the drum skill is left out" in caplog.text
    assert "apt-get install --no-install-recommends flite" in caplog.text
    with pytest.raises(ValueError, match="side must be one of train, test"):
        realaudio.real_skills("val")
