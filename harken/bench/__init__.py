"""Benchmark of naive against shared-prefix GRPO steps: harness, FLOP model, memory meter, results.
"""
