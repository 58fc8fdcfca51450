"""harken: reinforcement-learning post-training and evaluation for large audio-language models."""

__version__ = "0.1.0"
