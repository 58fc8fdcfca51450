"""`harken train grpo`: the GRPO step for audio-language models.

Owns: the order of a step, top to bottom:
    rollouts -> rewards -> advantages -> old/ref log-probs -> updates -> log -> validate/save.
Everything it calls lives elsewhere: sampling and log-probs (`harken.rl.rollout`), rewards
(`harken.rl.rewards`), the math (`harken.rl.algorithm`); set-up, resume, the loop, validation,
checkpoints and export are the shared skeleton (`harken.train.trainer`).

Deviations from textbook GRPO, all named options (logged at start):
- each group's prompt (and audio) is computed once and shared by its G completions
  (`rollout.prefix_sharing`, exact; `false` runs the naive repeated-prompt path);
- with a frozen encoder its output from the rollout is reused in the policy and reference passes;
- groups whose rewards are all equal can be dropped and replaced by fresh prompts
  (`rollout.dynamic_sampling`, DAPO); their fraction is always logged;
- a prompt whose group had equal rewards can be passed over at its next draw, the next epoch
  (`rollout.skip_zero_variance`; the stream skips it, `harken.train.stream.DataStream.mark`),
  counted as groups/skipped_zero_variance;
- truncated completions can be masked out of the loss (`rollout.mask_truncated`);
- advantages, KL estimator, ratio level, clip range and aggregation are picked by name
  (`algo.*`: GRPO, Dr.GRPO, DAPO, GSPO variants);
- the aggregation's normaliser spans the whole step (all accumulation micro-steps and processes),
  so the update does not depend on how the step's prompts are split (`step_normaliser`);
- rollout, old, reference and policy passes run in one mode, dropout off unless `algo.dropout`
  (so with `algo.updates_per_batch > 1` the first ratio is exactly 1).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harken.data.records import Example
from harken.eval.answers import decode
from harken.models.audio_lm import PromptBatch
from harken.rl import algorithm
from harken.rl.advantages import group_advantages, group_stats
from harken.rl.masks import completion_mask_from_eos
from harken.rl.rewards import build_rewards, score
from harken.rl.rollout import SamplingParams, completion_logprobs, generate
from harken.schema import GRPOConfig
from harken.config import ConfigError
from harken.train.optim import NonFiniteError, clip_and_step
from harken.train.policy import layers_with_own_dropout, set_dropout
from harken.train.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class RolloutBatch:
    """One micro-step's rollouts. B prompts, G completions each, N = B*G rows, T tokens."""

    examples: list[Example]  # [B]
    prompts: PromptBatch  # B prompts (left padded) with their clips
    encoded_audio: torch.Tensor | None  # [sum audio tokens, D_enc] when the encoder is frozen, else None
    completion_ids: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] bool: tokens in the loss
    truncated: torch.Tensor  # [N] bool: hit max_new_tokens without an end-of-turn token
    texts: list[str]  # [N] decoded completions
    rewards: torch.Tensor  # [N]
    advantages: torch.Tensor  # [N]
    reward_logs: dict[str, float]  # reward/NAME -> mean
    old_logprobs: torch.Tensor | None = None  # [N, T] when updates_per_batch > 1
    ref_logprobs: torch.Tensor | None = None  # [N, T] when kl_coef > 0
    stats: dict[str, float] = field(default_factory=dict)


def _pad_cat(tensors: list[torch.Tensor], value) -> torch.Tensor:
    t = max(x.shape[1] for x in tensors)
    return torch.cat([torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value) for x in tensors])


class GRPOTrainer(Trainer):
    kind = "grpo"
    postfix = {"reward": ("reward/total", ".3f"), "acc": ("reward/accuracy", ".3f"), "kl": ("kl", ".3g")}

    def __init__(self, cfg: GRPOConfig):
        super().__init__(cfg, need_reference=cfg.algo.kl_coef > 0)
        self.rewards = build_rewards(cfg.reward.rewards, self.template, cfg.reward.accuracy_rule, cfg.reward.format_rule)
        r = cfg.rollout
        self.sampling = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, top_k=r.top_k, min_p=r.min_p)
        stuck = [] if cfg.algo.dropout else layers_with_own_dropout(self.lm.model)
        if stuck:
            raise ConfigError(f"algo.dropout=false cannot turn off the dropout inside activation-checkpointed layers "
                              f"({stuck[0]}, ...): set model.gradient_checkpointing=false")

    def scheduler_steps(self) -> int:
        return self.max_steps * self.cfg.algo.updates_per_batch

    def make_generator(self) -> torch.Generator:
        generator = torch.Generator(device=self.acc.device)
        generator.manual_seed(self.cfg.run.seed * 1000 + self.acc.process_index)
        return generator

    def log_setup(self) -> None:
        c = self.cfg
        n_train = sum(p.numel() for p in self.params)
        log.info(
            "GRPO: %s (%s), %d trainable parameters%s%s; %d training questions; %d process(es)",
            c.model.path, self.lm.family.name, n_train, ", LoRA" if c.model.lora else "",
            ", encoder frozen" if self.frozen_encoder else "", self.n_train, self.acc.num_processes,
        )
        log.info(
            "estimators: advantage=%s kl=%s(coef %g) ratio=%s clip=[%g, %g] agg=%s mu=%d prefix_sharing=%s "
            "dynamic_sampling=%s skip_zero_variance=%s mask_truncated=%s",
            c.algo.advantage, c.algo.kl_estimator, c.algo.kl_coef, c.algo.ratio_level, 1 - c.algo.clip_eps_low,
            1 + c.algo.clip_eps_high, c.algo.loss_agg, c.algo.updates_per_batch, c.rollout.prefix_sharing,
            c.rollout.dynamic_sampling, c.rollout.skip_zero_variance, c.rollout.mask_truncated,
        )
        log.info(
            "sampling: temperature=%g top_k=%d top_p=%g min_p=%g; rewards: accuracy_rule=%s format_rule=%s; "
            "dropout %s in every RL pass (algo.dropout); loss normalised over the whole step",
            c.rollout.temperature, c.rollout.top_k, c.rollout.top_p, c.rollout.min_p, c.reward.accuracy_rule,
            c.reward.format_rule, "on" if c.algo.dropout else "off",
        )
        per_step = c.rollout.prompts_per_step * c.optim.grad_accum * self.acc.num_processes
        log.info(
            "%d prompt(s) x %d accumulation x %d process(es) = %d prompts, %d completions per step",
            c.rollout.prompts_per_step, c.optim.grad_accum, self.acc.num_processes, per_step, per_step * c.rollout.group_size,
        )

    # --- 1-3. rollouts, rewards, advantages ---------------------------------------------------
    @torch.no_grad()
    def _sample_groups(self, examples: list[Example], wave: list[np.ndarray]):
        g = self.cfg.rollout.group_size
        batch = self.lm.encode_prompts([self.template.render(ex) for ex in examples], wave).to(self.acc.device)
        set_dropout(self.lm.model, self.cfg.algo.dropout, generating=True)
        encoded = self.lm.call(self.lm.encode_audio, batch) if self.frozen_encoder else None
        try:
            ids = generate(self.lm, batch, g, self.sampling, shared=self.cfg.rollout.prefix_sharing,
                           encoded_audio=encoded, generator=self.generator)
        except RuntimeError as e:  # torch's sampler: "probability tensor contains either `inf`, `nan` or element < 0"
            if "probability tensor" in str(e):
                raise NonFiniteError("non-finite sampling probabilities") from None
            raise
        self._pass_mode()
        texts = decode(self.lm, ids)
        rewards, logs = score(self.rewards, texts, [ex for ex in examples for _ in range(g)])
        return encoded, batch, ids, texts, rewards, logs

    def collect(self) -> RolloutBatch:
        c = self.cfg.rollout
        g, need = c.group_size, c.prompts_per_step
        keep: list[tuple] = []  # (example, (prompt batch, row), encoded part, ids [G, T], texts, rewards [G])
        spare: list[tuple] = []
        sampled_groups = zero_groups = 0
        zero_by_id: dict[str, bool] = {}  # the groups sampled: their prompt's id -> equal rewards
        skipped_before = self.stream.skipped
        logs_acc: list[dict[str, float]] = []
        rounds = 0
        while len(keep) < need:
            examples, wave = self.clips.take(need - len(keep))  # with their clips (data.skip_bad skips bad ones)
            encoded, batch, ids, texts, rewards, logs = self._sample_groups(examples, wave)
            logs_acc.append(logs)
            zero = group_stats(rewards, g)["zero_variance"]
            parts = torch.split(encoded, batch.audio_token_counts) if encoded is not None else [None] * len(examples)
            for i, ex in enumerate(examples):
                group = (ex, (batch, i), parts[i], ids[i * g : (i + 1) * g], texts[i * g : (i + 1) * g], rewards[i * g : (i + 1) * g])
                sampled_groups += 1
                zero_groups += int(zero[i])
                zero_by_id[ex.id] = bool(zero[i])
                (spare if (c.dynamic_sampling and zero[i]) else keep).append(group)
            rounds += 1
            if not c.dynamic_sampling or rounds > c.max_resample_rounds:
                break
        keep = (keep + spare)[:need]  # top up with zero-variance groups if resampling ran out
        rb = self.build_batch(
            [k[0] for k in keep],
            PromptBatch.join([k[1] for k in keep], self.lm.pad_id),  # the rollouts' prompts, not encoded again
            torch.cat([k[2] for k in keep]) if self.frozen_encoder else None,
            _pad_cat([k[3] for k in keep], self.lm.pad_id), [t for k in keep for t in k[4]], torch.cat([k[5] for k in keep]),
        )
        rb.reward_logs = {k: float(np.nanmean([d[k] for d in logs_acc])) for k in logs_acc[0]}
        rb.stats["groups/zero_variance_frac"] = zero_groups / max(sampled_groups, 1)
        rb.stats["groups/resampled"] = float(sampled_groups - need)
        if c.skip_zero_variance:
            rb.stats["groups/skipped_zero_variance"] = float(self.stream.skipped - skipped_before)
            self.stream.mark(self._every_process(zero_by_id))
        return rb

    def _every_process(self, zero_by_id: dict[str, bool]) -> dict[str, bool]:
        """The groups every process sampled in this micro-step: the stream of each process skips them
        alike (an item is drawn by another process in another epoch)."""
        if self.acc.num_processes == 1:
            return zero_by_id
        from accelerate.utils import gather_object

        merged: dict[str, bool] = {}
        for part in gather_object([zero_by_id]):
            merged.update(part)
        return merged

    def build_batch(self, examples: list[Example], prompts: PromptBatch, encoded: torch.Tensor | None,
                    ids: torch.Tensor, texts: list[str], rewards: torch.Tensor) -> RolloutBatch:
        """A micro-step's batch from its completions (`collect`'s, or fixed ones): mask, advantages, stats."""
        g = self.cfg.rollout.group_size
        mask, truncated = completion_mask_from_eos(ids, self.lm.eos_ids, self.lm.pad_id)
        if self.cfg.rollout.mask_truncated:
            mask = mask & ~truncated[:, None]
        adv = group_advantages(rewards, g, self.cfg.algo.advantage, self.cfg.algo.adv_eps)
        stats = {
            "reward/total": float(rewards.mean()),
            "reward/std_in_group": float(group_stats(rewards, g)["std"].mean()),
            "completion/length": float(mask.sum(-1).float().mean()),
            "completion/truncated_frac": float(truncated.float().mean()),
            "completion/tokens": float(mask.sum()),
            "advantage/mean": float(adv.mean()),
            "advantage/std": float(adv.std()) if adv.numel() > 1 else 0.0,
            "advantage/abs_max": float(adv.abs().max()),
        }
        dev = self.acc.device
        return RolloutBatch(examples, prompts, encoded, ids.to(dev), mask.to(dev), truncated, texts, rewards, adv.to(dev),
                            {}, stats=stats)

    # --- 4. old and reference log-probs ------------------------------------------------------------
    def _pass_mode(self) -> None:
        """Every RL pass (old, reference, policy) in one mode: dropout off unless algo.dropout (set_dropout)."""
        set_dropout(self.lm.model, self.cfg.algo.dropout)
        if self.ref is not None:
            set_dropout(self.ref.model, self.cfg.algo.dropout)

    @torch.no_grad()
    def score_logprobs(self, rb: RolloutBatch) -> None:
        c = self.cfg
        self._pass_mode()
        kw = dict(shared=c.rollout.prefix_sharing, encoded_audio=rb.encoded_audio, micro_batch=c.rollout.micro_batch or None)
        g = c.rollout.group_size
        if c.algo.updates_per_batch > 1:
            rb.old_logprobs = completion_logprobs(self.lm, rb.prompts, rb.completion_ids, g, **kw)
        if c.algo.kl_coef > 0:
            if self.ref is not None:
                rb.ref_logprobs = completion_logprobs(self.ref, rb.prompts, rb.completion_ids, g, **kw)
            else:  # LoRA: the base model with the adapter switched off is the reference
                with self.lm.model.disable_adapter():
                    rb.ref_logprobs = completion_logprobs(self.lm, rb.prompts, rb.completion_ids, g, **kw)

    # --- 5. updates -------------------------------------------------------------------------------
    def step_normaliser(self, rollouts: list[RolloutBatch]) -> float:
        """This process's share of the step's loss normaliser.

        The count `algo.loss_agg` divides by (tokens, non-empty rows or rows) summed over the step's
        accumulation micro-steps and all processes, divided by the number of processes: gradients
        are then averaged over processes (all-reduce, or FSDP's reduce-scatter), so the step's
        gradient is that of one aggregation over all its completions, however they are split.
        """
        local = sum(algorithm.normaliser_count(rb.mask, self.cfg.algo.loss_agg) for rb in rollouts)
        return self.global_reduce({"count": local}, "sum")["count"] / self.acc.num_processes

    def backward(self, rb: RolloutBatch, normaliser: float) -> dict[str, float]:
        """Backpropagate this micro-step's part of the step's loss (`step_normaliser`); returns its metrics."""
        a = self.cfg.algo
        self._pass_mode()
        parts: list[tuple[float, dict[str, float]]] = []

        def loss_fn(lp: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            old = rb.old_logprobs[rows] if rb.old_logprobs is not None else lp.detach()
            ref = rb.ref_logprobs[rows] if rb.ref_logprobs is not None else None
            loss, m = algorithm.grpo_loss(
                lp, old, ref, rb.advantages[rows], rb.mask[rows],
                kl_coef=a.kl_coef if ref is not None else 0.0, kl_estimator=a.kl_estimator,
                clip_eps_low=a.clip_eps_low, clip_eps_high=a.clip_eps_high, ratio_level=a.ratio_level,
                agg_mode=a.loss_agg, max_tokens=self.cfg.rollout.max_new_tokens,
            )
            parts.append((algorithm.microbatch_weight(rb.mask, rows, a.loss_agg), m))  # metrics: this micro-step's mean
            return loss * algorithm.microbatch_weight(rb.mask, rows, a.loss_agg, total=normaliser)

        completion_logprobs(
            self.lm, rb.prompts, rb.completion_ids, self.cfg.rollout.group_size,
            shared=self.cfg.rollout.prefix_sharing,
            encoded_audio=rb.encoded_audio, micro_batch=self.cfg.rollout.micro_batch or None, loss_fn=loss_fn,
        )
        keys = {k for _, m in parts for k in m}
        return {k: sum(w * m.get(k, 0.0) for w, m in parts) for k in keys}

    # --- one step ---------------------------------------------------------------------------------
    def train_step(self) -> tuple[dict[str, float], RolloutBatch]:
        c = self.cfg
        t0 = time.perf_counter()
        rollouts = [self.collect() for _ in range(c.optim.grad_accum)]  # 1-3
        t_roll = time.perf_counter() - t0
        for rb in rollouts:  # 4
            self.score_logprobs(rb)
        normaliser = self.step_normaliser(rollouts)
        loss_logs: list[dict[str, float]] = []
        grad_norms = []
        for _ in range(c.algo.updates_per_batch):  # 5
            for rb in rollouts:
                loss_logs.append(self.backward(rb, normaliser))
            grad_norms.append(clip_and_step(self.params, self.optimizer, self.scheduler, c.optim.max_grad_norm, self.acc,
                                          self.sharded))
        dt = time.perf_counter() - t0
        return self._step_metrics(rollouts, loss_logs, grad_norms, dt, t_roll), rollouts[0]  # 6

    def _step_metrics(self, rollouts, loss_logs, grad_norms, dt, t_roll) -> dict[str, float]:
        m: dict[str, float] = {}
        for rb in rollouts:
            for k, v in {**rb.reward_logs, **rb.stats}.items():
                m[k] = m.get(k, 0.0) + v / len(rollouts)
        for d in loss_logs:
            for k, v in d.items():
                m[k] = m.get(k, 0.0) + v / len(loss_logs)
        tokens = sum(rb.stats["completion/tokens"] for rb in rollouts)
        m.pop("completion/tokens", None)
        m.update({
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(np.mean(grad_norms)),
            "time/step_s": dt,
            "time/rollout_s": t_roll,
            "throughput/completion_tokens_per_s": tokens / dt,
        })
        m = self.global_reduce(m, "mean")
        if "reward/accuracy" in m:
            m["accuracy"] = m["reward/accuracy"]
        return m

    def log_samples(self, rb: RolloutBatch) -> None:
        g = self.cfg.rollout.group_size
        rows = [
            {"id": rb.examples[i // g].id, "question": rb.examples[i // g].question, "answer": rb.examples[i // g].answer,
             "completion": rb.texts[i], "reward": float(rb.rewards[i]), "advantage": float(rb.advantages[i])}
            for i in range(min(len(rb.texts), 2 * g))
        ]
        self.metrics.log_samples(self.step, rows)


def train_grpo(cfg: GRPOConfig) -> Path:
    return GRPOTrainer(cfg).train()
