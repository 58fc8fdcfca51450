"""The machine a benchmark ran on: what it is, how fast it multiplies matrices, whether it was quiet.

Owns: `machine_info` (bench.json's `machine`), `measure_matmul_gflops` (the reference rate the
achieved FLOP rate is compared with, see `harken.bench.flops`), the load average, the spread of
repeated timings, the warning written when the timings look disturbed, and `synchronize` (wait
for the device before reading a clock). Does not own: the timings (`harken.bench.harness`).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_gflops(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 5) -> float:
    """GFLOP/s of an n x n matrix product: the fastest of `reps`, after two untimed ones (the
    machine's capability; the benchmark's own times are medians, so utilisation is conservative)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    times = []
    for i in range(reps + 2):
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(times) / 1e9


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def machine_info(device: torch.device) -> dict[str, Any]:
    import transformers

    cpu = _cpu_name()
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_MAX_",
                                               "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")},
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["device_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded; None where the system has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def spread(values: list[float]) -> float:
    """(max - min) / median of repeated timings (0 when the median is 0)."""
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0


def noise_warning(noise: dict[str, Any], cpus: int, device: torch.device) -> str | None:
    """A sentence when the run looks disturbed (other work on the machine, a drifting clock rate), else None.

    On a small shared CPU machine another process costs the shared path most: its many small
    operators each wait for every OpenMP thread, and a descheduled thread stalls them all.
    """
    signs = []
    if device.type == "cpu" and noise["loadavg_before"] and noise["loadavg_after"]:
        load = max(noise["loadavg_before"][0], noise["loadavg_after"][0])
        if load > cpus:  # this process alone accounts for up to `cpus`
            signs.append(f"1-minute load average up to {load:.1f} on {cpus} CPUs")
    lo, hi = sorted((noise["matmul_gflops_start"], noise["matmul_gflops_end"]))
    if hi > 0 and lo < 0.75 * hi:
        signs.append(f"matrix-product rate moved from {noise['matmul_gflops_start']:.0f} to "
                     f"{noise['matmul_gflops_end']:.0f} GFLOP/s")
    if noise["max_spread"] > 0.5:
        signs.append(f"repetitions spread by up to {100 * noise['max_spread']:.0f} % of their median")
    if not signs:
        return None
    return "the timings look disturbed (" + "; ".join(signs) + "): treat them as upper bounds"
