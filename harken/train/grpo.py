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
- truncated completions can be masked out of the loss (`rollout.mask_truncated`);
- advantages, KL estimator, ratio level, clip range and aggregation are picked by name
  (`algo.*`: GRPO, Dr.GRPO, DAPO, GSPO variants).
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
from harken.train.optim import clip_and_step
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
    postfix = {"reward": ("reward/total", ".3f"), "kl": ("kl", ".4f")}

    def __init__(self, cfg: GRPOConfig):
        super().__init__(cfg, need_reference=cfg.algo.kl_coef > 0)
        self.rewards = build_rewards(cfg.reward.rewards, self.template, cfg.reward.accuracy_rule)
        self.sampling = SamplingParams(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)

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
            "dynamic_sampling=%s mask_truncated=%s",
            c.algo.advantage, c.algo.kl_estimator, c.algo.kl_coef, c.algo.ratio_level, 1 - c.algo.clip_eps_low,
            1 + c.algo.clip_eps_high, c.algo.loss_agg, c.algo.updates_per_batch, c.rollout.prefix_sharing,
            c.rollout.dynamic_sampling, c.rollout.mask_truncated,
        )
        per_step = c.rollout.prompts_per_step * c.optim.grad_accum * self.acc.num_processes
        log.info(
            "%d prompt(s) x %d accumulation x %d process(es) = %d prompts, %d completions per step",
            c.rollout.prompts_per_step, c.optim.grad_accum, self.acc.num_processes, per_step, per_step * c.rollout.group_size,
        )

    # --- 1-3. rollouts, rewards, advantages ---------------------------------------------------
    @torch.no_grad()
    def _sample_groups(self, examples: list[Example]):
        g = self.cfg.rollout.group_size
        wave = [self.audio.load(ex.audio) for ex in examples]
        batch = self.lm.encode_prompts([self.template.render(ex) for ex in examples], wave).to(self.acc.device)
        encoded = self.lm.call(self.lm.encode_audio, batch) if self.frozen_encoder else None
        self.lm.model.eval()
        ids = generate(self.lm, batch, g, self.sampling, shared=self.cfg.rollout.prefix_sharing,
                       encoded_audio=encoded, generator=self.generator)
        self.lm.model.train()
        texts = decode(self.lm, ids)
        rewards, logs = score(self.rewards, texts, [ex for ex in examples for _ in range(g)])
        return encoded, batch, ids, texts, rewards, logs

    def collect(self) -> RolloutBatch:
        c = self.cfg.rollout
        g, need = c.group_size, c.prompts_per_step
        keep: list[tuple] = []  # (example, (prompt batch, row), encoded part, ids [G, T], texts, rewards [G])
        spare: list[tuple] = []
        sampled_groups = zero_groups = 0
        logs_acc: list[dict[str, float]] = []
        rounds = 0
        while len(keep) < need:
            examples = self.stream.take(need - len(keep))
            encoded, batch, ids, texts, rewards, logs = self._sample_groups(examples)
            logs_acc.append(logs)
            zero = group_stats(rewards, g)["zero_variance"]
            parts = torch.split(encoded, batch.audio_token_counts) if encoded is not None else [None] * len(examples)
            for i, ex in enumerate(examples):
                group = (ex, (batch, i), parts[i], ids[i * g : (i + 1) * g], texts[i * g : (i + 1) * g], rewards[i * g : (i + 1) * g])
                sampled_groups += 1
                zero_groups += int(zero[i])
                (spare if (c.dynamic_sampling and zero[i]) else keep).append(group)
            rounds += 1
            if not c.dynamic_sampling or rounds > c.max_resample_rounds:
                break
        keep = (keep + spare)[:need]  # top up with zero-variance groups if resampling ran out
        examples = [k[0] for k in keep]
        prompts = PromptBatch.join([k[1] for k in keep], self.lm.pad_id)  # the rollouts' prompts, not encoded again
        encoded = torch.cat([k[2] for k in keep]) if self.frozen_encoder else None
        ids = _pad_cat([k[3] for k in keep], self.lm.pad_id)
        texts = [t for k in keep for t in k[4]]
        rewards = torch.cat([k[5] for k in keep])
        mask, truncated = completion_mask_from_eos(ids, self.lm.eos_ids, self.lm.pad_id)
        if c.mask_truncated:
            mask = mask & ~truncated[:, None]
        adv = group_advantages(rewards, g, self.cfg.algo.advantage, self.cfg.algo.adv_eps)
        gstats = group_stats(rewards, g)
        reward_logs = {k: float(np.nanmean([d[k] for d in logs_acc])) for k in logs_acc[0]}
        stats = {
            "reward/total": float(rewards.mean()),
            "reward/std_in_group": float(gstats["std"].mean()),
            "groups/zero_variance_frac": zero_groups / max(sampled_groups, 1),
            "groups/resampled": float(sampled_groups - need),
            "completion/length": float(mask.sum(-1).float().mean()),
            "completion/truncated_frac": float(truncated.float().mean()),
            "completion/tokens": float(mask.sum()),
            "advantage/mean": float(adv.mean()),
            "advantage/std": float(adv.std()) if adv.numel() > 1 else 0.0,
            "advantage/abs_max": float(adv.abs().max()),
        }
        return RolloutBatch(examples, prompts, encoded, ids.to(self.acc.device), mask.to(self.acc.device),
                            truncated, texts, rewards, adv.to(self.acc.device), reward_logs, stats=stats)

    # --- 4. old and reference log-probs ------------------------------------------------------------
    @torch.no_grad()
    def score_logprobs(self, rb: RolloutBatch) -> None:
        c = self.cfg
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
    def backward(self, rb: RolloutBatch, scale: float) -> dict[str, float]:
        """Backpropagate this micro-step's loss (times `scale`); returns its metrics."""
        a = self.cfg.algo
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
            w = algorithm.microbatch_weight(rb.mask, rows, a.loss_agg)
            parts.append((w, m))
            return loss * (w * scale)

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
        loss_logs: list[dict[str, float]] = []
        grad_norms = []
        for _ in range(c.algo.updates_per_batch):  # 5
            for rb in rollouts:
                loss_logs.append(self.backward(rb, 1.0 / len(rollouts)))
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
