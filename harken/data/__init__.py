"""Data: the canonical record, readers for every dataset layout, audio decoding, prompts, and the
offline and AVQA data builders.
"""
