"""`harken bench`: what sharing each group's prompt saves in a GRPO step, measured in one process.

Owns: the benchmark of the two paths of `harken.rl.rollout` (shared prefix vs naive repeated
prompt) on one GRPO step, their results (`bench.json`, `bench.md`), the analytic FLOP count the
results are compared with, and the construction of a full-size Qwen2-Audio-7B with random
weights for GPU runs (`--size 7b`). Does not own: the paths themselves (`harken.rl.rollout`), the
loss (`harken.rl.algorithm`), the model families (`harken.models.families`).

What one step is (the order of `harken.train.grpo.GRPOTrainer`), for B prompts x G completions of
exactly T tokens (N = B*G rows):
    (a) generation   sample N completions of T tokens (with `--freeze-encoder`, the encoder is
                     run once here and its output reused in (c) and (b), as the trainer does);
    (c) reference    completion log-probs without gradients;
    (b) policy       completion log-probs with gradients, and backward of the GRPO loss
                     (`algorithm.grpo_loss`, R1-AQA recipe: k3 KL with coefficient 0.04,
                     token ratio, seq-mean-token-mean) through `loss_fn`, as the trainer does;
    (d) optimizer    AdamW step and zeroing of the gradients.
`step_s` is the wall time of (a)+(c)+(b)+(d) measured as a whole.

How it is kept fair:
- Both paths run in the same process, interleaved (shared, naive, shared, naive, ...) after
  the warm-up, so slow drifts of the machine hit both alike. Medians over `--reps` are reported,
  with every repetition's time and the spread (max-min)/median in bench.json.
- Fixed lengths: completions never end early. Generation samples from the model as usual, but
  its end-of-turn check is given an id that cannot be sampled, so every row runs exactly T
  steps. The loss passes score one fixed set of N x T sampled completions (drawn once before
  timing), so both paths and all repetitions do the same work.
- The optimizer runs with learning rate 0: AdamW does all its arithmetic, but the weights stay
  where they are, so every pass of both paths sees the same weights and their log-probs can be
  compared. The reference pass uses the policy's own weights under `torch.no_grad()` (a frozen
  copy, as the trainer keeps for full fine-tuning, costs memory, not time).
- Exactness is checked before any speed-up is reported: once before timing, both paths
  generate from the same seed (fraction of identical tokens: `generation_tokens_equal`), and the
  gradients of one policy pass of each are compared (`grad_rel_l2` = ||difference|| / ||naive||
  over all parameters, and `max_grad_rel_diff`, the worst parameter's max-abs ratio); during timing,
  the log-probs of every reference and policy pass of the naive path are compared with the
  shared path's (`max_logprob_diff`, max |difference| over all of them; `mean_logprob_diff`, the
  largest per-pass mean). When the max exceeds `--tolerance`, the mean a tenth of it, or
  `grad_rel_l2` its dtype's bound (DEFAULT_*TOLERANCE), the ratios are written as null and the
  command exits with status 1.

Memory (`policy_activation_mb`, any device): the peak, over the policy pass, of the bytes of
tensors saved for backward that are alive at the same time, counted once per storage
(deduplicated by storage pointer), parameters excluded. It is measured with
`torch.autograd.graph.saved_tensors_hooks` in one extra policy pass per path before the timed
ones (the hooks cost Python time, so they stay out of the timings; the same pass gives the
gradients of the exactness check). Not counted: gradients,
optimizer states, temporaries that live only inside one operator, the reference and generation
passes. On CUDA, `peak_mb` per phase is also recorded from the timed passes:
`torch.cuda.max_memory_allocated()` (reset before the phase) minus the memory allocated when the
phase started.

FLOPs (`flops` in bench.json): counted analytically from the architecture, matrix products only
(2 FLOPs per multiply-add; norms, activations, rotary embeddings, softmax over the vocabulary,
sampling and the optimizer are left out, as is the 1-2 % of biases):
    text model, forward, per row with `new` tokens after `past` cached ones:
        linear      2 * new * L * (h*(nh + 2*nkv)*dh + nh*dh*h + 3*h*f)
        attention   4 * L * nh * dh * (new*past + new*(new+1)/2)     (causal: keys actually visible)
    lm_head         2 * h * V per position where logits are computed
    audio encoder, per clip (Qwen2-Audio: always the full window of F = 2*max_source_positions
    mel frames, S = F/2 positions; Qwen2.5-Omni: valid frames only, in chunks of 2*n_window
    frames whose attention stays inside the chunk):
        convs       2*3*M*d*F + 2*3*d*d*F/2                   (M mel bins, d = d_model)
        layers      L_e * (2*S*(4*d*d + 2*d*f_e) + 4*d*sum over attention blocks of s^2)
        projector   2 * d * h per audio token (Omni: 2 * d * output_dim)
    backward = 2 x forward for every module that trains (x3 for forward + backward), less the
    input gradient of the first module on the audio path, which nothing needs (conv1 when the
    encoder trains, Qwen2-Audio's projector when it is frozen).
    Without the attention terms this count equals torch's FlopCounterMode exactly for all
    three phases, both paths and both families (tests/test_bench.py checks it).
    Per phase, P = padded prompt width, T completion tokens:
        generation  encoder + prompt (B rows shared, N naive) + lm_head(N) + (T-1) decode steps
                    of N rows (step t attends to P+t+1 keys) + lm_head(N) each;
        reference   shared: encoder(B) + prompt(B rows, P) + completions(N rows, T-1 tokens after
                    P) + lm_head(N*T); naive: encoder(N) + N rows of P+T tokens + lm_head(N*T);
        policy      3 x reference, less that input gradient (with a frozen encoder its output
                    from generation is reused, so only a projector outside it runs).
    `achieved_gflops` = FLOPs of the step / step time; `matmul_gflops` = rate of a plain
    square matrix product measured in the same run (2048^2 on CPU, 8192^2 on CUDA, in the
    benchmark's dtype; the fastest of 5), before and after the timed repetitions, the faster of
    the two; `utilisation` = achieved / matmul.
    `predicted_step_speedup` = naive FLOPs / shared FLOPs: what the speed-up would be if both
    paths ran at the same FLOP rate.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from harken.rl import algorithm
from harken.models.audio_lm import AudioLM, PromptBatch
from harken.models.families import AUDIO_TOKEN, FAMILIES, IM_END, QWEN2_AUDIO, Family, audio_tokens_for_frames, family_for_config
from harken.models.loading import load_audio_lm, resolve_dtype
from harken.models.toy import SIZES, build_tiny, train_toy_tokenizer
from harken.data.prompts import get_template
from harken.rl.rollout import SamplingParams, completion_logprobs, generate

log = logging.getLogger(__name__)

PATHS = ("shared", "naive")
PHASES = ("generation", "reference", "policy", "optimizer", "step")
# |log-prob difference| allowed between the paths before a result is called wrong.
# (bf16: both paths round differently through 32 layers; the mean must stay under a tenth of it.)
DEFAULT_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 0.5, torch.float16: 0.25}
# ||grad_shared - grad_naive|| / ||grad_naive|| over all parameters allowed.
DEFAULT_GRAD_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 0.05, torch.float16: 0.02}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


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


def qwen2_audio_7b_config(audio_token_index: int = 151646, pad_token_id: int = 151643, eos_token_id: int = 151645):
    """A `Qwen2AudioConfig` with the real sizes of Qwen2-Audio-7B(-Instruct), no download.

    Audio encoder (Whisper-large-v3's): d_model 1280, 32 layers, 20 heads, ffn 5120, 128 mel
    bins, 1500 positions (a 30 s window). Language model (Qwen-7B): hidden 4096, 32 layers, 32
    heads, 32 key/value heads, intermediate 11008, vocabulary 156032, rope theta 10000.
    The token ids default to the real tokenizer's; pass the toy tokenizer's instead.
    """
    import transformers

    return transformers.Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "num_mel_bins": 128,
            "encoder_layers": 32,
            "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120,
            "d_model": 1280,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 156032,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "rope_theta": 10000.0,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
        },
        audio_token_index=audio_token_index,
    )


def model_from_config(config, family: Family, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random-weight model of `config`, created and initialised directly on `device` in `dtype`.

    Every parameter and buffer is allocated under `torch.device(device)`, so a 7B model built for
    CUDA never touches the CPU (initialising 8 B parameters on the CPU takes minutes).
    """
    with torch.device(device):
        model = family.model_class._from_config(config, dtype=dtype)
    return model.eval()


def build_7b(device: str, dtype: torch.dtype, seed: int = 0) -> AudioLM:
    """Qwen2-Audio-7B at full size with random weights and a toy tokenizer (see qwen2_audio_7b_config)."""
    from transformers import WhisperFeatureExtractor

    tokenizer = train_toy_tokenizer()
    config = qwen2_audio_7b_config(
        audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
    )
    torch.manual_seed(seed)
    model = model_from_config(config, QWEN2_AUDIO, device, dtype)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    return AudioLM(model, tokenizer, fe, QWEN2_AUDIO, "random:qwen2-audio-7b")


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


def _no_stop(lm: AudioLM) -> AudioLM:
    return _NoStopLM(lm.model, lm.tokenizer, lm.feature_extractor, lm.family, lm.path)


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
# FLOPs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """The sizes the FLOP count needs, read from a model config."""

    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    enc_d: int
    enc_layers: int
    enc_ffn: int
    mel_bins: int
    enc_positions: int  # max_source_positions: the Qwen2-Audio encoder always runs all of them
    n_window: int  # Omni: attention chunk = 2*n_window mel frames
    proj_out: int  # width the audio is projected to

    @classmethod
    def from_config(cls, config, family: Family) -> "Arch":
        t, a = config.text_config, config.audio_config
        return cls(
            family=family.name,
            hidden=t.hidden_size,
            layers=t.num_hidden_layers,
            heads=t.num_attention_heads,
            kv_heads=t.num_key_value_heads,
            head_dim=getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads,
            ffn=t.intermediate_size,
            vocab=t.vocab_size,
            enc_d=a.d_model,
            enc_layers=a.encoder_layers,
            enc_ffn=a.encoder_ffn_dim,
            mel_bins=a.num_mel_bins,
            enc_positions=a.max_source_positions,
            n_window=int(getattr(a, "n_window", 0) or 0),
            proj_out=int(getattr(a, "output_dim", 0) or t.hidden_size),
        )

    @property
    def text_linear_per_token(self) -> int:
        """Multiply-adds of one decoder layer's projections for one token."""
        h, dh = self.hidden, self.head_dim
        return h * (self.heads + 2 * self.kv_heads) * dh + self.heads * dh * h + 3 * h * self.ffn

    def text(self, rows: int, new: int, past: int, attention: bool = True) -> float:
        """Forward FLOPs of the decoder for `rows` rows of `new` tokens after `past` cached ones."""
        linear = 2.0 * rows * new * self.layers * self.text_linear_per_token
        attn = 4.0 * rows * self.layers * self.heads * self.head_dim * (new * past + new * (new + 1) / 2)
        return linear + attn * attention

    def head(self, positions: int) -> float:
        return 2.0 * self.hidden * self.vocab * positions

    def encoder(self, valid_frames: list[int], attention: bool = True) -> dict[str, float]:
        """Forward FLOPs of the audio encoder for clips of these valid mel frames, in three parts:
        "conv1" (its input gradient is never needed), "tower" (the rest of the encoder) and
        "projector" (Qwen2-Audio's projector, which trains even with a frozen encoder; the Omni
        projection is inside the tower)."""
        d, m, fe = self.enc_d, self.mel_bins, self.enc_ffn
        layer_linear = 4 * d * d + 2 * d * fe
        parts = {"conv1": 0.0, "tower": 0.0, "projector": 0.0}
        for n in valid_frames:
            tokens = int(audio_tokens_for_frames(n))
            if self.family == "qwen2.5-omni":
                w = 2 * self.n_window
                chunks = [w] * (n // w) + ([n % w] if n % w else [])
                padded = max(chunks)  # every chunk is padded to the longest one for the convs
                positions = [(c - 1) // 2 + 1 for c in chunks]
                s = sum(positions)
                parts["conv1"] += 2.0 * 3 * m * d * padded * len(chunks)
                parts["tower"] += 2.0 * 3 * d * d * ((padded - 1) // 2 + 1) * len(chunks)
                attn = 4.0 * d * sum(p * p for p in positions)
                parts["tower"] += self.enc_layers * (2.0 * s * layer_linear + attn * attention)
                parts["tower"] += 2.0 * d * self.proj_out * tokens
            else:
                frames = 2 * self.enc_positions
                s = self.enc_positions
                parts["conv1"] += 2.0 * 3 * m * d * frames
                parts["tower"] += 2.0 * 3 * d * d * s
                parts["tower"] += self.enc_layers * (2.0 * s * layer_linear + 4.0 * d * s * s * attention)
                parts["projector"] += 2.0 * d * self.hidden * tokens
        return parts


def step_flops(
    arch: Arch, *, prompts: int, group_size: int, prompt_width: int, completion_tokens: int,
    valid_frames: list[int], shared: bool, freeze_encoder: bool, attention: bool = True,
) -> dict[str, float]:
    """FLOPs of each phase of one step (see the module docstring for the formula).

    `attention=False` leaves out the attention score/value products (what torch's FlopCounterMode
    sees on CPU, where it does not count the fused attention kernel: the tests compare with it).
    """
    b, g, p, t = prompts, group_size, prompt_width, completion_tokens
    n = b * g
    rows_prompt = b if shared else n
    enc = arch.encoder(valid_frames, attention)  # for the B clips
    conv1, tower, proj = enc["conv1"], enc["tower"], enc["projector"]
    copies = 1 if shared else g  # how many times the naive path repeats each clip
    # Generation: a frozen encoder runs once (its output is reused, also by the naive path,
    # which repeats it and projects every copy).
    if freeze_encoder:
        gen = conv1 + tower + proj * copies
    else:
        gen = (conv1 + tower + proj) * copies
    gen += arch.text(rows_prompt, p, 0, attention) + arch.head(n)
    for step in range(t - 1):
        gen += arch.text(n, 1, p + step, attention) + arch.head(n)
    # Loss passes: a frozen encoder's output from generation is reused; only a projector outside
    # the encoder (Qwen2-Audio's) runs, and trains.
    enc_loss = (proj if freeze_encoder else conv1 + tower + proj) * copies
    if shared:
        ref = enc_loss + arch.text(b, p, 0, attention) + arch.text(n, t - 1, p, attention) + arch.head(n * t)
    else:
        ref = enc_loss + arch.text(n, p + t, 0, attention) + arch.head(n * t)
    # Backward = 2 x forward, less the input gradient of the first module on the audio path
    # (conv1 when the encoder trains, the projector when it is frozen): nothing upstream needs it.
    policy = 3.0 * ref - (proj if freeze_encoder else conv1) * copies
    return {"generation": gen, "reference": ref, "policy": policy, "step": gen + ref + policy}


def measure_matmul_gflops(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 5) -> float:
    """GFLOP/s of an n x n matrix product: the fastest of `reps`, after two untimed ones (the
    machine's capability; the benchmark's own times are medians, so utilisation is conservative)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    times = []
    for i in range(reps + 2):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(times) / 1e9


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


class SavedTensorMeter:
    """Peak bytes of tensors saved for backward that are alive at once, once per storage.

    Use `with meter.track():` around a forward/backward. A saved tensor is wrapped in a holder
    whose lifetime is that of autograd's reference to it, so bytes are released when backward
    frees the graph (a micro-batch's activations stop counting after its backward).
    Storages of `exclude` tensors (the parameters) are not activations and are skipped.
    """

    def __init__(self, exclude: list[torch.Tensor] = ()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.live: dict[int, list[int]] = {}  # storage pointer -> [bytes, holders]
        self.current = 0
        self.peak = 0

    def _acquire(self, ptr: int, nbytes: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            self.live[ptr] = [nbytes, 1]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        else:
            entry[1] += 1

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def _pack(self, t: torch.Tensor):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            return t
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or ptr in self.exclude:
            return t
        return _Held(t, ptr, nbytes, self)

    @staticmethod
    def _unpack(x):
        return x.tensor if isinstance(x, _Held) else x

    @contextmanager
    def track(self) -> Iterator["SavedTensorMeter"]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


class _Held:
    __slots__ = ("tensor", "ptr", "meter")

    def __init__(self, tensor: torch.Tensor, ptr: int, nbytes: int, meter: SavedTensorMeter):
        self.tensor, self.ptr, self.meter = tensor, ptr, meter
        meter._acquire(ptr, nbytes)

    def __del__(self):
        self.meter._release(self.ptr)


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def _encoded(w: Workload) -> torch.Tensor | None:
    if not w.cfg.freeze_encoder:
        return None
    with torch.no_grad():
        return w.lm.encode_audio(w.batch)


def run_generation(w: Workload, shared: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(a): [N, T] sampled ids, and the encoder output when it is frozen (reused by the loss passes)."""
    w.lm.model.eval()
    encoded = _encoded(w)
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


@dataclass
class StepResult:
    times: dict[str, float]  # phase -> seconds
    peak_mb: dict[str, float]  # phase -> MB above the phase's start (CUDA only)
    ref_logprobs: torch.Tensor  # [N, T]
    policy_logprobs: torch.Tensor  # [N, T]
    generated: torch.Tensor  # [N, T]


def timed_step(w: Workload, shared: bool, seed: int) -> StepResult:
    """One whole step (a, c, b, d), each phase timed, synchronised on CUDA."""
    cuda = w.device.type == "cuda"
    times, peaks = {}, {}
    mark = {}

    def begin(name):
        _sync(w.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(w.device)
            mark["mem"] = torch.cuda.memory_allocated(w.device)
        mark["t"] = time.perf_counter()

    def end(name):
        _sync(w.device)
        times[name] = time.perf_counter() - mark["t"]
        if cuda:
            peaks[name] = (torch.cuda.max_memory_allocated(w.device) - mark["mem"]) / 2**20

    _sync(w.device)
    t_step = time.perf_counter()
    begin("generation")
    ids, encoded = run_generation(w, shared, seed)
    end("generation")
    begin("reference")
    ref = run_reference(w, shared, encoded)
    end("reference")
    begin("policy")
    pol = run_policy(w, shared, encoded, ref)
    end("policy")
    begin("optimizer")
    run_optimizer(w)
    end("optimizer")
    times["step"] = time.perf_counter() - t_step
    return StepResult(times, peaks, ref, pol, ids)


def untimed_policy(
    w: Workload, shared: bool, keep_grads: bool = False, against: dict[int, torch.Tensor] | None = None
) -> tuple[float, dict[int, torch.Tensor] | None, dict[str, float] | None]:
    """One extra policy pass (after a reference pass) outside the timings, measuring its memory.

    Args:
        keep_grads: return a copy of the gradients it leaves (by parameter id).
        against: gradients of the other path to compare with (no copy of this pass's is made).
    Returns:
        the peak live saved-for-backward MB (see the module docstring), the kept gradients or
        None, and `grad_differences(these, against)` or None. The model's gradients are zeroed.
    """
    encoded = _encoded(w)
    ref = run_reference(w, shared, encoded)
    meter = SavedTensorMeter(exclude=list(w.lm.model.parameters()))
    with meter.track():
        run_policy(w, shared, encoded, ref)
    mine = {id(p): p.grad for p in w.params if p.grad is not None}
    kept = {k: g.detach().clone() for k, g in mine.items()} if keep_grads else None
    diff = grad_differences(mine, against) if against is not None else None
    del mine
    w.optimizer.zero_grad(set_to_none=True)
    return meter.peak / 2**20, kept, diff


def grad_differences(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> dict[str, float]:
    """How far gradients `a` are from reference gradients `b` (same parameter ids).

    Returns:
        "max_grad_rel_diff": worst parameter's max|a - b| / max|b| (strict, but in bf16 a
            parameter whose gradient is mostly rounding noise dominates it);
        "grad_rel_l2": ||a - b|| / ||b|| over all parameters together.
        Both are inf when different parameters received gradients.
    """
    if a.keys() != b.keys() or not b:
        return {"max_grad_rel_diff": math.inf, "grad_rel_l2": math.inf}
    worst, err2, ref2 = 0.0, 0.0, 0.0
    for k in b:
        x, y = a[k].float(), b[k].float()
        d = x - y
        worst = max(worst, float(d.abs().max() / y.abs().max().clamp_min(1e-12)))
        err2 += float(d.pow(2).sum())
        ref2 += float(y.pow(2).sum())
    return {"max_grad_rel_diff": worst, "grad_rel_l2": math.sqrt(err2 / max(ref2, 1e-30))}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict[str, Any]:
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_MMAP_MAX_",
                                               "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")},
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["device_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _noise_warning(noise: dict[str, Any], cpus: int, device: torch.device) -> str | None:
    """A sentence when the run looks disturbed (other work on the machine, a drifting clock rate), else None.

    On a small shared CPU machine another process costs the shared path most: its many small
    operators each wait for every OpenMP thread, and a descheduled thread stalls them all.
    """
    signs = []
    if device.type == "cpu" and noise["loadavg_before"] and noise["loadavg_after"]:
        load = max(noise["loadavg_before"][0], noise["loadavg_after"][0])
        if load > cpus:  # this process alone accounts for up to `cpus`
            signs.append(f"1-minute load average up to {load:.1f} on {cpus} CPUs")
    lo, hi = sorted((noise["matmul_gflops_start"], noise["matmul_gflops_end"]))
    if hi > 0 and lo < 0.75 * hi:
        signs.append(f"matrix-product rate moved from {noise['matmul_gflops_start']:.0f} to "
                     f"{noise['matmul_gflops_end']:.0f} GFLOP/s")
    if noise["max_spread"] > 0.5:
        signs.append(f"repetitions spread by up to {100 * noise['max_spread']:.0f} % of their median")
    if not signs:
        return None
    return "the timings look disturbed (" + "; ".join(signs) + "): treat them as upper bounds"


def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else 0.0


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)


def setup(cfg: BenchConfig) -> Workload:
    device = torch.device(cfg.device)
    lm = build_model(cfg)
    if cfg.freeze_encoder:
        for name, p in lm.model.named_parameters():
            if name.startswith(lm.family.encoder_modules):
                p.requires_grad_(False)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    bad = [name for name, p in lm.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:  # an initialisation that was skipped leaves whatever the memory held
        raise ValueError(f"the model's weights are not finite in {len(bad)} tensors (first: {bad[0]})")
    clips = synthetic_clips(cfg.prompts, cfg.clip_seconds, lm.sampling_rate, cfg.seed)
    if cfg.clip_seconds > lm.window_seconds:
        raise ValueError(f"--clip-seconds {cfg.clip_seconds:g} is longer than the model's {lm.window_seconds:g} s window")
    batch = lm.encode_prompts(prompt_texts(cfg.prompts), clips).to(device)
    n = cfg.prompts * cfg.group_size
    rewards = torch.rand(n, generator=torch.Generator().manual_seed(cfg.seed))
    advantages = algorithm.group_advantages(rewards, cfg.group_size, "grpo").to(device)
    mask = torch.ones(n, cfg.completion_tokens, dtype=torch.bool, device=device)
    # Learning rate 0: all of AdamW's arithmetic, weights unchanged (see the module docstring).
    optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=0.01, fused=device.type == "cuda")
    w = Workload(lm, _no_stop(lm), batch, torch.empty(0), advantages, mask, params, optimizer, cfg, device)
    # The completions every loss pass scores: sampled from the model once, exactly T tokens each.
    w.completion_ids, _ = run_generation(w, True, cfg.seed + 12345)
    return w


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark; returns what is written to bench.json."""
    for p in cfg.paths:
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r} in --paths; use shared, naive or both")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_before = _loadavg()
    t0 = time.perf_counter()
    w = setup(cfg)
    lm = w.lm
    build_s = time.perf_counter() - t0
    dtype = next(lm.model.parameters()).dtype
    tolerance = cfg.tolerance if cfg.tolerance is not None else DEFAULT_TOLERANCE.get(dtype, 1e-3)
    n_params = sum(p.numel() for p in lm.model.parameters())
    prompt_width = int(w.batch.input_ids.shape[1])
    log.info("model %s (%s, %.1f M parameters, %.0f s window), %d prompt tokens (%d audio), G=%d, T=%d, %s on %s",
             cfg.model or cfg.size, lm.family.name, n_params / 1e6, lm.window_seconds, prompt_width,
             sum(w.batch.audio_token_counts), cfg.group_size, cfg.completion_tokens, dtype, device)

    matmul_start = measure_matmul_gflops(device, dtype, cfg.matmul_size)
    both = set(cfg.paths) == set(PATHS)
    grad_tolerance = DEFAULT_GRAD_TOLERANCE.get(dtype, 1e-3)
    check: dict[str, Any] = {"tolerance": tolerance, "grad_tolerance": grad_tolerance}
    if both:
        a, _ = run_generation(w, True, cfg.seed + 1)
        b, _ = run_generation(w, False, cfg.seed + 1)
        check["generation_tokens_equal"] = float((a == b).float().mean())
    # Memory, and (both paths) the gradient check, from one untimed policy pass per path.
    activation: dict[str, float] = {}
    if both:
        activation["naive"], naive_grads, _ = untimed_policy(w, False, keep_grads=True)
        activation["shared"], _, diffs = untimed_policy(w, True, against=naive_grads)
        check.update(diffs)
        del naive_grads
    else:
        activation[cfg.paths[0]], _, _ = untimed_policy(w, cfg.paths[0] == "shared")

    times: dict[str, dict[str, list[float]]] = {p: {ph: [] for ph in PHASES} for p in cfg.paths}
    peaks: dict[str, dict[str, list[float]]] = {p: {} for p in cfg.paths}
    max_diff, mean_diffs = 0.0, []
    total = (cfg.warmup + cfg.reps) * len(cfg.paths)
    bar = _progress(total, "bench")
    for rep in range(cfg.warmup + cfg.reps):
        results = {}
        for path in cfg.paths:
            bar.set_postfix(path=path, rep=rep - cfg.warmup if rep >= cfg.warmup else "warm-up")
            res = timed_step(w, path == "shared", cfg.seed + 1000 + rep)
            results[path] = res
            bar.update(1)
            if rep >= cfg.warmup:
                for ph, v in res.times.items():
                    times[path][ph].append(v)
                for ph, v in res.peak_mb.items():
                    peaks[path].setdefault(ph, []).append(v)
        if both:
            for attr in ("ref_logprobs", "policy_logprobs"):
                diff = (getattr(results["shared"], attr) - getattr(results["naive"], attr)).abs()
                max_diff = max(max_diff, float(diff.max()))
                mean_diffs.append(float(diff.mean()))
    bar.close()
    matmul_end = measure_matmul_gflops(device, dtype, cfg.matmul_size)
    load_after = _loadavg()

    arch = Arch.from_config(lm.model.config, lm.family)
    valid_frames = [int(x) for x in w.batch.feature_mask.sum(-1)]
    flops = {
        p: step_flops(arch, prompts=cfg.prompts, group_size=cfg.group_size, prompt_width=prompt_width,
                      completion_tokens=cfg.completion_tokens, valid_frames=valid_frames, shared=p == "shared",
                      freeze_encoder=cfg.freeze_encoder)
        for p in cfg.paths
    }
    matmul = max(matmul_start, matmul_end)

    per_path: dict[str, dict[str, Any]] = {}
    for p in cfg.paths:
        d: dict[str, Any] = {f"{ph}_s": statistics.median(times[p][ph]) for ph in PHASES}
        d["policy_activation_mb"] = activation[p]
        if peaks[p]:
            d["peak_mb"] = {ph: max(v) for ph, v in peaks[p].items()}
        d["best_s"] = {ph: min(times[p][ph]) for ph in PHASES}  # noise only ever adds time
        d["reps_s"] = times[p]
        d["spread"] = {ph: _spread(times[p][ph]) for ph in PHASES}
        per_path[p] = d

    if both:
        check["max_logprob_diff"] = max_diff
        check["mean_logprob_diff"] = max(mean_diffs)
        # The mean must also stay well inside the bound: rounding moves a few tokens, a bug all.
        check["ok"] = bool(max_diff <= tolerance and check["mean_logprob_diff"] <= tolerance / 10
                           and check["grad_rel_l2"] <= grad_tolerance)
    out: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": "harken bench " + " ".join(_argv_of(cfg)),
        "config": {**asdict(cfg), "paths": list(cfg.paths)},
        "machine": machine_info(device),
        "model": {
            "name": cfg.model or f"{cfg.size} {lm.family.name} (random weights)",
            "family": lm.family.name,
            "parameters": n_params,
            "trainable_parameters": sum(p.numel() for p in w.params),
            "dtype": str(dtype).replace("torch.", ""),
            "window_seconds": lm.window_seconds,
            "prompt_tokens": prompt_width,
            "audio_tokens": sum(w.batch.audio_token_counts),
            "completion_rows": cfg.prompts * cfg.group_size,
            "build_s": build_s,
        },
        "paths": per_path,
        "max_logprob_diff": max_diff if both else None,
        "check": check if both else None,
        "noise": {
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "matmul_gflops_start": matmul_start,
            "matmul_gflops_end": matmul_end,
            # (the optimizer's few milliseconds left out: their jitter says nothing)
            "max_spread": max((per_path[p]["spread"][ph] for p in cfg.paths for ph in PHASES if ph != "optimizer"),
                              default=0.0),
            # The step speed-up from each path's fastest repetition, a cross-check of the medians'.
            "step_speedup_best": (per_path["naive"]["best_s"]["step"] / per_path["shared"]["best_s"]["step"]
                                  if both else None),
        },
    }
    out["noise"]["warning"] = _noise_warning(out["noise"], os.cpu_count() or 1, device)
    step_tflops = {p: flops[p]["step"] / 1e12 for p in cfg.paths}
    achieved = {p: flops[p]["step"] / per_path[p]["step_s"] / 1e9 for p in cfg.paths}
    out["flops"] = {
        "model_tflops_per_step": step_tflops,
        "per_phase_tflops": {p: {k: v / 1e12 for k, v in flops[p].items()} for p in cfg.paths},
        "achieved_gflops": achieved,
        "achieved_gflops_per_phase": {
            p: {ph: flops[p][ph] / per_path[p][f"{ph}_s"] / 1e9 for ph in ("generation", "reference", "policy")}
            for p in cfg.paths
        },
        "matmul_gflops": matmul,
        "utilisation": {p: achieved[p] / matmul for p in cfg.paths},
    }
    ratios_ok = both and check["ok"]
    for key, ph in (("step_speedup", "step"), ("generation_speedup", "generation"), ("policy_speedup", "policy"),
                    ("reference_speedup", "reference")):
        out[key] = per_path["naive"][f"{ph}_s"] / per_path["shared"][f"{ph}_s"] if ratios_ok else None
    out["policy_memory_ratio"] = (
        activation["naive"] / activation["shared"] if ratios_ok and activation["shared"] > 0 else None
    )
    if both:
        out["flops"]["predicted_step_speedup"] = flops["naive"]["step"] / flops["shared"]["step"]
        out["flops"]["predicted_policy_speedup"] = flops["naive"]["policy"] / flops["shared"]["policy"]
    return out


def _argv_of(cfg: BenchConfig) -> list[str]:
    args = ["--model", cfg.model] if cfg.model else ["--size", str(cfg.size)]
    args += ["--family", cfg.family, "--clip-seconds", f"{cfg.clip_seconds:g}", "--group-size", str(cfg.group_size),
             "--completion-tokens", str(cfg.completion_tokens), "--prompts", str(cfg.prompts), "--reps", str(cfg.reps),
             "--warmup", str(cfg.warmup), "--paths", ",".join(cfg.paths), "--dtype", cfg.dtype, "--device", cfg.device]
    if cfg.freeze_encoder:
        args.append("--freeze-encoder")
    if cfg.micro_batch:
        args += ["--micro-batch", str(cfg.micro_batch)]
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    if cfg.matmul_size:
        args += ["--matmul-size", str(cfg.matmul_size)]
    return args + ["--out", cfg.out]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def format_table(res: dict[str, Any]) -> str:
    """Markdown table of the medians, one row per phase, one column per path, and the ratio."""
    paths = list(res["paths"])
    both = len(paths) == 2
    head = "| phase | " + " | ".join(paths) + (" | naive / shared |" if both else " |")
    lines = [head, "|---|" + "---|" * (len(paths) + (1 if both else 0))]
    keys = {"generation": "generation_speedup", "reference": "reference_speedup", "policy": "policy_speedup",
            "step": "step_speedup"}
    for ph in PHASES:
        row = [_fmt_s(res["paths"][p][f"{ph}_s"]) for p in paths]
        label = {"policy": "policy fwd+bwd", "reference": "reference fwd", "step": "**whole step**"}.get(ph, ph)
        ratio = _ratio(res.get(keys[ph])) if ph in keys else (
            _ratio(res["paths"]["naive"][f"{ph}_s"] / res["paths"]["shared"][f"{ph}_s"]) if both else "")
        lines.append(f"| {label} | " + " | ".join(row) + (f" | {ratio} |" if both else " |"))
    mem = [f"{res['paths'][p]['policy_activation_mb']:.0f} MB" for p in paths]
    lines.append("| policy activations (saved for backward, peak) | " + " | ".join(mem)
                 + (f" | {_ratio(res.get('policy_memory_ratio'))} |" if both else " |"))
    if "peak_mb" in res["paths"][paths[0]]:
        for ph in ("generation", "reference", "policy"):
            vals = [f"{res['paths'][p]['peak_mb'][ph]:.0f} MB" for p in paths]
            r = ""
            if both and res["paths"]["shared"]["peak_mb"][ph] > 0:
                r = f" | {_ratio(res['paths']['naive']['peak_mb'][ph] / res['paths']['shared']['peak_mb'][ph])} |"
            lines.append(f"| CUDA peak, {ph} | " + " | ".join(vals) + (r or (" | |" if both else " |")))
    fl = res["flops"]
    vals = [f"{fl['model_tflops_per_step'][p]:.4g}" for p in paths]
    pred = f" | {fl['predicted_step_speedup']:.2f}x (predicted) |" if both else " |"
    lines.append("| model TFLOP per step | " + " | ".join(vals) + pred)
    vals = [f"{fl['achieved_gflops'][p]:.1f} ({100 * fl['utilisation'][p]:.0f} %)" for p in paths]
    lines.append(f"| achieved GFLOP/s (of {fl['matmul_gflops']:.0f} matmul) | " + " | ".join(vals) + (" | |" if both else " |"))
    return "\n".join(lines)


def format_markdown(res: dict[str, Any]) -> str:
    m, c, mach = res["model"], res["config"], res["machine"]
    noise = res["noise"]
    out = [
        f"# harken bench: {m['name']}",
        "",
        f"- date: {res['date']}",
        f"- command: `{res['command']}`",
        f"- machine: {mach['device_name']} ({mach['cpu_count']} CPUs, torch threads {mach['torch_threads']}), "
        f"torch {mach['torch']}, transformers {mach['transformers']}",
        f"- model: {m['parameters'] / 1e6:.1f} M parameters ({m['trainable_parameters'] / 1e6:.1f} M trained), {m['dtype']}, "
        f"{m['window_seconds']:g} s audio window",
        f"- work: {c['prompts']} prompt(s) of {m['prompt_tokens']} tokens ({m['audio_tokens']} audio, "
        f"{c['clip_seconds']:g} s clip), G = {c['group_size']}, {c['completion_tokens']} tokens per completion; "
        f"encoder {'frozen (output reused)' if c['freeze_encoder'] else 'trained'}",
        f"- medians of {c['reps']} repetition(s) after {c['warmup']} warm-up, paths interleaved in one process",
        "",
        format_table(res),
        "",
    ]
    if res.get("check"):
        ch = res["check"]
        out.append(
            f"Exactness: max |log-prob difference| {ch['max_logprob_diff']:.2e} (tolerance {ch['tolerance']:g}; "
            f"mean {ch['mean_logprob_diff']:.2e}), "
            f"identical sampled tokens {100 * ch['generation_tokens_equal']:.1f} %, gradients ||shared - naive|| / "
            f"||naive|| {ch['grad_rel_l2']:.2e} (tolerance {ch['grad_tolerance']:g}; worst parameter's max-abs ratio "
            f"{ch['max_grad_rel_diff']:.2e}): {'OK' if ch['ok'] else 'FAILED, ratios withheld'}."
        )
    out.append(
        f"Noise: load average {noise['loadavg_before']} before, {noise['loadavg_after']} after; matmul "
        f"{noise['matmul_gflops_start']:.1f} -> {noise['matmul_gflops_end']:.1f} GFLOP/s; largest (max-min)/median "
        f"of a phase over repetitions {100 * noise['max_spread']:.0f} %"
        + (f"; step speed-up from the fastest repetitions {noise['step_speedup_best']:.2f}x." if noise.get("step_speedup_best") else ".")
    )
    if noise.get("warning"):
        out.append(f"**Warning: {noise['warning']}.**")
    return "\n".join(out) + "\n"


def write_results(res: dict[str, Any], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(format_markdown(res), encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _paths_arg(text: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in paths if p not in PATHS]
    if not paths or bad or len(set(paths)) != len(paths):
        raise argparse.ArgumentTypeError(f"--paths takes shared, naive or shared,naive; got {text!r}")
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--size", choices=[*SIZES, "7b"], default="small",
                       help="named random-weight model (7b: Qwen2-Audio-7B at full size, CUDA only)")
    which.add_argument("--model", help="checkpoint folder (a folder with only a config gets random weights)")
    p.add_argument("--family", default="qwen2-audio", choices=sorted(FAMILIES))
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--completion-tokens", type=int, default=32)
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--paths", type=_paths_arg, default=PATHS, help="comma-separated: shared,naive")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--freeze-encoder", action="store_true", help="freeze the audio encoder and reuse its output")
    p.add_argument("--micro-batch", type=int, default=None, help="completion rows per forward in the loss passes")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--matmul-size", type=int, default=None,
                   help="side of the square matrix product timed as the reference rate (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--tolerance", type=float, default=None, help="max |log-prob difference| between the paths")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for bench.json and bench.md")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    for name in ("group_size", "completion_tokens", "prompts", "reps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.clip_seconds <= 0:
        raise ValueError("--warmup must be >= 0 and --clip-seconds > 0")
    return BenchConfig(
        size=None if args.model else args.size, model=args.model, family=args.family, clip_seconds=args.clip_seconds,
        group_size=args.group_size, completion_tokens=args.completion_tokens, prompts=args.prompts, reps=args.reps,
        warmup=args.warmup, paths=tuple(args.paths), dtype=args.dtype, device=args.device,
        freeze_encoder=args.freeze_encoder, micro_batch=args.micro_batch, threads=args.threads, matmul_size=args.matmul_size,
        tolerance=args.tolerance, seed=args.seed, out=args.out,
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    res = run_bench(cfg)
    out = write_results(res, cfg.out)
    print(format_markdown(res))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    if res["check"] is not None and not res["check"]["ok"]:
        print("harken bench: the two paths disagree beyond the tolerance; speed-ups withheld", file=sys.stderr)
        return 1
    return 0


def register(top, groups) -> None:
    p = top.add_parser("bench", help="time a GRPO step with and without prompt sharing",
                       description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=_cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """`python -m harken.bench.harness ...`: the same command without importing every harken command
    (for machines that only have torch, transformers and numpy, like the GPU image)."""
    parser = argparse.ArgumentParser(prog="harken bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return _cmd_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
