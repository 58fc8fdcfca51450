"""The work of one benchmark step: its configuration, model, inputs and four phases.

Owns: `BenchConfig` (one run, as `harken bench`'s options give it), the model a run measures
(a named toy size, Qwen2-Audio-7B at full size, or a folder), the synthetic clips and prompts,
`Workload` (everything a step needs, built once by `setup`) and the phases (a) generation,
(c) reference, (b) policy and (d) optimizer as `harken.bench.harness`'s docstring defines them.
Does not own: timing and checking them (`harken.bench.harness`), the paths themselves
(`harken.rl.rollout`), the loss (`harken.rl.algorithm`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from harken.data.prompts import get_template
from harken.models.audio_lm import AudioLM, PromptBatch
from harken.models.known import build_7b, model_from_config
from harken.models.families import family_for_config
from harken.models.loading import load_audio_lm, resolve_dtype
from harken.models.toy import build_tiny
from harken.rl import algorithm
from harken.rl.advantages import group_advantages
from harken.rl.rollout import SamplingParams, completion_logprobs, generate

log = logging.getLogger(__name__)

PATHS = ("shared", "naive")
PHASES = ("generation", "reference", "policy", "optimizer", "step")


@dataclass
class BenchConfig:
    """One benchmark run; every field is a command-line option of `harken bench`."""

    size: str | None = "small"  # toy | small | 7b (ignored when `model` is given)
    model: str | None = None  # a checkpoint folder (or a config-only folder: random weights)
    family: str = "qwen2-audio"  # for named sizes
    clip_seconds: float = 10.0  # length of each synthetic clip
    group_size: int = 8  # G completions per prompt
    completion_tokens: int = 32  # T, every completion exactly this long
    prompts: int = 1  # B prompts per step
    reps: int = 3  # timed repetitions per path
    warmup: int = 1  # untimed repetitions per path first
    paths: tuple[str, ...] = PATHS  # which paths to time
    dtype: str = "float32"
    device: str = "cpu"
    freeze_encoder: bool = False  # freeze the audio encoder and reuse its output, as the trainer does
    micro_batch: int | None = None  # completion rows per forward in the loss passes (default: all)
    threads: int | None = None  # torch.set_num_threads (default: leave torch's choice)
    matmul_size: int | None = None  # side of the reference matrix product (default 2048 on CPU, 8192 on CUDA)
    tolerance: float | None = None  # max |log-prob difference| between paths (default per dtype)
    seed: int = 0
    out: str = "bench"


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _load_path(path: str, dtype: torch.dtype, device: str, seed: int) -> AudioLM:
    """A checkpoint folder, or a folder with only config + tokenizer + feature extractor (random weights)."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
        return load_audio_lm(path, dtype=name, device=device)
    from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    if config.model_type == "qwen2_5_omni":
        config = config.thinker_config
    family = family_for_config(config)
    family.check_installed()
    log.info("%s has no weights: building %s with random weights from its config", path, family.name)
    torch.manual_seed(seed)
    model = model_from_config(config, family, device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        fe = AutoFeatureExtractor.from_pretrained(path)
    except OSError as e:
        raise FileNotFoundError(
            f"{path}: a config-only model folder also needs its tokenizer and feature extractor files ({e})"
        ) from None
    return AudioLM(model, tokenizer, fe, family, path)


def build_model(cfg: BenchConfig) -> AudioLM:
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    if cfg.model:
        return _load_path(cfg.model, dtype, cfg.device, cfg.seed)
    if cfg.size == "7b":
        if cfg.family != "qwen2-audio":
            raise ValueError(f"--size 7b builds Qwen2-Audio-7B; got --family {cfg.family}")
        if torch.device(cfg.device).type != "cuda":
            raise ValueError("--size 7b needs --device cuda: 8 B parameters (and their optimizer) do not fit a CPU run")
        return build_7b(cfg.device, dtype, cfg.seed)
    lm = build_tiny(cfg.family, size=cfg.size, seed=cfg.seed)
    lm.model.to(device=cfg.device, dtype=dtype)
    return lm


@dataclass
class _NoStopLM(AudioLM):
    """The same model whose end-of-turn check can never fire: every completion runs T steps."""

    @property
    def eos_ids(self) -> list[int]:
        return [-1]  # no token has this id


def no_stop(lm: AudioLM) -> AudioLM:
    """`lm` (the same model and settings) with an end-of-turn check that never fires."""
    return _NoStopLM(**{f.name: getattr(lm, f.name) for f in fields(lm)})


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

_QUESTIONS = [
    ("What is the main source of the sound in the audio clip?", ["a violin", "a dog barking", "rain on a roof", "a car engine"]),
    ("How many distinct beeps can be heard before the long tone?", ["two", "three", "four", "five"]),
    ("Is the second tone higher or lower in pitch than the first one?", ["higher", "lower", "the same", "cannot tell"]),
    ("Which of these best describes the recording environment?", ["a quiet room", "a busy street", "a concert hall", "a forest"]),
]


def synthetic_clips(n: int, seconds: float, sampling_rate: int, seed: int) -> list[np.ndarray]:
    """`n` clips of noise plus a few tones (the content does not change the work, only the length)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    clips = []
    for _ in range(n):
        wave = 0.05 * rng.standard_normal(t.shape)
        for f in rng.uniform(200.0, 2000.0, size=3):
            wave += 0.1 * np.sin(2 * np.pi * f * t)
        clips.append(wave.astype(np.float32))
    return clips


def prompt_texts(n: int) -> list[str]:
    """`n` user turns of realistic length: a question, four choices, the answer-format instruction."""
    template = get_template("prompt2")
    return [template.text.format(question=q, choices=repr(c)) for q, c in (_QUESTIONS * n)[:n]]


# --------------------------------------------------------------------------------------------
# The workload and its phases
# --------------------------------------------------------------------------------------------


@dataclass
class Workload:
    """Everything a step needs, built once. B prompts, G per prompt, N = B*G, T tokens."""

    lm: AudioLM
    gen_lm: AudioLM  # same model, end-of-turn check disabled
    batch: PromptBatch  # B prompts
    completion_ids: torch.Tensor  # [N, T] scored by the loss passes
    advantages: torch.Tensor  # [N]
    mask: torch.Tensor  # [N, T] all True
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    cfg: BenchConfig
    device: torch.device

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.cfg.completion_tokens, temperature=1.0, top_p=1.0)


def _trainable_params(lm: AudioLM, freeze_encoder: bool) -> list[torch.nn.Parameter]:
    """The parameters that train (all but the encoder's when frozen); refuses non-finite weights."""
    if freeze_encoder:
        for name, p in lm.model.named_parameters():
            if name.startswith(lm.family.encoder_modules):
                p.requires_grad_(False)
    bad = [name for name, p in lm.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # an initialisation that was skipped leaves whatever the memory held
        raise ValueError(f"the model's weights are not finite in {len(bad)} tensors (first: {bad[0]})")
    return [p for p in lm.model.parameters() if p.requires_grad]


def setup(cfg: BenchConfig) -> Workload:
    device = torch.device(cfg.device)
    lm = build_model(cfg)
    params = _trainable_params(lm, cfg.freeze_encoder)
    clips = synthetic_clips(cfg.prompts, cfg.clip_seconds, lm.sampling_rate, cfg.seed)
    if cfg.clip_seconds > lm.window_seconds:
        raise ValueError(f"--clip-seconds {cfg.clip_seconds:g} is longer than the model's {lm.window_seconds:g} s window")
    batch = lm.encode_prompts(prompt_texts(cfg.prompts), clips).to(device)
    n = cfg.prompts * cfg.group_size
    rewards = torch.rand(n, generator=torch.Generator().manual_seed(cfg.seed))
    advantages = group_advantages(rewards, cfg.group_size, "grpo").to(device)
    mask = torch.ones(n, cfg.completion_tokens, dtype=torch.bool, device=device)
    # Learning rate 0: all of AdamW's arithmetic, weights unchanged (see harken.bench.harness).
    optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=0.01, fused=device.type == "cuda")
    w = Workload(lm, no_stop(lm), batch, torch.empty(0), advantages, mask, params, optimizer, cfg, device)
    # The completions every loss pass scores: sampled from the model once, exactly T tokens each.
    w.completion_ids, _ = run_generation(w, True, cfg.seed + 12345)
    return w


def _loss_fn(w: Workload, ref_logprobs: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """As `GRPOTrainer.backward`: the micro-batch's GRPO loss times its weight in the batch."""

    def loss_fn(lp: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        loss, _ = algorithm.grpo_loss(
            lp, lp.detach(), ref_logprobs[rows], w.advantages[rows], w.mask[rows],
            kl_coef=0.04, kl_estimator="k3", clip_eps_low=0.2, clip_eps_high=0.2, ratio_level="token",
            agg_mode="seq_mean_token_mean", max_tokens=w.cfg.completion_tokens,
        )
        return loss * algorithm.microbatch_weight(w.mask, rows, "seq_mean_token_mean")

    return loss_fn


def encoded_audio(w: Workload) -> torch.Tensor | None:
    """The frozen encoder's output for the batch (reused by every pass), or None when it trains."""
    if not w.cfg.freeze_encoder:
        return None
    with torch.no_grad():
        return w.lm.encode_audio(w.batch)


def run_generation(w: Workload, shared: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(a): [N, T] sampled ids, and the encoder output when it is frozen (reused by the loss passes)."""
    w.lm.model.eval()
    encoded = encoded_audio(w)
    gen = torch.Generator(device=w.device).manual_seed(seed)
    ids = generate(w.gen_lm, w.batch, w.cfg.group_size, w.sampling, shared=shared, encoded_audio=encoded, generator=gen)
    return ids, encoded


def run_reference(w: Workload, shared: bool, encoded) -> torch.Tensor:
    """(c): [N, T] log-probs, no gradients."""
    w.lm.model.eval()
    with torch.no_grad():
        return completion_logprobs(w.lm, w.batch, w.completion_ids, w.cfg.group_size, shared=shared,
                                   encoded_audio=encoded, micro_batch=w.cfg.micro_batch)


def run_policy(w: Workload, shared: bool, encoded, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """(b): [N, T] log-probs (detached) after backward of the GRPO loss."""
    w.lm.model.train()
    return completion_logprobs(w.lm, w.batch, w.completion_ids, w.cfg.group_size, shared=shared,
                               encoded_audio=encoded, micro_batch=w.cfg.micro_batch, loss_fn=_loss_fn(w, ref_logprobs))


def run_optimizer(w: Workload) -> None:
    """(d)."""
    w.optimizer.step()
    w.optimizer.zero_grad(set_to_none=True)
