"""`harken eval score | run | compare`: counting, files written, resuming, missing clips.

`eval run` is exercised with a fake model through the module's seams (`_load_model`,
`_generate`); the end-to-end run on a real toy model lives with the model tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harken.eval import results as eval_results
from harken.eval import run as ev
from harken.eval.compare import compare_runs
from harken.eval.score_file import score_file
from harken.cli import main as cli_main
from harken.data.benchmarks import file_sha256, mmau_metadata_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def official_string_match(answer, prediction, choices):
    """The official rule, literally (as in MMAU's and MMAR's evaluation.py)."""

    def tokenize(text):
        return set(re.findall(r"\b\w+\b", text.lower()))

    prediction_tokens = tokenize(prediction)
    answer_tokens = tokenize(answer)
    if not prediction_tokens:
        return False
    incorrect_tokens = set()
    for choice in choices:
        choice_tokens = tokenize(choice)
        if choice_tokens != answer_tokens:
            incorrect_tokens.update(choice_tokens - answer_tokens)
    return answer_tokens.issubset(prediction_tokens) and prediction_tokens.isdisjoint(incorrect_tokens)


def official_script(items, output_key, group_keys):
    """The official scripts' main loop: items without `output_key` are skipped."""
    corr = total = 0
    groups = {g: {} for g in group_keys}
    for sample in items:
        if output_key not in sample:
            continue
        ok = official_string_match(sample["answer"], sample[output_key], sample["choices"])
        corr += ok
        total += 1
        for g in group_keys:
            c = groups[g].setdefault(sample[g], [0, 0])
            c[0] += ok
            c[1] += 1
    return corr, total, groups


VOICE = ["Man", "Woman", "Child", "Robot"]
GENRE = ["Jazz", "Rock", "Classical music", "Hip-hop"]


def mmau_items():
    """Six MMAU-format items; expected: 3 right, 2 wrong, 1 without a prediction."""
    base = dict(dataset="x", split="test-mini", category="Reasoning")
    return [
        dict(base, id="s1", audio_id="./test-mini-audios/s1.wav", question="Who speaks?", choices=VOICE, answer="Man",
             task="sound", difficulty="easy", **{"sub-category": "Source"}, model_output="The speaker is a man."),  # right
        dict(base, id="s2", audio_id="./test-mini-audios/s2.wav", question="Who speaks?", choices=VOICE, answer="Woman",
             task="sound", difficulty="hard", **{"sub-category": "Source"}, model_output="A woman or a child"),  # wrong
        dict(base, id="m1", audio_id="./test-mini-audios/m1.wav", question="Genre?", choices=GENRE, answer="Classical music",
             task="music", difficulty="medium", **{"sub-category": "Genre"}, model_prediction="classical music"),  # right (old key)
        dict(base, id="m2", audio_id="./test-mini-audios/m2.wav", question="Genre?", choices=GENRE, answer="Jazz",
             task="music", difficulty="easy", **{"sub-category": "Genre"}),  # no prediction
        dict(base, id="p1", audio_id="./test-mini-audios/p1.wav", question="How many?", choices=["two", "three"], answer="two",
             task="speech", difficulty="easy", **{"sub-category": "Counting"}, model_output="Two"),  # right
        dict(base, id="p2", audio_id="./test-mini-audios/p2.wav", question="How many?", choices=["two", "three"], answer="three",
             task="speech", difficulty="medium", **{"sub-category": "Counting"}, model_output=""),  # empty: wrong
    ]


def mmar_items():
    """Five MMAR-format items; expected: 2 right, 2 wrong, 1 without a prediction."""
    base = dict(language="en", source="x", url="", timestamp="", thinking="")
    return [
        dict(base, id="a", audio_path="./audio/a.wav", question="q", choices=VOICE, answer="Robot", modality="speech",
             category="Signal Layer", **{"sub-category": "Voice"}, answer_prediction="robot"),
        dict(base, id="b", audio_path="./audio/b.wav", question="q", choices=VOICE, answer="Child", modality="mix-sound-speech",
             category="Perception Layer", **{"sub-category": "Voice"}, answer_prediction="B"),
        dict(base, id="c", audio_path="./audio/c.wav", question="q", choices=GENRE, answer="Rock", modality="music",
             category="Cultural Layer", **{"sub-category": "Genre"}, answer_prediction="It is rock."),
        dict(base, id="d", audio_path="./audio/d.wav", question="q", choices=GENRE, answer="Hip-hop", modality="music",
             category="Cultural Layer", **{"sub-category": "Genre"}, answer_prediction="hip hop or jazz"),
        dict(base, id="e", audio_path="./audio/e.wav", question="q", choices=GENRE, answer="Jazz", modality="sound",
             category="Semantic Layer", **{"sub-category": "Genre"}),
    ]


@pytest.fixture
def no_charts(monkeypatch):
    """Skip drawing the per-group charts (~0.2-0.7 s each) in tests that do not look at them."""
    monkeypatch.setattr(eval_results, "plot_group", lambda results, group, path: None)


def check_groups_add_up(results):
    for g in results["group_order"]:
        cells = results["groups"][g].values()
        assert sum(c["total"] for c in cells) == results["n_scored"], g
        assert sum(c["correct"] for c in cells) == results["n_correct"], g


def check_folder(out: Path, results, charts: bool = True):
    for name in ("items.jsonl", "results.json", "predictions.json", "results.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text()) == results
    for g in results["group_order"] if charts else []:
        if results["groups"][g]:
            assert (out / f"accuracy_{g}.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "results.md").read_text()
    assert f"{results['accuracy']:.2f}" in md
    assert results["file"]["sha256"] in md


# ---------------------------------------------------------------------------------------------
# eval score
# ---------------------------------------------------------------------------------------------


def test_score_mmau_counts_missing_as_wrong_and_writes_the_folder(tmp_path):
    pred_file = tmp_path / "preds.json"
    pred_file.write_text(json.dumps(mmau_items()))
    out = tmp_path / "out"
    assert cli_main(["eval", "score", str(pred_file), "--benchmark", "mmau", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())

    assert results["benchmark"] == "mmau"  # the items match no shipped file
    assert results["matches_benchmark"] == []
    assert results["file"] == {"name": "preds.json", "path": str(pred_file.resolve()), "sha256": file_sha256(pred_file)}
    assert (results["n_items"], results["n_scored"], results["n_correct"]) == (6, 6, 3)
    assert results["accuracy"] == pytest.approx(50.0)
    assert results["missing_predictions"] == {"count": 1, "first_ids": ["m2"], "counted_as": "wrong"}
    assert results["empty_predictions"] == 1
    assert results["groups"]["task"] == {
        "sound": {"correct": 1, "total": 2, "accuracy": 50.0},
        "music": {"correct": 1, "total": 2, "accuracy": 50.0},
        "speech": {"correct": 1, "total": 2, "accuracy": 50.0},
    }
    assert results["notes"] and "model_prediction" in results["notes"][0]  # the official script reads model_output only
    assert results["groups"]["difficulty"]["easy"] == {"correct": 2, "total": 3, "accuracy": pytest.approx(66.6667)}
    assert list(results["groups"]["difficulty"]) == ["easy", "medium", "hard"]
    check_groups_add_up(results)
    check_folder(out, results)

    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s1", "s2", "m1", "m2", "p1", "p2"]
    assert [r["correct"] for r in rows] == [True, False, True, False, True, False]
    assert rows[3] == {"id": "m2", "prediction": None, "correct": False, "missing_prediction": True,
                       "task": "music", "difficulty": "easy", "sub-category": "Genre"}
    assert rows[0]["prediction"] == "The speaker is a man."  # as it stands, no extraction

    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 6
    assert preds[2]["model_output"] == preds[2]["model_prediction"] == "classical music"  # both MMAU keys
    assert "model_output" not in preds[3] and "model_prediction" not in preds[3]
    assert {k: preds[0][k] for k in mmau_items()[0]} == mmau_items()[0]  # the benchmark's own fields kept


def test_score_official_skip_matches_the_official_script(tmp_path, no_charts):
    items = mmau_items()
    # The official script reads `model_output` only; give every prediction under it for parity.
    for it in items:
        if "model_prediction" in it:
            it["model_output"] = it.pop("model_prediction")
    pred_file = tmp_path / "preds.json"
    pred_file.write_text(json.dumps(items))
    results = score_file(pred_file, "mmau", tmp_path / "out", official_skip=True)
    corr, total, groups = official_script(items, "model_output", ["task", "difficulty", "sub-category"])
    assert (results["n_correct"], results["n_scored"]) == (corr, total) == (3, 5)
    assert results["n_items"] == 6
    assert results["missing_predictions"]["count"] == 1
    assert results["missing_predictions"]["counted_as"].startswith("skipped")
    for g, table in groups.items():
        assert {v: [c["correct"], c["total"]] for v, c in results["groups"][g].items()} == table
    check_groups_add_up(results)
    rows = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert rows[3]["counted"] is False
    # Without the flag the same file scores lower: the missing item counts as wrong.
    assert score_file(pred_file, "mmau", tmp_path / "out2")["accuracy"] == pytest.approx(50.0)


def test_score_mmar_json_lines_and_list(tmp_path, no_charts):
    items = mmar_items()
    lines = tmp_path / "mmar.jsonl"
    lines.write_text("\n".join(json.dumps(it) for it in items) + "\n")
    listed = tmp_path / "mmar.json"
    listed.write_text(json.dumps(items))
    r1 = score_file(lines, "mmar", tmp_path / "o1")
    r2 = score_file(listed, "mmar", tmp_path / "o2")
    for r in (r1, r2):
        assert (r["n_items"], r["n_scored"], r["n_correct"]) == (5, 5, 2)
        assert r["missing_predictions"]["first_ids"] == ["e"]
        assert r["group_order"] == ["modality", "category", "sub-category"]
        assert list(r["groups"]["modality"]) == ["sound", "music", "speech", "mix-sound-speech"]
        assert r["groups"]["category"]["Cultural Layer"] == {"correct": 1, "total": 2, "accuracy": 50.0}
        check_groups_add_up(r)
        check_folder(tmp_path / ("o1" if r is r1 else "o2"), r, charts=False)
    preds = json.loads((tmp_path / "o1" / "predictions.json").read_text())
    assert preds[1]["answer_prediction"] == "B" and "model_output" not in preds[1]

    skipped = score_file(lines, "mmar", tmp_path / "o3", official_skip=True)
    corr, total, _ = official_script(items, "answer_prediction", ["modality", "category"])
    assert (skipped["n_correct"], skipped["n_scored"]) == (corr, total) == (2, 4)


def test_score_recognises_the_shipped_mmau_version(tmp_path, no_charts):
    items = json.loads(mmau_metadata_path("mmau-test-mini-v2503").read_text())[:50]
    for it in items:
        it["model_output"] = it["answer"]
    f = tmp_path / "p.json"
    f.write_text(json.dumps(items))
    r = score_file(f, "mmau", tmp_path / "out")
    assert r["accuracy"] == 100.0
    assert "mmau-test-mini-v2503" in r["matches_benchmark"]


def test_score_errors_name_the_item(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"id": "x1", "choices": VOICE, "model_output": "Man"}]))
    with pytest.raises(ValueError, match=r"item \[0\] \(id 'x1'\): no 'answer' field"):
        score_file(f, "mmau", tmp_path / "out")
    f.write_text(json.dumps([{"id": "x1", "choices": VOICE, "answer": "Man", "model_output": ["Man"]}]))
    with pytest.raises(ValueError, match="model_output should be a string"):
        score_file(f, "mmau", tmp_path / "out")
    assert cli_main(["eval", "score", str(tmp_path / "nope.json"), "--benchmark", "mmau", "--out", str(tmp_path / "o")]) == 2


# ---------------------------------------------------------------------------------------------
# eval compare
# ---------------------------------------------------------------------------------------------


def test_compare_puts_runs_side_by_side(tmp_path, capsys, no_charts):
    good, bad = mmau_items(), mmau_items()
    for it in good:
        it["model_output"] = it["answer"]
    for it in bad:
        it["model_output"] = "no idea"
        it.pop("model_prediction", None)
    for name, items in (("good", good), ("bad", bad)):
        (tmp_path / f"{name}.json").write_text(json.dumps(items))
        score_file(tmp_path / f"{name}.json", "mmau", tmp_path / name)
    table = compare_runs([tmp_path / "good", tmp_path / "bad"], names=["grpo", "base"])
    assert table["group"] == "task"
    assert table["columns"] == ["sound", "music", "speech", "avg"]
    assert [r["name"] for r in table["rows"]] == ["grpo", "base"]
    assert table["rows"][0]["values"] == {"sound": 100.0, "music": 100.0, "speech": 100.0, "avg": 100.0}
    assert table["rows"][1]["values"]["avg"] == 0.0
    assert any("different files" in w for w in table["warnings"])  # two different predictions files

    out = tmp_path / "cmp"
    rc = cli_main(["eval", "compare", str(tmp_path / "good"), str(tmp_path / "bad"), "--names", "grpo,base", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "grpo" in printed and "100.00" in printed
    md = (out / "compare.md").read_text()
    assert "| grpo | 100.00 | 100.00 | 100.00 | **100.00** | 6 |" in md
    assert (out / "compare.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="2 folders"):
        compare_runs([tmp_path / "good", tmp_path / "bad"], names=["one"])


# ---------------------------------------------------------------------------------------------
# eval run, with a fake model
# ---------------------------------------------------------------------------------------------


class FakeLM:
    sampling_rate = 16000
    window_seconds = 1.0


class FakeModel:
    """Answers right on even item numbers, with a wrong choice on odd ones; can fail on call N."""

    def __init__(self, fail_on_call: int | None = None, lettered: bool = False):
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call
        self.lettered = lettered

    def load(self, model, adapter, dtype, device):
        return FakeLM()

    def generate(self, lm, examples, template, audio, max_new_tokens):
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise RuntimeError("simulated crash")
        self.calls.append([ex.id for ex in examples])
        assert len(audio) == len(examples)
        for wave in audio:
            assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and len(wave) == 3200  # 0.2 s at 16 kHz
        outs = []
        for ex in examples:
            k = int(ex.id.split("-")[-1])
            pick = ex.answer if k % 2 == 0 else next(c for c in ex.choices if c != ex.answer)
            text = "ABCD"[ex.choices.index(pick)] if self.lettered else pick
            outs.append(f"<think>hm</think><answer>{text}</answer>")
        return outs


def install(monkeypatch, fake: FakeModel):
    monkeypatch.setattr(ev, "_load_model", fake.load)
    monkeypatch.setattr(ev, "_generate", fake.generate)


def write_clip(path: Path, seconds: float = 0.2, sr: int = 22050):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t).astype(np.float32), sr)


@pytest.fixture
def canonical(tmp_path):
    """Five canonical items with their clips (relative paths, next to the file)."""
    rows = []
    for k in range(5):
        write_clip(tmp_path / "clips" / f"c{k}.wav")
        rows.append({
            "id": f"item-{k}", "audio": f"clips/c{k}.wav", "question": "Who speaks?", "choices": VOICE,
            "answer": VOICE[k % 4], "meta": {"task": "sound" if k < 3 else "speech"},
        })
    f = tmp_path / "data.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def run(data, out, **kw):
    kw.setdefault("batch_size", 2)
    return ev.run_benchmark("jsonl", "fake-model", out, data=str(data), **kw)


def test_run_scores_and_writes_the_folder(tmp_path, canonical, monkeypatch):
    fake = FakeModel()
    install(monkeypatch, fake)
    out = tmp_path / "out"
    r = run(canonical, out)
    assert fake.calls == [["item-0", "item-1"], ["item-2", "item-3"], ["item-4"]]
    assert (r["n_items"], r["n_scored"], r["n_correct"]) == (5, 5, 3)
    assert r["groups"]["task"] == {"sound": {"correct": 2, "total": 3, "accuracy": pytest.approx(66.6667)},
                                   "speech": {"correct": 1, "total": 2, "accuracy": 50.0}}
    assert r["file"]["name"] == "data.jsonl" and r["file"]["sha256"] == file_sha256(canonical)
    assert r["coverage"]["evaluated"] == r["coverage"]["total"] == 5
    assert r["run"]["template"] == "prompt2" and r["run"]["max_new_tokens"] == 64
    check_groups_add_up(r)
    check_folder(out, r)
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "item-0", "prediction": "Man", "correct": True,
                       "raw_output": "<think>hm</think><answer>Man</answer>", "task": "sound"}
    preds = json.loads((out / "predictions.json").read_text())
    assert preds[1]["prediction"] == "Man" and preds[1]["answer"] == "Woman"
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["benchmark_sha256"] == file_sha256(canonical) and settings["template"] == "prompt2"


def test_run_continues_after_an_interruption(tmp_path, canonical, monkeypatch, no_charts):
    out = tmp_path / "out"
    install(monkeypatch, FakeModel(fail_on_call=2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(canonical, out)
    rows = (out / "items.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in rows] == ["item-0", "item-1"]  # the first batch was saved

    fake = FakeModel()
    install(monkeypatch, fake)
    r = run(canonical, out)
    assert fake.calls == [["item-2", "item-3"], ["item-4"]]  # finished items not redone
    assert (r["n_scored"], r["n_correct"]) == (5, 3)

    # A finished run reruns without loading the model at all.
    def no_model(*a):
        raise AssertionError("model loaded for a finished run")

    monkeypatch.setattr(ev, "_load_model", no_model)
    assert run(canonical, out)["n_correct"] == 3


def test_run_drops_a_line_cut_short_and_redoes_it(tmp_path, canonical, monkeypatch, no_charts):
    out = tmp_path / "out"
    install(monkeypatch, FakeModel(fail_on_call=2))
    with pytest.raises(RuntimeError):
        run(canonical, out)
    with open(out / "items.jsonl", "a") as f:
        f.write('{"id": "item-2", "predic')  # a write interrupted mid-line
    fake = FakeModel()
    install(monkeypatch, fake)
    r = run(canonical, out)
    assert fake.calls == [["item-2", "item-3"], ["item-4"]]
    assert r["n_scored"] == 5


def test_run_refuses_to_mix_settings(tmp_path, canonical, monkeypatch, no_charts):
    install(monkeypatch, FakeModel())
    out = tmp_path / "out"
    run(canonical, out, limit=2)
    with pytest.raises(ValueError, match=r"other settings \(max_new_tokens: 64 there, 32 now\)"):
        run(canonical, out, max_new_tokens=32)
    with pytest.raises(ValueError, match="template: 'prompt2' there, 'prompt3' now"):
        run(canonical, out, template="prompt3")
    # Batch size, device and limit may change between invocations.
    r = run(canonical, out, batch_size=4)
    assert r["n_scored"] == 5
    # A folder written by `eval score` is not a run folder.
    (tmp_path / "p.json").write_text(json.dumps(mmau_items()))
    score_file(tmp_path / "p.json", "mmau", tmp_path / "scored")
    with pytest.raises(ValueError, match="no run.json"):
        run(canonical, tmp_path / "scored")


def test_run_stops_before_generating_when_clips_are_missing(tmp_path, canonical, monkeypatch, no_charts, capsys):
    (tmp_path / "clips" / "c1.wav").unlink()
    (tmp_path / "clips" / "c3.wav").unlink()
    fake = FakeModel()
    install(monkeypatch, fake)
    with pytest.raises(ValueError, match=r"2 of 5 clips are missing") as err:
        run(canonical, tmp_path / "out")
    assert "item-1" in str(err.value) and "item-3" in str(err.value) and "--skip-missing" in str(err.value)
    assert fake.calls == []
    rc = cli_main(["eval", "run", "--benchmark", "jsonl", "--data", str(canonical), "--model", "m", "--out", str(tmp_path / "o")])
    assert rc == 1 and "2 of 5 clips are missing" in capsys.readouterr().err

    r = run(canonical, tmp_path / "out", skip_missing=True)
    assert [i for call in fake.calls for i in call] == ["item-0", "item-2", "item-4"]
    cov = r["coverage"]
    assert (cov["evaluated"], cov["total"], cov["missing_audio"]) == (3, 5, 2)
    assert cov["first_missing_ids"] == ["item-1", "item-3"]
    assert (r["n_scored"], r["n_correct"]) == (3, 3)
    assert "coverage: 3 of 5 items evaluated" in (tmp_path / "out" / "results.md").read_text()


def test_run_skip_missing_also_skips_unreadable_clips(tmp_path, canonical, monkeypatch, no_charts):
    (tmp_path / "clips" / "c2.wav").write_bytes(b"not audio at all")
    install(monkeypatch, FakeModel())
    with pytest.raises(ValueError, match="item item-2"):
        run(canonical, tmp_path / "out")
    r = run(canonical, tmp_path / "out", skip_missing=True)
    assert r["coverage"]["evaluated"] == 4
    assert [u["id"] for u in r["coverage"]["unreadable_audio"]] == ["item-2"]


def test_run_lettered_template_maps_letters(tmp_path, canonical, monkeypatch, no_charts):
    install(monkeypatch, FakeModel(lettered=True))
    r = run(canonical, tmp_path / "out", template="lettered")
    assert r["n_correct"] == 3
    rows = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert rows[0]["raw_output"].endswith("<answer>A</answer>") and rows[0]["prediction"] == "Man"


def test_run_on_the_shipped_mmau_file(tmp_path, monkeypatch, no_charts):
    items = json.loads(mmau_metadata_path("mmau-test-mini-v2503").read_text())[:3]
    root = tmp_path / "mmau"
    for it in items:
        write_clip(root / it["audio_id"])

    class Right(FakeModel):
        def generate(self, lm, examples, template, audio, max_new_tokens):
            self.calls.append([ex.id for ex in examples])
            return [f"<answer>{ex.answer}</answer>" for ex in examples]

    install(monkeypatch, Right())
    out = tmp_path / "out"
    r = ev.run_benchmark("mmau-test-mini-v2503", "fake", out, audio_root=str(root), limit=3)
    assert r["file"]["name"] == "test-mini-v2503.json"
    assert r["file"]["sha256"] == file_sha256(mmau_metadata_path("mmau-test-mini-v2503"))
    assert r["accuracy"] == 100.0 and r["coverage"]["benchmark_items"] == 1000
    assert r["group_order"] == ["task", "difficulty", "sub-category"]
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["id"] for p in preds] == [it["id"] for it in items]
    assert all(p["model_output"] == p["model_prediction"] == p["answer"] for p in preds)
    # The predictions file scores the same with `eval score` and with the official script.
    again = score_file(out / "predictions.json", "mmau", tmp_path / "rescored")
    assert again["n_correct"] == official_script(preds, "model_output", [])[0] == 3
    with pytest.raises(ValueError, match="--data is for mmau, mmar and jsonl.*use --benchmark mmau --data FILE"):
        ev.run_benchmark("mmau-test-mini", "fake", out, data="x.json")
