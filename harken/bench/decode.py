"""`harken bench --decode`: what one decode step costs, harken's loop against the loop it replaced
and transformers' own `generate`, measured in one process.

Owns: `DecodeConfig`, the decoders compared (`DECODERS`), the loop harken decoded with before its
cache was allocated up front (`concat_generate`: kept as the baseline, and as the oracle the
exactness tests compare tokens with), the per-step timing, the profile of a step (`step_profile`)
and what decode.json holds (`run_decode_bench`). Does not own: harken's decode loop
(`harken.rl.rollout.start_decode` / `decode`), the model and the inputs (`harken.bench.workload`),
decode.md (`harken.bench.results`), the command line (`harken.cli.bench`).

What is measured, for every group size G and completion length T: B prompts (one by default) and
N = B*G completion rows of exactly T tokens (the end-of-turn check is given an id that cannot be
sampled), sampled at temperature 1 without top-k / top-p. A decoder's `ms_per_step` is the time from its
first sampled token to its last, over the T - 1 steps between them: one decode step is one
token's forward for the N rows, its logits and the sampling; the prompt pass is left out,
whichever way a decoder runs it (harken's loops are timed after their prompt pass, transformers'
`generate` by a streamer that notes when each token arrives). The decoders:
- `harken`: what `harken.rl.rollout.generate` runs (`start_decode`, then `decode`), shared
  prefix: the prompt run once per group into a cache
  allocated for prompt + T positions, written in place; the attention mask and positions made once;
  logits of the last position only.
- `previous`: the same prompt pass, then harken's loop before that cache: a `DynamicCache` grown by
  concatenation at every step, the 2-D mask concatenated and the 4-D mask rebuilt every step.
- `transformers-static` / `transformers-dynamic`: the model's own `generate` with
  `num_return_sequences=G` (each prompt repeated G times; its pass is left out as above) and
  `cache_implementation="static"` (pre-allocated, as harken's) or the default dynamic cache;
  transformers' automatic compilation of static-cache decoding (CUDA only) is turned off, so all
  four run eagerly.

How it is kept fair: one process and one model; every repetition runs all decoders in turn with
the same seed (the machine's drift hits all alike); medians over `--reps` after `--warmup`, with
every repetition in decode.json. Exactness: `harken` and `previous` must sample the same tokens
from the same seed in every repetition (`tokens_equal`); otherwise the ratios are written as null
and the command exits with status 1.

The profile (`step_profile`): torch.profiler over the decode steps of `harken` and `previous` at
the first group size and the longest length up to 256, each operator's self time summed into a
few kinds (`KINDS`); what no operator accounts for (Python, transformers' module code, the
dispatcher) is the remainder of the wall time. The profiler adds about a microsecond per operator
and slows large allocations (the previous loop's concatenations most): its wall time is above the
unprofiled `ms_per_step`; read the shares, not the sums.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from harken.bench.machine import loadavg, machine_info, measure_matmul_gflops, noise_warning, spread, synchronize
from harken.bench.workload import build_model, no_stop, prompt_texts, synthetic_clips
from harken.models.audio_lm import AudioLM, PromptBatch
from harken.rl.rollout import SamplingParams, _prefix, _sample, decode, start_decode

log = logging.getLogger(__name__)

DECODERS = ("harken", "previous", "transformers-static", "transformers-dynamic")
BASELINES = DECODERS[1:]


@dataclass
class DecodeConfig:
    """One decode benchmark run; every field is a command-line option of `harken bench --decode`."""

    size: str | None = "small"  # toy | small | 7b (ignored when `model` is given)
    model: str | None = None  # a checkpoint folder (or a config-only folder: random weights)
    family: str = "qwen2-audio"  # for named sizes
    clip_seconds: float = 10.0
    group_sizes: tuple[int, ...] = (8, 16)  # G
    lengths: tuple[int, ...] = (32, 128, 256, 512)  # T
    prompts: int = 1  # B
    reps: int = 3
    warmup: int = 1
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    matmul_size: int | None = None
    seed: int = 0
    out: str = "bench-decode"


# --------------------------------------------------------------------------------------------
# The loop harken used before (baseline and oracle)
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def concat_generate(lm: AudioLM, batch: PromptBatch, group_size: int, params: SamplingParams,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Harken's shared-prefix generation before its pre-allocated cache: the same prompt pass and
    sampling as `harken.rl.rollout.generate`, then a `DynamicCache` grown by concatenation and a
    2-D mask concatenated at every step. [B*G, T'] ids, as `generate` returns them."""
    with lm.gathered():
        return lm.call(_concat_generate, lm, batch, group_size, params, generator)


def _concat_start(lm: AudioLM, batch: PromptBatch, g: int):
    from transformers import DynamicCache

    prefix = _prefix(lm, batch, None)
    cache = DynamicCache(config=lm.family.module(lm.model, "language_model").config)
    for i, (k, v) in enumerate(prefix.cache_kv):
        cache.update(k.repeat_interleave(g, 0), v.repeat_interleave(g, 0), i)
    logits = lm.lm_head(prefix.last_hidden.repeat_interleave(g, 0))
    return cache, logits, prefix.attention_mask.repeat_interleave(g, 0), prefix.lengths.repeat_interleave(g, 0)


def _concat_decode(lm: AudioLM, cache, logits, attn, next_pos, params: SamplingParams, generator) -> torch.Tensor:
    n = logits.shape[0]
    eos = torch.tensor(lm.eos_ids, device=logits.device)
    out = torch.full((n, params.max_new_tokens), lm.pad_id, dtype=torch.long, device=logits.device)
    done = torch.zeros(n, dtype=torch.bool, device=logits.device)
    steps = 0
    for t in range(params.max_new_tokens):
        tok = _sample(logits, params, generator)
        tok = torch.where(done, torch.full_like(tok, lm.pad_id), tok)
        out[:, t] = tok
        steps = t + 1
        done |= torch.isin(tok, eos)
        if bool(done.all()) or t == params.max_new_tokens - 1:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        hidden, cache = lm.text_forward(lm.embed_tokens(tok[:, None]), attn, next_pos[:, None], cache)
        next_pos = next_pos + 1
        logits = lm.lm_head(hidden[:, -1])
    return out[:, :steps]


def _concat_generate(lm, batch, g, params, generator):
    return _concat_decode(lm, *_concat_start(lm, batch, g), params, generator)


# --------------------------------------------------------------------------------------------
# The decoders
# --------------------------------------------------------------------------------------------


def _sampling(tokens: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=tokens, temperature=1.0, top_p=1.0, top_k=0)


class _TokenClock:
    """A transformers streamer that notes when each batch of tokens arrives (the prompt first)."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def put(self, value) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _hf_generate(lm: AudioLM, batch: PromptBatch, g: int, tokens: int, cache: str) -> tuple[torch.Tensor, float]:
    """transformers' `generate`: [B*G, T] new ids (each prompt's rows contiguous, as harken's) and the
    seconds from the first new token to the last."""
    from transformers import GenerationConfig

    gc = GenerationConfig(max_new_tokens=tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                          num_return_sequences=g, eos_token_id=None, pad_token_id=lm.pad_id,
                          cache_implementation="static" if cache == "static" else None, disable_compile=True)
    clock = _TokenClock(batch.input_ids.device)
    # An unset end-of-turn id is taken from the model's own generation config: unset it there too.
    model_eos = lm.model.generation_config.eos_token_id
    lm.model.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            out = lm.call(lm.model.generate, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          input_features=batch.input_features, **{lm.family.feature_mask_arg: batch.feature_mask},
                          generation_config=gc, streamer=clock)
    finally:
        lm.model.generation_config.eos_token_id = model_eos
    return out[:, batch.input_ids.shape[1]:], clock.times[-1] - clock.times[1]


def _prepared_loop(name: str, lm: AudioLM, batch: PromptBatch, g: int, tokens: int,
                   gen: torch.Generator) -> Callable[[], torch.Tensor]:
    """harken's loop (`name` "harken") or the previous one with its prompt pass done: a call that runs
    its decode steps and returns the ids. Made and called without gradients, in `lm.autocast()`."""
    params = _sampling(tokens)
    if name == "harken":
        state = start_decode(lm, batch, g, tokens)
        return lambda: decode(lm, state, params, gen)
    start = _concat_start(lm, batch, g)
    return lambda: _concat_decode(lm, *start, params, gen)


def _harken_loop(name: str, lm: AudioLM, batch: PromptBatch, g: int, tokens: int,
                 gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """harken's loop (or the previous one) after its prompt pass: ids and the seconds of the loop."""
    with torch.no_grad(), lm.gathered(), lm.autocast():
        seconds, ids = _timed(batch.input_ids.device, _prepared_loop(name, lm, batch, g, tokens, gen))
    return ids, seconds


def run_decoder(name: str, lm: AudioLM, batch: PromptBatch, g: int, tokens: int, seed: int) -> tuple[torch.Tensor, float]:
    """Generate exactly `tokens` tokens for the B*G rows with decoder `name`: [B*G, tokens] ids, and
    the seconds of its T - 1 decode steps (from the first sampled token to the last)."""
    if name.startswith("transformers-"):
        torch.manual_seed(seed)  # transformers samples from the global generator
        return _hf_generate(lm, batch, g, tokens, name.removeprefix("transformers-"))
    if name in ("harken", "previous"):
        return _harken_loop(name, lm, batch, g, tokens, torch.Generator(device=batch.input_ids.device).manual_seed(seed))
    raise ValueError(f"unknown decoder {name!r}; use one of {', '.join(DECODERS)}")


def _timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------------------------
# The profile of a step
# --------------------------------------------------------------------------------------------

# Kinds of operator, by name prefix (first match wins); every other operator is "other operators".
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")),
    ("attention", ("aten::scaled_dot_product", "aten::_scaled_dot_product")),
    ("cache and mask: copies, concatenation", ("aten::cat", "aten::copy_", "aten::index_copy", "aten::clone",
                                               "aten::contiguous", "aten::empty", "aten::ones", "aten::full")),
    ("sampling", ("aten::multinomial", "aten::exponential_", "aten::softmax", "aten::_softmax", "aten::topk",
                  "aten::sort", "aten::cumsum", "aten::argmax", "aten::isin", "aten::masked_fill", "aten::where")),
)
OTHER_OPS = "other operators (norms, rotary, activations, views)"
OUTSIDE = "outside operators (Python, module code, dispatch)"


def _kind(op: str) -> str:
    for kind, prefixes in KINDS:
        if op.startswith(prefixes):
            return kind
    return OTHER_OPS


def summarise_profile(events: list[tuple[str, int, float]], steps: int, wall_s: float) -> dict[str, Any]:
    """(operator, calls, self µs) rows over `steps` decode steps that took `wall_s` -> per step:
    {"wall_us", "kinds": {kind: {"us", "calls", "share"}}, "top": [(op, us, calls) x 6]}."""
    wall_us = wall_s * 1e6 / steps
    kinds: dict[str, dict[str, float]] = {k: {"us": 0.0, "calls": 0.0} for k, _ in KINDS}
    kinds[OTHER_OPS] = {"us": 0.0, "calls": 0.0}
    for op, calls, us in events:
        k = kinds[_kind(op)]
        k["us"] += us / steps
        k["calls"] += calls / steps
    kinds[OUTSIDE] = {"us": max(wall_us - sum(k["us"] for k in kinds.values()), 0.0), "calls": 0.0}
    for k in kinds.values():
        k["share"] = k["us"] / wall_us if wall_us > 0 else 0.0
    top = sorted(events, key=lambda e: -e[2])[:6]
    return {"wall_us": wall_us, "kinds": kinds, "top": [(op, us / steps, calls / steps) for op, calls, us in top]}


def step_profile(lm: AudioLM, batch: PromptBatch, g: int, tokens: int, seed: int) -> dict[str, dict[str, Any]]:
    """`summarise_profile` of the T - 1 decode steps of `harken` and of `previous`: each loop run once
    unprofiled, then twice profiled, the faster of the two kept (noise only adds time); the prompt
    pass is not profiled."""
    from torch.profiler import ProfilerActivity, profile

    device = batch.input_ids.device
    out = {}
    for name in ("harken", "previous"):
        for profiled in (False, True, True):
            gen = torch.Generator(device=device).manual_seed(seed)
            with torch.no_grad(), lm.autocast():
                run = _prepared_loop(name, lm, batch, g, tokens, gen)
                if not profiled:
                    run()
                    continue
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    wall, _ = _timed(device, run)
            events = [(e.key, e.count, e.self_cpu_time_total) for e in prof.key_averages() if e.key.startswith("aten::")]
            summary = summarise_profile(events, tokens - 1, wall)
            if name not in out or summary["wall_us"] < out[name]["wall_us"]:
                out[name] = summary
    return out


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="bench decode", unit="run", dynamic_ncols=True, leave=False, file=sys.stderr)


def _measure(lm: AudioLM, batch: PromptBatch, cfg: DecodeConfig, g: int, tokens: int, bar) -> dict[str, Any]:
    """All decoders at one (G, T): per-step milliseconds of every timed repetition, the tokens check."""
    device = batch.input_ids.device
    per_step: dict[str, list[float]] = {d: [] for d in DECODERS}
    full: dict[str, list[float]] = {d: [] for d in DECODERS}
    equal = []
    for rep in range(cfg.warmup + cfg.reps):
        seed = cfg.seed + 1000 + rep
        ids = {}
        for name in DECODERS:
            t_full, (ids[name], t_steps) = _timed(device, lambda: run_decoder(name, lm, batch, g, tokens, seed))
            if ids[name].shape[1] != tokens:
                raise RuntimeError(f"{name} generated {ids[name].shape[1]} tokens, not {tokens}")
            if rep >= cfg.warmup:
                per_step[name].append(1000 * t_steps / (tokens - 1))
                full[name].append(t_full)
            bar.update(1)
        equal.append(float((ids["harken"] == ids["previous"]).float().mean()))
    med = {d: statistics.median(v) for d, v in per_step.items()}
    return {
        "group_size": g, "tokens": tokens,
        "ms_per_step": med,
        "generate_s": {d: statistics.median(v) for d, v in full.items()},
        "reps_ms_per_step": per_step,
        "spread": {d: spread(v) for d, v in per_step.items()},
        "tokens_equal": min(equal),
    }


def _ratios(results: list[dict[str, Any]], ok: bool) -> None:
    """Each result's `speedup`: baseline / harken per-step time (None unless the tokens agreed)."""
    for r in results:
        h = r["ms_per_step"]["harken"]
        r["speedup"] = {b: (r["ms_per_step"][b] / h if ok and h > 0 else None) for b in BASELINES}


def _flatness(results: list[dict[str, Any]]) -> dict[str, float]:
    """Per group size: harken's per-step time at the longest length / at the shortest."""
    out = {}
    for g in sorted({r["group_size"] for r in results}):
        rows = sorted((r for r in results if r["group_size"] == g), key=lambda r: r["tokens"])
        if len(rows) > 1:
            out[str(g)] = rows[-1]["ms_per_step"]["harken"] / rows[0]["ms_per_step"]["harken"]
    return out


def validate(cfg: DecodeConfig) -> None:
    if not cfg.group_sizes or min(cfg.group_sizes) < 1:
        raise ValueError("--group-size takes counts of at least 1")
    if not cfg.lengths or min(cfg.lengths) < 2:
        raise ValueError("--completion-tokens takes lengths of at least 2 with --decode (a step is measured between tokens)")
    if cfg.reps < 1 or cfg.warmup < 0 or cfg.prompts < 1:
        raise ValueError("--reps and --prompts must be at least 1, --warmup at least 0")


def run_decode_bench(cfg: DecodeConfig) -> dict[str, Any]:
    """Run the decode benchmark; returns what is written to decode.json."""
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = loadavg()
    lm = no_stop(build_model(cfg))
    lm.model.eval()
    if cfg.clip_seconds > lm.window_seconds:
        raise ValueError(f"--clip-seconds {cfg.clip_seconds:g} is longer than the model's {lm.window_seconds:g} s window")
    clips = synthetic_clips(cfg.prompts, cfg.clip_seconds, lm.sampling_rate, cfg.seed)
    batch = lm.encode_prompts(prompt_texts(cfg.prompts), clips).to(device)
    dtype = next(lm.model.parameters()).dtype
    matmul_start = measure_matmul_gflops(device, dtype, cfg.matmul_size)
    log.info("decode: %s (%s), prompt %d tokens, G %s, T %s, %s on %s", cfg.model or cfg.size, lm.family.name,
             batch.input_ids.shape[1], cfg.group_sizes, cfg.lengths, dtype, device)

    bar = _progress(len(cfg.group_sizes) * len(cfg.lengths) * (cfg.warmup + cfg.reps) * len(DECODERS))
    results = [_measure(lm, batch, cfg, g, t, bar) for g in cfg.group_sizes for t in cfg.lengths]
    bar.close()
    profile_tokens = max([t for t in cfg.lengths if t <= 256] or [min(cfg.lengths)])
    profile = step_profile(lm, batch, cfg.group_sizes[0], profile_tokens, cfg.seed)
    matmul_end = measure_matmul_gflops(device, dtype, cfg.matmul_size)
    ok = all(r["tokens_equal"] == 1.0 for r in results)
    _ratios(results, ok)
    noise = {
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "matmul_gflops_start": matmul_start, "matmul_gflops_end": matmul_end,
        "max_spread": max(r["spread"]["harken"] for r in results),
    }
    noise["warning"] = noise_warning(noise, os.cpu_count() or 1, device)
    return {
        "date": started.isoformat(timespec="seconds"),
        "command": "harken bench --decode " + " ".join(_argv_of(cfg)),
        "config": asdict(cfg),
        "machine": machine_info(device),
        "model": {"name": cfg.model or f"{cfg.size} {lm.family.name} (random weights)", "family": lm.family.name,
                  "parameters": sum(p.numel() for p in lm.model.parameters()), "dtype": str(dtype).replace("torch.", ""),
                  "prompt_tokens": int(batch.input_ids.shape[1])},
        "results": results,
        "flatness": _flatness(results),
        "profile": {"group_size": cfg.group_sizes[0], "tokens": profile_tokens, "loops": profile},
        "ok": ok,
        "noise": noise,
    }


def _argv_of(cfg: DecodeConfig) -> list[str]:
    args = ["--model", cfg.model] if cfg.model else ["--size", str(cfg.size)]
    args += ["--family", cfg.family, "--clip-seconds", f"{cfg.clip_seconds:g}",
             "--group-size", ",".join(map(str, cfg.group_sizes)), "--completion-tokens", ",".join(map(str, cfg.lengths)),
             "--prompts", str(cfg.prompts), "--reps", str(cfg.reps), "--warmup", str(cfg.warmup),
             "--dtype", cfg.dtype, "--device", cfg.device]
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    if cfg.matmul_size:
        args += ["--matmul-size", str(cfg.matmul_size)]
    return args + ["--out", cfg.out]
