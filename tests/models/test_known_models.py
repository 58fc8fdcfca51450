"""The published checkpoints' architectures, known offline (harken.models.known): their sizes
against the published numbers, parameter counts on the meta device, and the lookup by model.path."""

from __future__ import annotations

import pytest
import torch

from harken.models.families import QWEN2_AUDIO
from harken.models.known import (
    KNOWN_MODELS,
    audio_flamingo_3_config,
    known_config,
    model_from_config,
    qwen2_audio_7b_config,
    qwen3_omni_thinker_config,
    voxtral_mini_config,
)


def _count(config, family_name: str) -> dict[str, int]:
    """Parameters by top module (meta device: nothing allocated), and "all"."""
    from harken.models.families import get_family

    model = model_from_config(config, get_family(family_name), "meta", torch.bfloat16)
    out = {"all": 0}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:2]) if name.startswith("model.") else name.split(".")[0]
        out[key] = out.get(key, 0) + p.numel()
        out["all"] += p.numel()
    return out


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


def test_qwen3_omni_thinker_sizes():
    cfg = qwen3_omni_thinker_config()
    t, a = cfg.text_config, cfg.audio_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim) == (
        2048, 48, 32, 4, 128)
    assert (t.num_experts, t.num_experts_per_tok, t.moe_intermediate_size, t.vocab_size) == (128, 8, 768, 152064)
    assert t.decoder_sparse_step == 1 and t.mlp_only_layers == [] and not t.output_router_logits
    assert (a.d_model, a.encoder_layers, a.encoder_ffn_dim, a.n_window, a.output_dim) == (1280, 32, 5120, 50, 2048)
    n = _count(cfg, "qwen3-omni")
    # Language model with its head: keras-hub's 30,532,122,624 to 0.002 %; by hand:
    # embeddings and head 2 * 152064 * 2048; per layer attention 2048 * (4096 + 2 * 512) + 4096 * 2048,
    # q/k norms 2 * 128, two norms 2 * 2048, router 128 * 2048, experts 128 * 3 * 2048 * 768; final norm 2048.
    layer = 2048 * 5120 + 4096 * 2048 + 256 + 4096 + 128 * 2048 + 128 * 3 * 2048 * 768
    lm = 2 * 152064 * 2048 + 48 * layer + 2048
    assert n["model.language_model"] + n["lm_head"] == lm == 30_532_646_912
    assert lm == pytest.approx(30_532_122_624, rel=2e-5)
    # The technical report's audio encoder of 650M and vision encoder of 540M.
    assert n["model.audio_tower"] == pytest.approx(650e6, rel=0.01)
    assert n["model.visual"] == pytest.approx(540e6, rel=0.01)
    assert n["all"] == 31_719_205_488


def test_audio_flamingo_3_sizes():
    cfg = audio_flamingo_3_config()
    t, a = cfg.text_config, cfg.audio_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (
        3584, 18944, 28, 28, 4)
    assert (t.vocab_size, t.tie_word_embeddings, cfg.audio_token_id) == (152064, False, 151669)
    assert (a.d_model, a.encoder_layers, a.encoder_ffn_dim, a.max_source_positions) == (1280, 32, 5120, 1500)
    n = _count(cfg, "audio-flamingo-3")
    assert n["model.language_model"] + n["lm_head"] == 7_615_616_512  # Qwen2.5-7B's 7.61e9
    assert n["model.multi_modal_projector"] == 1280 * 3584 + 3584 + 3584 * 3584 + 3584  # two layers, biases
    assert n["all"] == pytest.approx(8.27e9, rel=1e-3)


def test_voxtral_mini_sizes():
    cfg = voxtral_mini_config()
    t, a = cfg.text_config, cfg.audio_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
            t.head_dim) == (3072, 8192, 30, 32, 8, 128)
    assert (t.vocab_size, t.tie_word_embeddings, cfg.audio_token_id) == (131072, False, 24)
    assert (a.hidden_size, a.intermediate_size) == (1280, 5120)
    n = _count(cfg, "voxtral")
    assert n["model.multi_modal_projector"] == 4 * 1280 * 3072 + 3072 * 3072  # 4 frames side by side, no biases
    assert n["all"] == 4_676_271_104  # 9.35 GB in bf16: the checkpoint's ~9.4 GB download
    assert 2 * n["all"] == pytest.approx(9.4e9, rel=0.01)


def test_known_configs_by_model_path():
    config, family = known_config("mistralai/Voxtral-Mini-3B-2507")
    assert family.name == "voxtral" and config.model_type == "voxtral"
    assert known_config("someone/else") is None
    for path, (family_name, make) in KNOWN_MODELS.items():
        assert make().model_type in known_config(path)[1].model_types

