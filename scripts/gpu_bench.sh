#!/usr/bin/env bash
# The prefix-sharing benchmark at full scale: Qwen2-Audio-7B (8.4 B parameters, random weights,
# bf16, built directly on the GPU from the real sizes: nothing is downloaded) on one GPU, one
# 10 s clip, G = 8 completions of 32 tokens, 3 timed repetitions of both paths after 1 warm-up.
#
# Then the long-completion case (thinking prompts, 256 tokens): the same step with 256-token
# completions along the shared path (how much of the step generation takes), and `--decode`:
# milliseconds per decode step at 32 and 256 tokens for harken's loop, the loop it replaced and
# transformers' `generate` (static and dynamic cache), with a profile of a step.
#
# Made for one H200 (139 GiB) and a budget of 12 minutes; the runs themselves should take 6-8.
# Run from the repository root:
#     OUT=/some/folder bash scripts/gpu_bench.sh    # CASE=short: the 32-token step only; CASE=long: the 256-token cases only
# Results: $OUT/gpu-7b-10s-g8/bench.json and bench.md (32 tokens), $OUT/gpu-7b-10s-g8-t256/ (256
# tokens, shared path), $OUT/gpu-7b-decode/decode.json and decode.md, plus $OUT/bench.log and
# $OUT/gpu.txt.
#
# The machine's own python3 (torch with CUDA, transformers, numpy, tqdm) is used, and
# `python3 -m harken.bench` rather than the `harken` entry point: it runs the same command without
# importing harken's other commands (whose audio/data dependencies need not be installed there).
# harken pins transformers 5.23 (the shared path relies on cache internals); if the machine has
# another version, the benchmark's own exactness check says whether the paths still agree (it
# withholds the speed-ups and exits 1 if not). To run the pinned version, put its wheel in
# .whl/ (see the device notes) and it is installed to /tmp/site first.
#
# CASE=sharded (or CASE=all, after the benchmark) runs the paper's recipe itself at 7B size: the
# r1aqa preset (fp32 master weights, bf16 compute, FSDP2 over every GPU of the machine) for two
# GRPO steps on a randomly initialised Qwen2-Audio-7B saved to /tmp, with the offline synthetic
# data; it writes $OUT/sharded-7b/ (metrics.jsonl, run.json with per-process bytes and the CUDA
# peak of the first step, train.log) and `harken plan`'s prediction beside it. It needs >= 2 GPUs
# and the Python packages harken's training imports (carry their wheels in .whl/): the fp32 state
# of 8.4 B parameters is 134 GB, which one GPU cannot hold; on one GPU it says so and stops.
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

sharded_case() {
    local ngpu model
    ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
    if [ "$ngpu" -lt 2 ]; then
        echo "sharded 7B case: needs at least 2 GPUs (found $ngpu); the fp32 state of the r1aqa recipe is 134 GB"
        return 0
    fi
    model=/tmp/qwen2-audio-7b-random
    python3 - "$model" <<'PY' || return 1
import sys, torch
from harken.models.known import build_7b
from harken.models.loading import save_audio_lm
save_audio_lm(build_7b("cuda", torch.bfloat16), sys.argv[1])
PY
    local train=(model.path=$model data.path=synthetic:train run.out_dir=$OUT/sharded-7b run.max_steps=2
                 run.save_every=0 run.keep_last=1 rollout.max_new_tokens=32 run.progress=false)
    python3 -m harken.cli plan --config r1aqa --gpus "$ngpu" --json "${train[@]}" > "$OUT/sharded-7b-plan.json"
    timeout 900 torchrun --nproc_per_node "$ngpu" -m harken.cli train grpo --config r1aqa "${train[@]}"
}

if [ "${CASE:-bench}" = sharded ]; then sharded_case; exit $?; fi

long_case() {
    local rc=0
    timeout 240 python3 -m harken.bench --size 7b --device cuda --dtype bfloat16 --clip-seconds 10 --group-size 8 \
        --completion-tokens 256 --paths shared --prompts 1 --reps 2 --warmup 1 --out "$OUT/gpu-7b-10s-g8-t256" || rc=1
    timeout 300 python3 -m harken.bench --decode --size 7b --device cuda --dtype bfloat16 --clip-seconds 10 \
        --group-size 8 --completion-tokens 32,256 --reps 2 --warmup 1 --out "$OUT/gpu-7b-decode" || rc=1
    return $rc
}

if [ "${CASE:-bench}" = long ]; then long_case; exit $?; fi

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
if [ "${CASE:-bench}" != short ] && [ -z "${BENCH_ARGS:-}" ]; then
    long_case || rc=1
    echo "long-completion cases done after $(( $(date +%s) - start )) s"
fi
if [ "${CASE:-bench}" = all ]; then sharded_case || rc=1; fi
exit $rc
