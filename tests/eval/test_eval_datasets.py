"""`harken eval run` on datasets as users have them: any MMAU- or MMAR-format file, parquet / Arrow
tables with embedded clips, `--field` mappings, and test splits without answers (predictions only).

The model is faked through `harken.eval.run`'s seams; clips are synthesised (tests/table_files.py).
"""

from __future__ import annotations

import json
import logging

import pytest
import soundfile as sf

from harken.cli import main
from harken.data.benchmarks import file_sha256
from harken.eval import results as eval_results
from harken.eval import run as ev
from harken.eval.compare import compare_runs
from table_files import encode, save_to_disk, tone, write_parquet

CHOICES = ["low", "high", "none"]


class FakeLM:
    sampling_rate = 16000
    window_seconds = 30.0


class Fake:
    """Answers "high" to every question."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def load(self, model, adapter, dtype, device):
        return FakeLM()

    def generate(self, lm, examples, template, audio, max_new_tokens):
        self.calls.append([ex.id for ex in examples])
        assert all(len(w) > 0 for w in audio)
        return ["<think>hm</think><answer>high</answer>" for _ in examples]


@pytest.fixture
def fake(monkeypatch):
    f = Fake()
    monkeypatch.setattr(ev, "_load_model", f.load)
    monkeypatch.setattr(ev, "_generate", f.generate)
    monkeypatch.setattr(eval_results, "plot_group", lambda results, group, path: None)
    return f


def mmau_items(n: int = 4, answers: bool = True) -> list[dict]:
    """MMAU's layout (its test split has every key but the answer); "high" is right on odd items."""
    out = []
    for i in range(n):
        item = {"id": f"u{i}", "audio_id": f"./audios/u{i}.wav", "question": "Which pitch?", "choices": CHOICES,
                "dataset": "own", "task": ["sound", "music"][i % 2], "split": "test", "category": "Perception",
                "sub-category": "Pitch", "difficulty": "easy"}
        if answers:
            item["answer"] = CHOICES[i % 2]
        out.append(item)
    return out


def write_clips(folder, n: int = 4, prefix: str = "u"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(folder / f"{prefix}{i}.wav", tone(0.3, 22050, 300 + 50 * i), 22050)


def official(items, key="model_output"):
    """MMAU's / MMAR's evaluation loop on predictions.json (the rule, literally)."""
    import re

    def words(t):
        return set(re.findall(r"\b\w+\b", t.lower()))

    right = 0
    for it in items:
        pred, ans = words(it[key]), words(it["answer"])
        wrong = set().union(*(words(c) - ans for c in it["choices"] if words(c) != ans))
        right += bool(pred) and ans <= pred and pred.isdisjoint(wrong)
    return right


def run_cli(*args) -> int:
    return main(["eval", "run", "--model", "fake", "--max-new-tokens", "4", *map(str, args)])


# --- any MMAU / MMAR-format file ---------------------------------------------------------------


def test_own_mmau_format_file(tmp_path, fake, capsys):
    write_clips(tmp_path / "audios")
    (tmp_path / "own.json").write_text(json.dumps(mmau_items()))
    assert run_cli("--benchmark", "mmau", "--data", tmp_path / "own.json", "--out", tmp_path / "out") == 0
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (r["benchmark"], r["n_scored"], r["n_correct"]) == ("mmau", 4, 2)
    assert r["file"] == {"name": "own.json", "path": str((tmp_path / "own.json").resolve()),
                         "sha256": file_sha256(tmp_path / "own.json")}
    assert r["group_order"] == ["task", "difficulty", "sub-category"] and "no_accuracy" not in r
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert official(preds) == official(preds, "model_prediction") == 2
    assert "50.00" in capsys.readouterr().out
    # A file of another layout is refused with the item named; --data is needed.
    assert run_cli("--benchmark", "mmar", "--data", tmp_path / "own.json", "--out", tmp_path / "o2") == 1
    assert "own.json[0] (id 'u0'): missing field 'audio_path'" in capsys.readouterr().err
    assert run_cli("--benchmark", "mmau", "--out", tmp_path / "o3") == 1
    assert "--benchmark mmau needs --data FILE" in capsys.readouterr().err


def test_own_mmar_format_file(tmp_path, fake):
    write_clips(tmp_path / "audio", 3)
    items = [{"id": f"m{i}", "audio_path": f"./audio/u{i}.wav", "question": "Which pitch?", "choices": CHOICES,
              "answer": CHOICES[i % 2], "modality": "sound", "category": "Signal Layer", "sub-category": "Pitch",
              "language": "en", "source": "own"} for i in range(3)]
    (tmp_path / "mmar.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    r = ev.run_benchmark("mmar", "fake", tmp_path / "out", data=str(tmp_path / "mmar.jsonl"))
    assert (r["n_scored"], r["n_correct"]) == (3, 1)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [p["answer_prediction"] for p in preds] == ["high"] * 3 and official(preds, "answer_prediction") == 1


# --- tables -----------------------------------------------------------------------------------


def hf_mmau_rows(n: int = 4, answers: bool = True) -> list[dict]:
    """A Hugging Face copy of MMAU: the clip embedded in an `audio` column (codecs in turn)."""
    rows = []
    for i, item in enumerate(mmau_items(n, answers)):
        codec = ["wav", "flac", "ogg"][i % 3]
        item.pop("audio_id")
        rows.append({"audio": {"bytes": encode(tone(0.4, 16000, 300 + 50 * i), 16000, codec), "path": f"u{i}.{codec}"},
                     **item})
    return rows


def test_hf_mmau_parquet_with_a_field_mapping(tmp_path, fake, capsys):
    path = write_parquet(tmp_path / "test_mini-00000-of-00001.parquet", hf_mmau_rows(), row_group_size=3)
    out = tmp_path / "out"
    assert run_cli("--benchmark", "mmau", "--data", path, "--field", "audio=audio", "--out", out) == 0
    r = json.loads((out / "results.json").read_text())
    assert (r["n_scored"], r["n_correct"], r["file"]["sha256"]) == (4, 2, file_sha256(path))
    assert r["run"]["fields"] == {"audio": "audio"}
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["audio"] for p in preds] == ["u0.wav", "u1.flac", "u2.ogg", "u3.wav"]  # paths, never the bytes
    assert official(preds) == 2
    # Another mapping is another evaluation: the folder refuses to mix them.
    assert run_cli("--benchmark", "mmau", "--data", path, "--out", out) == 1
    assert "missing field 'audio_id'" in capsys.readouterr().err


def test_save_to_disk_folder_as_a_generic_set(tmp_path, fake):
    rows = hf_mmau_rows(5)
    for r in rows:
        r["options"] = r.pop("choices")
    folder = save_to_disk(tmp_path / "disk", rows, shards=2)
    r = ev.run_benchmark("jsonl", "fake", tmp_path / "out", data=str(folder), fields={"choices": "options"}, batch_size=2)
    assert (r["n_scored"], r["n_correct"]) == (5, 2)
    assert r["group_order"] == ["task", "difficulty", "category", "sub-category"]
    assert fake.calls == [["u0", "u1"], ["u2", "u3"], ["u4"]]


# --- test splits ------------------------------------------------------------------------------


def test_a_test_split_gets_predictions_and_no_accuracy(tmp_path, fake, capsys):
    write_clips(tmp_path / "audios")
    (tmp_path / "mmau-test.json").write_text(json.dumps(mmau_items(answers=False)))
    out = tmp_path / "out"
    assert run_cli("--benchmark", "mmau", "--data", tmp_path / "mmau-test.json", "--out", out) == 0
    printed = capsys.readouterr().out
    assert "no accuracy: the 4 items have no answers (a test split)" in printed
    assert "https://huggingface.co/spaces/sonalkum/MMAU-Eval" in printed and "avg" not in printed
    r = json.loads((out / "results.json").read_text())
    assert r["accuracy"] is None and r["n_scored"] == 0 and r["no_accuracy"].startswith("no accuracy")
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["id"] for p in preds] == ["u0", "u1", "u2", "u3"]
    assert all(p["model_output"] == p["model_prediction"] == "high" and "answer" not in p for p in preds)
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(row["correct"] is None and row["counted"] is False for row in rows)
    assert (out / "results.md").read_text().startswith("# mmau: no accuracy\n\nno accuracy: the 4 items")
    assert not list(out.glob("accuracy_*.png"))
    # A finished run is read back without the model; compare says why there is no number.
    assert run_cli("--benchmark", "mmau", "--data", tmp_path / "mmau-test.json", "--out", out) == 0
    assert len(fake.calls) == 1
    table = compare_runs([out])
    assert table["rows"][0]["values"]["avg"] is None
    assert any("no accuracy" in w for w in table["warnings"])


def test_a_parquet_test_split_and_a_mixed_file(tmp_path, fake, capsys):
    path = write_parquet(tmp_path / "test.parquet", hf_mmau_rows(3, answers=False))
    r = ev.run_benchmark("jsonl", "fake", tmp_path / "out", data=str(path))
    assert r["no_accuracy"].endswith("predictions.json holds each prediction under prediction, for whoever holds the answers")
    items = mmau_items(3)
    del items[1]["answer"]
    (tmp_path / "mixed.json").write_text(json.dumps(items))
    assert run_cli("--benchmark", "mmau", "--data", tmp_path / "mixed.json", "--out", tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert "mixed.json: 1 of 3 items have no answer (first: id 'u1')" in err and len(err.strip().splitlines()) == 1


# --- long clips: `data validate` and `eval run` say the same --------------------------------


def test_long_clips_are_counted_alike_by_validate_and_run(tmp_path, fake, capsys, caplog):
    write_clips(tmp_path / "audios", 3)
    sf.write(tmp_path / "audios" / "u3.wav", tone(36.8, 48000, 440.0, channels=2), 48000)
    (tmp_path / "own.json").write_text(json.dumps(mmau_items()))
    clip = tmp_path / "audios" / "u3.wav"
    assert main(["data", "validate", str(tmp_path / "own.json"), "--format", "mmau", "--audio-root", str(tmp_path)]) == 0
    assert f"warning: 1 of 4 clips longer than 30 s will be cut to the first 30 s (e.g. {clip})" in capsys.readouterr().out
    with caplog.at_level(logging.WARNING):
        assert run_cli("--benchmark", "mmau", "--data", tmp_path / "own.json", "--out", tmp_path / "out") == 0
    assert f"1 of 4 clips longer than 30 s were cut to the first 30 s (e.g. {clip})" in caplog.text
