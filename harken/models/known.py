"""Published checkpoints at full size, known offline: their architecture sizes, and a random-weight 7B.

Owns: the real sizes of the checkpoints the presets name, as transformers config objects built
without a download (`KNOWN_MODELS`, looked up by `model.path` with `known_config`), and building a
random-weight model of a config directly on the target device (`model_from_config`, `build_7b` for
`harken bench --size 7b`). Does not own: the toy tokenizer `build_7b` pairs with
(`harken.models.toy`), loading checkpoints (`harken.models.loading`), what differs between
families (`harken.models.families`), what the sizes cost in memory (`harken.train.plan`).

Each config sets the sizes that decide parameters, FLOPs and memory (and the token ids it is
known to use); other fields (rope scaling, context length, dropout) keep the class defaults.
Where each number comes from is in the function's docstring. Voxtral-Small-24B-2507 is left out:
no preset uses it.
"""

from __future__ import annotations

from typing import Callable

import torch

from harken.models.audio_lm import AudioLM
from harken.models.families import AUDIO_TOKEN, IM_END, QWEN2_AUDIO, Family, get_family
from harken.models.toy import train_toy_tokenizer

# Whisper-large-v3's encoder, which every family here starts from: d_model 1280, 32 layers, 20
# heads, FFN 5120, 128 mel bins, 1500 positions (a 30 s window).
_WHISPER_LARGE_V3 = dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                         d_model=1280, max_source_positions=1500)


def qwen2_audio_7b_config(audio_token_index: int = 151646, pad_token_id: int = 151643, eos_token_id: int = 151645):
    """A `Qwen2AudioConfig` with the real sizes of Qwen2-Audio-7B(-Instruct), no download.

    Audio encoder (Whisper-large-v3's): d_model 1280, 32 layers, 20 heads, ffn 5120, 128 mel
    bins, 1500 positions (a 30 s window). Language model (Qwen-7B): hidden 4096, 32 layers, 32
    heads, 32 key/value heads, intermediate 11008, vocabulary 156032, rope theta 10000.
    The token ids default to the real tokenizer's; pass the toy tokenizer's instead.
    """
    import transformers

    return transformers.Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", **_WHISPER_LARGE_V3},
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


def qwen3_omni_thinker_config():
    """A `Qwen3OmniMoeThinkerConfig` with the sizes of Qwen/Qwen3-Omni-30B-A3B-Instruct's thinker.

    Sources: the checkpoint's config.json (thinker_config) as the write-up at
    https://xpengzhao.github.io/dl-note/llms/models quotes it "directly from the public Hugging
    Face config" (48 layers, 128 experts, 8 per token, 32 query and 4 key/value heads; the audio
    and vision encoders' sizes below); NVIDIA-NeMo/Megatron-Bridge's reduced copy of that config in
    tests/functional_tests/models/qwen_omni/test_qwen3_omni_moe_generation.py (the audio encoder
    unreduced, output_dim and vision out_hidden_size 2048 = the thinker's hidden size, vocabulary
    152064, head_dim 128, the token ids); keras-team/keras-hub's qwen3_omni_presets.py (the
    thinker's language model: 30,532,122,624 parameters, which hidden 2048 and experts of 768 give
    to 0.002 %: this config builds 30,532,646,912 with the head); the Qwen3-Omni technical report's
    Table 1 (audio encoder 650M, vision encoder 540M: this config builds 648M and 539M). The rope
    sections, the context length and intermediate_size 768 (unused: every layer is sparse) are the
    released config's as a public dump of the loaded checkpoint prints them; they change no size.
    Language model: hidden 2048, 48 layers, all of them mixture-of-experts (decoder_sparse_step 1,
    no mlp_only_layers), 128 experts of moe_intermediate_size 768, 8 per token (normalised top-k),
    no shared expert, 32 heads and 4 key/value heads of head_dim 128, vocabulary 152064, untied
    head, rope theta 1e6 with interleaved multimodal sections [24, 20, 20], context 65536.
    Audio encoder: Whisper-large-v3's sizes, n_window 50, n_window_infer 800, conv_chunksize 500,
    downsample_hidden_size 480, output_dim 2048. Vision encoder (loaded, unused for audio): depth
    27, hidden 1152, FFN 4304, 16 heads, patch 16, temporal patch 2, spatial merge 2, 2304
    position embeddings, out_hidden_size 2048, deepstack layers [8, 16, 24]. Token ids: audio
    151675, audio start 151669, image 151655, video 151656, vision start/end 151652/151653; 13
    position ids per second. About 31.7e9 parameters in all.
    """
    import transformers

    return transformers.Qwen3OmniMoeThinkerConfig(
        audio_config={**_WHISPER_LARGE_V3, "n_window": 50, "n_window_infer": 800, "conv_chunksize": 500,
                      "downsample_hidden_size": 480, "output_dim": 2048},
        vision_config={"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "in_channels": 3,
                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2048,
                       "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]},
        text_config={
            "vocab_size": 152064, "hidden_size": 2048, "intermediate_size": 768, "num_hidden_layers": 48,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-6, "decoder_sparse_step": 1, "mlp_only_layers": [], "moe_intermediate_size": 768,
            "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [24, 20, 20],
                                "interleaved": True, "mrope_interleaved": True},
        },
        audio_token_id=151675,
        audio_start_token_id=151669,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        position_id_per_seconds=13,
    )


def audio_flamingo_3_config():
    """An `AudioFlamingo3Config` with the sizes of nvidia/audio-flamingo-3-hf.

    Sources: transformers' convert_audioflamingo3_to_hf.py builds the checkpoint's config.json
    from the original llm/ and sound_tower/ configs with hidden_size 3584, sound_hidden_size 1280
    and sound token id 151669; the model card names the language model Qwen2.5-7B and the
    encoder AF-Whisper (Whisper-large-v3's architecture; `AudioFlamingo3EncoderConfig`'s
    defaults, documented for this checkpoint, are its sizes); NVIDIA/audio-flamingo's
    llava/model/language_model/builder.py adds `<sound>` to the tokenizer without resizing the
    embeddings, so the vocabulary is Qwen2.5-7B's. Qwen2.5-7B's sizes (as its config.json,
    copied in volcengine/verl's tests/utils/test_flops_counter.py for Qwen/Qwen2.5-7B-Instruct):
    hidden 3584, intermediate 18944, 28 layers, 28 heads, 4 key/value heads, vocabulary 152064,
    untied head: 7,615,616,512 parameters with the head, Qwen2.5-7B's published 7.61e9.
    Projector (transformers' AudioFlamingo3MultiModalProjector, NVIDIA's SoundMultimodalProjector):
    Linear(1280, 3584) + GELU + Linear(3584, 3584), with biases. About 8.27e9 parameters in all.
    """
    import transformers

    return transformers.AudioFlamingo3Config(
        audio_config={"model_type": "audioflamingo3_encoder", **_WHISPER_LARGE_V3},
        text_config={"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
                     "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                     "tie_word_embeddings": False},
        audio_token_id=151669,
    )


def voxtral_mini_config():
    """A `VoxtralConfig` with the sizes of mistralai/Voxtral-Mini-3B-2507.

    Sources: transformers' VoxtralConfig, whose text defaults are this checkpoint's (its docstring
    names it; "ensure default is 3B" in the pull request that added Voxtral, huggingface/
    transformers#39429): a Llama of hidden 3072, 30 layers, 8 key/value heads of head_dim 128,
    intermediate 8192, vocabulary 131072, rope theta 1e8; 32 query heads (LlamaConfig's default,
    which VoxtralConfig keeps); VoxtralEncoderConfig's defaults (Whisper-large-v3's sizes);
    convert_voxtral_weights_to_hf.py's audio token id 24. The projector (VoxtralMultiModalProjector)
    is Linear(4 x 1280 = the encoder's intermediate_size 5120, 3072) + GELU + Linear(3072, 3072),
    no biases. 4,676,271,104 parameters with an untied head: 9.35 GB in bf16, as the checkpoint's
    download of about 9.4 GB (jwt625/VoiceModeTranscript's voxtral_test/README.md) and the model
    card's "~9.5 GB of GPU RAM" (24 query heads, or a tied head, would make it 9.0 or 8.5 GB).
    """
    import transformers

    return transformers.VoxtralConfig(
        audio_config={"model_type": "voxtral_encoder", **_WHISPER_LARGE_V3},
        text_config={"model_type": "llama", "vocab_size": 131072, "hidden_size": 3072, "intermediate_size": 8192,
                     "num_hidden_layers": 30, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                     "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e8}},
        audio_token_id=24,
    )


# model.path -> (family, its full-size config)
KNOWN_MODELS: dict[str, tuple[str, Callable]] = {
    "Qwen/Qwen2-Audio-7B-Instruct": ("qwen2-audio", qwen2_audio_7b_config),
    "Qwen/Qwen2-Audio-7B": ("qwen2-audio", qwen2_audio_7b_config),
    "Qwen/Qwen3-Omni-30B-A3B-Instruct": ("qwen3-omni", qwen3_omni_thinker_config),
    "nvidia/audio-flamingo-3-hf": ("audio-flamingo-3", audio_flamingo_3_config),
    "mistralai/Voxtral-Mini-3B-2507": ("voxtral", voxtral_mini_config),
}


def known_config(path: str):
    """(config, family) of a published checkpoint named by `path`, or None when it is not one of KNOWN_MODELS."""
    if path not in KNOWN_MODELS:
        return None
    family, config = KNOWN_MODELS[path]
    return config(), get_family(family)


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
