"""`harken bench` end to end on a toy model, its FLOP count against torch's counter, its memory
meter, and the full-size 7B construction (sizes and parameter count on the meta device only)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harken.bench.flops import Arch, step_flops
from harken.bench.memory import SavedTensorMeter
from harken.bench.workload import BenchConfig, build_model, run_generation, run_policy, run_reference, setup
from harken.cli import main


@pytest.fixture(scope="module")
def toy_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--size", "toy", "--clip-seconds", "2", "--group-size", "4", "--completion-tokens", "4",
               "--reps", "1", "--warmup", "0", "--matmul-size", "256", "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "bench.json").read_text())


def test_bench_writes_documented_keys(toy_result):
    out, res = toy_result
    for key in ("date", "config", "machine", "model", "paths", "flops", "check", "max_logprob_diff", "noise",
                "step_speedup", "generation_speedup", "policy_speedup", "reference_speedup", "policy_memory_ratio"):
        assert key in res, key
    for key in ("cpu_count", "torch_threads", "torch", "transformers", "device_name"):
        assert key in res["machine"], key
    for path in ("shared", "naive"):
        p = res["paths"][path]
        for key in ("generation_s", "policy_s", "reference_s", "optimizer_s", "step_s", "policy_activation_mb"):
            assert math.isfinite(p[key]) and p[key] > 0, (path, key)
        # The step is timed as a whole and contains its phases.
        assert p["step_s"] >= p["generation_s"] + p["policy_s"] + p["reference_s"]
    for key in ("step_speedup", "generation_speedup", "policy_speedup", "reference_speedup", "policy_memory_ratio"):
        assert math.isfinite(res[key]) and res[key] > 0, key
    for key in ("model_tflops_per_step", "achieved_gflops", "utilisation"):
        assert set(res["flops"][key]) == {"shared", "naive"}
        assert all(v > 0 and math.isfinite(v) for v in res["flops"][key].values())
    assert res["flops"]["matmul_gflops"] > 0
    # Sharing removes work: the naive step counts more FLOPs and keeps more activations alive.
    assert res["flops"]["predicted_step_speedup"] > 1
    assert res["paths"]["naive"]["policy_activation_mb"] > res["paths"]["shared"]["policy_activation_mb"]
    assert (out / "bench.md").read_text().count("| **whole step** |") == 1


def test_bench_paths_agree(toy_result):
    _, res = toy_result
    assert res["max_logprob_diff"] < 1e-4
    assert res["check"]["ok"] and res["check"]["generation_tokens_equal"] == 1.0
    assert res["check"]["grad_rel_l2"] < 1e-5 and res["check"]["max_grad_rel_diff"] < 1e-4


# The Omni encoder's formula (valid frames, chunked) with it trained; Qwen2-Audio's (full
# window, separate projector), Audio Flamingo 3's (two-layer projector) and Voxtral's (full
# window, two-layer projector on 4 frames per token) trained and frozen. The cases are few: the
# counter is slow.
@pytest.mark.parametrize("family,freezes", [("qwen2-audio", (False, True)), ("qwen2.5-omni", (False,)),
                                            ("audio-flamingo-3", (False, True)), ("voxtral", (False, True))])
def test_flop_formula_matches_torch_counter(family, freezes):
    """The analytic count without attention products == FlopCounterMode (which does not see the
    fused CPU attention kernel), for every phase and both paths."""
    cfg = BenchConfig(size="toy", family=family, clip_seconds=1.3, group_size=2, completion_tokens=3, prompts=2)
    w = setup(cfg)
    arch = Arch.from_config(w.lm.model.config, w.lm.family)
    frames = [int(x) for x in w.batch.feature_mask.sum(-1)]
    for freeze in freezes:
        if freeze:
            w.cfg.freeze_encoder = True
            for name, p in w.lm.model.named_parameters():
                if name.startswith(w.lm.family.encoder_modules):
                    p.requires_grad_(False)
        for shared in (True, False):
            expected = step_flops(arch, prompts=2, group_size=2, prompt_width=w.batch.input_ids.shape[1],
                                  completion_tokens=3, valid_frames=frames, shared=shared,
                                  freeze_encoder=freeze, attention=False)
            counted = {}
            with FlopCounterMode(display=False) as fc:
                _, encoded = run_generation(w, shared, 0)
            counted["generation"] = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                ref = run_reference(w, shared, encoded)
            counted["reference"] = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                run_policy(w, shared, encoded, ref)
            counted["policy"] = fc.get_total_flops()
            w.optimizer.zero_grad(set_to_none=True)
            for phase, n in counted.items():
                assert n == pytest.approx(expected[phase], rel=1e-9), (freeze, shared, phase)


def test_saved_tensor_meter_counts_live_storage_once():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(256, 64)  # 64 KiB
    meter = SavedTensorMeter(exclude=[w])
    with meter.track():
        h = torch.tanh(x @ w)  # saves x (64 KiB, w is excluded) and tanh's output (64 KiB)
        y = (h * h).sum()  # saves h twice: one storage
    assert meter.peak == 2 * 256 * 64 * 4
    y.backward()
    del y, h
    assert meter.current == 0


def test_7b_refuses_cpu():
    with pytest.raises(ValueError, match="--device cuda"):
        build_model(BenchConfig(size="7b", device="cpu"))


def test_decode_bench_end_to_end(tmp_path):
    """`harken bench --decode` on the toy: every decoder timed at every (G, T), the loops' tokens equal,
    ratios and the profile written; decode.md holds the table."""
    from harken.bench.decode import BASELINES, DECODERS

    out = tmp_path / "decode"
    assert main(["bench", "--decode", "--size", "toy", "--clip-seconds", "1", "--group-size", "2",
                 "--completion-tokens", "3,6", "--reps", "1", "--warmup", "0", "--matmul-size", "128",
                 "--out", str(out)]) == 0
    res = json.loads((out / "decode.json").read_text())
    assert res["ok"] and [(r["group_size"], r["tokens"]) for r in res["results"]] == [(2, 3), (2, 6)]
    for r in res["results"]:
        assert set(r["ms_per_step"]) == set(DECODERS) and r["tokens_equal"] == 1.0
        assert all(math.isfinite(r["speedup"][b]) for b in BASELINES)
        assert all(v > 0 for v in r["generate_s"].values())
    assert set(res["flatness"]) == {"2"}
    prof = res["profile"]
    assert (prof["group_size"], prof["tokens"]) == (2, 6) and set(prof["loops"]) == {"harken", "previous"}
    for loop in prof["loops"].values():
        assert sum(k["us"] for k in loop["kinds"].values()) == pytest.approx(loop["wall_us"], rel=1e-6)
    md = (out / "decode.md").read_text()
    assert md.count("| 2 | 6 |") == 1 and "Where a decode step's time goes" in md


def test_profile_summary_kinds_and_remainder():
    from harken.bench.decode import OTHER_OPS, OUTSIDE, summarise_profile

    events = [("aten::mm", 20, 400.0), ("aten::_scaled_dot_product_flash_attention_for_cpu", 4, 200.0),
              ("aten::cat", 10, 100.0), ("aten::multinomial", 2, 50.0), ("aten::mul", 40, 50.0)]
    s = summarise_profile(events, steps=2, wall_s=0.001)  # 500 µs per step
    kinds = s["kinds"]
    assert s["wall_us"] == pytest.approx(500.0)
    assert kinds["matrix products"]["us"] == 200.0 and kinds["matrix products"]["calls"] == 10
    assert kinds["attention"]["us"] == 100.0 and kinds["sampling"]["us"] == 25.0
    assert kinds["cache and mask: copies, concatenation"]["us"] == 50.0 and kinds[OTHER_OPS]["us"] == 25.0
    assert kinds[OUTSIDE]["us"] == pytest.approx(100.0) and kinds[OUTSIDE]["share"] == pytest.approx(0.2)
    assert s["top"][0] == ("aten::mm", 200.0, 10.0)


@pytest.mark.parametrize("argv,message", [
    (["--group-size", "8,16"], "lists only with --decode"),
    (["--decode", "--paths", "shared"], "--paths"),
    (["--decode", "--micro-batch", "2"], "--micro-batch"),
    (["--decode", "--completion-tokens", "1,8"], "at least 2"),
])
def test_bench_refuses_options_of_the_other_benchmark(argv, message, tmp_path, capsys):
    assert main(["bench", "--size", "toy", *argv, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
