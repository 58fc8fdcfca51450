"""The Qwen2-Audio-7B architecture, built without weights (the benchmark's 7B model)."""

from __future__ import annotations

import torch

from harken.models.config7b import model_from_config, qwen2_audio_7b_config
from harken.models.families import QWEN2_AUDIO


def test_7b_config_has_the_real_sizes():
    cfg = qwen2_audio_7b_config()
    a, t = cfg.audio_config, cfg.text_config
    assert (a.d_model, a.encoder_layers, a.encoder_attention_heads, a.encoder_ffn_dim) == (1280, 32, 20, 5120)
    assert (a.max_source_positions, a.num_mel_bins) == (1500, 128)
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (4096, 32, 32, 32)
    assert (t.intermediate_size, t.vocab_size) == (11008, 156032)
    assert t.rope_parameters["rope_theta"] == 10000


def test_7b_builds_entirely_on_the_target_device():
    """On the meta device (nothing allocated): every tensor is created under the device context,
    so on CUDA nothing is initialised on the CPU; 8.4 B parameters, as Qwen2-Audio-7B."""
    model = model_from_config(qwen2_audio_7b_config(), QWEN2_AUDIO, "meta", torch.bfloat16)
    tensors = list(model.parameters()) + list(model.buffers())
    assert {t.device.type for t in tensors} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert 8.3e9 < sum(p.numel() for p in model.parameters()) < 8.5e9
