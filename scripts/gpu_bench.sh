#!/usr/bin/env bash
# The prefix-sharing benchmark at full scale: Qwen2-Audio-7B (8.4 B parameters, random weights,
# bf16, built directly on the GPU from the real sizes: nothing is downloaded) on one GPU, one
# 10 s clip, G = 8 completions of 32 tokens, 3 timed repetitions of both paths after 1 warm-up.
#
# Made for one H200 (139 GiB) and a budget of 8 minutes; the run itself should take 2-3.
# Run from the repository root:
#     OUT=/some/folder bash scripts/gpu_bench.sh
# Results: $OUT/gpu-7b-10s-g8/bench.json and bench.md, plus $OUT/bench.log and $OUT/gpu.txt.
#
# The machine's own python3 (torch with CUDA, transformers, numpy, tqdm) is used, and
# `python3 -m harken.bench` rather than the `harken` entry point: it runs the same command without
# importing harken's other commands (whose audio/data dependencies need not be installed there).
# harken pins transformers 5.23 (the shared path relies on cache internals); if the machine has
# another version, the benchmark's own exactness check says whether the paths still agree (it
# withholds the speed-ups and exits 1 if not). To run the pinned version, put its wheel in
# .whl/ (see the device notes) and it is installed to /tmp/site first.
#
# Memory: weights 17 GB + gradients 17 GB + AdamW states 34 GB, plus the naive path's
# activations for 8 copies of the prompt (tens of GB). Should the first attempt run out of
# memory, it is repeated with completion micro-batches of 2 rows (same for both paths; recorded
# in bench.json's config).
set -u
OUT=${OUT:-/tmp/harken-gpu-bench}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
exec > >(tee "$OUT/bench.log") 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1 || true
python3 - <<'PY'
import torch, transformers, numpy
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "numpy", numpy.__version__)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), round(torch.cuda.get_device_properties(0).total_memory / 2**30), "GiB")
PY

ARGS=(--size 7b --device cuda --dtype bfloat16 --clip-seconds 10 --group-size 8 --completion-tokens 32
      --prompts 1 --reps 3 --warmup 1 --out "$OUT/gpu-7b-10s-g8")
# Dry run of the plumbing on any machine: BENCH_ARGS="--size toy --device cpu --out /tmp/x" bash scripts/gpu_bench.sh
if [ -n "${BENCH_ARGS:-}" ]; then read -r -a ARGS <<< "$BENCH_ARGS"; fi
start=$(date +%s)
timeout 330 python3 -m harken.bench "${ARGS[@]}"
rc=$?
if [ $rc -ne 0 ] && grep -q "OutOfMemoryError\|CUDA out of memory" "$OUT/bench.log"; then
    left=$((450 - ($(date +%s) - start)))
    echo "out of GPU memory: again with --micro-batch 2 ($left s left)"
    timeout "$left" python3 -m harken.bench "${ARGS[@]}" --micro-batch 2
    rc=$?
fi
echo "harken bench exited with $rc after $(( $(date +%s) - start )) s"
exit $rc
