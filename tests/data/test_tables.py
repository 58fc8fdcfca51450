"""Table datasets (harken.data.tables): parquet and Arrow files, save_to_disk folders, embedded clips.

Every fixture is written here with pyarrow (tests/table_files.py); clips are synthesised.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import harken.cli
from harken.data.audio import AudioError, audio_info, clip_exists, load_audio, verify_audio
from harken.data.benchmarks import file_sha256
from harken.data.readers import read_dataset
from harken.data.split import split_dataset
from harken.data.stats import file_stats
from harken.data.synth import load_split
from harken.data.tables import embedded_ref, is_embedded, iter_table_rows, parse_embedded, table_sha256
from table_files import embedded_rows, encode, save_to_disk, tone, write_arrow, write_parquet


def qa(i: int, audio, **extra) -> dict:
    return {"id": f"q{i}", "audio": audio, "question": "Which tone?", "choices": ["low", "high"],
            "answer": ["low", "high"][i % 2], **extra}


@pytest.fixture
def rows():
    """Six rows holding wav, flac and ogg bytes of tones of different pitches and rates."""
    out = []
    for i, codec in enumerate(["wav", "flac", "ogg", "wav", "flac", "ogg"]):
        sr = [16000, 22050, 44100][i % 3]
        out.append(qa(i, {"bytes": encode(tone(0.5, sr, 200.0 + 100 * i), sr, codec), "path": f"c{i}.{codec}"},
                      task=["sound", "music"][i % 2]))
    return out


def check_clips(ds, expected: int):
    assert len(ds) == expected
    for i, ex in enumerate(ds):
        wave = load_audio(ex.audio)  # 16 kHz mono float32, whatever the codec and rate
        assert wave.dtype == np.float32 and abs(len(wave) - 8000) <= 2
        ref = tone(0.5, 16000, 200.0 + 100 * i)[: len(wave)]
        assert np.corrcoef(wave[:7900], ref[:7900])[0, 1] > 0.99  # the right row's clip, lossy codecs included


# --- reading ---------------------------------------------------------------------------------


def test_parquet_with_embedded_wav_flac_ogg(tmp_path, rows):
    path = write_parquet(tmp_path / "set.parquet", rows, row_group_size=2)  # 3 row groups
    ds = read_dataset(path, "jsonl")
    check_clips(ds, 6)
    assert all(is_embedded(ex.audio) for ex in ds)
    assert [ex.meta for ex in ds] == [{"task": ["sound", "music"][i % 2]} for i in range(6)]
    assert ds.source["sha256"] == file_sha256(path) == table_sha256(path) and ds.source["name"] == "set.parquet"
    assert parse_embedded(ds[4].audio) == (path.resolve(), "audio", 4)
    info = verify_audio(ds[2].audio)
    assert info["sample_rate"] == 44100 and info["format"] == "OGG" and clip_exists(ds[2].audio)
    assert audio_info(ds[1].audio)["format"] == "FLAC"


def test_parquet_without_statistics_and_with_a_binary_column(tmp_path, rows):
    plain = [dict(r, audio=r["audio"]["bytes"]) for r in rows]  # raw file bytes, no struct
    t = pa.table({k: pa.array([r[k] for r in plain]) for k in plain[0]})
    assert pa.types.is_binary(t.schema.field("audio").type)
    pq.write_table(t, tmp_path / "raw.parquet", write_statistics=False, row_group_size=4)
    check_clips(read_dataset(tmp_path / "raw.parquet", "jsonl"), 6)


def test_save_to_disk_folder_arrow_files_and_globs(tmp_path, rows):
    folder = save_to_disk(tmp_path / "disk", rows, shards=2)
    ds = read_dataset(folder, "jsonl")
    check_clips(ds, 6)
    assert parse_embedded(ds[4].audio)[1:] == ("audio", 1)  # second shard, its own row 1
    assert ds.source["sha256"] == table_sha256(folder)
    check_clips(read_dataset(write_arrow(tmp_path / "one.arrow", rows, stream=False), "jsonl"), 6)  # IPC file format
    for i in range(2):
        write_parquet(tmp_path / "hub" / f"test-{i:05d}-of-00002.parquet", rows[3 * i : 3 * i + 3])
    check_clips(read_dataset(tmp_path / "hub", "jsonl"), 6)  # a folder of one split's shards
    check_clips(read_dataset(str(tmp_path / "hub" / "test-*.parquet"), "jsonl"), 6)  # a glob of shards


def test_rows_without_bytes_use_their_path(tmp_path, rows):
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "c1.wav", tone(0.5, 16000, 300.0), 16000)
    rows[1]["audio"] = {"bytes": None, "path": "clips/c1.wav"}
    path = write_parquet(tmp_path / "set.parquet", rows)
    ds = read_dataset(path, "jsonl", audio_root=str(tmp_path))
    assert ds[1].audio == str(tmp_path / "clips" / "c1.wav") and is_embedded(ds[0].audio)
    check_clips(ds, 6)
    # Canonical tables resolve relative paths against their own folder, as canonical files do.
    assert read_dataset(path)[1].audio == str(tmp_path / "clips" / "c1.wav")
    # Rows written back out (predictions.json) carry the path, never the bytes.
    assert [r["audio"] for _, r in iter_table_rows(path, embed=False)][:2] == ["c0.wav", "clips/c1.wav"]


def test_mmau_layout_with_a_field_mapping(tmp_path, rows):
    # A Hugging Face copy of MMAU: the clip is in an `audio` column, not MMAU's `audio_id`.
    mmau = [dict(r, difficulty="easy", **{"sub-category": "Pitch"}) for r in rows]
    path = write_parquet(tmp_path / "mmau.parquet", mmau)
    with pytest.raises(ValueError, match=r"mmau.parquet\[0\] \(id 'q0'\): missing field 'audio_id' .*--field audio=KEY"):
        read_dataset(path, "mmau")
    ds = read_dataset(path, "mmau", fields={"audio": "audio"})
    check_clips(ds, 6)
    assert ds[0].meta == {"task": "sound", "difficulty": "easy", "sub-category": "Pitch"}


# --- errors name the file and the item -------------------------------------------------------


def test_bad_rows_and_clips_are_named(tmp_path, rows):
    rows[3]["audio"] = {"bytes": b"definitely not audio", "path": "x.wav"}
    rows[4]["question"] = None
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(ValueError, match=r"bad.parquet\[4\] \(id 'q4'\): missing field 'question'"):
        read_dataset(path, "jsonl")
    ds = read_dataset(path, "jsonl", skip_bad=True, check_audio=True)
    assert ds.report.counts == {"corrupt_audio": 1, "missing_field": 1}
    first = ds.report.offenders[0].describe()
    assert first.startswith(f"{path}[3] (id 'q3'): clip embedded:{path.resolve()}?column=audio&row=3: cannot decode audio")
    with pytest.raises(AudioError, match="table file not found"):
        load_audio(embedded_ref(tmp_path / "gone.parquet", "audio", 0))
    assert not clip_exists(embedded_ref(tmp_path / "gone.parquet", "audio", 0))
    with pytest.raises(AudioError, match="past the end"):
        load_audio(embedded_ref(path, "audio", 99))


def test_folder_and_file_errors(tmp_path, rows):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no dataset here"):
        read_dataset(tmp_path / "empty")
    dd = tmp_path / "dd"
    save_to_disk(dd / "test", rows)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))
    with pytest.raises(ValueError, match=f"holds the splits test of a DatasetDict: pass one of them, e.g. {dd / 'test'}"):
        read_dataset(dd)
    for split in ("test", "test_mini"):
        write_parquet(tmp_path / "hub" / f"{split}-00000-of-00001.parquet", rows)
    with pytest.raises(ValueError, match=r"several splits \(test, test_mini\)"):
        read_dataset(tmp_path / "hub", "jsonl")
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="fake.parquet: not a readable parquet file"):
        read_dataset(tmp_path / "fake.parquet")
    damaged = write_parquet(tmp_path / "damaged.parquet", rows, row_group_size=2)
    raw = bytearray(damaged.read_bytes())
    raw[100 : len(raw) // 2] = b"\x07" * (len(raw) // 2 - 100)  # the first row groups' pages, not the footer
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"^\S*damaged.parquet: cannot read row group 0 \([^\n]*\)$"):
        read_dataset(damaged, "jsonl")
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        read_dataset(str(tmp_path / "nothing-*.parquet"))
    shutil.rmtree(dd / "test")
    save_to_disk(tmp_path / "broken", rows)
    (tmp_path / "broken" / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(FileNotFoundError, match="state.json lists data-00001-of-00002.arrow"):
        read_dataset(tmp_path / "broken")


# --- test splits ------------------------------------------------------------------------------


def test_a_split_without_answers(tmp_path, rows):
    for r in rows:
        r["answer"] = None
    path = write_parquet(tmp_path / "test.parquet", rows)
    with pytest.raises(ValueError, match=r"test.parquet\[0\] \(id 'q0'\): missing field 'answer'"):
        read_dataset(path, "jsonl")  # training and the like need answers
    ds = read_dataset(path, "jsonl", allow_unanswered=True)
    assert ds.unanswered and all(ex.answer is None for ex in ds)
    rows[2]["answer"] = "low"
    with pytest.raises(ValueError, match=r"5 of 6 items have no answer \(first: id 'q0'\)"):
        read_dataset(write_parquet(tmp_path / "mixed.parquet", rows), "jsonl", allow_unanswered=True)


# --- commands: validate, split, stats ---------------------------------------------------------


@pytest.fixture
def main(monkeypatch):
    monkeypatch.setattr(harken.cli, "COMMAND_MODULES", (harken.cli.data,))
    return harken.cli.main


def test_validate_a_table_checks_embedded_clips_and_long_ones(main, tmp_path, rows, capsys):
    # The case: a 36.8 s, 48 kHz stereo clip among short ones.
    rows[5]["audio"] = {"bytes": encode(tone(36.8, 48000, 500.0, channels=2), 48000, "flac"), "path": "long.flac"}
    path = write_parquet(tmp_path / "set.parquet", rows)
    assert main(["data", "validate", str(path), "--format", "jsonl"]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    assert "6 items, 6 ok, 0 bad" in out and "every clip opened and decoded" in out and "OK: 6 items" in out
    ref = embedded_ref(path, "audio", 5)
    assert f"warning: 1 of 6 clips longer than 30 s will be cut to the first 30 s (e.g. {ref})" in out
    assert main(["data", "validate", str(path), "--format", "jsonl", "--window-seconds", "40"]) == 0
    assert "warning" not in capsys.readouterr().out
    for r in rows:
        r["answer"] = None
    assert main(["data", "validate", str(write_parquet(tmp_path / "t.parquet", rows)), "--format", "jsonl"]) == 0
    assert "answers: none (a test split)" in capsys.readouterr().out


def test_split_and_stats_of_a_table(main, tmp_path, synth_dir):
    examples = load_split(synth_dir, "test")[:12]
    path = write_parquet(tmp_path / "set.parquet", embedded_rows(examples, codecs=("wav", "flac")), row_group_size=5)
    info = split_dataset(path, val=4, seed=0, format="jsonl", out=tmp_path / "split")
    assert info["train"]["questions"] + info["val"]["questions"] == 12
    train = read_dataset(tmp_path / "split" / "train.jsonl")  # canonical JSON lines pointing into the table
    assert all(is_embedded(ex.audio) for ex in train)
    original = {ex.id: ex for ex in examples}
    for ex in train:
        assert np.array_equal(load_audio(ex.audio), load_audio(original[ex.id].audio))  # lossless codecs: the same samples
    stats = file_stats(path, "jsonl")
    assert stats["questions"] == stats["clips"] == 12 and stats["durations"]["readable"] == 12
    assert main(["data", "stats", str(path), "--format", "jsonl", "--field", "question=question",
                 "--out", str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "stats.json").is_file()
