"""Benchmark of naive against shared-prefix GRPO steps: the workload (workload), its measurement
(harness), the FLOP model (flops), the memory meter (memory), the machine (machine), the result
files (results); and of decode steps against the previous loop and transformers' `generate`
(decode). The command line is `harken.cli.bench`; `python3 -m harken.bench` runs it alone.
"""
