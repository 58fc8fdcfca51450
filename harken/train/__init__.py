"""Training: the shared machinery and the GRPO and SFT steps.
"""
