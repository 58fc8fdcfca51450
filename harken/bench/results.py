"""A benchmark's result files: `bench.json` (what `run_bench` returns) and `bench.md` (its tables);
`decode.json` (what `run_decode_bench` returns) and `decode.md`.

Owns: `format_table`, `format_markdown`, `write_results`, `format_decode_markdown` and
`write_decode_results`. Does not own: what the numbers are (`harken.bench.harness`,
`harken.bench.flops`, `harken.bench.memory`, `harken.bench.decode` define them).
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


# --------------------------------------------------------------------------------------------
# decode.md
# --------------------------------------------------------------------------------------------

_DECODER_LABELS = {"harken": "harken", "previous": "previous loop", "transformers-static": "transformers static",
                   "transformers-dynamic": "transformers dynamic"}


def _decode_header(res: dict[str, Any]) -> list[str]:
    m, c, mach = res["model"], res["config"], res["machine"]
    return [
        f"# harken bench --decode: {m['name']}",
        "",
        f"- date: {res['date']}",
        f"- command: `{res['command']}`",
        f"- machine: {mach['device_name']} ({mach['cpu_count']} CPUs, torch threads {mach['torch_threads']}), "
        f"torch {mach['torch']}, transformers {mach['transformers']}",
        f"- model: {m['parameters'] / 1e6:.1f} M parameters, {m['dtype']}; {c['prompts']} prompt(s) of "
        f"{m['prompt_tokens']} tokens ({c['clip_seconds']:g} s clip); every completion exactly T tokens, temperature 1",
        f"- milliseconds per decode step: from a decoder's first sampled token to its last, over the T - 1 steps "
        f"between them (the prompt pass left out); medians of {c['reps']} repetition(s) after {c['warmup']} "
        f"warm-up, the decoders in turn in one process",
    ]


def _decode_table(res: dict[str, Any]) -> list[str]:
    from harken.bench.decode import BASELINES, DECODERS

    head = ("| G | T | " + " | ".join(f"{_DECODER_LABELS[d]} (ms)" for d in DECODERS) + " | "
            + " | ".join(f"{_DECODER_LABELS[b]} / harken" for b in BASELINES) + " |")
    lines = [head, "|---|---|" + "---|" * (len(DECODERS) + len(BASELINES))]
    for r in res["results"]:
        ms = " | ".join(f"{r['ms_per_step'][d]:.2f}" for d in DECODERS)
        ratios = " | ".join(f"**{_ratio(r['speedup'][b])}**" if b != "previous" else _ratio(r["speedup"][b])
                            for b in BASELINES)
        lines.append(f"| {r['group_size']} | {r['tokens']} | {ms} | {ratios} |")
    return lines


def _profile_table(prof: dict[str, Any]) -> list[str]:
    loops = prof["loops"]
    names = list(loops)
    lines = [f"## Where a decode step's time goes (G = {prof['group_size']}, T = {prof['tokens']}, under torch.profiler)",
             "", "| | " + " | ".join(f"{n}: µs per step | share | operators per step" for n in names) + " |",
             "|---|" + "---|---|---|" * len(names)]
    for kind in loops[names[0]]["kinds"]:
        cells = []
        for n in names:
            k = loops[n]["kinds"][kind]
            cells.append(f"{k['us']:.0f} | {100 * k['share']:.0f} % | {k['calls']:.0f}" if k["calls"] else
                         f"{k['us']:.0f} | {100 * k['share']:.0f} % | ")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines.append("| **wall** | " + " | ".join(f"**{loops[n]['wall_us']:.0f}** | 100 % | " for n in names) + " |")
    for n in names:
        top = ", ".join(f"{op.removeprefix('aten::')} {us:.0f} µs ({calls:.0f}x)" for op, us, calls in loops[n]["top"])
        lines += ["", f"Largest operators, {n}: {top}."]
    return lines


def format_decode_markdown(res: dict[str, Any]) -> str:
    out = _decode_header(res) + ["", "## Milliseconds per decode step", ""] + _decode_table(res) + [""]
    if res["flatness"]:
        flat = ", ".join(f"G = {g}: {x:.2f}x" for g, x in res["flatness"].items())
        out.append(f"harken's per-step time at the longest T over the shortest: {flat}.")
    out.append("Exactness: harken and the previous loop sampled "
               + ("identical tokens in every repetition: OK." if res["ok"] else "different tokens: FAILED, ratios withheld."))
    n = res["noise"]
    out.append(f"Noise: load average {n['loadavg_before']} before, {n['loadavg_after']} after; matmul "
               f"{n['matmul_gflops_start']:.1f} -> {n['matmul_gflops_end']:.1f} GFLOP/s; largest (max-min)/median of "
               f"harken's per-step time over repetitions {100 * n['max_spread']:.0f} %.")
    if n.get("warning"):
        out.append(f"**Warning: {n['warning']}.**")
    out += [""] + _profile_table(res["profile"])
    return "\n".join(out) + "\n"


def write_decode_results(res: dict[str, Any], out_dir: str | Path) -> Path:
    """Write decode.json and decode.md into `out_dir` (created if needed); returns the folder."""
    out = Path(out_dir)
    write_json_atomic(out / "decode.json", res)
    write_text_atomic(out / "decode.md", format_decode_markdown(res))
    return out
