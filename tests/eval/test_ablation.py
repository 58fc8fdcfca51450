"""`eval run --audio real|none|silence|shuffled` and `eval compare --audio-gain`.

The modes are checked on what reaches the model (a fake one behind `harken.eval.run`'s seams), the
text-only prompt on real toy models, and the table on runs whose answers are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import harken.eval.run as ev
from harken.cli import main
from harken.data.audio import AudioLoader
from harken.eval.ablation import AUDIO_MODES, donor_clips
from harken.eval.compare import audio_gain, compare_runs
from harken.io import read_json

CHOICES = ["dog", "cat", "bird", "cow"]


class FakeLM:
    sampling_rate = 16000
    window_seconds = 5.0


class Recorder:
    """Remembers the clip each item was asked about; right with a clip, wrong without (except task 'easy')."""

    def __init__(self):
        self.heard: dict[str, np.ndarray | None] = {}

    def load(self, model, adapter, dtype, device):
        return FakeLM()

    def generate(self, lm, examples, template, audio, max_new_tokens):
        outs = []
        for ex, wave in zip(examples, audio):
            self.heard[ex.id] = wave
            right = wave is not None and bool(np.any(wave)) or ex.meta["task"] == "easy"
            outs.append(f"<answer>{ex.answer if right else next(c for c in CHOICES if c != ex.answer)}</answer>")
        return outs


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(ev, "_load_model", rec.load)
    monkeypatch.setattr(ev, "_generate", rec.generate)
    return rec


@pytest.fixture
def dataset(tmp_path):
    """Eight items over six clips of different lengths and pitches; items 6 and 7 share item 0's clip."""
    rows = []
    for k in range(8):
        clip = f"clips/c{k if k < 6 else 0}.wav"
        if k < 6:
            sr, seconds = 16000, 0.1 + 0.05 * k
            t = np.arange(int(seconds * sr)) / sr
            (tmp_path / "clips").mkdir(exist_ok=True)
            sf.write(tmp_path / clip, (0.2 * np.sin(2 * np.pi * (300 + 100 * k) * t)).astype(np.float32), sr)
        rows.append({"id": f"item-{k}", "audio": clip, "question": "Which animal?", "choices": CHOICES,
                     "answer": CHOICES[k % 4], "meta": {"task": "easy" if k < 2 else "hard"}})
    f = tmp_path / "data.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _run(data, out, audio, **kw):
    return ev.run_benchmark("jsonl", "fake-model", out, data=str(data), audio=audio, batch_size=3, **kw)


def _clips(data: Path) -> dict[str, np.ndarray]:
    """item id -> its own clip as the evaluation loads it."""
    loader = AudioLoader(16000, 5.0, "truncate")
    return {r["id"]: loader.load(str(data.parent / r["audio"])) for r in map(json.loads, data.read_text().splitlines())}


def test_real_silence_shuffled_none_reach_the_model_as_they_say(tmp_path, dataset, recorder):
    own = _clips(dataset)
    _run(dataset, tmp_path / "real", "real")
    assert all(np.array_equal(recorder.heard[i], own[i]) for i in own)

    _run(dataset, tmp_path / "silence", "silence")
    for i, wave in own.items():
        heard = recorder.heard[i]
        assert heard.shape == wave.shape and heard.dtype == wave.dtype and not np.any(heard)

    _run(dataset, tmp_path / "shuffled", "shuffled")
    clips = list({a.tobytes(): a for a in own.values()}.values())
    for i, wave in own.items():
        heard = recorder.heard[i]
        assert not np.array_equal(heard, wave)  # never its own clip (items 6 and 7 share item 0's)
        assert any(np.array_equal(heard, c) for c in clips)  # another item's clip, as it is
    first = {i: recorder.heard[i].copy() for i in own}
    _run(dataset, tmp_path / "shuffled-again", "shuffled")
    assert all(np.array_equal(recorder.heard[i], first[i]) for i in own)  # seeded: the same pairs

    results = _run(dataset, tmp_path / "none", "none")
    assert all(recorder.heard[i] is None for i in own)
    assert results["run"]["audio"] == "none" and results["accuracy"] == 25.0  # only the two 'easy' items
    assert "(audio: none)" in (tmp_path / "none" / "results.md").read_text()
    assert read_json(tmp_path / "real" / "results.json")["run"]["audio"] == "real"


def test_another_mode_is_refused_in_the_same_folder_and_none_reads_no_clip(tmp_path, dataset, recorder):
    out = tmp_path / "none"
    _run(dataset, out, "none")
    with pytest.raises(ValueError, match=r"other settings \(audio: 'none' there, 'real' now\)"):
        _run(dataset, out, "real")
    for wav in (dataset.parent / "clips").iterdir():
        wav.unlink()  # text-only: the clips need not exist
    assert _run(dataset, tmp_path / "none-again", "none")["coverage"]["evaluated"] == 8
    with pytest.raises(ValueError, match="clips are missing"):
        _run(dataset, tmp_path / "silence", "silence")


def test_donors_form_a_derangement_of_the_clips():
    from harken.data.records import Example

    exs = [Example(f"q{i}", f"clip{i // 3}.wav", "?", ["a", "b"], "a") for i in range(30)]  # 3 questions per clip
    donors = donor_clips(exs, seed=5)
    assert sorted(donors) == sorted(donors.values()) == sorted({ex.audio for ex in exs})
    assert all(donors[c] != c for c in donors)
    assert donors == donor_clips(exs, seed=5) and donors != donor_clips(exs, seed=6)
    with pytest.raises(ValueError, match="at least 2 distinct clips"):
        donor_clips(exs[:3])


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni", "audio-flamingo-3", "qwen3-omni", "voxtral"])
def test_a_prompt_without_audio_has_no_placeholder_and_generates_as_alone(family):
    """Every family takes a text-only prompt (its chat layout without the audio prefix), alone or in a
    batch with prompts that have a clip."""
    from harken.models.toy import build_tiny
    from harken.rl.rollout import SamplingParams, generate

    lm = build_tiny(family)
    clip = (0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32)
    batch = lm.encode_prompts(["Which one?", "Which one?"], [None, clip])
    text_row = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    assert lm.audio_token_id not in text_row and batch.audio_token_counts[0] == 0
    assert text_row == lm.family.prompt_ids(lm.tokenizer, "Which one?", None)
    assert lm.family.audio_prefix not in lm.family.chat_text("Which one?", audio=False)
    assert not batch.feature_mask[0].any() and not batch.input_features[0].any()
    assert lm.audio_token_id in batch.input_ids[1].tolist()
    greedy = SamplingParams(max_new_tokens=5, greedy=True)
    mixed = generate(lm, batch, 1, greedy)
    for i, (text, wave) in enumerate([("Which one?", None), ("Which one?", clip)]):
        alone = generate(lm, lm.encode_prompts([text], [wave]), 1, greedy)
        assert torch.equal(mixed[i, : alone.shape[1]], alone[0])


def _eval(data, model, out, audio):
    assert main(["eval", "run", "--benchmark", "jsonl", "--data", str(data), "--model", model, "--out", str(out),
                 "--audio", audio, "--batch-size", "3"]) == 0


def test_audio_gain_table(tmp_path, dataset, recorder, capsys):
    for mode in AUDIO_MODES:
        _eval(dataset, "fake-model", tmp_path / mode, mode)
    gain = audio_gain([tmp_path / m for m in ("none", "real", "silence")])
    assert gain["modes"] == ["real", "none", "silence"] and gain["n"] == 8
    assert gain["all"]["accuracy"] == {"real": 100.0, "none": 25.0, "silence": 25.0}
    assert gain["all"]["gain"] == {"none": 75.0, "silence": 75.0}
    task = {row["value"]: row for row in gain["groups"]["task"]}
    assert task["easy"]["gain"]["none"] == 0.0 and task["hard"]["gain"]["none"] == 100.0
    capsys.readouterr()
    assert main(["eval", "compare", *(str(tmp_path / m) for m in AUDIO_MODES), "--audio-gain",
                 "--out", str(tmp_path / "gain")]) == 0
    printed = capsys.readouterr().out
    assert "│ all " in printed and "75.00" in printed
    md = (tmp_path / "gain" / "audio_gain.md").read_text()
    assert "| task | n | real | none | real-none | silence | real-silence | shuffled | real-shuffled |" in md
    assert "| **all** | 8 | **100.00** | **25.00** | **75.00** |" in md
    assert (tmp_path / "gain" / "audio_gain.png").read_bytes()[:4] == b"\x89PNG"
    plain = compare_runs([tmp_path / "real", tmp_path / "none"])  # the side-by-side table says what it mixes
    assert any("heard different audio (real, none)" in w for w in plain["warnings"])


def test_audio_gain_refuses_runs_it_cannot_compare(tmp_path, dataset, recorder):
    _eval(dataset, "fake-model", tmp_path / "real", "real")
    _eval(dataset, "fake-model", tmp_path / "real2", "real")
    _eval(dataset, "other-model", tmp_path / "none", "none")
    with pytest.raises(ValueError, match="both --audio real"):
        audio_gain([tmp_path / "real", tmp_path / "real2"])
    with pytest.raises(ValueError, match="needs an `eval run --audio real` folder and one with another mode"):
        audio_gain([tmp_path / "real"])
    with pytest.raises(ValueError, match="differs from the --audio real folder .* in model"):
        audio_gain([tmp_path / "real", tmp_path / "none"])
