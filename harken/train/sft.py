"""`harken train sft`: the supervised fine-tuning baseline (the paper's SFT rows, full or LoRA).

Owns: what an SFT step computes, top to bottom:
    examples -> batch [prompt | target] with its loss mask -> forward -> token-mean cross-entropy
    -> backward (gradient accumulation) -> optimizer step -> log -> validate / save.
The input layout and the loss mask are built in exactly one place (`build_sft_batch`), and the
shift from "positions" to "the positions that predict the target" happens in exactly one place
(`target_logits`).

Everything else is shared with GRPO (`harken.train.trainer` and the modules it calls):
processes (accelerate), loading the model (full or LoRA, encoder frozen or not, fp32 / bf16),
optimizer and schedule, gradient averaging and clipping, the resumable data stream, audio
loading, atomic checkpoints and resume, metrics (metrics.jsonl, tb/, samples.jsonl), the progress
bar, validation and the final export. The
forward is composed from the same pieces as `harken.rl.rollout` (`AudioLM.embed_prompts`,
`embed_tokens`, `text_forward`, `lm_head`, `rollout.prompt_positions`, `rollout.token_logprobs`);
validation is `harken.eval.answers.accuracy`, the same greedy decoding and scoring as evaluation.

Shapes: B examples per micro-step, P prompt tokens (left padded; audio placeholders included),
T target tokens (right padded), L = P + T, V vocab.

Choices, all visible in the log at start:
- the target is `template.render_target(example)` (e.g. `<answer>{answer}</answer>`) followed by
  the family's end-of-turn token (`<|im_end|>`; Voxtral's `</s>`), so the model also learns to stop;
- the loss is the mean cross-entropy over every target token of the optimizer step, over all
  micro-steps and processes (not a mean of per-micro-step means): each token weighs the same
  whatever the batch composition;
- steps: `run.max_steps` when > 0, else ceil(epochs x examples / (batch x accum x processes));
- with `run.eval_every` > 0, validation runs before the first step (`train.eval_before`), every
  `run.eval_every` steps and at the end, so every run has a before / after accuracy;
- `lr` in the metrics is the rate the logged step used (GRPO logs the next step's).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harken.data.prompts import PromptTemplate
from harken.data.records import Example
from harken.eval.answers import generate_texts
from harken.models.audio_lm import AudioLM, PromptBatch
from harken.rl.rollout import prompt_positions, token_logprobs
from harken.schema import SFTConfig
from harken.train.optim import clip_and_step
from harken.train.trainer import Trainer

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions outside the loss (Hugging Face convention)


# --------------------------------------------------------------------------------------------
# The batch: [prompt (left padded) | target (right padded)] and its loss mask
# --------------------------------------------------------------------------------------------


@dataclass
class SFTBatch:
    """One micro-step of SFT examples. B examples, P prompt tokens, T target tokens, L = P + T."""

    examples: list[Example]  # [B]
    prompts: PromptBatch  # B chat-format prompts, left padded to P, with their clips
    target_ids: torch.Tensor  # [B, T] long: target tokens then the end-of-turn token, right padded with pad_id
    target_mask: torch.Tensor  # [B, T] bool: real target tokens (the loss mask over the target part)

    @property
    def input_ids(self) -> torch.Tensor:
        """[B, L] the whole sequence the model reads."""
        return torch.cat([self.prompts.input_ids, self.target_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """[B, L] long: 1 on real tokens (prompt and target), 0 on left and right padding."""
        return torch.cat([self.prompts.attention_mask, self.target_mask.long()], dim=1)

    @property
    def loss_mask(self) -> torch.Tensor:
        """[B, L] bool: True exactly at the target tokens (never prompt, audio or padding)."""
        return torch.cat([torch.zeros_like(self.prompts.attention_mask, dtype=torch.bool), self.target_mask], dim=1)

    @property
    def labels(self) -> torch.Tensor:
        """[B, L] long: the token at loss positions, IGNORE_INDEX elsewhere (unshifted)."""
        return self.input_ids.masked_fill(~self.loss_mask, IGNORE_INDEX)

    @property
    def num_target_tokens(self) -> int:
        return int(self.target_mask.sum())

    def to(self, device) -> "SFTBatch":
        return SFTBatch(self.examples, self.prompts.to(device), self.target_ids.to(device), self.target_mask.to(device))


def target_token_ids(lm: AudioLM, template: PromptTemplate, example: Example) -> list[int]:
    """What the model is taught to answer: the template's target, then the family's end-of-turn
    token (by id: a Mistral tokenizer never reads a special token out of text)."""
    return lm.tokenizer(template.render_target(example), add_special_tokens=False)["input_ids"] + [lm.end_of_turn_id]


def build_sft_batch(lm: AudioLM, template: PromptTemplate, examples: list[Example], audio: list[np.ndarray]) -> SFTBatch:
    """Prompts in the model's chat layout (left padded, audio placeholders expanded) and targets.

    Args:
        examples: B questions. audio: their B waveforms at the model's sampling rate.
    Returns:
        the batch on the CPU; its `loss_mask` covers exactly the target tokens.
    """
    prompts = lm.encode_prompts([template.render(ex) for ex in examples], audio)  # [B, P]
    rows = [target_token_ids(lm, template, ex) for ex in examples]
    t = max(len(r) for r in rows)
    target_ids = torch.full((len(rows), t), lm.pad_id, dtype=torch.long)  # [B, T]
    target_mask = torch.zeros((len(rows), t), dtype=torch.bool)
    for i, r in enumerate(rows):
        target_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        target_mask[i, : len(r)] = True
    return SFTBatch(list(examples), prompts, target_ids, target_mask)


# --------------------------------------------------------------------------------------------
# Forward and loss
# --------------------------------------------------------------------------------------------


def target_logits(lm: AudioLM, batch: SFTBatch, encoded_audio: torch.Tensor | None = None) -> torch.Tensor:
    """Logits at the positions that predict each target token: [B, T, V].

    The forward is composed as in `harken.rl.rollout`: prompt embeddings (audio spliced in) then the
    target tokens' embeddings, one pass of the language model, and the head applied only where
    it is needed: position P-1+t predicts target token t.
    """
    p = batch.prompts.input_ids.shape[1]
    embeds = torch.cat([lm.embed_prompts(batch.prompts, encoded_audio), lm.embed_tokens(batch.target_ids)], dim=1)  # [B, L, H]
    attn = batch.attention_mask  # [B, L]
    hidden, _ = lm.text_forward(embeds, attn, prompt_positions(attn))  # [B, L, H]
    return lm.lm_head(hidden[:, p - 1 : -1])  # [B, T, V]


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, num_tokens: float) -> torch.Tensor:
    """Summed negative log-likelihood of the masked tokens divided by `num_tokens`.

    Args:
        logprobs: [B, T] log p(target token). mask: [B, T] bool, the target tokens.
        num_tokens: the token count this share of the loss is normalised by (the whole step's,
            so micro-steps add up to the token mean of the step).
    Returns:
        scalar loss.
    """
    return -(logprobs * mask).sum() / num_tokens


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


def total_steps(max_steps: int, epochs: float, n_train: int, batch_size: int, grad_accum: int, processes: int) -> int:
    """`max_steps` when > 0, else enough optimizer steps for `epochs` passes over the data."""
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * n_train / (batch_size * grad_accum * processes)))


class SFTTrainer(Trainer):
    kind = "sft"
    postfix = {"loss": ("loss", ".4f"), "tok_acc": ("token_accuracy", ".3f")}

    def __init__(self, cfg: SFTConfig):
        super().__init__(cfg, need_reference=False)

    def total_steps(self) -> int:
        c = self.cfg
        return total_steps(c.run.max_steps, c.train.epochs, self.n_train, c.train.batch_size, c.optim.grad_accum,
                           self.acc.num_processes)

    def before_loop(self) -> None:
        c = self.cfg
        if c.train.eval_before and c.run.eval_every and self.val and not self.resumed:
            self.validate()

    def log_setup(self) -> None:
        c = self.cfg
        n_params = sum(p.numel() for p in self.params)
        log.info(
            "SFT: %s (%s), %d trainable parameters%s%s; %d training questions; %d validation; %d process(es)",
            c.model.path, self.lm.family.name, n_params, ", LoRA" if c.model.lora else "",
            ", encoder frozen" if self.frozen_encoder else "", self.n_train, len(self.val), self.acc.num_processes,
        )
        per_step = c.train.batch_size * c.optim.grad_accum * self.acc.num_processes
        how = "run.max_steps" if c.run.max_steps > 0 else f"ceil({c.train.epochs:g} epochs x {self.n_train} / {per_step})"
        log.info(
            "%d example(s) x %d accumulation x %d process(es) = %d examples per step; %d steps (%s); "
            "prompt %s, target %r + %s, loss: token mean over the step",
            c.train.batch_size, c.optim.grad_accum, self.acc.num_processes, per_step, self.max_steps, how,
            self.template.name, self.template.target, self.lm.family.end_of_turn,
        )

    # --- 1. data ---------------------------------------------------------------------------------
    def next_batches(self) -> list[SFTBatch]:
        """The grad_accum micro-batches of one optimizer step, for this process."""
        out = []
        for _ in range(self.cfg.optim.grad_accum):
            examples, wave = self.clips.take(self.cfg.train.batch_size)  # data.skip_bad skips bad clips
            out.append(build_sft_batch(self.lm, self.template, examples, wave).to(self.acc.device))
        return out

    # --- 2. forward / backward -------------------------------------------------------------------
    def backward(self, batch: SFTBatch, num_tokens: float) -> tuple[float, float]:
        """Backpropagate this micro-batch's share of the step loss.

        `num_tokens` is the step's target tokens over all processes divided by the number of
        processes: gradients are averaged over processes afterwards, so the micro-batch losses of
        all processes add up to the token mean of the whole step.
        Returns (summed NLL, correctly predicted tokens) of this micro-batch.
        """
        logits = self.lm.call(target_logits, self.lm, batch)  # [B, T, V]
        logprobs = token_logprobs(logits, batch.target_ids)  # [B, T] fp32
        sft_loss(logprobs, batch.target_mask, num_tokens).backward()
        with torch.no_grad():
            nll = float(-(logprobs * batch.target_mask).sum())
            correct = float(((logits.argmax(-1) == batch.target_ids) & batch.target_mask).sum())
        return nll, correct

    # --- one step ---------------------------------------------------------------------------------
    def train_step(self) -> tuple[dict[str, float], SFTBatch]:
        c = self.cfg
        t0 = time.perf_counter()
        batches = self.next_batches()  # 1
        local = {"target": float(sum(b.num_target_tokens for b in batches)),
                 "tokens": float(sum(int(b.attention_mask.sum()) for b in batches))}
        counts = self.global_reduce(local, "sum")
        n_target = counts["target"]
        lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
        nll = correct = 0.0
        for b in batches:  # 2
            part_nll, part_correct = self.backward(b, n_target / self.acc.num_processes)
            nll, correct = nll + part_nll, correct + part_correct
        grad_norm = clip_and_step(self.params, self.optimizer, self.scheduler, c.optim.max_grad_norm, self.acc,
                                  self.sharded)  # 3
        sums = self.global_reduce({"nll": nll, "correct": correct}, "sum")
        dt = time.perf_counter() - t0
        return {  # 4
            "loss": sums["nll"] / n_target,
            "token_accuracy": sums["correct"] / n_target,
            "lr": lr,
            "grad_norm": grad_norm,
            "time/step_s": dt,
            "throughput/tokens_per_s": counts["tokens"] / dt,
            "throughput/target_tokens_per_s": n_target / dt,
            "epoch": (self.step + 1) * c.train.batch_size * c.optim.grad_accum * self.acc.num_processes / self.n_train,
        }, batches[0]

    def log_samples(self, batch: SFTBatch, n: int = 4) -> None:
        """Greedy answers of the model for a few of this step's examples, beside their targets."""
        if not self.acc.is_main_process and not self.sharded:  # a sharded model generates with every process
            return
        examples = batch.examples[:n]
        wave = [self.audio.load(ex.audio) for ex in examples]
        outs = generate_texts(self.lm, examples, self.template, wave, self.cfg.run.eval_max_new_tokens)
        rows = [{"id": ex.id, "question": ex.question, "answer": ex.answer,
                 "target": self.template.render_target(ex), "completion": out} for ex, out in zip(examples, outs)]
        self.metrics.log_samples(self.step, rows)


def train_sft(cfg: SFTConfig) -> Path:
    """Run SFT as configured; returns the final model folder (RUN/final)."""
    return SFTTrainer(cfg).train()
