"""Toy-size models of the real architectures, built offline.

Owns: the named sizes (`toy`, `small`), byte-level tokenizers trained locally on the prompt
vocabulary (a Qwen2 tokenizer, and a Tekken file for Voxtral), and `build_tiny`, which builds a
randomly initialised model of a real transformers class and can save it as a folder that
`from_pretrained` loads.
Does not own: loading (`harken.models.loading`), what differs between families
(`harken.models.families`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Iterable

import torch

from harken.io import write_json_atomic
from harken.models.audio_lm import AudioLM
from harken.models.families import (AUDIO_BOS, AUDIO_EOS, AUDIO_START, BOS, END_INST, ENDOFTEXT, EOS, IM_END, INST,
                                    VOX_AUDIO, VOX_BEGIN_AUDIO, Family, get_family)
from harken.models.loading import save_audio_lm


# Named architecture sizes for tests, the demo and the benchmark. "small" matches the prototype
# the performance notes were measured on (real 30 s window).
SIZES: dict[str, dict[str, int]] = {
    "toy": dict(window=5, enc_d=64, enc_layers=2, enc_heads=4, enc_ffn=128, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "small": dict(window=30, enc_d=256, enc_layers=4, enc_heads=4, enc_ffn=1024, hidden=256, layers=4, heads=4, kv_heads=2, ffn=1024),
}

_CORPUS = [
    "Please choose the answer from the following options:",
    "Output the final answer in <answer> </answer>.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer>.",
    "Answer with the option's letter in <answer> </answer>.",
    "What is the sound in the audio? Which instrument is playing? How many times? Is the second one higher or lower?",
    "louder softer longer shorter rising falling higher lower sine square sawtooth noise one two three four five six",
    "seven eight nine zero yes no man woman child speech music sound the a of in what which how many",
]


# Qwen2's and Tekken's (mistral_common's tokenizer files') pre-tokenizer patterns.
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level_bpe(pattern: str, texts: list[str], vocab_size: int, special_tokens: tuple[str, ...] = ()):
    """A `tokenizers` byte-level BPE model pre-tokenized by `pattern`, trained on `texts`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def train_toy_tokenizer(extra_texts: Iterable[str] = (), vocab_size: int = 512,
                        special_tokens: tuple[str, ...] = get_family("qwen2-audio").special_tokens):
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer and a family's special tokens, trained locally."""
    from transformers import Qwen2Tokenizer

    tok = _byte_level_bpe(_QWEN2_PATTERN, list(_CORPUS) * 20 + list(extra_texts), vocab_size, special_tokens)
    tags = ["<think>", "</think>", "<answer>", "</answer>"]
    # Tags are added as ordinary (non-special) tokens so they decode with skip_special_tokens.
    tokenizer = Qwen2Tokenizer(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT)
    tokenizer.add_tokens(tags)
    return tokenizer


# Mistral's control tokens at the ids the Tekken tokenizer files give them (mistral_common's list of
# the first 20; `[AUDIO]` 24 is transformers' VoxtralProcessor's constant); the toy keeps 35 of the
# real file's 1000 control ids, the rest named `<SPECIAL_i>` as mistral_common names unused ones.
_TEKKEN_CONTROL = {
    **dict(enumerate([
        "<unk>", BOS, EOS, INST, END_INST, "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
        "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
    ])),
    24: VOX_AUDIO, 25: VOX_BEGIN_AUDIO, 34: "[TRANSCRIBE]",
}
_TEKKEN_CONTROL_IDS = 35


def train_toy_tekken(extra_texts: Iterable[str] = (), vocab_size: int = 512, window_seconds: int = 30):
    """A Tekken tokenizer (mistral_common's file format, version v7 with an audio section) trained
    locally like the other toys, loaded by transformers' `MistralCommonBackend`: the class a real
    Voxtral checkpoint's tokenizer loads with, so toy prompts go through the same code.

    Tekken is tiktoken's byte-level BPE (ranks: the 256 bytes, then each merge's token) after a
    block of control ids; the audio section pads clips to `window_seconds` windows of 12.5 tokens
    per second (128 mel bins, hop 160), as the real file does for 30 s. The file is written once
    per content to harken's cache folder (`save_pretrained` copies it into a model folder).
    """
    from transformers import MistralCommonBackend
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from harken.models.warm import cache_root

    texts = list(_CORPUS) * 20 + list(extra_texts)
    bpe = _byte_level_bpe(_TEKKEN_PATTERN, texts, vocab_size - _TEKKEN_CONTROL_IDS)
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    ranks = [bytes([b]) for b in range(256)]
    for merge in json.loads(bpe.to_str())["model"]["merges"]:
        a, b = merge if isinstance(merge, list) else merge.split(" ")
        token = bytes(to_byte[c] for c in a + b)
        if token not in ranks:
            ranks.append(token)
    data = {
        "config": {"pattern": _TEKKEN_PATTERN, "num_vocab_tokens": len(ranks), "version": "v7",
                   "default_vocab_size": _TEKKEN_CONTROL_IDS + len(ranks), "default_num_special_tokens": _TEKKEN_CONTROL_IDS},
        "vocab": [{"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": t.decode("utf-8", "replace")}
                  for i, t in enumerate(ranks)],
        "special_tokens": [{"rank": i, "token_str": _TEKKEN_CONTROL.get(i, f"<SPECIAL_{i}>"), "is_control": True}
                           for i in range(_TEKKEN_CONTROL_IDS)],
        "audio": {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": float(window_seconds),
                  "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}},
    }
    text = json.dumps(data, sort_keys=True)
    path = cache_root() / "toy-tekken" / hashlib.sha256(text.encode()).hexdigest()[:16] / "tekken.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data, indent=None)
    return MistralCommonBackend(tokenizer_path=str(path))


def _voxtral_size(s: dict) -> dict:
    """Voxtral's projector takes 4 encoder frames at a time through an input of width
    intermediate_size = 4 x d_model (real: 5120 = 4 x 1280), 12.5 tokens per second: the encoder
    FFN is 4 x d_model and the window a whole number of tokens (an even number of seconds)."""
    return {**s, "enc_ffn": 4 * s["enc_d"], "window": s["window"] // 2 * 2}


def _toy_tokenizer(fam: Family, s: dict, extra_texts: Iterable[str], vocab_size: int):
    if fam.name == "voxtral":
        return train_toy_tekken(extra_texts, vocab_size, s["window"])
    return train_toy_tokenizer(extra_texts, vocab_size=vocab_size, special_tokens=fam.special_tokens)


def build_tiny(
    family: str = "qwen2-audio",
    out: str | Path | None = None,
    *,
    size: str = "toy",
    seed: int = 0,
    extra_texts: Iterable[str] = (),
    vocab_size: int = 512,
) -> AudioLM:
    """Build a toy-size model of a real architecture, offline, and optionally save it.

    The saved folder loads with `from_pretrained` (model, tokenizer, feature extractor; for
    Qwen2-Audio, Audio Flamingo 3 and Voxtral also the processor), and with `load_audio_lm`.
    """
    from transformers import WhisperFeatureExtractor

    fam = get_family(family)
    fam.check_installed()
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of: {', '.join(SIZES)}")
    s = _voxtral_size(SIZES[size]) if fam.name == "voxtral" else SIZES[size]
    torch.manual_seed(seed)
    tokenizer = _toy_tokenizer(fam, s, extra_texts, vocab_size)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(fam.end_of_turn),
    )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=s["enc_layers"],
        encoder_attention_heads=s["enc_heads"],
        encoder_ffn_dim=s["enc_ffn"],
        d_model=s["enc_d"],
        # The encoder requires mel length == 2 x max_source_positions; 100 mel frames per second.
        max_source_positions=s["window"] * 50,
    )
    config = _CONFIGS[fam.name](tokenizer, s, text, audio)
    model = fam.model_class(config)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in fam.eos_tokens]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=s["window"], n_fft=400)
    model.eval()
    lm = AudioLM(model, tokenizer, fe, fam, str(out or ""))
    if out is not None:
        save_audio_lm(lm, out)
    return lm


# --------------------------------------------------------------------------------------------
# Each family's config from its transformers config class: (tokenizer, size, text, audio) -> config
# --------------------------------------------------------------------------------------------


def _qwen2_audio_config(tokenizer, s: dict, text: dict, audio: dict):
    import transformers

    return transformers.Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", **audio},
        text_config={"model_type": "qwen2", **text},
        audio_token_index=_id(tokenizer, get_family("qwen2-audio")),
    )


def _mrope_and_vision(s: dict) -> tuple[list[int], dict]:
    """An Omni thinker's multimodal-rope split of the head and its (unused, minimal) vision encoder."""
    third = s["hidden"] // s["heads"] // 2
    return [third - 2 * (third // 3), third // 3, third // 3], dict(
        depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=s["hidden"])


def _qwen25_omni_config(tokenizer, s: dict, text: dict, audio: dict):
    import transformers

    vocab = len(tokenizer)
    mrope, vision = _mrope_and_vision(s)
    config = transformers.Qwen2_5OmniThinkerConfig(
        audio_config={**audio, "n_window": 50, "output_dim": s["hidden"]},
        vision_config={**vision, "fullatt_block_indexes": [0]},
        text_config={**text, "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": mrope}},
        audio_token_index=_id(tokenizer, get_family("qwen2.5-omni")),
        audio_start_token_id=tokenizer.convert_tokens_to_ids(AUDIO_BOS),
        audio_end_token_id=tokenizer.convert_tokens_to_ids(AUDIO_EOS),
        image_token_index=vocab + 10,
        video_token_index=vocab + 11,
    )
    # Read by the thinker's own rope-index code (the full Omni config carries it).
    config.vision_start_token_id = vocab + 12
    return config


def _af3_config(tokenizer, s: dict, text: dict, audio: dict):
    import transformers

    return transformers.AudioFlamingo3Config(
        audio_config={"model_type": "audioflamingo3_encoder", **audio},
        text_config={"model_type": "qwen2", **text},
        audio_token_id=_id(tokenizer, get_family("audio-flamingo-3")),
    )


def _qwen3_omni_config(tokenizer, s: dict, text: dict, audio: dict):
    import transformers

    vocab = len(tokenizer)
    mrope, vision = _mrope_and_vision(s)
    # A mixture of experts at toy scale: 4 experts, 2 per token, every layer sparse (the real one:
    # 128 experts, 8 per token, moe_intermediate_size 768).
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=s["ffn"] // 2, decoder_sparse_step=1,
               norm_topk_prob=True, head_dim=s["hidden"] // s["heads"])
    return transformers.Qwen3OmniMoeThinkerConfig(
        audio_config={**audio, "n_window": 50, "n_window_infer": 400, "output_dim": s["hidden"],
                      "downsample_hidden_size": 32},
        vision_config={**vision, "deepstack_visual_indexes": [0]},
        text_config={**text, **moe, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                        "mrope_section": mrope, "mrope_interleaved": True}},
        audio_token_id=_id(tokenizer, get_family("qwen3-omni")),
        audio_start_token_id=tokenizer.convert_tokens_to_ids(AUDIO_START),
        image_token_id=vocab + 10,
        video_token_id=vocab + 11,
        vision_start_token_id=vocab + 12,
        vision_end_token_id=vocab + 13,
    )


def _voxtral_config(tokenizer, s: dict, text: dict, audio: dict):
    import transformers

    # VoxtralConfig fills a text config's missing keys with Voxtral-Mini's (head_dim 128 among them).
    return transformers.VoxtralConfig(
        audio_config={"model_type": "voxtral_encoder", **audio},
        text_config={"model_type": "llama", **text, "head_dim": s["hidden"] // s["heads"]},
        audio_token_id=_id(tokenizer, get_family("voxtral")),
    )


def _id(tokenizer, fam: Family) -> int:
    return tokenizer.convert_tokens_to_ids(fam.audio_token)


_CONFIGS = {
    "qwen2-audio": _qwen2_audio_config,
    "qwen2.5-omni": _qwen25_omni_config,
    "audio-flamingo-3": _af3_config,
    "qwen3-omni": _qwen3_omni_config,
    "voxtral": _voxtral_config,
}
