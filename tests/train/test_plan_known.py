"""`harken plan` for the published checkpoints (harken.models.known): every preset plans offline,
a mixture of experts holds all its experts' weights and keeps activations for its top-k only,
the two-layer and 4-frame projectors, by hand and against memory measured on CPU."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from harken.cli.plan import _load
from harken.config import load_config
from harken.schema import GRPOConfig
from harken.train.plan import GIB, ModelSizes, model_sizes, moe_layer_bytes, plan_memory


def _cfg(family: str, *overrides):
    return load_config(GRPOConfig, "tiny", [f"model.path=tiny:{family}", "model.dtype=float32", *overrides])


def test_every_preset_plans_offline():
    from harken.cli.presets import preset_names

    for name in preset_names():
        cfg, _ = _load(name, [])
        sizes = model_sizes(cfg.model.path)  # no download, no weights
        assert plan_memory(cfg, 8, sizes).peak > 0, name


@pytest.mark.parametrize("preset,params,low,high", [
    ("qwen3-omni", 31_719_205_488, 50, 72), ("audio-flamingo-3", 8_270_025_216, 15, 60),
    ("voxtral", 4_676_271_104, 8, 40)])
def test_full_size_presets_on_8x80(preset, params, low, high):
    """The presets at full size on 8 GPUs: their parameter counts, FSDP per-GPU peaks in a plausible
    range that fits 80 GB, and (for the mixture of experts) weights of every expert held per GPU."""
    cfg, _ = _load(preset, [])
    sizes = model_sizes(cfg.model.path)
    plan = plan_memory(cfg, 8, sizes)
    assert plan.inputs["parameters"] == params
    assert low < plan.peak / GIB < high and plan.fits(80)
    if preset == "qwen3-omni":
        # LoRA r 16 on q, k, v, o of 48 layers: 16 * ((2048 + 4096) + 2 * (2048 + 512) + (4096 + 2048)) each.
        trained = 48 * 16 * (2 * (2048 + 4096) + 2 * (2048 + 512))
        assert plan.inputs["trained_parameters"] == trained
        # bf16 base of all 128 experts per layer, fp32 adapters (master weights), sharded over 8; the
        # rollout gathers the whole bf16 model, every expert included: its peak.
        assert plan.parts["weights"] == (2 * params + 4 * trained) / 8
        assert plan.parts["gen_weights"] == 2 * params and plan.peak_phase == "generation"


def test_moe_layer_bytes_by_hand():
    # The toy's layer as measured tensor by tensor (fp32, 2 of 4 experts of width 64, hidden 64), per
    # token: per expert, gathered input 256 + gate and up 512 + activation 256 + down input 256 +
    # weighted output 256 + routing weight 4, and 36 of indices and fp32 top-k weight; router
    # softmax 4 * 4 and its sum 4.
    assert moe_layer_bytes(64, 64, 2, 4, 4, lora=False) == 2 * (256 + 512 + 256 + 256 + 256 + 4 + 36) + 16 + 4
    # Frozen experts keep neither their input nor the down projection's.
    assert moe_layer_bytes(64, 64, 2, 4, 4, lora=True) == 2 * (512 + 256 + 256 + 4 + 36) + 16 + 4


def test_experts_count_for_weights_and_only_top_k_for_activations():
    """Doubling the experts (same top-k) adds their weights in full and, to activations, only the
    router's softmax over the extra experts: 4 bytes per extra expert, token and layer."""
    from harken.models.families import get_family
    from harken.models.toy import build_tiny

    config = build_tiny("qwen3-omni").model.config
    more = copy.deepcopy(config)
    more.text_config.num_experts = 8
    family = get_family("qwen3-omni")
    four, eight = ModelSizes.from_config(config, family), ModelSizes.from_config(more, family)
    cfg = _cfg("qwen3-omni", "rollout.prompts_per_step=1", "rollout.group_size=2", "rollout.max_new_tokens=5")
    p4 = plan_memory(cfg, 1, four, sharding="none", text_tokens=20)
    p8 = plan_memory(cfg, 1, eight, sharding="none", text_tokens=20)
    h, fx, layers = 64, 64, 2  # the toy: every layer sparse, experts of width ffn/2
    added = layers * 4 * (3 * h * fx + h)  # gate, up, down of 4 more experts and their router rows
    assert eight.count() - four.count() == added
    assert p8.parts["weights"] - p4.parts["weights"] == 4 * added  # fp32, one GPU
    tokens = p4.inputs["prompt_tokens"] + 2 * (5 - 1)  # the prompt (B = 1) and 2 rows of T - 1 completion tokens
    assert p8.parts["activations"] - p4.parts["activations"] == pytest.approx(tokens * layers * 4 * 4)


def test_qk_norm_is_read_from_the_model():
    assert model_sizes("tiny:qwen3-omni").qk_norm and not model_sizes("tiny:qwen2-audio").qk_norm


@pytest.mark.parametrize("family", ["audio-flamingo-3", "voxtral"])
def test_projector_terms_by_hand(family):
    """A two-layer projector keeps its GELU's input and output (2h per audio token) beyond its input;
    Voxtral's input is 4 encoder frames side by side (4d per token)."""
    sizes = model_sizes(f"tiny:{family}")
    h, d, c = 64, 64, 4
    a = sizes.arch
    assert a.proj_layers == 2 and a.proj_in == (4 * d if family == "voxtral" else d)
    for freeze in ("true", "false"):
        cfg = _cfg(family, f"model.freeze_encoder={freeze}", "rollout.prompts_per_step=2",
                   f"prompt.max_audio_seconds={sizes.window_seconds}")
        p = plan_memory(cfg, 1, sizes, sharding="none")
        audio = p.inputs["audio_tokens"]
        one_layer = plan_memory(cfg, 1, replace(sizes, arch=replace(a, proj_layers=1)), sharding="none")
        assert p.parts["activations"] - one_layer.parts["activations"] == 2 * audio * 2 * h * c
        if family == "voxtral":
            narrow = plan_memory(cfg, 1, replace(sizes, arch=replace(a, proj_in=d)), sharding="none")
            assert p.parts["activations"] - narrow.parts["activations"] == 2 * audio * c * 3 * d


# --------------------------------------------------------------------------------------------
# Against memory measured on CPU: the decoder (and the projector) with the encoder frozen
# --------------------------------------------------------------------------------------------


def _saved_bytes(family: str, lora: bool, b: int, g: int, t: int) -> tuple[int, ModelSizes, int]:
    """Peak bytes saved for backward in a policy pass (shared path, fp32, encoder frozen), the model's
    sizes, and the prompt's text tokens."""
    from harken.bench.memory import SavedTensorMeter
    from harken.bench.workload import BenchConfig, encoded_audio, run_policy, setup

    torch.manual_seed(0)
    window = 4 if family == "voxtral" else 5  # the toy's window: the plan's clips fill it
    w = setup(BenchConfig(size="toy", family=family, clip_seconds=window, group_size=g, completion_tokens=t,
                          prompts=b, freeze_encoder=True))
    sizes = ModelSizes.from_model(w.lm.model, w.lm.family)
    for name, p in w.lm.model.named_parameters():  # as harken.train.policy.prepare_model
        if w.lm.family.unused_modules and name.startswith(w.lm.family.unused_modules):
            p.requires_grad_(False)
    if lora:
        from peft import LoraConfig, get_peft_model

        from harken.train.policy import lora_target_regex

        targets = lora_target_regex(w.lm, ["q_proj", "k_proj", "v_proj", "o_proj"])
        lora_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=targets)
        w.lm.model = get_peft_model(w.lm.model, lora_config)
    meter = SavedTensorMeter(list(w.lm.model.parameters()))
    with meter.track():
        run_policy(w, True, encoded_audio(w), torch.zeros(b * g, t))
    return meter.peak, sizes, int(w.batch.input_ids.shape[1] - w.batch.audio_token_counts[0])


@pytest.mark.slow
@pytest.mark.parametrize("family,lora", [("qwen3-omni", False), ("qwen3-omni", True), ("audio-flamingo-3", False),
                                         ("voxtral", False)])
def test_saved_activations_match_memory_measured_on_cpu(family, lora):
    b, g, t = 1, 4, 12
    measured, sizes, text_tokens = _saved_bytes(family, lora, b, g, t)
    cfg = load_config(GRPOConfig, None, [
        f"model.path=tiny:{family}", "model.dtype=float32", "model.freeze_encoder=true", f"model.lora={lora}",
        "model.lora_r=4", "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj]", f"rollout.prompts_per_step={b}",
        f"rollout.group_size={g}", f"rollout.max_new_tokens={t}", f"prompt.max_audio_seconds={sizes.window_seconds}",
        "algo.kl_coef=0"])
    plan = plan_memory(cfg, 1, sizes, sharding="none", text_tokens=text_tokens, device="cpu")
    assert plan.parts["activations"] == pytest.approx(measured, rel=0.1)
