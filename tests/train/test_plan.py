"""`harken plan`: the memory formula by hand on a toy configuration, the command, and the formula
against memory measured on CPU for the toy and small models (within 20%, part by part and per phase)."""

from __future__ import annotations

import json

import pytest
import torch

from harken.cli import main
from harken.config import load_config
from harken.schema import GRPOConfig, SFTConfig
from harken.train.plan import GIB, HEADROOM, ModelSizes, advise, model_sizes, plan_memory


@pytest.fixture(scope="module")
def toy_sizes():
    return model_sizes("tiny:qwen2-audio")


def _cfg(*overrides, schema=GRPOConfig, preset="tiny"):
    return load_config(schema, preset, ["model.dtype=float32", *overrides])


# --------------------------------------------------------------------------------------------
# The formula by hand
# --------------------------------------------------------------------------------------------

# The toy Qwen2-Audio: 258,560 parameters, of which the encoder's 250 x 64 position table is built
# frozen; language model h 64, f 128, 2 layers, 4 heads, 2 key/value heads of 16, vocabulary 470;
# encoder d 64, f_e 128, 2 layers, 4 heads, a 5 s window (250 positions, 125 audio tokens).
W, WT = 258_560, 258_560 - 250 * 64


def test_parts_by_hand(toy_sizes):
    cfg = _cfg("rollout.group_size=2", "rollout.prompts_per_step=1", "rollout.max_new_tokens=3", "algo.kl_coef=0.04")
    p = plan_memory(cfg, 1, toy_sizes, sharding="none", text_tokens=20)
    assert p.inputs["prompt_tokens"] == 145 and p.inputs["audio_tokens"] == 125
    assert p.parts["weights"] == 4 * W and p.parts["reference"] == 4 * W  # fp32 compute: no master copy, no casts
    assert p.parts["gradients"] == 4 * WT and p.parts["optimizer"] == 8 * WT
    assert p.parts["pass_weights"] == 0 and p.parts["gen_weights"] == 0
    # KV cache: (B*P + R*(P+T)) positions x L*2*nkv*dh*4 bytes = 512 bytes each.
    assert p.parts["kv_cache"] == (145 + 2 * 148) * 512
    # Prompt pass: decoder 145*(512 + 4*(3*128 + 4.5*64)) = 464,000; encoder (its whole 5 s window)
    # 4*max(250*(2*128 + 4*64), 500*(128 + 4*64)) + 145*64*4 = 805,120: the stem's moment, above the cache.
    assert p.parts["gen_pass"] == 805_120 - (145 + 2 * 148) * 512
    # Activations. Per token and layer: norms 2*(4h + 4 + 2*4h) = 1544, attention 2*4h + 4*4 = 528, MLP 4*4f = 2048;
    # final norm 4h + 4 + 4h = 516 per token.
    per_tok, final = 1544 + 528 + 2048, 516
    prompt = 2 * (145 * per_tok + 2 * 2 * 16 * 145 * 4) + 145 * final  # keys/values of nkv heads (B = 1: no mask)
    # Encoder: stem 4*(2*128*250 + 5*64*250), layers 250 * 2 * (9*64*4 + 2*128*4 + 16 + 4*4), tail 4*(1.5*64*250 + 64*125).
    encoder = 4 * (2 * 128 * 250 + 5 * 64 * 250) + 250 * 2 * 3360 + 4 * (1.5 * 64 * 250 + 64 * 125)
    # Completions: 2 rows of T-1 = 2 tokens after 145; keys/values repeated to 4 heads over 147 positions, float mask.
    micro = 2 * (2 * (2 * per_tok + 2 * 4 * 16 * 147 * 4 + 2 * 147 * 4) + 2 * final) + 2 * 3 * (4 * 64 + 4 * 470)
    assert p.parts["activations"] == pytest.approx(prompt + encoder + micro)
    assert p.parts["pass_buffers"] == 2 * 3 * 470 * 8 + 145 * 512  # logits workspace, prompt key/value gradients
    assert p.parts["step_buffers"] == 4 * WT  # AdamW's foreach temporary (one process: no all-reduce copy)
    assert p.phases["generation"] == 4 * W + 8 * WT + 4 * W + 805_120


def test_sharding_master_weights_and_lora_by_hand(toy_sizes):
    base = ("model.dtype=bfloat16", "model.master_weights=true", "algo.kl_coef=0.04")
    none = plan_memory(_cfg(*base), 4, toy_sizes, sharding="none")
    fsdp = plan_memory(_cfg(*base), 4, toy_sizes, sharding="fsdp")
    assert none.parts["weights"] == 4 * W and none.parts["reference"] == 2 * W
    for part in ("weights", "gradients", "optimizer", "reference"):
        assert fsdp.parts[part] == pytest.approx(none.parts[part] / 4)
    # Autocast keeps bf16 casts: prompt pass (encoder, projector, decoder) and a micro-batch (decoder, head).
    enc = toy_sizes.count(lambda n, t: t and n.startswith("model.audio_tower."))
    dec = toy_sizes.count(lambda n, t: n.startswith("model.language_model.layers."))
    proj, head = 64 * 64 + 64, 470 * 64
    assert none.parts["pass_weights"] == 2 * (enc + proj + 2 * dec + head)
    assert fsdp.parts["gen_weights"] == 2 * W  # the whole model gathered in bf16 for the rollout
    assert none.parts["step_buffers"] == 4 * WT  # the flat all-reduce copy (= the foreach temporary)
    # LoRA r=16 on the 7 linears of each layer: 16 * (in + out) = 16 * 1024 per layer, 2 layers; frozen bf16 base.
    lora = plan_memory(_cfg("model.dtype=bfloat16", "model.lora=true"), 1, toy_sizes, sharding="none")
    assert lora.inputs["trained_parameters"] == 2 * 16 * 1024
    assert lora.parts["weights"] == 2 * W + 4 * 32768 and lora.parts["optimizer"] == 8 * 32768
    assert lora.parts["reference"] == 0  # the adapter switched off is the reference


def test_sft_plan_has_no_rollout(toy_sizes):
    p = plan_memory(_cfg(schema=SFTConfig, preset="tiny-sft"), 1, toy_sizes)
    assert "generation" not in p.phases and p.parts["kv_cache"] == 0 and p.parts["reference"] == 0
    assert p.inputs["rows"] == load_config(SFTConfig, "tiny-sft").train.batch_size


def test_advice_turns_micro_batch_then_sharding_then_gpus(toy_sizes):
    batch = ("rollout.group_size=8", "rollout.prompts_per_step=2", "rollout.max_new_tokens=64")

    def peak(mb=0, mode="none", gpus=1, *more):
        return plan_memory(_cfg(*batch, f"rollout.micro_batch={mb}", *more), gpus, toy_sizes, sharding=mode).peak

    def gib(low, high):  # a card between two peaks
        assert low < high
        return (low + high) / 2 / HEADROOM / GIB

    cfg = _cfg(*batch)
    assert advise(cfg, 1, 1.0, toy_sizes, "none") == "fits"
    assert advise(cfg, 1, gib(peak(4), peak(5)), toy_sizes, "none") == "does not fit: set rollout.micro_batch=4"
    advice = advise(cfg, 8, gib(peak(1, "fsdp", 8), peak(1, "none", 8)), toy_sizes, "none")
    assert advice.startswith("does not fit: set model.sharding=fsdp")
    lora = _cfg(*batch, "model.lora=true", "rollout.micro_batch=1")
    card = gib(peak(1, "fsdp", 16, "model.lora=true"), peak(1, "fsdp", 8, "model.lora=true"))
    advice = advise(lora, 8, card, toy_sizes, "fsdp")
    gpus = int(advice.split("--gpus ")[1].split()[0])
    assert advice.startswith("does not fit: use --gpus") and 8 < gpus <= 16
    assert plan_memory(lora, gpus, toy_sizes, sharding="fsdp").fits(card)
    assert not plan_memory(lora, gpus - 1, toy_sizes, sharding="fsdp").fits(card)
    assert "even with one row per micro-batch" in advise(lora, 8, 1e-4, toy_sizes, "fsdp")


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_sizes_from_checkpoint_folders(tiny_dirs):
    for family, folder in tiny_dirs.items():
        sizes, built = model_sizes(str(folder)), model_sizes(f"tiny:{family}")
        assert sizes.family.name == family and sizes.params == built.params and sizes.arch == built.arch


def test_cli_json(capsys):
    args = ["plan", "--config", "tiny", "--gpus", "2", "--gpu-memory-gb", "1", "--text-tokens", "20", "--json"]
    assert main([*args, "model.dtype=float32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "GRPO" and out["gpus"] == 2 and set(out["modes"]) == {"none", "fsdp"}
    assert out["inputs"]["prompt_tokens"] == 145
    none, fsdp = out["modes"]["none"], out["modes"]["fsdp"]
    assert none["parts"]["weights"] == 4 * W and fsdp["parts"]["weights"] == 2 * W
    assert none["fits"] and none["advice"] == "fits" and none["peak_gib"] < 1
    assert set(none["phases"]) == {"generation", "policy pass", "optimizer step"}


def test_cli_table_7b_recipe(capsys):
    args = ["plan", "--config", "r1aqa", "model.sharding=fsdp", "model.master_weights=true", "model.dtype=bfloat16"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "8.40 B parameters" in text and "fsdp * (GiB)" in text
    assert "none: does not fit: set model.sharding=fsdp" in text and "fsdp: fits" in text
    assert main(["plan", "--config", "r1aqa-sft-lora", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "SFT"


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["plan", f"model.path={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err and "tiny:FAMILY" in err
    assert main(["plan", "rollout.nope=1"]) == 2
    assert "unknown config key 'rollout.nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Against memory measured on CPU
# --------------------------------------------------------------------------------------------


def _peak_bytes(fn) -> int:
    """Peak bytes of CPU tensor memory allocated above the level at the start of `fn()` (torch's profiler)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    level = peak = 0
    for _, size in sorted(events):
        level += size
        peak = max(peak, level)
    return peak


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _measure(size, family, b, g, t, micro_batch, lora, autocast):
    """A GRPO step's memory on CPU: exact bytes of weights, gradients and AdamW state, the peak of
    tensors saved for backward in a policy pass, and the peak above the held state of each phase."""
    from harken.bench.memory import SavedTensorMeter
    from harken.bench.workload import BenchConfig, encoded_audio, run_generation, run_optimizer, run_policy, setup

    w = setup(BenchConfig(size=size, family=family, clip_seconds=30 if size == "small" else 5, group_size=g,
                          completion_tokens=t, prompts=b, micro_batch=micro_batch or None, freeze_encoder=lora))
    sizes = ModelSizes.from_model(w.lm.model, w.lm.family)
    for name, p in w.lm.model.named_parameters():  # as harken.train.policy.prepare_model
        if w.lm.family.unused_modules and name.startswith(w.lm.family.unused_modules):
            p.requires_grad_(False)
    if lora:
        from peft import LoraConfig, get_peft_model

        from harken.train.policy import lora_target_regex

        targets = lora_target_regex(w.lm, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        w.lm.model = get_peft_model(w.lm.model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=targets))
    w.params = [p for p in w.lm.model.parameters() if p.requires_grad]
    w.optimizer = torch.optim.AdamW(w.params, lr=0.0)
    if autocast:  # fp32 master weights computing in bf16, as the trainer runs them without sharding
        w.lm.compute_dtype = w.gen_lm.compute_dtype = torch.bfloat16
    m = {"weights": _nbytes(w.lm.model.parameters())}
    gen = _peak_bytes(lambda: run_generation(w, True, 1))
    enc = encoded_audio(w)
    ref = torch.zeros(b * g, t)
    meter = SavedTensorMeter(list(w.lm.model.parameters()))
    with meter.track():
        run_policy(w, True, enc, ref)
    m["gradients"] = _nbytes(p.grad for p in w.params)
    policy = m["gradients"] + _peak_bytes(lambda: run_policy(w, True, enc, ref))  # as with accumulation: gradients held
    run_optimizer(w)
    m["optimizer"] = sum(_nbytes(v for v in s.values() if v.dim() > 0) for s in w.optimizer.state.values())
    run_policy(w, True, enc, ref)
    step = m["gradients"] + _peak_bytes(w.optimizer.step)
    held = m["weights"] + m["optimizer"]
    m["activations"] = meter.peak
    m["phases"] = {"generation": held + gen, "policy pass": held + policy, "optimizer step": held + step}
    prompt = w.batch.input_ids.shape[1] - w.batch.audio_token_counts[0]
    return m, sizes, prompt


CASES = {
    # size, family, B, G, T, micro_batch, LoRA, autocast
    "toy-full-fp32": ("toy", "qwen2-audio", 2, 3, 12, 2, False, False),
    "toy-lora": ("toy", "qwen2-audio", 1, 4, 12, 0, True, False),
    "toy-autocast": ("toy", "qwen2-audio", 1, 4, 12, 0, False, True),
    "toy-omni": ("toy", "qwen2.5-omni", 1, 4, 12, 0, False, False),
    "small-full-fp32": ("small", "qwen2-audio", 1, 4, 12, 0, False, False),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_plan_matches_memory_measured_on_cpu(case):
    size, family, b, g, t, micro_batch, lora, autocast = CASES[case]
    measured, sizes, text_tokens = _measure(size, family, b, g, t, micro_batch, lora, autocast)
    cfg = load_config(GRPOConfig, None, [
        f"model.path=tiny:{family}", f"model.dtype={'bfloat16' if autocast else 'float32'}", f"model.lora={lora}",
        "model.lora_r=4", f"model.freeze_encoder={lora}", f"rollout.prompts_per_step={b}", f"rollout.group_size={g}",
        f"rollout.max_new_tokens={t}", f"rollout.micro_batch={micro_batch}", f"prompt.max_audio_seconds={sizes.window_seconds}",
        "algo.kl_coef=0",
    ])
    plan = plan_memory(cfg, 1, sizes, sharding="none", text_tokens=text_tokens, device="cpu")
    for part in ("weights", "gradients", "optimizer"):
        assert plan.parts[part] == measured[part], part
    # What a pass saves for backward; under autocast that includes the bf16 casts of the weights.
    saved = plan.parts["activations"] + plan.parts["pass_weights"]
    assert saved == pytest.approx(measured["activations"], rel=0.2)
    for phase, value in measured["phases"].items():
        assert plan.phases[phase] == pytest.approx(value, rel=0.2), phase
    # The phases above the held state, where the rollout cache, activations and buffers are the whole difference.
    held = measured["weights"] + measured["optimizer"]
    for phase, value in measured["phases"].items():
        assert plan.phases[phase] - held == pytest.approx(value - held, rel=0.2), phase
    assert plan.peak == pytest.approx(max(measured["phases"].values()), rel=0.2)
