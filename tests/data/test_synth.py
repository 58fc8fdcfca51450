"""Synthetic audio QA: determinism, balance, and labels checked against the audio itself."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harken.cli import data as data_cli
from harken.data import synth
from harken.data.records import Example
from harken.io import iter_jsonl

SR = synth.SAMPLE_RATE
COUNTS = dict(n_train=120, n_test=48, n_warmup=24)  # 20 / 8 / 4 per skill: quick, still balanced


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.make_synthetic(out, seed=0, **COUNTS)
    return out


@pytest.fixture(scope="module")
def splits(data_dir) -> dict[str, list[Example]]:
    return {s: synth.load_split(data_dir, s) for s in synth.SPLITS}


def _hashes(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _read(ex: Example) -> np.ndarray:
    x, sr = sf.read(ex.audio, dtype="float32")
    assert sr == SR and x.ndim == 1, ex.id
    return x


# --- audio analysis, independent of the generator --------------------------------------------

HOP = 160  # 10 ms frames


def _envelope(x: np.ndarray) -> np.ndarray:
    n = len(x) // HOP
    return np.sqrt(np.mean(x[: n * HOP].reshape(n, HOP) ** 2, axis=1))


def _segments(x: np.ndarray) -> list[tuple[int, int]]:
    """Sounding stretches (sample ranges): frames above 5x the noise floor, 30 ms+ long."""
    env = _envelope(x)
    thr = max(5 * np.percentile(env, 5), 3e-3)
    active = np.concatenate([[False], env > thr, [False]])
    edges = np.flatnonzero(np.diff(active.astype(int)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 3]
    return [(a * HOP, b * HOP) for a, b in runs]


def _peak_hz(seg: np.ndarray) -> float:
    nfft = 1 << max(12, int(np.ceil(np.log2(4 * len(seg)))))  # zero-padded: finer peak location
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=nfft))
    return float(np.argmax(spec) * SR / nfft)


def _rms_db(seg: np.ndarray) -> float:
    mid = seg[len(seg) // 4 : 3 * len(seg) // 4]
    return float(20 * np.log10(np.sqrt(np.mean(mid**2))))


def _waveform(seg: np.ndarray) -> str:
    """sine / square / sawtooth / noise from spectral flatness and harmonic amplitudes."""
    nfft = 1 << 15
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=nfft))
    band = spec[int(100 * nfft / SR) : int(7000 * nfft / SR)] ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(band))) / np.mean(band)
    if flatness > 0.2:
        return "noise"
    k0 = int(np.argmax(spec))

    def amp(h: int) -> float:
        c = h * k0
        return float(spec[c - 10 : c + 11].max()) / float(spec[k0]) if c + 11 < len(spec) else 0.0

    a2, a3 = amp(2), amp(3)
    if a2 > 0.3:
        return "sawtooth"  # 1/2 at the 2nd harmonic
    if a3 > 0.2:
        return "square"  # odd harmonics only: 1/3 at the 3rd
    assert a2 < 0.05 and a3 < 0.05, (a2, a3)
    return "sine"


def _sweep_direction(seg: np.ndarray) -> str:
    n = 512
    frames = [seg[i : i + n] for i in range(0, len(seg) - n, n // 2)]
    peaks = [_peak_hz(f) for f in frames]
    q = max(1, len(peaks) // 4)
    return "rising" if np.mean(peaks[-q:]) > np.mean(peaks[:q]) else "falling"


# --- tests -----------------------------------------------------------------------------------


def test_labels_match_the_audio(splits):
    checked = Counter()
    for ex in [e for rows in splits.values() for e in rows]:
        x = _read(ex)
        segs = _segments(x)
        task = ex.meta["task"]
        parts = [x[a:b] for a, b in segs]
        if task == "count":
            assert len(segs) == ex.meta["n_beeps"] == ("one", "two", "three", "four").index(ex.answer) + 1, ex
        elif task == "pitch":
            assert len(parts) == 2, ex
            f1, f2 = _peak_hz(parts[0]), _peak_hz(parts[1])
            assert max(f1, f2) / min(f1, f2) > 1.4, ex
            assert ex.answer == ("higher" if f2 > f1 else "lower"), ex
        elif task == "loudness":
            assert len(parts) == 2, ex
            l1, l2 = _rms_db(parts[0]), _rms_db(parts[1])
            assert abs(l2 - l1) > 10, ex
            assert ex.answer == ("louder" if l2 > l1 else "softer"), ex
        elif task == "duration":
            assert len(segs) == 2, ex
            d1, d2 = (b - a for a, b in segs)
            assert max(d1, d2) / min(d1, d2) > 1.7, ex
            assert ex.answer == ("longer" if d2 > d1 else "shorter"), ex
        elif task == "timbre":
            assert len(parts) == 1, ex
            assert _waveform(parts[0]) == ex.answer == ex.meta["waveform"], ex
        elif task == "sweep":
            assert len(parts) == 1, ex
            assert _sweep_direction(parts[0]) == ex.answer, ex
        checked[task] += 1
    assert set(checked) == set(synth.SKILLS)


def test_records_shape_and_clip_format(splits, data_dir):
    ids = set()
    for split, rows in splits.items():
        assert len(rows) == COUNTS[f"n_{split}"]
        for ex in rows:
            assert ex.id.startswith(f"synth-{split}-") and ex.id not in ids
            ids.add(ex.id)
            skill = synth.SKILLS[ex.meta["task"]]
            assert ex.answer in ex.choices and len(set(ex.choices)) == len(ex.choices) == skill.n_choices
            assert set(ex.choices) <= set(skill.values)
            assert ex.meta["dataset"] == "synthetic" and ex.meta["split"] == split
            assert Path(ex.audio) == (data_dir / "audio" / f"{ex.id}.wav").resolve()
            info = sf.info(ex.audio)
            assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
            assert synth.MIN_CLIP_S - 1e-3 <= info.duration <= synth.MAX_CLIP_S
    # The JSON lines hold paths relative to the folder, so the files do not depend on where they are.
    _, row = next(iter_jsonl(data_dir / "train.jsonl"))
    assert row["audio"] == f"audio/{row['id']}.wav"
    info = json.loads((data_dir / "info.json").read_text())
    assert info["seed"] == 0 and info["sample_rate"] == SR and info["version"] == synth.GENERATOR_VERSION
    assert info["counts"]["train"] == {**{s: 20 for s in synth.SKILLS}, "total": 120}


def test_answers_and_positions_are_balanced(splits):
    for split, rows in splits.items():
        by_skill = defaultdict(list)
        for ex in rows:
            by_skill[ex.meta["task"]].append(ex)
        for name, skill in synth.SKILLS.items():
            exs = by_skill[name]
            values = Counter(ex.answer for ex in exs)
            positions = Counter(ex.answer_index for ex in exs)
            if len(exs) >= len(skill.values):
                assert set(values) == set(skill.values), (split, name, values)
            assert max(values.values()) - min(values.get(v, 0) for v in skill.values) <= 1, (split, name, values)
            pos = [positions.get(p, 0) for p in range(skill.n_choices)]
            assert max(pos) - min(pos) <= 2, (split, name, pos)


def test_question_text_alone_does_not_give_the_answer(splits):
    rows = splits["train"] + splits["warmup"] + splits["test"]
    for name, skill in synth.SKILLS.items():
        answers_by_question = defaultdict(Counter)
        for ex in rows:
            if ex.meta["task"] == name:
                answers_by_question[ex.question][ex.answer] += 1
        assert len(answers_by_question) >= 2, name  # several phrasings are in use
        for question, answers in answers_by_question.items():
            if sum(answers.values()) >= 6:
                assert len(answers) >= 2, (name, question, answers)
        # No phrasing names one option without the others (count: no number word at all).
        for q in skill.questions:
            named = [v for v in skill.values if v in q.lower().split() or f"{v}?" in q.lower()]
            assert named in ([], list(skill.values)), (q, named)


def test_same_seed_same_bytes_other_seed_other_data(data_dir, tmp_path):
    again = tmp_path / "again"
    synth.make_synthetic(again, seed=0, **COUNTS)
    assert _hashes(again) == _hashes(data_dir)

    other = tmp_path / "other"
    synth.make_synthetic(other, seed=1, **COUNTS)
    h0, h1 = _hashes(data_dir), _hashes(other)
    assert h0.keys() == h1.keys()
    assert h0["train.jsonl"] != h1["train.jsonl"]
    assert not set(v for k, v in h0.items() if k.endswith(".wav")) & set(v for k, v in h1.items() if k.endswith(".wav"))


def test_splits_share_no_clip(splits):
    seen: dict[str, str] = {}
    for split, rows in splits.items():
        for ex in rows:
            digest = hashlib.sha256(_read(ex).tobytes()).hexdigest()
            assert digest not in seen, (ex.id, seen.get(digest))
            seen[digest] = ex.id


def test_rerun_with_fewer_items_leaves_no_stale_clips(tmp_path):
    synth.make_synthetic(tmp_path, seed=3, n_train=12, n_test=6, n_warmup=0)
    synth.make_synthetic(tmp_path, seed=3, n_train=6, n_test=0, n_warmup=0, skills="pitch,count")
    wavs = sorted(p.stem for p in (tmp_path / "audio").glob("*.wav"))
    assert wavs == [f"synth-train-{i:06d}" for i in range(6)]
    rows = synth.load_split(tmp_path, "train")
    assert Counter(ex.meta["task"] for ex in rows) == {"count": 3, "pitch": 3}
    assert synth.load_split(tmp_path, "test") == []


def test_unknown_skill_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic skill.*'chords'.*choose from: count"):
        synth.make_synthetic(tmp_path, skills=["pitch", "chords"])
    with pytest.raises(ValueError, match=">= 0"):
        synth.make_synthetic(tmp_path, n_test=-1)


def test_balanced_plan_pairs_each_value_with_each_position():
    rng = np.random.default_rng(0)
    plan = synth.balanced_plan(40, 5, 4, rng)  # 5 values, 4 choices: two full blocks of 20
    assert Counter(plan) == {(v, p): 2 for v in range(5) for p in range(4)}


def test_cli_synth(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    top = parser.add_subparsers()
    data = top.add_parser("data").add_subparsers()
    data_cli.register(top, {"data": data})
    argv = ["data", "synth", "--out", str(tmp_path), "--seed", "2", "--train", "8", "--test", "4", "--warmup", "2"]
    args = parser.parse_args(argv + ["--skills", "sweep,timbre"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "sweep" in out and "timbre" in out and "train" in out
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["counts"]["train"] == {"timbre": 4, "sweep": 4, "total": 8}
    assert info["seed"] == 2


# --- question sets asked in a chosen style (make_questions) -----------------------------------

NARROW = synth.Style(phrasings=(0,), n_choices=(3,), order="canonical")


def test_narrow_style_one_phrasing_three_options_in_value_order(tmp_path):
    rows = synth.load_split(synth.make_questions(tmp_path, "narrow", 24, 0, ["count", "timbre"], NARROW))
    assert Counter(ex.meta["task"] for ex in rows) == {"count": 12, "timbre": 12}
    for ex in rows:
        skill = synth.SKILLS[ex.meta["task"]]
        assert ex.question == skill.questions[0]
        assert len(ex.choices) == 3 and ex.answer in ex.choices
        assert ex.choices == [v for v in skill.values if v in ex.choices], ex  # e.g. one, two, four
        assert ex.id.startswith("narrow-") and Path(ex.audio).name == f"{ex.id}.wav"
    assert Counter(ex.answer for ex in rows if ex.meta["task"] == "count") == {w: 3 for w in ("one", "two", "three", "four")}


def test_broad_style_draws_every_phrasing_and_option_count(tmp_path):
    rows = synth.load_split(synth.make_questions(tmp_path, "broad", 96, 1, ["count", "timbre"], synth.Style(n_choices=(2, 3, 4)),
                                                 meta={"category": "mix"}))
    for name in ("count", "timbre"):
        exs = [ex for ex in rows if ex.meta["task"] == name]
        assert {ex.question for ex in exs} == set(synth.SKILLS[name].questions)
        assert {len(ex.choices) for ex in exs} == {2, 3, 4}
        assert len({ex.answer_index for ex in exs}) == 4  # the answer is not always in the same place
    assert {ex.meta["category"] for ex in rows} == {"mix"}
    # rephrased: every phrasing but the first; an index a skill lacks (timbre has 3) is left out for it
    rows = synth.load_split(synth.make_questions(tmp_path, "rephrased", 48, 1, ["count", "timbre"],
                                                 synth.Style(phrasings=(1, 2, 3), n_choices=(3,))))
    assert {ex.question for ex in rows if ex.meta["task"] == "count"} == set(synth.SKILLS["count"].questions[1:])
    assert {ex.question for ex in rows if ex.meta["task"] == "timbre"} == set(synth.SKILLS["timbre"].questions[1:])


def test_question_sets_are_deterministic_and_distinct(tmp_path):
    a = synth.make_questions(tmp_path / "a", "set", 12, 0, ["count"], NARROW)
    b = synth.make_questions(tmp_path / "b", "set", 12, 0, ["count"], NARROW)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b") and a.read_bytes() == b.read_bytes()
    c = synth.make_questions(tmp_path / "a", "other", 12, 0, ["count"], NARROW)  # same seed, other set: other clips
    clips = lambda p: {hashlib.sha256(_read(ex).tobytes()).hexdigest() for ex in synth.load_split(p)}  # noqa: E731
    assert not clips(a) & clips(c)


def test_register_tones_lie_in_their_band(tmp_path):
    rows = synth.load_split(synth.make_questions(tmp_path, "reg", 12, 0, ["register"]))
    assert Counter(ex.answer for ex in rows) == {"low": 4, "middle": 4, "high": 4}
    for ex in rows:
        (a, b), = _segments(_read(ex))
        lo, hi = synth.REGISTER_BANDS[ex.answer]
        assert lo * 0.97 <= _peak_hz(_read(ex)[a:b]) <= hi * 1.03, ex


def test_make_questions_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic skill.*'chords'"):
        synth.make_questions(tmp_path, "x", 4, 0, ["chords"])
    with pytest.raises(ValueError, match="question set name 'a b'"):
        synth.make_questions(tmp_path, "a b", 4, 0, ["count"])
    with pytest.raises(ValueError, match="'shuffled' or 'canonical'"):
        synth.make_questions(tmp_path, "x", 4, 0, ["count"], synth.Style(order="sorted"))
    with pytest.raises(ValueError, match="skill 'timbre' has 3 phrasings; none of \\[5\\]"):
        synth.make_questions(tmp_path, "x", 4, 0, ["timbre"], synth.Style(phrasings=(5,)))
    with pytest.raises(ValueError, match=">= 0"):
        synth.make_questions(tmp_path, "x", -1, 0, ["count"])
