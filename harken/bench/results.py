"""A benchmark's result files: `bench.json` (what `run_bench` returns) and `bench.md` (its tables).

Owns: `format_table`, `format_markdown` and `write_results`. Does not own: what the numbers are
(`harken.bench.harness`, `harken.bench.flops`, `harken.bench.memory` define them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harken.bench.workload import PHASES
from harken.io import write_json_atomic, write_text_atomic

_SPEEDUP_KEYS = {"generation": "generation_speedup", "reference": "reference_speedup", "policy": "policy_speedup",
                 "step": "step_speedup"}
_LABELS = {"policy": "policy fwd+bwd", "reference": "reference fwd", "step": "**whole step**"}


def _fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def _phase_rows(res: dict[str, Any], paths: list[str], both: bool) -> list[str]:
    lines = []
    for ph in PHASES:
        row = [_fmt_s(res["paths"][p][f"{ph}_s"]) for p in paths]
        ratio = _ratio(res.get(_SPEEDUP_KEYS[ph])) if ph in _SPEEDUP_KEYS else (
            _ratio(res["paths"]["naive"][f"{ph}_s"] / res["paths"]["shared"][f"{ph}_s"]) if both else "")
        lines.append(f"| {_LABELS.get(ph, ph)} | " + " | ".join(row) + (f" | {ratio} |" if both else " |"))
    return lines


def _memory_rows(res: dict[str, Any], paths: list[str], both: bool) -> list[str]:
    mem = [f"{res['paths'][p]['policy_activation_mb']:.0f} MB" for p in paths]
    lines = ["| policy activations (saved for backward, peak) | " + " | ".join(mem)
             + (f" | {_ratio(res.get('policy_memory_ratio'))} |" if both else " |")]
    if "peak_mb" in res["paths"][paths[0]]:
        for ph in ("generation", "reference", "policy"):
            vals = [f"{res['paths'][p]['peak_mb'][ph]:.0f} MB" for p in paths]
            r = ""
            if both and res["paths"]["shared"]["peak_mb"][ph] > 0:
                r = f" | {_ratio(res['paths']['naive']['peak_mb'][ph] / res['paths']['shared']['peak_mb'][ph])} |"
            lines.append(f"| CUDA peak, {ph} | " + " | ".join(vals) + (r or (" | |" if both else " |")))
    return lines


def _flop_rows(res: dict[str, Any], paths: list[str], both: bool) -> list[str]:
    fl = res["flops"]
    vals = [f"{fl['model_tflops_per_step'][p]:.4g}" for p in paths]
    pred = f" | {fl['predicted_step_speedup']:.2f}x (predicted) |" if both else " |"
    lines = ["| model TFLOP per step | " + " | ".join(vals) + pred]
    vals = [f"{fl['achieved_gflops'][p]:.1f} ({100 * fl['utilisation'][p]:.0f} %)" for p in paths]
    lines.append(f"| achieved GFLOP/s (of {fl['matmul_gflops']:.0f} matmul) | " + " | ".join(vals) + (" | |" if both else " |"))
    return lines


def format_table(res: dict[str, Any]) -> str:
    """Markdown table of the medians, one row per phase, one column per path, and the ratio."""
    paths = list(res["paths"])
    both = len(paths) == 2
    head = "| phase | " + " | ".join(paths) + (" | naive / shared |" if both else " |")
    lines = [head, "|---|" + "---|" * (len(paths) + (1 if both else 0))]
    lines += _phase_rows(res, paths, both) + _memory_rows(res, paths, both) + _flop_rows(res, paths, both)
    return "\n".join(lines)


def _header(res: dict[str, Any]) -> list[str]:
    m, c, mach = res["model"], res["config"], res["machine"]
    return [
        f"# harken bench: {m['name']}",
        "",
        f"- date: {res['date']}",
        f"- command: `{res['command']}`",
        f"- machine: {mach['device_name']} ({mach['cpu_count']} CPUs, torch threads {mach['torch_threads']}), "
        f"torch {mach['torch']}, transformers {mach['transformers']}",
        f"- model: {m['parameters'] / 1e6:.1f} M parameters ({m['trainable_parameters'] / 1e6:.1f} M trained), {m['dtype']}, "
        f"{m['window_seconds']:g} s audio window",
        f"- work: {c['prompts']} prompt(s) of {m['prompt_tokens']} tokens ({m['audio_tokens']} audio, "
        f"{c['clip_seconds']:g} s clip), G = {c['group_size']}, {c['completion_tokens']} tokens per completion; "
        f"encoder {'frozen (output reused)' if c['freeze_encoder'] else 'trained'}",
        f"- medians of {c['reps']} repetition(s) after {c['warmup']} warm-up, paths interleaved in one process",
    ]


def _check_line(ch: dict[str, Any]) -> str:
    return (
        f"Exactness: max |log-prob difference| {ch['max_logprob_diff']:.2e} (tolerance {ch['tolerance']:g}; "
        f"mean {ch['mean_logprob_diff']:.2e}), "
        f"identical sampled tokens {100 * ch['generation_tokens_equal']:.1f} %, gradients ||shared - naive|| / "
        f"||naive|| {ch['grad_rel_l2']:.2e} (tolerance {ch['grad_tolerance']:g}; worst parameter's max-abs ratio "
        f"{ch['max_grad_rel_diff']:.2e}): {'OK' if ch['ok'] else 'FAILED, ratios withheld'}."
    )


def _noise_line(noise: dict[str, Any]) -> str:
    return (
        f"Noise: load average {noise['loadavg_before']} before, {noise['loadavg_after']} after; matmul "
        f"{noise['matmul_gflops_start']:.1f} -> {noise['matmul_gflops_end']:.1f} GFLOP/s; largest (max-min)/median "
        f"of a phase over repetitions {100 * noise['max_spread']:.0f} %"
        + (f"; step speed-up from the fastest repetitions {noise['step_speedup_best']:.2f}x." if noise.get("step_speedup_best") else ".")
    )


def _generation_share_line(res: dict[str, Any]) -> str:
    shares = [f"{100 * d['generation_s'] / d['step_s']:.0f} % of the {p} step" for p, d in res["paths"].items()]
    return "Generation: " + ", ".join(shares) + "."


def format_markdown(res: dict[str, Any]) -> str:
    out = _header(res) + ["", format_table(res), "", _generation_share_line(res)]
    if res.get("check"):
        out.append(_check_line(res["check"]))
    out.append(_noise_line(res["noise"]))
    if res["noise"].get("warning"):
        out.append(f"**Warning: {res['noise']['warning']}.**")
    return "\n".join(out) + "\n"


def write_results(res: dict[str, Any], out_dir: str | Path) -> Path:
    """Write bench.json and bench.md into `out_dir` (created if needed); returns the folder."""
    out = Path(out_dir)
    write_json_atomic(out / "bench.json", res)
    write_text_atomic(out / "bench.md", format_markdown(res))
    return out
