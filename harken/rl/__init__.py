"""Reinforcement learning: the pure math (`masks`, `advantages`, `algorithm`), rewards, and
rollouts (sampling and completion log-probs).
"""
