"""Per-GPU memory of a training run, part by part: the formula behind `harken plan`.

Owns: a model's sizes without its weights (`model_sizes`: `tiny:FAMILY`, a local folder's
config.json, or a published checkpoint whose sizes `harken.models.known` holds; parameters counted
on the meta device), the bytes per GPU of every part and phase of a GRPO or SFT run for one
sharding mode (`plan_memory`), and whether it fits a card or which knob makes it fit (`advise`).
Does not own: how training holds memory (`harken.train.policy`, `harken.train.sharding`,
`harken.rl.rollout`): this models that code as it is, and tests/train/test_plan.py checks it
against memory measured on CPU.

Notation. N GPUs; k = 1 (sharding none) or N (fsdp); c bytes of the compute dtype (bf16 2, fp32 4;
auto = bf16); s bytes the weights are stored in (4 with master_weights and full fine-tuning, else
c); autocast = s > c. Model: h hidden, f ffn, L layers, nh heads, nkv key/value heads, dh head
dim, V vocab; mixture of experts: Lm of the L layers, E experts of width fx, k per token;
encoder d, f_e, L_e layers, nh_e heads, S positions (Qwen2-Audio, Voxtral: the whole window;
Omni: the clip's), M mel bins; projector (Qwen2-Audio, Audio Flamingo 3, Voxtral) of 1 or 2
layers, its input p_in per audio token (d; Voxtral 4 frames side by side: f_e = 4d). Run: B
prompts, R = B*G rows, n rows per micro-batch (rollout.micro_batch, 0 = R), T = max_new_tokens,
P = text tokens + the family's audio tokens for prompt.max_audio_seconds (capped at the window:
25 per second, Qwen3-Omni 13, Voxtral 12.5). Parameters: W all; Wt trained (full: all but a
frozen encoder, unused modules and tensors built frozen; LoRA: r*(in+out) per linear outside the
encoder named in lora_target_modules; every expert of a mixture counts in W and, trained, in
Wt); U the largest FSDP unit (an encoder or decoder layer), Rt the root (embeddings, final norm,
head, encoder stem, projector); Ut, Rtt their trained parts.

Parts (bytes per GPU; sw = s, or for LoRA adapters 4 with master_weights (peft's fp32) else c):
  weights       full s*W/k; LoRA (c*W + sw*Wt)/k
  gradients     sw*Wt/k                       optimizer   2*sw*Wt/k (AdamW's two moments)
  reference     c*W/k when algo.kl_coef > 0 and full fine-tuning (LoRA disables the adapter)
  pass weights  none + autocast: c * (prompt pass: encoder if it runs, projector, decoder layers
                + micro-batch pass: decoder layers, head): each pass's graph keeps the casts it
                used (naive path, SFT: one pass); fsdp: c*(2U + Rt) gathered + c*(Ut + Rtt)
                unsharded gradients
  activations   saved for backward (below)
  pass buffers  logits workspace n*T*V*(8, or 8 + c when c < 4) + prompt key/value gradients
                B*P*kv (+ the prompt's cache itself when attention saved copies of it: autocast,
                or B > 1 with nkv < nh)
  KV cache      (B*P prompt + R*(P+T) cache) * kv (naive path: R*P instead of B*P): the prompt's
                keys and values, alive while the decode loop's cache of P+T positions per row is
                filled from them; kv = L*2*nkv*dh*c, or *4 under autocast: with fp32 embeddings
                the stream, the rotary tables and so the cached keys and values are fp32
  prompt pass   the rollout's prompt pass where it needs more than the KV cache (its excess): the
                larger of the decoder's, B*P*kv + B*P*c*((3 + LoRA)*f + 4.5h) (its keys and values
                so far and one layer's MLP) + B*P*P*c (float mask, B > 1), and the encoder's,
                B*c*max(S*(2f_e + 4d), F*(k*M + 4d)) (a layer, or the stem over F mel frames; k 3
                when the encoder pads its input into chunks, else 1) + B*P*h*c (prompt embeddings);
                B clips and rows (naive path: R)
  gen weights   none + autocast: c*(Wt - embeddings) (autocast's cached casts); fsdp: c*W (gathered)
  step buffers  none: the larger of the flat all-reduce copy sw*Wt (N > 1) and AdamW's foreach
                temporary sw*Wt (CUDA; on CPU up to 3 of the largest trained tensor); fsdp: sw*Wt/N
Phases: generation = weights + optimizer + reference + gen weights + KV cache + prompt pass; policy pass =
weights + optimizer + reference + gradients + pass weights + activations + pass buffers;
optimizer step = weights + optimizer + reference + gradients + step buffers. Peak = the largest;
a run fits when it is at most 90% of the card (CUDA context, NCCL buffers, fragmentation).
Reference and old-policy passes save nothing for backward and stay below the policy pass.

Activations (shared path: the prompt's stay alive until its backward at the end, plus one
micro-batch's). Per token and decoder layer, a =
  full, compute in c:  2*(4h + 4 + 2ch) RMSNorms (fp32 input, rsqrt, normalised, output)
                       + 2ch + 4nh attention (rotated query, output, log-sum-exp) + 4fc MLP
  full, autocast:      2*(4h + 4 + 4h) + 5ch (casts into q,k,v,gate,up) + 2ch + 4nh + 4fc
  LoRA (frozen base):  2*(4h + 4) + 2ch + 4nh + 3fc + per adapted linear in*(sw + m) + sw*r
                       (its input cast to the adapter's dtype, after dropout; the dropout mask
                       m: 1 byte on CUDA, sw on CPU, 0 without dropout)
  mixture-of-experts layers: the MLP term (4fc; LoRA 3fc) becomes, for its top k experts only,
                       k*(c*(2h + 4fx + 1) + 36) + 4E + 4 (`moe_layer_bytes`; LoRA k*(c*(3fx + h
                       + 1) + 36) + 4E + 4; autocast + ch, the router's input cast); a = the mean
                       over the L layers
  queries and keys normalised per head (Qwen3): + (nh + nkv)*((4 + c)*dh + 4) (LoRA 4*(dh + 1))
  final norm per token: 4h + 4 (+ ch full, + 4h autocast).
  prompt      B*P*(L*(a + 2*nkv'*dh*c) + final norm) + L*B*P*P*c float masks when B > 1
              (nkv' = nh then: keys repeated, else nkv) + audio: encoder trained: B clips of
              c*(2MS + 5dS) stem + S*L_e*(9dc + 2f_e*c + 16 + 4nh_e) (+8d autocast) + (1.5dS
              tail (Voxtral, no pooling: dS), + tokens*p_in projector input)*(c, 4 autocast)
              + 2hc*tokens (a two-layer projector's GELU input and output) + Qwen2-Audio clips
              shorter than the window: L_e*S*S*c masks; frozen: tokens*(c*p_in + 2hc [two
              layers]) (the projector's; 0 with LoRA)
  micro-batch n*(T-1)*(L*a + final norm) + n*T*(c*h [head input, full] + 4V [fp32 log-softmax])
              + L*n*(2*nh*dh*(P+T-1)*c + (T-1)*(P+T-1)*c) (keys/values repeated, float mask)
  naive path  n rows of P+T tokens as one micro-batch with its own prompt and encoder pass;
              gradient checkpointing (naive only): L*tokens*h*c layer inputs + one layer.
SFT: one pass over train.batch_size rows of P + 16 target tokens; no reference or generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from harken.bench.flops import Arch
from harken.models.families import Family

GIB = 2**30
HEADROOM = 0.9  # a run fits when its peak is at most this fraction of the card
TEXT_TOKENS = 100  # system prompt, chat markup, question, choices, instruction (prompt2 with Qwen's tokenizer: ~70-90)
TARGET_TOKENS = 16  # SFT target "<answer>...</answer><|im_end|>"
PARTS = {
    "weights": "weights (trained, masters, frozen)",
    "gradients": "gradients",
    "optimizer": "AdamW moments",
    "reference": "reference model",
    "pass_weights": "weights gathered/cast for a pass",
    "activations": "activations saved for backward",
    "pass_buffers": "logits and prompt-gradient buffers",
    "kv_cache": "rollout KV cache",
    "gen_pass": "rollout prompt pass (beyond the cache)",
    "gen_weights": "weights gathered/cast for rollout",
    "step_buffers": "optimizer-step buffers",
}
PHASES = {
    "generation": ("weights", "optimizer", "reference", "gen_weights", "kv_cache", "gen_pass"),
    "policy pass": ("weights", "optimizer", "reference", "gradients", "pass_weights", "activations", "pass_buffers"),
    "optimizer step": ("weights", "optimizer", "reference", "gradients", "step_buffers"),
}
_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "auto": 2}


@dataclass(frozen=True)
class ModelSizes:
    """What the formula needs from a model: its Arch and its parameters by module and unit."""

    arch: Arch
    family: Family
    enc_heads: int
    params: tuple[tuple[str, int, bool], ...]  # (name, numel, built trainable)
    linears: tuple[tuple[str, int, int], ...]  # (module name, in, out) of every nn.Linear

    @classmethod
    def from_model(cls, model, family: Family) -> "ModelSizes":
        """Sizes of a built model (real weights or on the meta device)."""
        from torch import nn

        from harken.models.families import base_model

        model = base_model(model)
        params = tuple((n, p.numel(), p.requires_grad) for n, p in model.named_parameters())
        linears = tuple((n, m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, nn.Linear))
        a = model.config.audio_config
        return cls(Arch.from_config(model.config, family), family, a.encoder_attention_heads, params, linears)

    @classmethod
    def from_config(cls, config, family: Family) -> "ModelSizes":
        import torch

        with torch.device("meta"):
            model = family.model_class._from_config(config)
        return cls.from_model(model, family)

    def under(self, role: str):
        """A `count` filter: parameters inside the family's module for `role` (none when it has none)."""
        path = self.family.module_paths[role]
        return lambda name, _trainable=None: bool(path) and name.startswith(path + ".")

    def unit(self, name: str) -> str:
        """The FSDP unit a parameter belongs to: "enc.I", "dec.I" or "root"."""
        for tag, role in (("enc", "audio_tower"), ("dec", "language_model")):
            prefix = self.family.module_paths[role] + ".layers."
            if name.startswith(prefix):
                return f"{tag}.{name[len(prefix):].split('.')[0]}"
        return "root"

    @property
    def qk_norm(self) -> bool:
        """Whether the decoder normalises queries and keys per head (Qwen3's q_norm and k_norm)."""
        q_norm = self.family.module_paths["language_model"] + ".layers.0.self_attn.q_norm."
        return any(name.startswith(q_norm) for name, _, _ in self.params)

    def count(self, where=lambda name, trainable: True) -> int:
        return sum(n for name, n, t in self.params if where(name, t))

    @property
    def window_seconds(self) -> float:
        return self.arch.enc_positions / 50  # 2 mel frames per position, 100 frames per second

    def adapter(self, r: int, targets: list[str]) -> tuple[int, list[tuple[int, int]]]:
        """LoRA parameters in the whole model, and (in, out) of the adapted linears of one decoder layer."""
        enc = "|".join(re.escape(p.rstrip(".")) for p in self.family.encoder_modules)
        rule = re.compile(rf"^(?!(?:{enc})\.).*\.(?:{'|'.join(map(re.escape, targets))})$")  # as harken.train.policy
        hit = [(n, i, o) for n, i, o in self.linears if rule.match(n)]
        layer0 = self.family.module_paths["language_model"] + ".layers.0."
        return sum(r * (i + o) for _, i, o in hit), [(i, o) for n, i, o in hit if n.startswith(layer0)]


def model_sizes(path: str) -> ModelSizes:
    """Sizes of the model `model.path` names, without downloading or loading weights."""
    from harken.models.families import family_for_config
    from harken.models.loading import toy_family

    if toy_family(path):  # tiny: and tiny-warm: toys share their architecture
        from harken.models.toy import build_tiny

        lm = build_tiny(toy_family(path))
        return ModelSizes.from_model(lm.model, lm.family)
    from harken.models.known import KNOWN_MODELS, known_config

    known = known_config(path)
    if known is not None:
        return ModelSizes.from_config(*known)
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path={path}: no config.json there and not a known model; pass a local checkpoint folder, "
            f"tiny:FAMILY or {' / '.join(KNOWN_MODELS)}"
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if config.model_type == "qwen2_5_omni":
        config = config.thinker_config
    return ModelSizes.from_config(config, family_for_config(config))


@dataclass
class Plan:
    """Bytes per GPU of every part and phase of one run in one sharding mode."""

    sharding: str
    parts: dict[str, float]
    phases: dict[str, float]
    inputs: dict[str, float]

    @property
    def peak(self) -> float:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    def fits(self, gpu_gib: float) -> bool:
        return self.peak <= HEADROOM * gpu_gib * GIB


def compute_bytes(dtype: str) -> int:
    """Bytes per element of `model.dtype` on a GPU (auto = bf16)."""
    return _BYTES[dtype]


def moe_layer_bytes(h: int, fx: int, k: int, experts: int, c: int, lora: bool) -> float:
    """Bytes one token keeps for backward in one mixture-of-experts MLP, as transformers' Qwen3-MoE
    experts run (grouped_mm, the default, and the eager loop keep the same): for each of its k
    experts, gate and up (2fx), the activation (fx), the weighted output (h) and the routing weight
    (1) in the compute dtype, and when the experts train also their gathered input (h) and the down
    projection's input (fx); 36 bytes of int64 indices and fp32 top-k weight per expert; the
    router's fp32 softmax over the E experts and its top-k sum."""
    per_expert = c * (3 * fx + h + 1) + (0 if lora else c * (h + fx)) + 36
    return k * per_expert + 4 * experts + 4


def plan_memory(cfg, gpus: int, sizes: ModelSizes, *, sharding: str | None = None, text_tokens: int = TEXT_TOKENS,
                device: str = "cuda") -> Plan:
    """Per-GPU bytes of a GRPOConfig or SFTConfig run on `gpus` processes (see the module docstring).

    Args:
        sharding: none | fsdp (default: cfg.model.sharding). device: "cuda" (the plan) or "cpu"
            (for the terms that differ there: dropout masks, AdamW's temporaries; the tests measure on CPU).
    """
    m = cfg.model
    sharding = sharding or m.sharding
    k = gpus if sharding == "fsdp" else 1
    c = compute_bytes(m.dtype)
    lora = m.lora
    s = 4 if (m.master_weights and not lora) else c
    autocast = s > c
    sw = (4 if m.master_weights else c) if lora else s  # peft: fp32 adapters unless master weights are off
    a = sizes.arch
    encoder_prefixes = sizes.family.encoder_modules
    unused = sizes.family.unused_modules
    total = sizes.count()
    frozen = unused + (encoder_prefixes if m.freeze_encoder else ())

    def is_trained(name: str, built: bool) -> bool:
        return not lora and built and not (frozen and name.startswith(frozen))

    if lora:
        trained, layer_adapters = sizes.adapter(m.lora_r, list(m.lora_target_modules))
    else:
        trained, layer_adapters = sizes.count(is_trained), []
    encoder_trains = not lora and not m.freeze_encoder
    cast_style = autocast and sharding == "none"  # fp32 weights under autocast: fp32 residual stream
    grpo = hasattr(cfg, "rollout")

    # Prompt and rows.
    seconds = min(cfg.prompt.max_audio_seconds, sizes.window_seconds)
    frames = int(round(seconds * 100))
    fam = sizes.family
    audio = int(fam.audio_token_count(a.enc_positions * 2 if fam.whole_window else frames))  # the family's own count
    p = text_tokens + audio
    if grpo:
        b, g, t = cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.max_new_tokens
        rows = b * g
        n = min(cfg.rollout.micro_batch or rows, rows)
        shared = cfg.rollout.prefix_sharing
    else:
        b = rows = n = cfg.train.batch_size
        t, shared = TARGET_TOKENS, False
    # Bytes of one position's keys and values, all layers (fp32 under autocast: rotary follows the fp32 stream).
    kv_pos = a.layers * 2 * a.kv_heads * a.head_dim * (4 if cast_style else c)

    parts = dict.fromkeys(PARTS, 0.0)
    parts["weights"] = ((c * total + sw * trained) if lora else s * total) / k
    parts["gradients"] = sw * trained / k
    parts["optimizer"] = 2 * sw * trained / k
    if grpo and cfg.algo.kl_coef > 0 and not lora:
        parts["reference"] = c * total / k

    # Weights gathered (fsdp) or cast (autocast) while the model computes.
    dec = sizes.count(lambda n, _: sizes.unit(n).startswith("dec."))
    if sharding == "fsdp":
        units: dict[str, list[int]] = {}
        for name, count, built in sizes.params:
            u = units.setdefault(sizes.unit(name), [0, 0])
            u[0] += count
            u[1] += count * is_trained(name, built)
        root = units.pop("root", [0, 0])
        big = max(units.values(), default=[0, 0], key=lambda x: x[0])
        parts["pass_weights"] = c * (2 * big[0] + root[0]) + c * (big[1] + root[1])
        parts["gen_weights"] = c * total if grpo else 0.0
    elif autocast:
        head, embed, proj = (sizes.count(sizes.under(role)) for role in ("lm_head", "embed_tokens", "projector"))
        enc = sizes.count(lambda n, t: t and n.startswith(encoder_prefixes)) if encoder_trains else 0
        two = grpo and shared  # the prompt pass's casts stay alive beside a micro-batch pass's
        parts["pass_weights"] = c * ((enc + proj + dec) + (dec + head) if two else enc + proj + dec + head)
        parts["gen_weights"] = c * (trained - embed) if grpo else 0.0

    # Activations saved for backward.
    h, f, heads = a.hidden, a.ffn, a.heads
    drop_mask = (1 if device == "cuda" else sw) if m.lora_dropout > 0 else 0
    qk_heads = (heads + a.kv_heads) * sizes.qk_norm  # queries and keys normalised per head (Qwen3)
    moe = moe_layer_bytes(h, a.expert_ffn, a.experts_per_token, a.experts, c, lora) if a.moe_layers else 0
    if lora:
        per_tok = 2 * (4 * h + 4) + 2 * c * h + 4 * heads + 4 * qk_heads * (a.head_dim + 1)
        per_tok += sum(i * (sw + drop_mask) + sw * m.lora_r for i, _ in layer_adapters)
        mlp = 3 * f * c
        final, head_in = 4 * h + 4, 0
    elif cast_style:
        per_tok = 2 * (8 * h + 4) + 3 * c * h + 2 * c * h + 4 * heads + qk_heads * ((4 + c) * a.head_dim + 4)
        mlp, moe = 2 * c * h + 4 * f * c, moe + c * h * bool(moe)  # casts into gate and up; into the router
        final, head_in = 8 * h + 4, c * h
    else:
        per_tok = 2 * (4 * h + 4 + 2 * c * h) + 2 * c * h + 4 * heads + qk_heads * ((4 + c) * a.head_dim + 4)
        mlp = 4 * f * c
        final, head_in = 4 * h + 4 + c * h, c * h
    per_tok += ((a.layers - a.moe_layers) * mlp + a.moe_layers * moe) / a.layers  # the layers' mean
    proj_in, proj_hidden = a.proj_in, 2 * h * (a.proj_layers - 1) * c  # a two-layer projector's GELU in and out

    def audio_bytes(clips: int) -> float:
        if encoder_trains:
            d, fe, r = a.enc_d, a.enc_ffn, (4 if cast_style else c)
            masked = sizes.family.name == "qwen2-audio"  # runs its whole window, masking what the clip lacks
            whole = masked or sizes.family.whole_window  # Voxtral: the whole window, unmasked
            positions = a.enc_positions if whole else (frames - 1) // 2 + 1
            per_pos = 9 * d * c + 2 * fe * c + 16 + 4 * sizes.enc_heads + 8 * d * cast_style
            masks = a.enc_layers * positions * positions * c if masked and 2 * positions > frames else 0
            stem = c * (2 * a.mel_bins * positions + 5 * d * positions)
            # The tail: the pooling's and the final norm's inputs (Voxtral has no pooling: the norm's alone).
            tail = (1.0 if fam.name == "voxtral" else 1.5) * d * positions
            return clips * (stem + positions * a.enc_layers * per_pos + masks + r * (tail + proj_in * audio)
                            + proj_hidden * audio)
        if lora or not sizes.family.module_paths["projector"]:
            return 0.0
        return clips * audio * (c * proj_in + proj_hidden)

    def decoder_bytes(rows_: int, tokens: int, past: int, masked: bool, repeated: bool) -> float:
        """`rows_` rows of `tokens` new tokens after `past` cached ones, through every layer and the final norm."""
        heads_kv = heads if repeated else a.kv_heads
        kv = 2 * heads_kv * a.head_dim * (past + tokens) * c
        mask = tokens * (past + tokens) * c if masked else 0
        if m.gradient_checkpointing:
            return rows_ * (a.layers * tokens * h * c + tokens * per_tok + kv + mask + tokens * final)
        return rows_ * (a.layers * (tokens * per_tok + kv + mask) + tokens * final)

    logits_work = 8 + (c if c < 4 else 0)
    if grpo and shared:
        prompt = audio_bytes(b) + decoder_bytes(b, p, 0, b > 1, b > 1)
        micro = decoder_bytes(n, t - 1, p, True, True) + n * t * (head_in + 4 * a.vocab)
        parts["activations"] = prompt + micro
        # The prompt's key/value gradients, and its cache itself when what attention saved is a copy.
        copied = cast_style or (b > 1 and a.kv_heads < heads)
        parts["pass_buffers"] = n * t * a.vocab * logits_work + b * p * kv_pos * (1 + copied)
    else:
        new = t if grpo else TARGET_TOKENS
        parts["activations"] = (audio_bytes(n) + decoder_bytes(n, p + new, 0, b > 1 or not grpo, b > 1 or not grpo)
                                + n * (p + new) * head_in + n * new * 4 * a.vocab)
        parts["pass_buffers"] = n * new * a.vocab * logits_work
    if grpo:
        prefix_rows = b if shared else rows
        parts["kv_cache"] = (prefix_rows * p + rows * (p + t)) * kv_pos
        # The prompt pass, without gradients: its decoder at one layer's MLP, or its encoder.
        decoder = prefix_rows * p * (kv_pos + c * ((3 + lora) * f + 4.5 * h)) + (prefix_rows * p * p * c if b > 1 else 0)
        whole = fam.name == "qwen2-audio" or fam.whole_window
        positions = a.enc_positions if whole else (frames - 1) // 2 + 1
        mel_frames = 2 * a.enc_positions if whole else frames
        stem = mel_frames * ((3 if a.n_window else 1) * a.mel_bins + 4 * a.enc_d)
        encoder = prefix_rows * c * max(positions * (2 * a.enc_ffn + 4 * a.enc_d), stem) + prefix_rows * p * h * c
        parts["gen_pass"] = max(0.0, decoder - parts["kv_cache"], encoder - parts["kv_cache"])

    # Optimizer step.
    if sharding == "fsdp":
        parts["step_buffers"] = sw * trained / gpus
    else:
        if lora:
            largest = max((m.lora_r * max(i, o) for i, o in layer_adapters), default=0)
        else:
            largest = max((cnt for name, cnt, built in sizes.params if is_trained(name, built)), default=0)
        adam = sw * (trained if device == "cuda" else 3 * largest)
        parts["step_buffers"] = max(adam, sw * trained if gpus > 1 else 0)

    phases = {name: sum(parts[x] for x in members) for name, members in PHASES.items()}
    if not grpo:
        del phases["generation"]
    inputs = {"prompt_tokens": p, "audio_tokens": audio, "rows": rows, "micro_batch_rows": n, "completion_tokens": t,
              "parameters": total, "trained_parameters": trained, "compute_bytes": c, "storage_bytes": s}
    return Plan(sharding, parts, phases, inputs)


def advise(cfg, gpus: int, gpu_gib: float, sizes: ModelSizes, sharding: str, **kw) -> str:
    """"fits", or the first knob that makes the run fit: rollout.micro_batch, fsdp, LoRA, more GPUs."""

    def fits(c, n: int, mode: str) -> bool:
        return plan_memory(c, n, sizes, sharding=mode, **kw).fits(gpu_gib)

    if fits(cfg, gpus, sharding):
        return "fits"
    grpo = hasattr(cfg, "rollout")
    candidates = [([], cfg, gpus, sharding)]
    if sharding == "none":
        candidates.append((["model.sharding=fsdp"], cfg, gpus, "fsdp"))
    if not cfg.model.lora:
        candidates.append((["model.lora=true"], replace(cfg, model=replace(cfg.model, lora=True)), gpus, sharding))
    least = _micro(cfg, 1) if grpo else cfg
    short = _largest(lambda n: not fits(least, n, "fsdp"), gpus, 4096)  # the most GPUs that are still too few
    if short is not None and short < 4096:
        candidates.append((["model.sharding=fsdp"] * (sharding == "none"), cfg, short + 1, "fsdp"))
    for knobs, c, n, mode in candidates:
        more = f"use --gpus {n}" + (" and " if knobs else "") if n != gpus else ""
        if (knobs or more) and fits(c, n, mode):
            return f"does not fit: {more}" + ("set " + " ".join(knobs) if knobs else "")
        mb = _largest(lambda x: fits(_micro(c, x), n, mode), 1, _rows(c)) if grpo else None
        if mb is not None:
            return f"does not fit: {more}set " + " ".join(knobs + [f"rollout.micro_batch={mb}"])
    need = plan_memory(least, gpus, sizes, sharding=sharding, **kw).peak / HEADROOM / GIB
    return f"does not fit: even with one row per micro-batch it needs GPUs of about {need:.3g} GiB"


def _rows(cfg) -> int:
    r = cfg.rollout
    return min(r.micro_batch or r.prompts_per_step * r.group_size, r.prompts_per_step * r.group_size)


def _micro(cfg, rows: int):
    return replace(cfg, rollout=replace(cfg.rollout, micro_batch=rows))


def _largest(ok, lo: int, hi: int) -> int | None:
    """The largest x in [lo, hi] with ok(x), for ok true up to some point and false after it (or None)."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo
