"""`harken data validate`: one summary with the counts per problem kind, clip paths relative to the
audio root, no claim that every clip decoded when some did not, and the exit codes its help gives."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from harken.cli import build_parser, main


def _item(i: str, audio: str) -> dict:
    return {"id": i, "audio": audio, "question": "Which?", "choices": ["a", "b"], "answer": "a"}


@pytest.fixture
def broken_set(tmp_path):
    """3 good clips, 1 corrupt clip, 14 missing ones; relative paths under the file's folder."""
    (tmp_path / "audio").mkdir()
    for i in range(3):
        sf.write(tmp_path / "audio" / f"ok{i}.wav", np.full(1600, 0.1, dtype=np.float32), 16000)
    (tmp_path / "audio" / "bad.wav").write_bytes(b"not audio at all")
    items = [_item(f"ok{i}", f"audio/ok{i}.wav") for i in range(3)] + [_item("bad", "audio/bad.wav")]
    items += [_item(f"miss{i}", f"audio/miss{i}.wav") for i in range(14)]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


def _help() -> str:
    top = next(a for a in build_parser()._actions if a.dest == "command").choices["data"]
    return " ".join(next(a for a in top._actions if a.dest == "subcommand").choices["validate"].format_help().split())


def test_the_help_documents_the_exit_codes():
    text = _help()
    assert "0 every item is good" in text and "1 an item is bad" in text
    assert "2 nothing was checked: a bad option, or the dataset or the --audio-root folder does not exist" in text


def test_missing_and_corrupt_clips_give_one_summary(broken_set, capsys):
    assert main(["data", "validate", "--data", str(broken_set)]) == 1  # 1: an item is bad
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[-1] == "FAILED: 18 items, 3 ok, 15 bad (missing_audio 14, corrupt_audio 1)"
    assert sum("15 bad" in line for line in lines) == 1
    assert "every clip opened" not in out and "OK" not in out
    assert "clips: 3 opened and decoded, 15 items have a bad clip" in out
    assert "  line 4 (id 'bad'): clip audio/bad.wav: cannot decode audio" in out
    assert "  line 5 (id 'miss0'): clip audio/miss0.wav: audio file not found" in lines
    assert "  ... and 5 more" in lines
    listed = [line for line in lines if line.startswith("  line ")]
    assert len(listed) == 10 and not any(str(broken_set.parent) in line for line in listed)


def test_the_reader_does_not_log_the_summary_again(broken_set):
    out = subprocess.run([sys.executable, "-m", "harken", "data", "validate", "--data", str(broken_set)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert (out.stdout + out.stderr).count("15 bad") == 1, out.stderr


def test_a_good_set_and_the_earlier_positional_spelling(broken_set, capsys):
    lines = broken_set.read_text().splitlines()[:3]
    broken_set.write_text("\n".join(lines) + "\n")
    assert main(["data", "validate", str(broken_set)]) == 0  # the dataset first, without --data
    out = capsys.readouterr().out
    assert "clips: every clip opened and decoded (3 clips;" in out and out.splitlines()[-1] == "OK: 3 items, 3 ok, 0 bad"


def test_nothing_to_check_exits_2_in_one_line(broken_set, tmp_path, capsys):
    assert main(["data", "validate", "--data", str(broken_set), "--audio-root", str(tmp_path / "gone")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [
        f"harken: error: --audio-root is not a folder: {tmp_path / 'gone'}"]
    assert main(["data", "validate", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "dataset file not found" in capsys.readouterr().err
    assert main(["data", "validate"]) == 2
    assert "pass --data DATA" in capsys.readouterr().err
    assert main(["data", "validate", "--benchmark", "mmau-test-mini", "--data", str(broken_set)]) == 2
    with pytest.raises(SystemExit) as e:  # --benchmark and --format exclude each other
        main(["data", "validate", "--data", str(broken_set), "--benchmark", "mmau", "--format", "mmar"])
    assert e.value.code == 2


def test_no_clip_found_says_where_it_looked(tmp_path, capsys):
    (tmp_path / "own.json").write_text(json.dumps([
        {"id": "u1", "audio_id": "./test-mini-audios/u1.wav", "question": "Q?", "choices": ["x", "y"], "answer": "x"}]))
    (tmp_path / "wrong").mkdir()
    argv = ["data", "validate", "--benchmark", "mmau", "--data", str(tmp_path / "own.json")]
    assert main([*argv, "--audio-root", str(tmp_path / "wrong")]) == 1
    out = capsys.readouterr().out
    assert f"hint: no clip was found under {tmp_path / 'wrong'}" in out
    assert "  item [0] (id 'u1'): clip test-mini-audios/u1.wav: audio file not found" in out
    assert main(argv) == 1  # as `eval run --benchmark mmau --data`: clips next to the file by default
    assert f"hint: no clip was found under {tmp_path}:" in capsys.readouterr().out
    # Read as training reads it (--format): an MMAU JSON file's clips only with --audio-root, said so.
    assert main(["data", "validate", "--data", str(tmp_path / "own.json"), "--format", "mmau"]) == 0
    assert "clips: NOT checked (schema only)" in capsys.readouterr().out
