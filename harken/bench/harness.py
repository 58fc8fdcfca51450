"""`harken bench`: what sharing each group's prompt saves in a GRPO step, measured in one process.

Owns: the measurement of the two paths of `harken.rl.rollout` (shared prefix vs naive repeated
prompt) on one GRPO step: the timed steps, the exactness check, and what `bench.json` holds
(`run_bench`). Does not own: the work of a step (`harken.bench.workload`), the FLOP count
(`harken.bench.flops`, whose docstring defines `flops`), the memory meter (`harken.bench.memory`,
which defines `policy_activation_mb` and `peak_mb`), the machine description and noise signs
(`harken.bench.machine`), bench.md (`harken.bench.results`), the command line (`harken.cli.bench`).

What one step is (the order of `harken.train.grpo.GRPOTrainer`), for B prompts x G completions of
exactly T tokens (N = B*G rows):
    (a) generation   sample N completions of T tokens (with `--freeze-encoder`, the encoder is
                     run once here and its output reused in (c) and (b), as the trainer does);
    (c) reference    completion log-probs without gradients;
    (b) policy       completion log-probs with gradients, and backward of the GRPO loss
                     (`algorithm.grpo_loss`, R1-AQA recipe: k3 KL with coefficient 0.04,
                     token ratio, seq-mean-token-mean) through `loss_fn`, as the trainer does;
    (d) optimizer    AdamW step and zeroing of the gradients.
`step_s` is the wall time of (a)+(c)+(b)+(d) measured as a whole.

How it is kept fair:
- Both paths run in the same process, interleaved (shared, naive, shared, naive, ...) after
  the warm-up, so slow drifts of the machine hit both alike. Medians over `--reps` are reported,
  with every repetition's time and the spread (max-min)/median in bench.json.
- Fixed lengths: completions never end early. Generation samples from the model as usual, but
  its end-of-turn check is given an id that cannot be sampled, so every row runs exactly T
  steps. The loss passes score one fixed set of N x T sampled completions (drawn once before
  timing), so both paths and all repetitions do the same work.
- The optimizer runs with learning rate 0: AdamW does all its arithmetic, but the weights stay
  where they are, so every pass of both paths sees the same weights and their log-probs can be
  compared. The reference pass uses the policy's own weights under `torch.no_grad()` (a frozen
  copy, as the trainer keeps for full fine-tuning, costs memory, not time).
- Exactness is checked before any speed-up is reported: once before timing, both paths
  generate from the same seed (fraction of identical tokens: `generation_tokens_equal`), and the
  gradients of one policy pass of each are compared (`grad_rel_l2` = ||difference|| / ||naive||
  over all parameters, and `max_grad_rel_diff`, the worst parameter's max-abs ratio); during timing,
  the log-probs of every reference and policy pass of the naive path are compared with the
  shared path's (`max_logprob_diff`, max |difference| over all of them; `mean_logprob_diff`, the
  largest per-pass mean). When the max exceeds `--tolerance`, the mean a tenth of it, or
  `grad_rel_l2` its dtype's bound (DEFAULT_*TOLERANCE), the ratios are written as null and the
  command exits with status 1.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harken.bench.flops import Arch, flops_summary, step_flops
from harken.bench.machine import loadavg, machine_info, measure_matmul_gflops, noise_warning, spread, synchronize
from harken.bench.memory import SavedTensorMeter
from harken.bench.workload import (
    PATHS,
    PHASES,
    BenchConfig,
    Workload,
    encoded_audio,
    run_generation,
    run_optimizer,
    run_policy,
    run_reference,
    setup,
)
from harken.progress import Progress, quiet_library_bars

log = logging.getLogger(__name__)

# |log-prob difference| allowed between the paths before a result is called wrong.
# (bf16: both paths round differently through 32 layers; the mean must stay under a tenth of it.)
DEFAULT_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 0.5, torch.float16: 0.25}
# ||grad_shared - grad_naive|| / ||grad_naive|| over all parameters allowed.
DEFAULT_GRAD_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 0.05, torch.float16: 0.02}


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    times: dict[str, float]  # phase -> seconds
    peak_mb: dict[str, float]  # phase -> MB above the phase's start (CUDA only)
    ref_logprobs: torch.Tensor  # [N, T]
    policy_logprobs: torch.Tensor  # [N, T]


def timed_step(w: Workload, shared: bool, seed: int) -> StepResult:
    """One whole step (a, c, b, d), each phase timed, synchronised on CUDA."""
    cuda = w.device.type == "cuda"
    times, peaks = {}, {}
    mark = {}

    def begin():
        synchronize(w.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(w.device)
            mark["mem"] = torch.cuda.memory_allocated(w.device)
        mark["t"] = time.perf_counter()

    def end(name):
        synchronize(w.device)
        times[name] = time.perf_counter() - mark["t"]
        if cuda:
            peaks[name] = (torch.cuda.max_memory_allocated(w.device) - mark["mem"]) / 2**20

    synchronize(w.device)
    t_step = time.perf_counter()
    begin()
    _, encoded = run_generation(w, shared, seed)
    end("generation")
    begin()
    ref = run_reference(w, shared, encoded)
    end("reference")
    begin()
    pol = run_policy(w, shared, encoded, ref)
    end("policy")
    begin()
    run_optimizer(w)
    end("optimizer")
    times["step"] = time.perf_counter() - t_step
    return StepResult(times, peaks, ref, pol)


def untimed_policy(
    w: Workload, shared: bool, keep_grads: bool = False, against: dict[int, torch.Tensor] | None = None
) -> tuple[float, dict[int, torch.Tensor] | None, dict[str, float] | None]:
    """One extra policy pass (after a reference pass) outside the timings, measuring its memory.

    Args:
        keep_grads: return a copy of the gradients it leaves (by parameter id).
        against: gradients of the other path to compare with (no copy of this pass's is made).
    Returns:
        the peak live saved-for-backward MB (see `harken.bench.memory`), the kept gradients or
        None, and `grad_differences(these, against)` or None. The model's gradients are zeroed.
    """
    encoded = encoded_audio(w)
    ref = run_reference(w, shared, encoded)
    meter = SavedTensorMeter(exclude=list(w.lm.model.parameters()))
    with meter.track():
        run_policy(w, shared, encoded, ref)
    mine = {id(p): p.grad for p in w.params if p.grad is not None}
    kept = {k: g.detach().clone() for k, g in mine.items()} if keep_grads else None
    diff = grad_differences(mine, against) if against is not None else None
    del mine
    w.optimizer.zero_grad(set_to_none=True)
    return meter.peak / 2**20, kept, diff


def grad_differences(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> dict[str, float]:
    """How far gradients `a` are from reference gradients `b` (same parameter ids).

    Returns:
        "max_grad_rel_diff": worst parameter's max|a - b| / max|b| (strict, but in bf16 a
            parameter whose gradient is mostly rounding noise dominates it);
        "grad_rel_l2": ||a - b|| / ||b|| over all parameters together.
        Both are inf when different parameters received gradients.
    """
    if a.keys() != b.keys() or not b:
        return {"max_grad_rel_diff": math.inf, "grad_rel_l2": math.inf}
    worst, err2, ref2 = 0.0, 0.0, 0.0
    for k in b:
        x, y = a[k].float(), b[k].float()
        d = x - y
        worst = max(worst, float(d.abs().max() / y.abs().max().clamp_min(1e-12)))
        err2 += float(d.pow(2).sum())
        ref2 += float(y.pow(2).sum())
    return {"max_grad_rel_diff": worst, "grad_rel_l2": math.sqrt(err2 / max(ref2, 1e-30))}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class _Timings:
    """The timed repetitions: per path, per phase, every repetition's seconds (and CUDA peaks),
    and the log-prob differences between the paths."""

    times: dict[str, dict[str, list[float]]]
    peaks: dict[str, dict[str, list[float]]]
    max_diff: float = 0.0
    mean_diffs: list[float] = field(default_factory=list)


def _before_timing(w: Workload, both: bool, check: dict[str, Any]) -> dict[str, float]:
    """Untimed checks: (both paths) identical sampled tokens and gradients, recorded in `check`;
    the memory of one policy pass per path, returned as path -> MB."""
    cfg = w.cfg
    if not both:
        return {cfg.paths[0]: untimed_policy(w, cfg.paths[0] == "shared")[0]}
    a, _ = run_generation(w, True, cfg.seed + 1)
    b, _ = run_generation(w, False, cfg.seed + 1)
    check["generation_tokens_equal"] = float((a == b).float().mean())
    activation: dict[str, float] = {}
    activation["naive"], naive_grads, _ = untimed_policy(w, False, keep_grads=True)
    activation["shared"], _, diffs = untimed_policy(w, True, against=naive_grads)
    check.update(diffs)
    return activation


def _timed_repetitions(w: Workload, both: bool) -> _Timings:
    """Warm-up then timed steps, the paths interleaved; the log-probs of the paths compared."""
    cfg = w.cfg
    out = _Timings({p: {ph: [] for ph in PHASES} for p in cfg.paths}, {p: {} for p in cfg.paths})
    with Progress((cfg.warmup + cfg.reps) * len(cfg.paths), "bench", "step", leave=False) as bar:
        for rep in range(cfg.warmup + cfg.reps):
            results = {}
            for path in cfg.paths:
                results[path] = res = timed_step(w, path == "shared", cfg.seed + 1000 + rep)
                bar.update(1, {"path": path, "rep": str(rep - cfg.warmup) if rep >= cfg.warmup else "warm-up"})
                if rep >= cfg.warmup:
                    for ph, v in res.times.items():
                        out.times[path][ph].append(v)
                    for ph, v in res.peak_mb.items():
                        out.peaks[path].setdefault(ph, []).append(v)
            if both:
                for attr in ("ref_logprobs", "policy_logprobs"):
                    diff = (getattr(results["shared"], attr) - getattr(results["naive"], attr)).abs()
                    out.max_diff = max(out.max_diff, float(diff.max()))
                    out.mean_diffs.append(float(diff.mean()))
    return out


def _path_summary(times: dict[str, list[float]], peaks: dict[str, list[float]], activation_mb: float) -> dict[str, Any]:
    """bench.json's entry for one path: median per phase, memory, fastest, every repetition, spread."""
    d: dict[str, Any] = {f"{ph}_s": statistics.median(times[ph]) for ph in PHASES}
    d["policy_activation_mb"] = activation_mb
    if peaks:
        d["peak_mb"] = {ph: max(v) for ph, v in peaks.items()}
    d["best_s"] = {ph: min(times[ph]) for ph in PHASES}  # noise only ever adds time
    d["reps_s"] = times
    d["spread"] = {ph: spread(times[ph]) for ph in PHASES}
    return d


def _model_info(w: Workload, build_s: float) -> dict[str, Any]:
    cfg, lm = w.cfg, w.lm
    return {
        "name": cfg.model or f"{cfg.size} {lm.family.name} (random weights)",
        "family": lm.family.name,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in w.params),
        "dtype": str(next(lm.model.parameters()).dtype).replace("torch.", ""),
        "window_seconds": lm.window_seconds,
        "prompt_tokens": int(w.batch.input_ids.shape[1]),
        "audio_tokens": sum(w.batch.audio_token_counts),
        "completion_rows": cfg.prompts * cfg.group_size,
        "build_s": build_s,
    }


def _noise(load: tuple, matmul: tuple[float, float], per_path: dict[str, dict[str, Any]], device: torch.device) -> dict[str, Any]:
    """bench.json's `noise`: load averages and matmul rates (before, after), spreads, and the warning."""
    both = set(per_path) == set(PATHS)
    noise = {
        "loadavg_before": load[0],
        "loadavg_after": load[1],
        "matmul_gflops_start": matmul[0],
        "matmul_gflops_end": matmul[1],
        # (the optimizer's few milliseconds left out: their jitter says nothing)
        "max_spread": max((d["spread"][ph] for d in per_path.values() for ph in PHASES if ph != "optimizer"),
                          default=0.0),
        # The step speed-up from each path's fastest repetition, a cross-check of the medians'.
        "step_speedup_best": (per_path["naive"]["best_s"]["step"] / per_path["shared"]["best_s"]["step"]
                              if both else None),
    }
    noise["warning"] = noise_warning(noise, os.cpu_count() or 1, device)
    return noise


def _step_flops(w: Workload) -> dict[str, dict[str, float]]:
    """Path -> `step_flops` of this workload."""
    cfg = w.cfg
    arch = Arch.from_config(w.lm.model.config, w.lm.family)
    valid_frames = [int(x) for x in w.batch.feature_mask.sum(-1)]
    return {
        p: step_flops(arch, prompts=cfg.prompts, group_size=cfg.group_size, prompt_width=int(w.batch.input_ids.shape[1]),
                      completion_tokens=cfg.completion_tokens, valid_frames=valid_frames, shared=p == "shared",
                      freeze_encoder=cfg.freeze_encoder)
        for p in cfg.paths
    }


def _speedups(per_path: dict[str, dict[str, Any]], activation: dict[str, float], ok: bool) -> dict[str, float | None]:
    """naive / shared per phase and for the activation memory; all None unless the check passed."""
    out: dict[str, float | None] = {}
    for key, ph in (("step_speedup", "step"), ("generation_speedup", "generation"), ("policy_speedup", "policy"),
                    ("reference_speedup", "reference")):
        out[key] = per_path["naive"][f"{ph}_s"] / per_path["shared"][f"{ph}_s"] if ok else None
    out["policy_memory_ratio"] = activation["naive"] / activation["shared"] if ok and activation["shared"] > 0 else None
    return out


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark; returns what is written to bench.json."""
    for p in cfg.paths:
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r} in --paths; use shared, naive or both")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = loadavg()
    quiet_library_bars()
    t0 = time.perf_counter()
    w = setup(cfg)
    build_s = time.perf_counter() - t0
    model = _model_info(w, build_s)
    dtype = next(w.lm.model.parameters()).dtype
    log.info("model %s (%s, %.1f M parameters, %.0f s window), %d prompt tokens (%d audio), G=%d, T=%d, %s on %s",
             cfg.model or cfg.size, model["family"], model["parameters"] / 1e6, model["window_seconds"],
             model["prompt_tokens"], model["audio_tokens"], cfg.group_size, cfg.completion_tokens, dtype, device)

    matmul_start = measure_matmul_gflops(device, dtype, cfg.matmul_size)
    both = set(cfg.paths) == set(PATHS)
    tolerance = cfg.tolerance if cfg.tolerance is not None else DEFAULT_TOLERANCE.get(dtype, 1e-3)
    check: dict[str, Any] = {"tolerance": tolerance, "grad_tolerance": DEFAULT_GRAD_TOLERANCE.get(dtype, 1e-3)}
    activation = _before_timing(w, both, check)
    timings = _timed_repetitions(w, both)
    matmul_end = measure_matmul_gflops(device, dtype, cfg.matmul_size)
    load_after = loadavg()

    per_path = {p: _path_summary(timings.times[p], timings.peaks[p], activation[p]) for p in cfg.paths}
    if both:
        check["max_logprob_diff"] = timings.max_diff
        check["mean_logprob_diff"] = max(timings.mean_diffs)
        # The mean must also stay well inside the bound: rounding moves a few tokens, a bug all.
        check["ok"] = bool(timings.max_diff <= tolerance and check["mean_logprob_diff"] <= tolerance / 10
                           and check["grad_rel_l2"] <= check["grad_tolerance"])
    out: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": "harken bench " + " ".join(_argv_of(cfg)),
        "config": {**asdict(cfg), "paths": list(cfg.paths)},
        "machine": machine_info(device),
        "model": model,
        "paths": per_path,
        "max_logprob_diff": timings.max_diff if both else None,
        "check": check if both else None,
        "noise": _noise((load_before, load_after), (matmul_start, matmul_end), per_path, device),
        "flops": flops_summary(_step_flops(w), per_path, max(matmul_start, matmul_end)),
    }
    out.update(_speedups(per_path, activation, both and check["ok"]))
    return out


def _argv_of(cfg: BenchConfig) -> list[str]:
    args = ["--model", cfg.model] if cfg.model else ["--size", str(cfg.size)]
    args += ["--family", cfg.family, "--clip-seconds", f"{cfg.clip_seconds:g}", "--group-size", str(cfg.group_size),
             "--completion-tokens", str(cfg.completion_tokens), "--prompts", str(cfg.prompts), "--reps", str(cfg.reps),
             "--warmup", str(cfg.warmup), "--paths", ",".join(cfg.paths), "--dtype", cfg.dtype, "--device", cfg.device]
    if cfg.freeze_encoder:
        args.append("--freeze-encoder")
    if cfg.micro_batch:
        args += ["--micro-batch", str(cfg.micro_batch)]
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    if cfg.matmul_size:
        args += ["--matmul-size", str(cfg.matmul_size)]
    return args + ["--out", cfg.out]
