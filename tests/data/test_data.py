"""harken.data.readers: the readers, the bad-item checks and report, the shipped MMAU files, `data validate`.

Fixture files are written by the tests; clips are synthesised with numpy and soundfile.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import harken.cli
from harken.config import ConfigError, load_config
from harken.data.benchmarks import MMAU_VERSIONS, file_sha256, mmau_metadata_path
from harken.data.checks import PROBLEM_KINDS
from harken.data.readers import DatasetConfig, load_dataset, read_dataset, video_to_audio
from harken.data.records import Example
from harken.io import write_jsonl


def write_lines(path: Path, rows: list) -> Path:
    """JSON lines; a str row is written verbatim (for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_clip(path: Path, seconds: float = 0.2, sr: int = 16000) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.1 * np.sin(np.arange(int(sr * seconds)) * 0.3)).astype(np.float32), sr)
    return str(path)


# --- shipped MMAU test-mini -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(MMAU_VERSIONS))
def test_shipped_mmau_files(name):
    ds = read_dataset(name)
    assert len(ds) == 1000 and ds.report.clean and ds.report.items == 1000
    assert ds.meta_counts("task") == Counter({"sound": 333, "music": 334, "speech": 333})
    assert all(ex.answer in ex.choices for ex in ds)
    counts = Counter(len(ex.choices) for ex in ds)
    assert min(counts) >= 2 and max(counts) <= 8
    assert len(counts) >= 2  # really several different numbers of choices
    assert len({ex.id for ex in ds}) == 1000
    assert set(ds.meta_counts("difficulty")) == {"easy", "medium", "hard"}
    assert len(ds.meta_counts("sub-category")) == 27
    ex = ds[0]
    assert set(ex.meta) == {"task", "category", "sub-category", "difficulty", "dataset", "split"}
    assert ex.audio == f"./test-mini-audios/{ex.id}.wav"  # no root: as given
    version = MMAU_VERSIONS[name]
    assert ds.source["version"] == version and ds.source["benchmark"] == name
    assert ds.source["sha256"] == file_sha256(mmau_metadata_path(version)) == file_sha256(mmau_metadata_path(name))
    assert ds.source["name"] == f"test-mini-{version}.json" and ds.source["format"] == "mmau"


def test_mmau_versions_differ_as_documented():
    old, new = read_dataset("mmau-test-mini-v2503"), read_dataset("mmau-test-mini")
    assert set(Counter(len(ex.choices) for ex in old)) == {2, 4}
    assert set(Counter(len(ex.choices) for ex in new)) == {2, 4, 5, 8}
    before, after = {ex.id: ex for ex in old}, {ex.id: ex for ex in new}
    common = before.keys() & after.keys()
    assert 800 < len(common) < 1000  # some items were replaced outright
    changed = sum(
        (before[i].question, before[i].choices, before[i].answer) != (after[i].question, after[i].choices, after[i].answer)
        for i in common
    )
    assert 150 < changed < 400  # "about a quarter" of the questions, choices or answers changed


def test_mmau_audio_root_is_joined_and_normalised():
    ds = read_dataset("mmau-test-mini-v2503", "mmau", "/data/mmau", limit=3)
    assert len(ds) == 3 and ds.report.items == 3
    assert ds[0].audio == f"/data/mmau/test-mini-audios/{ds[0].id}.wav"


def test_mmau_metadata_path_and_unknown_names():
    assert mmau_metadata_path("v2503") == mmau_metadata_path("mmau-test-mini-v2503")
    assert mmau_metadata_path("mmau-test-mini").name == "test-mini-v05.15.25.json"
    for p in map(mmau_metadata_path, MMAU_VERSIONS):
        assert p.is_file() and (p.parent / "LICENSE").is_file() and (p.parent / "README.md").is_file()
    with pytest.raises(ConfigError, match="mmau-test-mini-v2503"):
        mmau_metadata_path("mmau-test-full")
    with pytest.raises(ConfigError, match="format 'mmau'"):
        read_dataset("mmau-test-mini", "avqa")


# --- AVQA / R1-AQA ---------------------------------------------------------------------------

AVQA_ROWS = [
    {"id": 7, "video_name": "-HG3Omg_89c_30", "video_id": 341, "question_text": "What is the main sound source of the video?",
     "multi_choice": ["motorboat", "Yacht consignment", "Sailboat set sail", "Consignment car"], "answer": 1,
     "question_relation": "View", "question_type": "Which"},
    {"id": 8, "video_name": "abc_10", "video_id": 342, "question_text": "Video: how many videos? Is this a videotape?",
     "multi_choice": ["one", "two", "three", "four"], "answer": 0, "question_relation": "Both",
     "question_type": "Come From", "dataset_name": "AVQA", "audio_path": "/abs/audio/abc_10.wav"},
]


def test_video_to_audio_replaces_whole_words_only():
    assert video_to_audio("In the video, a Video plays; VIDEO!") == "In the audio, a Audio plays; AUDIO!"
    assert video_to_audio("videos and videotape") == "videos and videotape"


@pytest.mark.parametrize("as_list", [False, True])
def test_avqa_reader(tmp_path, as_list):
    path = tmp_path / "avqa.json"
    if as_list:
        path.write_text(json.dumps(AVQA_ROWS, indent=1))
    else:
        write_lines(path, AVQA_ROWS)
    ds = read_dataset(path, "avqa", audio_root="/wavs")
    a, b = ds
    assert a.id == "7" and a.question == "What is the main sound source of the audio?"
    assert a.answer == "Yacht consignment" and a.answer_index == 1
    assert a.audio == "/wavs/-HG3Omg_89c_30.wav"  # no audio_path: <root>/<video_name>.wav
    assert a.meta == {"question_type": "Which", "question_relation": "View", "video_name": "-HG3Omg_89c_30",
                      "video_id": 341, "dataset": "AVQA"}
    assert b.question == "Audio: how many videos? Is this a videotape?"
    assert b.audio == "/abs/audio/abc_10.wav" and b.answer == "one"
    assert read_dataset(path, "avqa")[0].audio == "-HG3Omg_89c_30.wav"  # no root: as given


# --- MMAR -----------------------------------------------------------------------------------

MMAR_ROWS = [
    {"id": "mmar-1", "audio_path": "./audio/a.wav", "question": "Which instrument enters second?",
     "choices": ["Piano", "Violin", "Drums"], "answer": "Violin", "modality": "music", "category": "Perception",
     "sub-category": "Instrument", "language": "en", "source": "yt", "url": "https://example.org/x",
     "timestamp": "0:10", "thinking": "long reasoning"},
    {"id": "mmar-2", "audio_path": "./audio/b.wav", "question": "Is the speaker happy?", "choices": ["yes", "no"],
     "answer": "no", "modality": "sound-speech", "category": "Semantic", "sub-category": "Emotion",
     "language": "zh", "source": "podcast", "url": "", "timestamp": "", "thinking": ""},
]


def test_mmar_reader(tmp_path):
    ds = read_dataset(write_lines(tmp_path / "mmar.jsonl", MMAR_ROWS), "mmar", audio_root="/mmar")
    assert [ex.id for ex in ds] == ["mmar-1", "mmar-2"]
    assert ds[0].audio == "/mmar/audio/a.wav" and ds[0].answer == "Violin" and ds[0].choices == ["Piano", "Violin", "Drums"]
    assert ds[0].meta == {"modality": "music", "category": "Perception", "sub-category": "Instrument",
                          "language": "en", "source": "yt"}
    assert ds.meta_counts("modality") == Counter({"music": 1, "sound-speech": 1})


# --- generic and canonical ------------------------------------------------------------------

FIELDS = {"question": "q", "choices": "options", "answer": "label", "audio": "wav", "id": "uid"}


def test_generic_reader_with_a_field_mapping(tmp_path):
    rows = [
        {"uid": "g1", "wav": "clips/g1.wav", "q": "What plays?", "options": ["cat", "dog"], "label": 1, "task": "sound"},
        {"uid": "g2", "wav": "clips/g2.wav", "q": "Who speaks?", "options": ["man", "woman", "child"], "label": "woman"},
    ]
    ds = read_dataset(write_lines(tmp_path / "g.jsonl", rows), "jsonl", "/root", fields=FIELDS)
    assert [(ex.id, ex.answer, ex.audio) for ex in ds] == [("g1", "dog", "/root/clips/g1.wav"), ("g2", "woman", "/root/clips/g2.wav")]
    assert ds[0].question == "What plays?" and ds[0].meta == {"task": "sound"} and ds[1].meta == {}
    # Unmapped names are read from the key of the same name.
    ds2 = read_dataset(write_lines(tmp_path / "h.jsonl", [{"id": 1, "audio": "x.wav", "question": "q?", "choices": ["a", "b"], "answer": 0}]), "jsonl")
    assert ds2[0].answer == "a" and ds2[0].id == "1"


def test_generic_missing_mapped_key_says_how_to_map(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [{"uid": "g1", "wav": "a.wav", "question": "?", "options": ["a", "b"], "label": 0}])
    with pytest.raises(ValueError) as e:
        read_dataset(path, "jsonl", fields=FIELDS)
    msg = str(e.value)
    assert msg.startswith(f"{path}:1 (id 'g1'): missing field 'q'") and "--field question=KEY" in msg


def test_field_mapping_errors():
    with pytest.raises(ConfigError, match="formats jsonl, mmau, mmar only"):
        read_dataset("x.json", "avqa", fields={"question": "q"})
    with pytest.raises(ConfigError, match="formats jsonl, mmau, mmar only"):
        read_dataset("x.jsonl", "canonical", fields={"question": "q"})
    with pytest.raises(ConfigError, match="unknown canonical field"):
        read_dataset("x.jsonl", "jsonl", fields={"prompt": "q"})
    with pytest.raises(ConfigError, match="unknown dataset format"):
        read_dataset("x.jsonl", "csv")


def test_canonical_roundtrip_through_records(tmp_path):
    exs = [Example("a", "clips/a.wav", "Q1?", ["x", "y"], "y", {"task": "sound"}),
           Example("b", "/abs/b.wav", "Q2?", ["p", "q", "r"], "p")]
    write_jsonl(tmp_path / "c.jsonl", exs)
    back = read_dataset(tmp_path / "c.jsonl")
    # Without a root, harken's own files resolve relative clips against the file's folder.
    assert [ex.audio for ex in back] == [str(tmp_path / "clips" / "a.wav"), "/abs/b.wav"]
    assert [ex.to_dict() | {"audio": None} for ex in back] == [ex.to_dict() | {"audio": None} for ex in exs]
    rooted = read_dataset(tmp_path / "c.jsonl", audio_root="/r")
    assert [ex.audio for ex in rooted] == ["/r/clips/a.wav", "/abs/b.wav"]


def test_dataset_config_and_load_dataset(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [
        {"uid": f"g{i}", "wav": "a.wav", "q": "?", "options": ["a", "b"], "label": i % 2} for i in range(5)
    ])
    cfg = load_config(DatasetConfig, overrides=[
        f"path={path}", "format=jsonl", "limit=3", *(f"fields.{k}={v}" for k, v in FIELDS.items())
    ])
    ds = load_dataset(cfg)
    assert [ex.answer for ex in ds] == ["a", "b", "a"] and ds.report.items == 3
    assert len(load_dataset(DatasetConfig(path="mmau-test-mini", format="mmau", limit=0))) == 0
    assert len(load_dataset(DatasetConfig(path="mmau-test-mini", format="mmau", limit=2000))) == 1000
    with pytest.raises(ConfigError, match="data.path"):
        load_dataset(DatasetConfig())
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(DatasetConfig, overrides=["root=/x"])


# --- bad items ------------------------------------------------------------------------------

GOOD = {"id": "ok", "audio": "a.wav", "question": "Q?", "choices": ["a", "b"], "answer": "a"}


def item(**kw):
    return {**GOOD, **kw}


BAD_CASES = {
    # kind: (rows, line of the offender, id in the message, words in the message)
    "malformed_json": ([GOOD, '{"id": "x", "audio": "a.wav",'], 2, None, "malformed JSON line"),
    "missing_field": ([GOOD, {k: v for k, v in item(id="m").items() if k != "question"}], 2, "m", "missing field 'question'"),
    "too_few_choices": ([GOOD, item(id="f", choices=["a"])], 2, "f", "1 choice(s)"),
    "answer_not_in_choices": ([item(id="n", answer="c")], 1, "n", "answer 'c' is not among the choices ['a', 'b']"),
    "duplicate_id": ([GOOD, item(id="other"), GOOD], 3, "ok", "duplicate id 'ok' (first at line 1)"),
    "bad_field": ([item(id="t", choices="a,b")], 1, "t", "should be a list of choices"),
    "not_an_object": ([GOOD, "[1, 2]"], 2, None, "expected a JSON object"),
}


@pytest.mark.parametrize("kind", list(BAD_CASES))
def test_bad_item_raises_naming_file_line_id_and_problem(tmp_path, kind):
    rows, line, item_id, words = BAD_CASES[kind]
    path = write_lines(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError) as e:
        read_dataset(path)
    msg = str(e.value)
    where = f"{path}:{line}" + (f" (id {item_id!r})" if item_id else "")
    assert msg.startswith(f"{where}: "), msg
    assert words in msg and "skip_bad" in msg
    # And with skip_bad: skipped, counted, the rest kept.
    ds = read_dataset(path, skip_bad=True)
    assert ds.report.counts == {kind: 1} and ds.report.bad == 1
    assert ds.report.items == len(rows) and len(ds) == ds.report.ok == len(rows) - 1
    assert ds.report.offenders[0].line == line and ds.report.offenders[0].kind == kind


def test_avqa_answer_index_out_of_range(tmp_path):
    row = {**AVQA_ROWS[0], "answer": 4}
    path = write_lines(tmp_path / "avqa.jsonl", [AVQA_ROWS[1], row])
    with pytest.raises(ValueError, match=r"avqa.jsonl:2 \(id '7'\): answer index 4 is out of range for 4 choices"):
        read_dataset(path, "avqa")
    with pytest.raises(ValueError, match="answer index -1"):
        read_dataset(write_lines(tmp_path / "neg.jsonl", [{**row, "answer": -1}]), "avqa")


def test_json_list_errors_name_the_position_and_id(tmp_path):
    items = [
        {"id": "u1", "audio_id": "./a.wav", "question": "Q?", "choices": ["x", "y"], "answer": "x"},
        {"id": "u2", "audio_id": "./b.wav", "question": "Q?", "choices": ["x", "y"], "answer": "z"},
    ]
    path = tmp_path / "mmau.json"
    path.write_text(json.dumps(items))
    with pytest.raises(ValueError) as e:
        read_dataset(path, "mmau")
    assert str(e.value).startswith(f"{path}[1] (id 'u2'): answer 'z' is not among the choices")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1},\n {"id": ]')
    with pytest.raises(ValueError, match=r"broken.json:2: malformed JSON list"):
        read_dataset(broken, "mmau", skip_bad=True)  # a broken list cannot be skipped item by item


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        read_dataset(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no items found"):
        read_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "one.json").write_text(json.dumps({"data": [GOOD]}, indent=2))
    with pytest.raises(ValueError, match="holds one JSON object"):
        read_dataset(tmp_path / "one.json")


def make_clips(tmp_path: Path) -> dict[str, str]:
    clips = tmp_path / "clips"
    write_clip(clips / "good.wav")
    (clips / "corrupt.wav").write_bytes(b"RIFF....WAVEgarbage" * 8)
    sf.write(str(clips / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    nan = np.zeros(800, dtype=np.float32)
    nan[10] = np.nan
    sf.write(str(clips / "nan.wav"), nan, 16000, subtype="FLOAT")
    return {"good": "clips/good.wav", "missing_audio": "clips/missing.wav", "corrupt_audio": "clips/corrupt.wav",
            "empty_audio": "clips/empty.wav", "nonfinite_audio": "clips/nan.wav"}


@pytest.mark.parametrize("kind", ["missing_audio", "corrupt_audio", "empty_audio", "nonfinite_audio"])
def test_check_audio_raises_naming_item_and_clip(tmp_path, kind):
    clips = make_clips(tmp_path)
    path = write_lines(tmp_path / "d.jsonl", [item(id="g", audio=clips["good"]), item(id="b", audio=clips[kind])])
    read_dataset(path, audio_root=tmp_path)  # not checked unless asked
    with pytest.raises(ValueError) as e:
        read_dataset(path, audio_root=tmp_path, check_audio=True)
    msg = str(e.value)
    assert msg.startswith(f"{path}:2 (id 'b'): clip {tmp_path / clips[kind]}: "), msg


def test_skip_bad_counts_everything_in_the_report(tmp_path, caplog):
    clips = make_clips(tmp_path)
    rows = [
        item(id="g1", audio=clips["good"]),
        '{"id": "broken"',
        item(id="g2", audio=clips["good"], answer="b"),
        item(id="m", audio=clips["missing_audio"]),
        item(id="c", audio=clips["corrupt_audio"]),
        item(id="e", audio=clips["empty_audio"]),
        item(id="n", audio=clips["nonfinite_audio"]),
        item(id="g1", audio=clips["good"]),
        item(id="few", choices=["a"]),
        item(id="wrong", answer="z"),
        item(id="m2", audio=clips["missing_audio"]),  # same clip again: checked once, counted again
    ]
    path = write_lines(tmp_path / "mixed.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="harken.data.readers"):
        ds = read_dataset(path, audio_root=tmp_path, skip_bad=True, check_audio=True)
    assert [ex.id for ex in ds] == ["g1", "g2"]
    rep = ds.report
    assert rep.items == 11 and rep.ok == 2 and rep.bad == 9 and not rep.clean and rep.audio_checked
    assert rep.counts == {"malformed_json": 1, "missing_audio": 2, "corrupt_audio": 1, "empty_audio": 1,
                          "nonfinite_audio": 1, "duplicate_id": 1, "too_few_choices": 1, "answer_not_in_choices": 1}
    assert set(rep.counts) <= set(PROBLEM_KINDS)
    assert [b.line for b in rep.offenders] == [2, 4, 5, 6, 7, 8, 9, 10, 11]
    text = rep.summary()
    assert text.splitlines()[0] == (f"{path}: 11 items, 2 ok, 9 bad (missing_audio 2, malformed_json 1, corrupt_audio 1, "
                                    "empty_audio 1, nonfinite_audio 1, duplicate_id 1, too_few_choices 1, answer_not_in_choices 1)")
    assert f"{path}:4 (id 'm'): clip {tmp_path / 'clips/missing.wav'}: audio file not found" in text
    d = rep.to_dict()
    assert d["bad"] == 9 and d["counts"]["missing_audio"] == 2 and d["offenders"][0]["line"] == 2
    assert json.loads(json.dumps(d)) == d
    assert len(caplog.records) == 1 and "9 bad" in caplog.records[0].getMessage()


def test_report_lists_only_the_first_offenders(tmp_path):
    path = write_lines(tmp_path / "many.jsonl", [item(id=f"x{i}", answer="q") for i in range(14)])
    ds = read_dataset(path, skip_bad=True)
    assert len(ds) == 0 and ds.report.bad == 14 and len(ds.report.offenders) == 10
    assert ds.report.summary().splitlines()[-1] == "  ... and 4 more"


# --- harken data validate -------------------------------------------------------------------


@pytest.fixture
def main(monkeypatch):
    """`harken.cli.main` with only `harken.data.readers` registered: the other command modules import
    torch when loaded (seconds of start-up these tests do not need)."""
    monkeypatch.setattr(harken.cli, "COMMAND_MODULES", (harken.cli.data,))
    return harken.cli.main


def test_validate_shipped_mmau_schema_only(main, capsys):
    assert main(["data", "validate", "mmau-test-mini-v2503"]) == 0
    out = capsys.readouterr().out
    assert "1000 items, 1000 ok, 0 bad" in out and "schema only" in out and "v2503" in out
    assert main(["data", "validate", "mmau-test-mini", "--format", "mmau"]) == 0
    assert "v05.15.25" in capsys.readouterr().out


def test_validate_fails_on_a_missing_clip(main, tmp_path, capsys):
    clips = make_clips(tmp_path)
    path = write_lines(tmp_path / "set.jsonl", [item(id="g", audio=clips["good"]), item(id="gone", audio=clips["missing_audio"])])
    # Relative clip paths are checked against the file's folder by default.
    assert main(["data", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "2 items, 1 ok, 1 bad (missing_audio 1)" in out
    assert "  line 2 (id 'gone'): clip clips/missing.wav: audio file not found" in out  # relative to the root
    assert "FAILED" in out
    # Everything fine once the offender is gone; --audio-root explicitly.
    write_lines(path, [item(id="g", audio=clips["good"])])
    assert main(["data", "validate", str(path), "--audio-root", str(tmp_path)]) == 0
    assert "OK: 1 items" in capsys.readouterr().out


def test_validate_mmau_fixture_with_audio_root_and_generic_fields(main, tmp_path, capsys):
    write_clip(tmp_path / "test-mini-audios" / "u1.wav")
    items = [{"id": "u1", "audio_id": "./test-mini-audios/u1.wav", "question": "Q?", "choices": ["x", "y"], "answer": "x"},
             {"id": "u2", "audio_id": "./test-mini-audios/u2.wav", "question": "Q?", "choices": ["x", "y"], "answer": "y"}]
    (tmp_path / "meta.json").write_text(json.dumps(items))
    assert main(["data", "validate", str(tmp_path / "meta.json"), "--format", "mmau", "--audio-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "  item [1] (id 'u2'): clip test-mini-audios/u2.wav: audio file not found" in out  # relative to the root
    g = write_lines(tmp_path / "g.jsonl", [{"uid": "a", "wav": "test-mini-audios/u1.wav", "q": "?", "options": ["a", "b"], "label": 1}])
    fields = [f"--field={k}={v}" for k, v in FIELDS.items()]
    assert main(["data", "validate", str(g), "--format", "jsonl", *fields]) == 0
    assert main(["data", "validate", str(g), "--format", "jsonl", "--field", "question"]) == 2  # not NAME=KEY
    assert "NAME=KEY" in capsys.readouterr().err
