"""Reinforcement learning: the pure loss math, rewards, and rollouts (sampling and completion log-probs).
"""
