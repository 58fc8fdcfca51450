"""AVQA preparation, split and stats, on tiny videos made here with PyAV.

Videos (1.5 s, a different tone per video so a mixed-up clip is caught):
  tone_mp4   mp4  + aac      44.1 kHz mono    440 Hz   (2 questions share it)
  tone_mkv   mkv  + mp3      22.05 kHz mono   660 Hz   (in a subfolder)
  tone_webm  webm + opus     48 kHz stereo    880 Hz   (L 0.6, R 0.2 -> mean 0.4)
  am_avi     avi  + pcm_s16  22.05 kHz stereo 1000 Hz, amplitude-modulated (lossless: correlation)
  tone_mov   mov  + aac      48 kHz mono      550 Hz   (video_name given with its extension)
  silent_mp4 mp4, video only                            -> no-audio-track
  cut_mp4    mp4 cut to half its bytes (index lost)     -> unreadable
  cut_mkv    mkv cut to half its bytes (decodes 0.7 s)  -> unreadable (truncated)
  ghost      no file                                    -> missing
"""

from __future__ import annotations

import hashlib
import fractions
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from harken.data import avqa, split, stats
from harken.data.readers import load_examples
from harken.data.records import Example
from harken.io import iter_jsonl

SECONDS = 1.5
SR = 16000


def _am(t: np.ndarray, freq: float) -> np.ndarray:
    """A 'spoken-style' signal: a tone whose loudness swells at 3 Hz."""
    return (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * freq * t)


def make_video(path: Path, *, acodec: str | None, rate: int = 44100, amps=(0.5,), freq: float = 440.0,
               am: bool = False, vcodec: str = "mpeg4") -> np.ndarray | None:
    """Write a tiny video with an optional tone track; returns the per-channel signal [C, n]."""
    channels = len(amps)
    sig = None
    with av.open(str(path), "w") as c:
        vs = c.add_stream(vcodec, rate=5)
        vs.width, vs.height, vs.pix_fmt = 16, 16, "yuv420p"
        if acodec:
            layout = "stereo" if channels == 2 else "mono"
            a = c.add_stream(acodec, rate=rate, layout=layout)
            t = np.arange(int(SECONDS * rate)) / rate
            base = _am(t, freq) if am else np.sin(2 * np.pi * freq * t)
            sig = np.stack([amp * base for amp in amps]).astype(np.float32)  # [C, n]
        for i in range(int(SECONDS * 5)):
            fr = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 20 * i, np.uint8), format="rgb24")
            fr.pts = i
            for p in vs.encode(fr):
                c.mux(p)
        if acodec:
            fmt = a.codec_context.format.name
            for pos in range(0, sig.shape[1], 1024):
                chunk = sig[:, pos:pos + 1024]
                if not a.codec_context.format.is_planar:
                    chunk = chunk.T.reshape(1, -1)
                if fmt.startswith("s16"):
                    chunk = (chunk * 32767).astype(np.int16)
                elif fmt.startswith("s32"):
                    chunk = (chunk * 2**31 * 0.999).astype(np.int32)
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
                fr.sample_rate, fr.pts, fr.time_base = rate, pos, fractions.Fraction(1, rate)
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    return sig


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


TONES = {"tone_mp4": 440.0, "tone_mkv": 660.0, "tone_webm": 880.0, "am_avi": 1000.0, "tone_mov": 550.0}


def _item(i: int, video_name: str, q: str = "What is making the sound in the video?", answer: int = 1) -> dict:
    return {
        "id": 1000 + i,
        "video_name": video_name,
        "video_id": 500 + i,
        "question_text": q,
        "multi_choice": ["Man", "Woman", "Child", "Robot"],
        "answer": answer,
        "question_relation": "Both",
        "question_type": "Which" if i % 2 else "Come From",
    }


ITEMS = [
    _item(0, "tone_mp4", "What is the video about? The Video shows a videogame."),
    _item(1, "tone_mp4", "Where is the sound in this VIDEO from?", answer=3),
    _item(2, "tone_mkv"),
    _item(3, "tone_webm", answer=0),
    _item(4, "am_avi", answer=2),
    _item(5, "tone_mov.mov"),
    _item(6, "silent_mp4"),
    _item(7, "cut_mp4"),
    _item(8, "cut_mkv"),
    _item(9, "ghost"),
    _item(10, "ghost"),
]
GOOD = {"tone_mp4", "tone_mkv", "tone_webm", "am_avi", "tone_mov"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("avqa")
    videos = root / "videos"
    (videos / "sub" / "deeper").mkdir(parents=True)
    signals = {
        "tone_mp4": make_video(videos / "tone_mp4.mp4", acodec="aac", rate=44100, freq=440),
        "tone_mkv": make_video(videos / "sub" / "deeper" / "tone_mkv.mkv", acodec="libmp3lame", rate=22050, freq=660),
        "tone_webm": make_video(videos / "sub" / "tone_webm.webm", acodec="libopus", rate=48000, amps=(0.6, 0.2),
                                freq=880, vcodec="libvpx"),
        "am_avi": make_video(videos / "am_avi.avi", acodec="pcm_s16le", rate=22050, amps=(0.6, 0.2), freq=1000,
                             am=True),
        "tone_mov": make_video(videos / "tone_mov.mov", acodec="aac", rate=48000, freq=550),
    }
    make_video(videos / "silent_mp4.mp4", acodec=None)
    make_video(videos / "cut_mp4.mp4", acodec="aac", freq=300)
    _cut_in_half(videos / "cut_mp4.mp4")
    make_video(videos / "cut_mkv.mkv", acodec="flac", freq=300)
    _cut_in_half(videos / "cut_mkv.mkv")
    (videos / "notes.txt").write_text("not a video")
    ann = root / "avqa_train.json"
    ann.write_text("\n".join(json.dumps(it) for it in ITEMS) + "\n")
    return {"root": root, "videos": videos, "ann": ann, "signals": signals}


@pytest.fixture(scope="module")
def clean_run(corpus):
    """One uninterrupted run, with the process pool."""
    out = corpus["root"] / "clean"
    summary = avqa.prepare_avqa([corpus["ann"]], corpus["videos"], out, workers=2, progress=False)
    return out, summary


@pytest.fixture
def cli_main(monkeypatch):
    """`harken.cli.main` with only the data commands (the model modules import torch: slow)."""
    from harken import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", (cli.data,))
    return cli.main


def _rows(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]


def _portable(rows: list[dict], out: Path) -> list[dict]:
    """Dataset rows with the (absolute) audio path made relative to its output folder."""
    return [{**r, "audio": os.path.relpath(r["audio"], out)} for r in rows]


# --------------------------------------------------------------------------------------------


def test_clips_are_16k_mono_and_match_their_source(corpus, clean_run):
    out, summary = clean_run
    assert summary["clips"] == {"total": 9, "extracted": 5, "reused": 0, "failed": 4}
    for name, freq in TONES.items():
        x, sr = sf.read(out / "audio" / f"{name}.wav", dtype="float32")
        info = sf.info(str(out / "audio" / f"{name}.wav"))
        assert (sr, info.channels, info.subtype) == (SR, 1, "PCM_16"), name
        assert abs(len(x) / sr - SECONDS) < 0.05, (name, len(x) / sr)
        spectrum = np.abs(np.fft.rfft(x))
        peak_hz = np.argmax(spectrum) * sr / len(x)
        assert abs(peak_hz - freq) < 5, (name, peak_hz)
    # Stereo is mixed down by the mean: L 0.6 and R 0.2 give a 0.4 sine (rms 0.283), not 0.6 or 0.8.
    x, _ = sf.read(out / "audio" / "tone_webm.wav")
    assert abs(np.sqrt(np.mean(x[1600:-1600] ** 2)) - 0.4 / np.sqrt(2)) < 0.03
    # Lossless source: the clip equals the channel mean resampled to 16 kHz.
    ref = soxr.resample(corpus["signals"]["am_avi"].mean(axis=0), 22050, SR)
    x, _ = sf.read(out / "audio" / "am_avi.wav")
    n = min(len(ref), len(x))
    assert np.corrcoef(ref[:n], x[:n])[0, 1] > 0.99


def test_bad_videos_reported_and_their_questions_dropped(clean_run):
    out, summary = clean_run
    report = json.loads((out / "report.json").read_text())
    reasons = {f["video_name"]: f["reason"] for f in report["failed"]}
    assert reasons == {"silent_mp4": "no-audio-track", "cut_mp4": "unreadable", "cut_mkv": "unreadable",
                       "ghost": "missing"}
    by_name = {f["video_name"]: f for f in report["failed"]}
    assert "truncated" in by_name["cut_mkv"]["error"]
    assert by_name["cut_mp4"]["error"]  # FFmpeg's own message
    assert by_name["ghost"]["questions"] == 2 and by_name["ghost"]["ids"] == ["1009", "1010"]
    assert summary["questions"] == {"total": 11, "written": 6, "dropped": 5}
    assert summary["failed_by_reason"] == {"missing": 1, "unreadable": 2, "no-audio-track": 1}
    assert summary["questions_dropped_by_reason"] == {"missing": 2, "unreadable": 2, "no-audio-track": 1}
    rows = _rows(out / "train.jsonl")
    assert {r["meta"]["video_name"] for r in rows} == (GOOD - {"tone_mov"}) | {"tone_mov.mov"}
    assert not any(p.name.startswith(("silent", "cut", "ghost")) for p in (out / "audio").iterdir())


def test_dataset_rows(clean_run):
    out, _ = clean_run
    rows = _rows(out / "train.jsonl")
    assert [r["id"] for r in rows] == ["1000", "1001", "1002", "1003", "1004", "1005"]  # annotation order
    ex = Example.from_dict(rows[0])
    assert ex.question == "What is the audio about? The Audio shows a videogame."
    assert rows[1]["question"] == "Where is the sound in this AUDIO from?"
    assert ex.choices == ["Man", "Woman", "Child", "Robot"] and ex.answer == "Woman"
    assert rows[1]["answer"] == "Robot" and rows[3]["answer"] == "Man"
    assert ex.meta == {"question_type": "Come From", "question_relation": "Both", "video_name": "tone_mp4",
                       "video_id": 500, "dataset": "AVQA"}
    # Both tone_mp4 questions share one clip; paths are absolute and exist.
    assert rows[0]["audio"] == rows[1]["audio"] == str(out.resolve() / "audio" / "tone_mp4.wav")
    assert rows[5]["audio"].endswith("/tone_mov.wav")
    assert all(os.path.isabs(r["audio"]) and os.path.isfile(r["audio"]) for r in rows)


def test_manifest_and_info(corpus, clean_run):
    out, _ = clean_run
    manifest = _rows(out / "manifest.jsonl")
    assert [m["video_name"] for m in manifest] == sorted(GOOD)
    for m in manifest:
        wav = out / m["wav"]
        assert hashlib.sha256(Path(wav).read_bytes()).hexdigest() == m["sha256"]
        assert m["frames"] == sf.info(str(wav)).frames and abs(m["duration"] - m["frames"] / SR) < 1e-5
    assert next(m for m in manifest if m["video_name"] == "tone_mkv")["video"] == "sub/deeper/tone_mkv.mkv"
    info = json.loads((out / "info.json").read_text())
    assert info["annotations"][0]["sha256"] == hashlib.sha256(Path(corpus["ann"]).read_bytes()).hexdigest()
    assert info["annotations"][0]["items"] == 11
    assert info["sampling_rate"] == SR and info["videos"] == str(corpus["videos"].resolve())
    for key in ("harken", "av", "ffmpeg_libraries", "soxr", "soundfile", "numpy"):
        assert info["versions"][key]
    assert "libavcodec" in info["versions"]["ffmpeg_libraries"]


def test_interrupted_run_then_rerun_matches_a_clean_run(corpus, clean_run, monkeypatch):
    clean_out, _ = clean_run
    out = corpus["root"] / "interrupted"
    real_write = avqa._write_wav_atomic
    calls = {"n": 0}

    def crash_on_third(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            # Die half-way through writing, as a kill would: a partial temporary file is left.
            Path(path.parent / f".{path.name}.dead.tmp").write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(avqa, "_write_wav_atomic", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        avqa.prepare_avqa([corpus["ann"]], corpus["videos"], out, workers=1, progress=False)
    monkeypatch.undo()
    assert not (out / "train.jsonl").exists()
    done = sorted(p.name for p in (out / "audio").glob("*.wav"))
    assert len(done) == 2
    assert len(list((out / "audio").glob(avqa.TMP_GLOB))) == 1

    mtimes = {p: os.stat(out / "audio" / p).st_mtime_ns for p in done}
    summary = avqa.prepare_avqa([corpus["ann"]], corpus["videos"], out, workers=1, progress=False)
    assert summary["clips"]["reused"] == 2 and summary["clips"]["extracted"] == 3
    assert {p: os.stat(out / "audio" / p).st_mtime_ns for p in done} == mtimes  # not rewritten
    assert not list((out / "audio").glob(avqa.TMP_GLOB))
    assert _portable(_rows(out / "train.jsonl"), out) == _portable(_rows(clean_out / "train.jsonl"), clean_out)
    assert _rows(out / "manifest.jsonl") == _rows(clean_out / "manifest.jsonl")
    assert json.loads((out / "report.json").read_text())["failed"] == \
        json.loads((clean_out / "report.json").read_text())["failed"]

    # A third run decodes nothing: every clip is reused.
    real_decode, decoded = avqa.decode_mono, []

    def spy(path, sampling_rate):
        decoded.append(Path(path).stem)
        return real_decode(path, sampling_rate)

    monkeypatch.setattr(avqa, "decode_mono", spy)
    summary = avqa.prepare_avqa([corpus["ann"]], corpus["videos"], out, workers=1, progress=False)
    assert summary["clips"]["reused"] == 5 and summary["clips"]["extracted"] == 0
    assert sorted(decoded) == ["cut_mkv", "cut_mp4", "silent_mp4"]  # only failures are retried


def test_clip_at_another_rate_is_redone(corpus, tmp_path):
    ann = tmp_path / "one.json"
    ann.write_text(json.dumps([_item(0, "tone_mov")]))  # a JSON list works too
    s1 = avqa.prepare_avqa([ann], corpus["videos"], tmp_path / "o", workers=1, sampling_rate=8000, progress=False)
    assert s1["clips"]["extracted"] == 1 and sf.info(str(tmp_path / "o/audio/tone_mov.wav")).samplerate == 8000
    s2 = avqa.prepare_avqa([ann], corpus["videos"], tmp_path / "o", workers=1, progress=False)
    assert s2["clips"]["extracted"] == 1 and sf.info(str(tmp_path / "o/audio/tone_mov.wav")).samplerate == SR
    # Videos deleted after extraction: the complete clip is still used.
    (tmp_path / "no_videos").mkdir()
    s3 = avqa.prepare_avqa([ann], tmp_path / "no_videos", tmp_path / "o", workers=1, progress=False)
    assert s3["clips"]["reused"] == 1 and s3["questions"]["written"] == 1


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"id": 1, "video_name": "a", "question_text": "q", "multi_choice": ["x", "y"], "answer": 0}\n{oops\n',
         r"bad\.jsonl:2: malformed JSON"),
        ('{"id": 1, "video_name": "a", "question_text": "q", "multi_choice": ["x", "y"]}\n',
         r"bad\.jsonl:1: missing field\(s\) answer"),
        ('{"id": 1, "video_name": "a", "question_text": "q", "multi_choice": ["x", "y"], "answer": 2}\n',
         r"bad\.jsonl:1: answer must be an integer index"),
        ('[{"id": 1, "video_name": "a", "question_text": "q", "multi_choice": ["x", "y"], "answer": 0}, 7]',
         r"bad\.jsonl: item \[1\]: expected a JSON object"),
        ('{"id": 1, "video_name": "../a", "question_text": "q", "multi_choice": ["x", "y"], "answer": 0}\n',
         r"video_name must be a plain file name"),
        ('{"id": 1, "video_name": "a", "question_text": "q", "multi_choice": ["x", "y"], "answer": 0}\n'
         '{"id": 1, "video_name": "b", "question_text": "q", "multi_choice": ["x", "y"], "answer": 0}\n',
         r"bad\.jsonl:2: id '1' already used at .*bad\.jsonl:1"),
    ],
)
def test_malformed_annotations_name_file_and_item(tmp_path, content, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(ValueError, match=expected):
        avqa.read_avqa_annotations([bad])


def test_cli_avqa(corpus, tmp_path, capsys, cli_main):
    main = cli_main
    out = tmp_path / "cli"
    rc = main(["data", "avqa", "--annotations", str(corpus["ann"]), "--videos", str(corpus["videos"]),
               "--out", str(out), "--workers", "1", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "6 of 11 questions written" in text
    assert "missing: 1 video(s), 2 question(s) dropped" in text and "ghost" in text
    assert "no-audio-track: 1 video(s)" in text and "unreadable: 2 video(s)" in text


# --------------------------------------------------------------------------------------------
# split / stats (on canonical JSON lines)
# --------------------------------------------------------------------------------------------


def _synthetic(tmp_path: Path, n_clips: int = 30) -> Path:
    """A canonical dataset: clip k has 1 + k % 4 questions; clip durations 1..n_clips seconds."""
    rows = []
    (tmp_path / "audio").mkdir()
    for k in range(n_clips):
        wav = tmp_path / "audio" / f"v{k}.wav"
        sf.write(wav, np.zeros((k + 1) * 100, np.int16), 100, subtype="PCM_16")  # k+1 seconds at 100 Hz
        for j in range(1 + k % 4):
            n_choices = 4 if k % 3 else 2
            choices = [f"c{i}" for i in range(n_choices)]
            rows.append(Example(id=f"{k}-{j}", audio=f"audio/v{k}.wav", question="q?", choices=choices,
                                answer=choices[(k + j) % n_choices],
                                meta={"video_name": f"v{k}", "question_type": ["Which", "Where"][j % 2]}))
    path = tmp_path / "all.jsonl"
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r.to_dict()) + "\n")
    return path


def test_split_keeps_clips_together_and_is_deterministic(tmp_path, capsys, cli_main):
    main = cli_main
    ds = _synthetic(tmp_path)
    examples = load_examples(ds)
    train, val = split.split_by_clip(examples, val=10, seed=3)
    assert len(val) >= 10 and len(train) + len(val) == len(examples)
    assert not {e.meta["video_name"] for e in train} & {e.meta["video_name"] for e in val}
    assert [e.id for e in split.split_by_clip(examples, 10, 3)[1]] == [e.id for e in val]
    assert [e.id for e in split.split_by_clip(examples, 10, 4)[1]] != [e.id for e in val]
    # Whole groups are added only until the target is reached.
    biggest = max(sum(1 for e in examples if e.meta["video_name"] == v) for v in {e.meta["video_name"] for e in val})
    assert len(val) < 10 + biggest

    assert main(["data", "split", str(ds), "--val", "10", "--seed", "3"]) == 0
    assert "no clip is shared" in capsys.readouterr().out
    val_rows = _rows(tmp_path / "val.jsonl")
    assert [r["id"] for r in val_rows] == [e.id for e in val]
    assert all(os.path.isabs(r["audio"]) and os.path.isfile(r["audio"]) for r in val_rows)
    assert len(_rows(tmp_path / "train.jsonl")) == len(train)
    # Splitting a train.jsonl in place would destroy the input: refused with advice.
    assert main(["data", "split", str(tmp_path / "train.jsonl"), "--val", "5"]) == 1
    assert "--out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        split.split_by_clip(examples, val=len(examples), seed=0)


def test_split_groups_by_audio_without_video_name():
    ex = [Example(id=str(i), audio=f"/a/{i // 3}.wav", question="q", choices=["a", "b"], answer="a")
          for i in range(30)]
    train, val = split.split_by_clip(ex, val=4, seed=0)
    assert len(val) == 6 and not {e.audio for e in train} & {e.audio for e in val}


def test_stats(tmp_path, capsys, cli_main):
    main = cli_main
    ds = _synthetic(tmp_path)
    examples = load_examples(ds)
    durations = {e.audio: float(Path(e.audio).stem[1:]) + 1 for e in examples}
    s = stats.dataset_stats(examples, durations, window_seconds=25, bins=6)
    per_clip = [1 + k % 4 for k in range(30)]  # questions of clip k
    assert s["questions"] == len(examples) == sum(per_clip) == 7 * (1 + 2 + 3 + 4) + 1 + 2
    which = sum((m + 1) // 2 for m in per_clip)  # j = 0, 2 are "Which"; j = 1, 3 are "Where"
    assert s["by_question_type"] == {"Which": which, "Where": 73 - which}
    n2 = sum(m for k, m in enumerate(per_clip) if k % 3 == 0)  # every third clip has 2 choices
    assert s["by_num_choices"] == {"2": n2, "4": 73 - n2}
    expected_pos = {}
    for e in examples:
        pos = str(e.choices.index(e.answer) + 1)
        expected_pos[pos] = expected_pos.get(pos, 0) + 1
    assert s["answer_position"] == dict(sorted(expected_pos.items()))
    # Durations 1..30 s in 6 bins of 5 s: [0,5) holds 1-4, the last bin [25,30] holds 25-30.
    assert s["durations"]["histogram"]["counts"] == [4, 5, 5, 5, 5, 6] and s["durations"]["max"] == 30
    assert s["longer_than_window"]["clips"] == 5  # 26..30 s
    assert s["longer_than_window"]["questions"] == sum(1 + k % 4 for k in range(25, 30))

    os.unlink(tmp_path / "audio" / "v0.wav")
    assert main(["data", "stats", str(ds), "--window-seconds", "25", "--bins", "6", "--out", str(tmp_path / "st")]) == 0
    text = capsys.readouterr().out
    assert "longer than the 25 s encoder window" in text and "unreadable clips: 1" in text
    png = tmp_path / "st" / "durations.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "st" / "stats.json").read_text())
    assert saved["longer_than_window"]["clips"] == 5 and saved["durations"]["unreadable"] == 1
    assert saved["by_question_type"] == s["by_question_type"]


def test_stats_on_prepared_avqa(clean_run, tmp_path, capsys):
    out, _ = clean_run
    examples = load_examples(out / "train.jsonl")
    durations, errors = stats.clip_durations({e.audio for e in examples})
    assert not errors and all(abs(d - SECONDS) < 0.05 for d in durations.values())
    s = stats.dataset_stats(examples, durations)
    assert s["clips"] == 5 and s["questions"] == 6 and s["answer_position"] == {"1": 1, "2": 3, "3": 1, "4": 1}
