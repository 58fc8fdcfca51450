"""Deterministic answers for evaluation and validation: prompts in, decoded outputs out.

Owns: batched greedy generation for a list of examples with a named prompt template (the same
composed forward and decode loop as the GRPO rollouts, with G = 1), and validation accuracy.
Does not own: scoring rules (`harken.eval.scoring`), running a benchmark (`harken.eval.run`),
result files (`harken.eval.results`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from harken.models.audio_lm import AudioLM
from harken.data.prompts import PromptTemplate
from harken.data.records import Example
from harken.rl.rollout import SamplingParams, generate


def decode(lm: AudioLM, ids: torch.Tensor) -> list[str]:
    """Completion ids [N, T] -> text, cut at the first end-of-turn token."""
    eos = set(lm.eos_ids)
    texts = []
    for row in ids.tolist():
        end = next((i for i, t in enumerate(row) if t in eos), len(row))
        texts.append(lm.tokenizer.decode(row[:end], skip_special_tokens=True))
    return texts


@torch.no_grad()
def generate_texts(
    lm: AudioLM,
    examples: Sequence[Example],
    template: PromptTemplate,
    audio: Sequence[np.ndarray],
    max_new_tokens: int = 64,
    greedy: bool = True,
) -> list[str]:
    """One raw output per example (one batch: the caller chooses the batch size)."""
    if not examples:
        return []
    was_training = lm.model.training
    lm.model.eval()
    try:
        batch = lm.encode_prompts([template.render(ex) for ex in examples], list(audio)).to(lm.device)
        params = SamplingParams(max_new_tokens=max_new_tokens, greedy=greedy)
        ids = generate(lm, batch, 1, params, shared=True)
    finally:
        lm.model.train(was_training)
    return decode(lm, ids)


def accuracy(
    lm: AudioLM,
    examples: Sequence[Example],
    template: PromptTemplate,
    load_audio,
    batch_size: int = 8,
    max_new_tokens: int = 64,
) -> dict[str, float]:
    """Greedy accuracy with the benchmark's word-match rule, overall and per meta task."""
    from harken.eval.scoring import extract_answer, is_correct

    right: dict[str, list[bool]] = {}
    for s in range(0, len(examples), batch_size):
        chunk = list(examples[s : s + batch_size])
        outs = generate_texts(lm, chunk, template, [load_audio(ex.audio) for ex in chunk], max_new_tokens)
        for ex, out in zip(chunk, outs):
            ok = is_correct(extract_answer(out, ex.choices, template.lettered), ex.answer, ex.choices)
            right.setdefault("all", []).append(ok)
            right.setdefault(str(ex.meta.get("task", "all")), []).append(ok)
    return {k: float(np.mean(v)) for k, v in right.items()}
