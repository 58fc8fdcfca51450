"""Typed configuration schemas for training (GRPO and SFT), with defaults and one comment per field.

Owns: the dataclasses `harken train grpo|sft` are configured with. Presets in
`harken/presets/*.yaml` fill them; `harken.config` loads, merges and validates. Does not own:
the behaviour behind each field (see the module each section names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from harken.config import ConfigError
from harken.data.readers import DatasetConfig


@dataclass
class DataFilter:
    """Train on chosen splits of a curation (harken.eval.curate, applied by harken.train.stream)."""

    curation: str = ""  # the --out folder of `harken data curate` on this training set ("" = no filter)
    keep: List[str] = field(default_factory=list)  # its splits to train on: text_answerable, zero_variance, strong_audio, weak_audio


@dataclass
class TrainDataConfig(DatasetConfig):
    """The training set: a dataset, optionally filtered to splits of a curation."""

    filter: DataFilter = field(default_factory=DataFilter)


@dataclass
class ModelConfig:
    """What to train (harken.models, harken.train.policy.prepare_model)."""

    path: str = "tiny:qwen2-audio"  # checkpoint folder or hub id; "tiny:FAMILY" builds a toy model in memory, "tiny-warm:FAMILY" the toy after a cached supervised warm-up
    dtype: str = "auto"  # compute dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    master_weights: bool = True  # trained weights, gradients and AdamW state in fp32 whatever `dtype` computes in
    sharding: str = "none"  # none: a whole copy per process | fsdp: weights, gradients, optimizer state sharded (FSDP2)
    trust_remote_code: bool = False  # never needed for the supported families
    attn_implementation: Optional[str] = None  # e.g. sdpa, flash_attention_2; None = transformers' default
    freeze_encoder: bool = False  # keep the audio encoder fixed (the paper trained it)
    lora: bool = False  # train a LoRA adapter instead of the full model
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.05  # dropout on the LoRA branch (SFT; GRPO only with algo.dropout=true)
    lora_target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )  # module names inside the language model; the audio encoder is always excluded
    gradient_checkpointing: bool = False  # non-reentrant activation checkpointing of decoder layers
    tiny_seed: int = 0  # seed for "tiny:" models


@dataclass
class PromptConfig:
    template: str = "prompt2"  # prompt1 | prompt2 | prompt3 | lettered (harken.data.prompts)
    max_audio_seconds: float = 30.0  # clips longer than this follow long_clip_policy
    long_clip_policy: str = "truncate"  # truncate | error | keep


@dataclass
class RolloutConfig:
    """Sampling (harken.rl.rollout)."""

    group_size: int = 8  # G completions per prompt
    prompts_per_step: int = 1  # prompts per device per micro-step
    max_new_tokens: int = 256  # completion length cap (longer ones are truncated)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling threshold
    top_k: int = 0  # sample among the k most likely tokens (0 = all; transformers' generate, as the release used it: 50)
    min_p: float = 0.0  # drop tokens less likely than min_p x the most likely one (0 = off)
    prefix_sharing: bool = True  # compute each prompt once per group (exact); false = naive reference path
    micro_batch: int = 0  # completion rows per policy forward/backward (0 = all rows of a micro-step)
    mask_truncated: bool = False  # exclude completions that hit max_new_tokens from the loss
    dynamic_sampling: bool = False  # drop groups with equal rewards and draw more prompts (DAPO)
    max_resample_rounds: int = 4  # extra draws per micro-step when dynamic_sampling is on
    skip_zero_variance: bool = False  # skip a prompt whose group had equal rewards when last drawn (the epoch before); counted as groups/skipped_zero_variance


@dataclass
class AlgoConfig:
    """The objective (harken.rl.algorithm and harken.rl.advantages; names pick registry entries)."""

    advantage: str = "grpo"  # grpo: (r - mean) / (std + eps) | dr_grpo: r - mean
    adv_eps: float = 1e-4  # eps in the std normalisation
    kl_coef: float = 0.04  # beta; 0 = no reference model is loaded at all
    kl_estimator: str = "k3"  # k3 (paper) | k1
    clip_eps_low: float = 0.2  # ratio lower bound 1 - clip_eps_low
    clip_eps_high: float = 0.2  # ratio upper bound 1 + clip_eps_high (DAPO clip-higher when larger)
    ratio_level: str = "token"  # token | sequence (GSPO)
    loss_agg: str = "seq_mean_token_mean"  # seq_mean_token_mean (paper) | token_mean (DAPO) | seq_mean_token_sum_norm (Dr.GRPO)
    updates_per_batch: int = 1  # mu: optimizer passes over each batch of rollouts
    dropout: bool = False  # dropout in the RL passes (rollout, old, reference, policy); false: off in all, so the first ratio is 1


@dataclass
class RewardSpec:
    name: str = "accuracy"  # accuracy | format | module:function (fn(completions, examples) -> list[float])
    weight: float = 1.0  # weight in the summed reward


@dataclass
class RewardConfig:
    rewards: List[RewardSpec] = field(default_factory=lambda: [RewardSpec("accuracy"), RewardSpec("format")])
    accuracy_rule: str = "exact"  # exact: tagged text == answer | benchmark: MMAU word match | r1aqa: the release's rule
    format_rule: str = "stripped"  # stripped: whole stripped completion matches the template | r1aqa: the raw completion, as the release


@dataclass
class OptimConfig:
    lr: float = 1e-6  # peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 0  # linear warm-up steps
    schedule: str = "linear"  # linear | cosine | constant (after warm-up)
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    on_nonfinite: str = "stop"  # NaN / infinite gradient norm: stop the run | skip (drop that step's update, count train/skipped_steps)
    grad_accum: int = 2  # micro-steps per optimizer step


@dataclass
class RunConfig:
    out_dir: str = "runs/grpo"  # everything of the run goes here
    max_steps: int = 1000  # optimizer steps (times updates_per_batch for GRPO)
    save_every: int = 100  # checkpoint interval in steps (0 = only at the end)
    keep_last: int = 3  # checkpoints kept (0 = all); the newest is never removed
    resume: str = "auto"  # auto (last complete checkpoint if any) | never | path to a checkpoint
    resume_changed: str = "refuse"  # settings differing from the checkpoint's (RESUME_EXEMPT aside): refuse | warn | allow
    log_every: int = 1  # metrics and progress-line interval in steps
    sample_every: int = 50  # write sample completions every N steps
    eval_every: int = 0  # validation interval (0 = off)
    eval_limit: int = 200  # validation items
    eval_batch_size: int = 8  # validation generation batch
    eval_max_new_tokens: int = 64  # validation generation cap
    seed: int = 42  # data order, sampling and init
    tensorboard: bool = True  # write TensorBoard events under out_dir/tb
    wandb: bool = False  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "harken"
    export_merged: bool = False  # LoRA: also write the merged model to out_dir/final-merged
    progress: bool = True  # a progress bar on a terminal (false: plain progress lines there too)


@dataclass
class GRPOConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: TrainDataConfig = field(default_factory=lambda: TrainDataConfig(path="synthetic:train"))
    val: DatasetConfig = field(default_factory=DatasetConfig)  # validation set (path "" = none)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        from harken.rl import advantages, algorithm, rewards
        from harken.data.prompts import TEMPLATES

        checks = [
            (self.algo.advantage, advantages.ADVANTAGE_ESTIMATORS, "algo.advantage"),
            (self.algo.kl_estimator, algorithm.KL_ESTIMATORS, "algo.kl_estimator"),
            (self.algo.ratio_level, algorithm.RATIO_LEVELS, "algo.ratio_level"),
            (self.algo.loss_agg, algorithm.LOSS_AGGREGATIONS, "algo.loss_agg"),
            (self.prompt.template, TEMPLATES, "prompt.template"),
        ]
        for value, valid, key in checks:
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not one of: {', '.join(valid)}")
        _validate_common(self)
        if self.rollout.group_size < 2:
            raise ConfigError("rollout.group_size must be >= 2 (advantages compare completions within a group)")
        if self.algo.updates_per_batch < 1:
            raise ConfigError("algo.updates_per_batch must be >= 1")
        for key, value, valid in (("reward.accuracy_rule", self.reward.accuracy_rule, rewards.ACCURACY_RULES),
                                  ("reward.format_rule", self.reward.format_rule, rewards.FORMAT_RULES)):
            if value not in valid:
                raise ConfigError(f"{key}={value!r} is not one of: {', '.join(valid)}")
        if self.algo.dropout and self.model.gradient_checkpointing:
            raise ConfigError(
                "algo.dropout=true with model.gradient_checkpointing=true is not supported (generation needs the "
                "checkpointed layers in eval mode, which would turn their dropout off); set one of them to false"
            )
        if self.model.gradient_checkpointing and self.rollout.prefix_sharing:
            # Checkpointed decoder layers drop the cache argument the shared prefix relies on; forcing
            # it replays appends twice and gives wrong gradients without any error.
            raise ConfigError(
                "model.gradient_checkpointing=true with rollout.prefix_sharing=true is not supported "
                "(activation checkpointing would give silently wrong gradients for the shared prompt); "
                "use rollout.micro_batch to bound memory, or set rollout.prefix_sharing=false"
            )


@dataclass
class SFTDataConfig:
    template: str = "prompt1"  # prompt template (prompt1 = the paper's SFT prompt); the target follows it
    max_audio_seconds: float = 30.0
    long_clip_policy: str = "truncate"


@dataclass
class SFTTrainConfig:
    batch_size: int = 4  # examples per device per micro-step
    epochs: float = 1.0  # passes over the data (max_steps wins when > 0)
    eval_before: bool = True  # validate once before the first step (the "before" point of every run), when run.eval_every > 0


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: TrainDataConfig = field(default_factory=lambda: TrainDataConfig(path="synthetic:train"))
    val: DatasetConfig = field(default_factory=DatasetConfig)
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(template="prompt1"))
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=10, grad_accum=1))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/sft", max_steps=0))

    def validate(self) -> None:
        from harken.data.prompts import TEMPLATES

        if self.prompt.template not in TEMPLATES:
            raise ConfigError(f"prompt.template={self.prompt.template!r} is not one of: {', '.join(TEMPLATES)}")
        _validate_common(self)
        if self.run.max_steps <= 0 and not self.train.epochs > 0:
            raise ConfigError("set run.max_steps > 0 or train.epochs > 0 (the run length)")


def _validate_common(cfg) -> None:
    _validate_ranges(cfg)
    if cfg.optim.schedule not in ("linear", "cosine", "constant"):
        raise ConfigError("optim.schedule must be linear, cosine or constant")
    if cfg.optim.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"optim.on_nonfinite={cfg.optim.on_nonfinite!r} is not one of: stop, skip")
    if cfg.prompt.long_clip_policy not in ("truncate", "error", "keep"):
        raise ConfigError("prompt.long_clip_policy must be truncate, error or keep")
    if not cfg.data.path:
        raise ConfigError("data.path is required (a dataset file, or synthetic:train)")
    _validate_filter(cfg.data.filter)
    if cfg.model.sharding not in ("none", "fsdp"):
        raise ConfigError(f"model.sharding={cfg.model.sharding!r} is not one of: none, fsdp")
    if cfg.model.dtype not in ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
        raise ConfigError(f"model.dtype={cfg.model.dtype!r} is not one of: auto, float32, bfloat16, float16")
    if cfg.model.sharding == "fsdp" and cfg.model.lora and cfg.run.export_merged:
        raise ConfigError(
            "run.export_merged=true with model.sharding=fsdp and model.lora=true is not supported (the merge "
            "needs the whole model in one process); export the adapter and merge it after training, or train "
            "with model.sharding=none"
        )


def _validate_filter(f: DataFilter) -> None:
    from harken.eval.curate import SPLITS

    if bool(f.curation) != bool(f.keep):
        raise ConfigError("data.filter needs both data.filter.curation (a `harken data curate` folder) and "
                          "data.filter.keep (the splits to train on), or neither")
    unknown = [s for s in f.keep if s not in SPLITS]
    if unknown:
        raise ConfigError(f"data.filter.keep: {', '.join(unknown)} is not a split; the splits are: {', '.join(SPLITS)}")


# --- ranges: every count, size, rate and probability, the key named -------------------------------
# A key a config does not have (SFT has no rollout.*) is skipped. NaN fails every check.
_RANGES = {
    "at least 1": (lambda v: v >= 1, (
        "rollout.prompts_per_step", "rollout.max_new_tokens", "optim.grad_accum", "run.log_every",
        "run.eval_limit", "run.eval_batch_size", "run.eval_max_new_tokens", "model.lora_r", "train.batch_size",
    )),
    "at least 0": (lambda v: v >= 0, (
        "rollout.micro_batch", "rollout.top_k", "rollout.max_resample_rounds", "optim.warmup_steps", "optim.weight_decay",
        "optim.max_grad_norm", "algo.kl_coef", "algo.adv_eps", "algo.clip_eps_low", "algo.clip_eps_high",
        "run.save_every", "run.keep_last", "run.sample_every", "run.eval_every", "train.epochs", "data.limit",
        "val.limit",
    )),
    "greater than 0": (lambda v: v > 0, (
        "optim.lr", "rollout.temperature", "prompt.max_audio_seconds", "model.lora_alpha",
    )),
    "in (0, 1]": (lambda v: 0 < v <= 1, ("rollout.top_p",)),
    "in [0, 1)": (lambda v: 0 <= v < 1, ("optim.adam_beta1", "optim.adam_beta2", "model.lora_dropout", "rollout.min_p")),
}
_MISSING = object()


def _validate_ranges(cfg) -> None:
    for rule, (ok, keys) in _RANGES.items():
        for key in keys:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section, None), name, _MISSING)
            if value is _MISSING or value is None:
                continue
            if not ok(value):
                raise ConfigError(f"{key}={value} must be {rule}")
    if cfg.run.resume_changed not in ("refuse", "warn", "allow"):
        raise ConfigError(f"run.resume_changed={cfg.run.resume_changed!r} is not one of: refuse, warn, allow")
    # GRPO trains exactly run.max_steps steps; SFT's 0 means "from train.epochs".
    least = 0 if hasattr(cfg, "train") else 1
    if cfg.run.max_steps < least:
        meaning = " (0 = as many as train.epochs needs)" if least == 0 else " (the optimizer steps to train)"
        raise ConfigError(f"run.max_steps={cfg.run.max_steps} must be at least {least}{meaning}")


# --- resume: the keys that may differ from the checkpoint's config without run.resume_changed -----
# Every other key must equal the checkpoint's, or the run refuses to resume (run.resume_changed).
# These may differ because they change neither the weights nor the path of training up to the
# checkpoint, only where the run goes from here or what it writes and measures:
RESUME_EXEMPT = (
    "run.out_dir",  # resuming into another folder (run.resume=PATH) is how a run is copied or branched
    "run.resume", "run.resume_changed",  # how this start finds its checkpoint
    "run.max_steps", "train.epochs",  # the run's length: a finished run is continued to a later step
    "run.save_every", "run.keep_last",  # checkpoint bookkeeping
    "run.log_every", "run.sample_every", "run.tensorboard", "run.wandb", "run.wandb_project", "run.progress",  # logs
    "run.eval_every", "run.eval_limit", "run.eval_batch_size", "run.eval_max_new_tokens", "train.eval_before",  # validation
    "val.",  # the validation set (every val.* key): what is measured, not what is trained
    "run.export_merged",  # what the end of the run writes
    "optim.on_nonfinite",  # what a later non-finite step does: a run stopped by one can resume skipping
)
