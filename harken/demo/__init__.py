"""The demo: base vs SFT vs GRPO in miniature, end to end on a toy model.
"""
