"""The FLOP model's projectors and mixture of experts: by hand at the published checkpoints' full
sizes (harken.models.known), and against torch's FlopCounterMode on the toy Qwen3-Omni (the whole
step on every family's toy: tests/bench/test_bench.py)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from harken.bench.flops import Arch
from harken.models.families import get_family
from harken.models import known


def _arch(config, family: str) -> Arch:
    return Arch.from_config(config, get_family(family))


def test_projectors_by_hand_at_full_size():
    """Per audio token, 2 FLOPs per multiply-add: Qwen2-Audio's one layer 1280 -> 4096; Audio Flamingo
    3's two, 1280 -> 3584 -> 3584; Voxtral's two on 4 frames side by side, 4 x 1280 -> 3072 -> 3072.
    One 30 s clip: 750 tokens (Qwen2-Audio, AF3), 375 (Voxtral); the first layer's input gradient
    is the part nothing needs with a frozen encoder."""
    cases = [(known.qwen2_audio_7b_config(), "qwen2-audio", 1280 * 4096, 0, 750),
             (known.audio_flamingo_3_config(), "audio-flamingo-3", 1280 * 3584, 3584 * 3584, 750),
             (known.voxtral_mini_config(), "voxtral", 5120 * 3072, 3072 * 3072, 375)]
    for config, family, first, second, tokens in cases:
        enc = _arch(config, family).encoder([3000])
        assert enc["projector"] == 2 * (first + second) * tokens, family
        assert enc["projector_input_grad"] == 2 * first * tokens, family


def test_mixture_of_experts_by_hand_at_full_size():
    """Qwen3-Omni's thinker, per token: attention 2048 x (32 + 2 x 4) x 128 + 32 x 128 x 2048 in each
    of 48 layers, and in each (all sparse) a router 2048 -> 128 and 8 of the 128 experts of width
    768 (gate, up, down): only the routed experts compute."""
    arch = _arch(known.qwen3_omni_thinker_config(), "qwen3-omni")
    assert (arch.experts, arch.experts_per_token, arch.expert_ffn, arch.moe_layers) == (128, 8, 768, 48)
    per_layer = 2048 * 40 * 128 + 4096 * 2048 + 2048 * 128 + 8 * 3 * 2048 * 768
    assert arch.decoder_linear_per_token == 48 * per_layer
    assert arch.text(3, 5, 0, attention=False) == 2 * 3 * 5 * 48 * per_layer
    dense = _arch(known.audio_flamingo_3_config(), "audio-flamingo-3")  # dense: 3 x h x f per layer
    assert dense.decoder_linear_per_token == 28 * (3584 * (28 + 8) * 128 + 3584 * 3584 + 3 * 3584 * 18944)


def test_moe_language_model_matches_torch_counter():
    """The toy Qwen3-Omni's language model (4 experts, top-2, every layer sparse): the count without
    attention products == FlopCounterMode, whatever experts the router picks. FlopCounterMode does
    not see grouped_mm, transformers' default experts kernel, so the experts run as the eager loop,
    which does the same products one expert at a time."""
    from harken.models.toy import build_tiny

    lm = build_tiny("qwen3-omni")
    lm.model.set_experts_implementation("eager")
    arch = Arch.from_config(lm.model.config, lm.family)
    text = lm.family.module(lm.model, "language_model")
    torch.manual_seed(0)
    rows, new = 3, 7
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        text(inputs_embeds=torch.randn(rows, new, arch.hidden))
    assert fc.get_total_flops() == arch.text(rows, new, 0, attention=False)

