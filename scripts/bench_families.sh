#!/usr/bin/env bash
# The prefix-sharing benchmark once per supported family: a small random model of each
# architecture (its real encoder window), one 10 s clip, G = 8 completions of 32 tokens, CPU,
# float32, 2 timed repetitions of both paths after 1 warm-up. Writes benchmarks/families/FAMILY/
# (bench.json, bench.md) and the summary table benchmarks/families.md.
# Run from the repository root on a quiet machine: bash scripts/bench_families.sh
set -euo pipefail
OUT=${OUT:-benchmarks/families}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
FAMILIES=$($PY -c "from harken.models.families import FAMILIES; print(' '.join(FAMILIES))")
for fam in $FAMILIES; do
  $PY -m harken bench --family "$fam" --size small --clip-seconds 10 --group-size 8 --reps 2 \
      --threads "$OMP_NUM_THREADS" --out "$OUT/$fam"
done
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| family | parameters | prompt tokens (audio) | shared step | naive step | naive / shared step | policy activations naive / shared | max abs log-prob diff |",
        "|---|---|---|---|---|---|---|---|"]
for d in sorted(p for p in out.iterdir() if (p / "bench.json").is_file()):
    b = json.loads((d / "bench.json").read_text())
    m, paths = b["model"], b["paths"]
    step = {k: v["step_s"] for k, v in paths.items()}  # medians
    rows.append(f"| {d.name} | {m.get('parameters', '?'):,} | {m.get('prompt_tokens', '?')} ({m.get('audio_tokens', '?')}) | "
                f"{step.get('shared', float('nan')):.2f} s | {step.get('naive', float('nan')):.2f} s | "
                f"**{b.get('step_speedup', float('nan')):.2f}x** | {b.get('policy_memory_ratio', float('nan')):.2f}x | "
                f"{b.get('max_logprob_diff', float('nan')):.1e} |")
(out.parent / "families.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
