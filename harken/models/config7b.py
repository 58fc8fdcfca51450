"""Qwen2-Audio-7B at full size with random weights, built without a download (for `harken bench --size 7b`).

Owns: the real architecture sizes of Qwen2-Audio-7B(-Instruct) as a `Qwen2AudioConfig`, and
building a random-weight model of a config directly on the target device. Does not own: the
toy tokenizer it pairs with (`harken.models.toy`), loading checkpoints (`harken.models.loading`),
what differs between families (`harken.models.families`).
"""

from __future__ import annotations

import torch

from harken.models.audio_lm import AudioLM
from harken.models.families import AUDIO_TOKEN, IM_END, QWEN2_AUDIO, Family
from harken.models.toy import train_toy_tokenizer


def qwen2_audio_7b_config(audio_token_index: int = 151646, pad_token_id: int = 151643, eos_token_id: int = 151645):
    """A `Qwen2AudioConfig` with the real sizes of Qwen2-Audio-7B(-Instruct), no download.

    Audio encoder (Whisper-large-v3's): d_model 1280, 32 layers, 20 heads, ffn 5120, 128 mel
    bins, 1500 positions (a 30 s window). Language model (Qwen-7B): hidden 4096, 32 layers, 32
    heads, 32 key/value heads, intermediate 11008, vocabulary 156032, rope theta 10000.
    The token ids default to the real tokenizer's; pass the toy tokenizer's instead.
    """
    import transformers

    return transformers.Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 128,
            "encoder_layers": 32,
            "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120,
            "d_model": 1280,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 156032,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "rope_theta": 10000.0,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
        },
        audio_token_index=audio_token_index,
    )


def model_from_config(config, family: Family, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random-weight model of `config`, created and initialised directly on `device` in `dtype`.

    Every parameter and buffer is allocated under `torch.device(device)`, so a 7B model built for
    CUDA never touches the CPU (initialising 8 B parameters on the CPU takes minutes).
    """
    with torch.device(device):
        model = family.model_class._from_config(config, dtype=dtype)
    return model.eval()


def build_7b(device: str, dtype: torch.dtype, seed: int = 0) -> AudioLM:
    """Qwen2-Audio-7B at full size with random weights and a toy tokenizer (see qwen2_audio_7b_config)."""
    from transformers import WhisperFeatureExtractor

    tokenizer = train_toy_tokenizer()
    config = qwen2_audio_7b_config(
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
    )
    torch.manual_seed(seed)
    model = model_from_config(config, QWEN2_AUDIO, device, dtype)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    return AudioLM(model, tokenizer, fe, QWEN2_AUDIO, "random:qwen2-audio-7b")
