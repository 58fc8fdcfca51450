"""Voxtral: prompts are exactly what its own processor and mistral_common build, the layout's
control tokens, the end of a turn, and the one-line error without mistral_common."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
import torch

from harken.models.families import get_family
from harken.models.loading import load_audio_lm


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def _base64_wav(clip: np.ndarray) -> str:
    buf = io.BytesIO()
    sf.write(buf, clip, 16000, format="WAV", subtype="FLOAT")  # float samples: the clip exactly
    return base64.b64encode(buf.getvalue()).decode()


def test_prompts_are_its_processors(tiny_dirs):
    """VoxtralProcessor.apply_chat_template (mistral_common's instruct encoding + its feature
    extraction) on a user turn of clip then text gives exactly harken's ids and features."""
    from transformers import AutoProcessor

    path = str(tiny_dirs["voxtral"])
    lm = load_audio_lm(path)
    proc = AutoProcessor.from_pretrained(path)
    assert type(proc).__name__ == "VoxtralProcessor" and type(proc.tokenizer).__name__ == type(lm.tokenizer).__name__
    texts = ["Which one?", "How many beeps are there in the second clip?"]
    clips = [_clip(1.3), _clip(3.1, seed=1)]
    conversations = [[{"role": "user", "content": [{"type": "audio", "base64": _base64_wav(c)}, {"type": "text", "text": t}]}]
                     for t, c in zip(texts, clips)]
    window = lm.feature_extractor.n_samples
    inputs = proc.apply_chat_template(conversations, processor_kwargs={"audio_kwargs": {
        "pad_to_multiple_of": window, "max_source_positions": window // lm.feature_extractor.hop_length}})
    ours = lm.encode_prompts(texts, clips)
    assert torch.equal(inputs["input_ids"], ours.input_ids)
    assert torch.equal(inputs["attention_mask"], ours.attention_mask)
    assert torch.equal(inputs["input_features"], ours.input_features)
    # mistral_common's own token list for the second turn, and what the model generates from it.
    from mistral_common.protocol.instruct.messages import AudioChunk, TextChunk, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.audio import Audio

    audio = AudioChunk.from_audio(Audio(clips[1], 16000, "wav"))
    request = ChatCompletionRequest(messages=[UserMessage(content=[audio, TextChunk(text=texts[1])])])
    assert lm.tokenizer.tokenizer.encode_chat_completion(request).tokens == ours.input_ids[1].tolist()
    out = lm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert inputs["input_ids"].shape[1] < out.shape[1] <= inputs["input_ids"].shape[1] + 3


def test_layout_and_control_tokens(tiny_dirs):
    lm = load_audio_lm(str(tiny_dirs["voxtral"]))
    assert lm.family.chat_text("Q?") == "<s>[INST][BEGIN_AUDIO][AUDIO]Q?[/INST]"
    ids = {t: lm.tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "</s>", "[INST]", "[/INST]", "[AUDIO]", "[BEGIN_AUDIO]")}
    assert ids == {"<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "[AUDIO]": 24, "[BEGIN_AUDIO]": 25}
    assert lm.model.config.audio_token_id == lm.audio_token_id == 24
    assert (lm.eos_ids, lm.end_of_turn_id, lm.pad_id) == ([2], 2, 11)
    assert lm.model.generation_config.eos_token_id == [2]
    # A 30 s window is 375 tokens, and every clip gets the whole window's count.
    assert lm.family.audio_token_count(3000) == 375
    batch = lm.encode_prompts(["Q?", "Q?"], [_clip(0.2), _clip(3.9)])
    assert batch.audio_token_counts == [50, 50] and bool(batch.feature_mask.all())
    # Text in the user's turn is only ever text: "[INST]" typed by a user is not the control token.
    typed = lm.encode_prompts(["[INST] Q?"], [_clip(1.0)]).input_ids[0].tolist()
    assert typed.count(ids["[INST]"]) == 1
    # A completion's end of turn is dropped when decoded.
    answer = lm.tokenizer("<answer>A</answer>", add_special_tokens=False)["input_ids"] + [lm.end_of_turn_id]
    assert lm.tokenizer.decode(answer, skip_special_tokens=True) == "<answer>A</answer>"


def test_encoder_output_is_four_frames_per_token(tiny_dirs):
    """harken's encoder + projector == VoxtralModel.get_audio_features (the model's own audio path)."""
    lm = load_audio_lm(str(tiny_dirs["voxtral"]))
    batch = lm.encode_prompts(["a", "b"], [_clip(1.0), _clip(2.5, seed=3)])
    with torch.no_grad():
        mine = lm.project_audio(lm.encode_audio(batch))
        ref = lm.model.get_audio_features(batch.input_features).pooler_output
    assert mine.shape == (sum(batch.audio_token_counts), lm.model.config.text_config.hidden_size)
    assert torch.equal(mine, ref)


def test_missing_mistral_common_is_one_line(monkeypatch, tmp_path, tiny_dirs, capsys):
    import transformers.utils

    from harken.cli import main
    from harken.models.toy import build_tiny

    # Missing, or older than transformers asks for: transformers would load another tokenizer class.
    monkeypatch.setattr(transformers.utils, "is_mistral_common_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install 'harken\[voxtral\]'"):
        build_tiny("voxtral")
    with pytest.raises(ValueError, match="mistral_common"):
        load_audio_lm(str(tiny_dirs["voxtral"]))
    assert main(["model", "tiny", "--family", "voxtral", "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'harken[voxtral]'" in err
    get_family("qwen2-audio").check_installed()  # other families need nothing more
