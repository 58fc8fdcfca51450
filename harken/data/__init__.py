"""Data: the canonical record, readers for every dataset layout and their checks, the shipped
benchmark files, audio decoding, prompts, the offline and AVQA data builders, split and stats.
"""
