"""The analytic FLOP count of one benchmark step, and the rates derived from it.

Owns: `Arch` (the sizes the count needs, read from a model config), `step_flops` (FLOPs of each
phase of one step, either path) and `flops_summary` (the `flops` entry of bench.json). Does not
own: the timings (`harken.bench.harness`), the reference matrix-product rate
(`harken.bench.machine.measure_matmul_gflops`).

FLOPs (`flops` in bench.json): counted analytically from the architecture, matrix products only
(2 FLOPs per multiply-add; norms, activations, rotary embeddings, softmax over the vocabulary,
sampling and the optimizer are left out, as is the 1-2 % of biases):
    text model, forward, per row with `new` tokens after `past` cached ones:
        linear      2 * new * (L * (h*(nh + 2*nkv)*dh + nh*dh*h) + (L - Lm)*3*h*f + Lm*(k*3*h*fx + h*E))
                    (Lm of the L layers are mixture-of-experts: a router h -> E, then each token
                    through k experts of width fx; the others a dense MLP of width f)
        attention   4 * L * nh * dh * (new*past + new*(new+1)/2)     (causal: keys actually visible)
    lm_head         2 * h * V per position where logits are computed
    audio encoder, per clip (Qwen2-Audio: always the full window of F = 2*max_source_positions
    mel frames, S = F/2 positions; Qwen2.5-Omni: valid frames only, in chunks of 2*n_window
    frames whose attention stays inside the chunk):
        convs       2*3*M*d*F + 2*3*d*d*F/2                   (M mel bins, d = d_model)
        layers      L_e * (2*S*(4*d*d + 2*d*f_e) + 4*d*sum over attention blocks of s^2)
        projector   per audio token 2 * p_in * h for its first layer, + 2 * h * h for a second
                    (Qwen2-Audio: one layer, p_in = d; Audio Flamingo 3: two with GELU between,
                    p_in = d; Voxtral: two, on 4 consecutive frames side by side, p_in = the
                    encoder's intermediate_size = 4*d, 375 tokens per 30 s); Omni: inside the
                    tower, 2 * d * output_dim
    Audio Flamingo 3's and Voxtral's encoders run the whole window as Qwen2-Audio's does. Not
    modelled: Qwen3-Omni's encoder (a 3-layer conv2d stem over chunks of 2*n_window frames,
    attention in windows of n_window_infer frames, a two-layer output projection); it is counted
    as Qwen2-Audio's tower, with no separate projector.
    backward = 2 x forward for every module that trains (x3 for forward + backward), less the
    input gradient of the first module on the audio path, which nothing needs (conv1 when the
    encoder trains, the projector's first layer when it is frozen).
    Without the attention terms this count equals torch's FlopCounterMode exactly for all
    three phases and both paths, for Qwen2-Audio, Qwen2.5-Omni, Audio Flamingo 3 and Voxtral,
    and for Qwen3-Omni's mixture-of-experts language model (tests/bench/test_bench.py,
    tests/bench/test_flops_known.py).
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

from dataclasses import dataclass
from typing import Any

from harken.models.families import Family, audio_tokens_for_frames, voxtral_audio_tokens

# Layers of each family's separate audio projector (transformers' Qwen2AudioMultiModalProjector: one
# Linear; AudioFlamingo3MultiModalProjector and VoxtralMultiModalProjector: Linear, GELU, Linear);
# the Omni thinkers project inside their audio tower.
PROJECTOR_LAYERS = {"qwen2-audio": 1, "audio-flamingo-3": 2, "voxtral": 2}


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
    proj_layers: int = 0  # layers of the separate projector (0: inside the tower)
    proj_in: int = 0  # the projector's input width per audio token
    experts: int = 0  # E experts per mixture-of-experts layer (0: a dense model)
    experts_per_token: int = 0  # k
    expert_ffn: int = 0  # fx, one expert's MLP width
    moe_layers: int = 0  # Lm of the layers are mixture-of-experts

    @classmethod
    def from_config(cls, config, family: Family) -> "Arch":
        t, a = config.text_config, config.audio_config
        experts = int(getattr(t, "num_experts", 0) or 0)
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
            proj_layers=PROJECTOR_LAYERS.get(family.name, 0),
            # Voxtral's projector takes 4 encoder frames at once: config.audio_config.intermediate_size wide.
            proj_in=a.encoder_ffn_dim if family.name == "voxtral" else a.d_model,
            experts=experts,
            experts_per_token=int(getattr(t, "num_experts_per_tok", 0) or 0) if experts else 0,
            expert_ffn=int(getattr(t, "moe_intermediate_size", 0) or 0) if experts else 0,
            moe_layers=sparse_layers(t) if experts else 0,
        )

    @property
    def decoder_linear_per_token(self) -> int:
        """Multiply-adds of all decoder layers' projections (and routers) for one token."""
        h, dh, lm = self.hidden, self.head_dim, self.moe_layers
        attention = h * (self.heads + 2 * self.kv_heads) * dh + self.heads * dh * h
        moe = self.experts_per_token * 3 * h * self.expert_ffn + h * self.experts
        return self.layers * attention + (self.layers - lm) * 3 * h * self.ffn + lm * moe

    def text(self, rows: int, new: int, past: int, attention: bool = True) -> float:
        """Forward FLOPs of the decoder for `rows` rows of `new` tokens after `past` cached ones."""
        linear = 2.0 * rows * new * self.decoder_linear_per_token
        attn = 4.0 * rows * self.layers * self.heads * self.head_dim * (new * past + new * (new + 1) / 2)
        return linear + attn * attention

    def head(self, positions: int) -> float:
        return 2.0 * self.hidden * self.vocab * positions

    def encoder(self, valid_frames: list[int], attention: bool = True) -> dict[str, float]:
        """Forward FLOPs of the audio encoder for clips of these valid mel frames, in three parts:
        "conv1" (its input gradient is never needed), "tower" (the rest of the encoder) and
        "projector" (a separate projector, which trains even with a frozen encoder; the Omni
        projection is inside the tower); and "projector_input_grad", the projector's first layer,
        whose input gradient nothing needs when the encoder is frozen."""
        parts = {"conv1": 0.0, "tower": 0.0, "projector": 0.0, "projector_input_grad": 0.0}
        clip = self._omni_clip if self.family == "qwen2.5-omni" else self._whole_window_clip
        count = voxtral_audio_tokens if self.family == "voxtral" else audio_tokens_for_frames
        for n in valid_frames:
            for key, value in clip(n, int(count(n)), attention).items():
                parts[key] += value
        return parts

    @property
    def _enc_layer_linear(self) -> int:
        d = self.enc_d
        return 4 * d * d + 2 * d * self.enc_ffn

    def _omni_clip(self, n: int, tokens: int, attention: bool) -> dict[str, float]:
        """Valid frames only, in chunks of 2*n_window whose attention stays inside the chunk."""
        d, w = self.enc_d, 2 * self.n_window
        chunks = [w] * (n // w) + ([n % w] if n % w else [])
        padded = max(chunks)  # every chunk is padded to the longest one for the convs
        positions = [(c - 1) // 2 + 1 for c in chunks]
        attn = 4.0 * d * sum(p * p for p in positions)
        tower = 2.0 * 3 * d * d * ((padded - 1) // 2 + 1) * len(chunks)
        tower += self.enc_layers * (2.0 * sum(positions) * self._enc_layer_linear + attn * attention)
        tower += 2.0 * d * self.proj_out * tokens
        return {"conv1": 2.0 * 3 * self.mel_bins * d * padded * len(chunks), "tower": tower}

    def _whole_window_clip(self, n: int, tokens: int, attention: bool) -> dict[str, float]:
        """Always the full window, whatever the clip's valid frames; a separate projector of one or two layers."""
        d, s = self.enc_d, self.enc_positions
        tower = 2.0 * 3 * d * d * s
        tower += self.enc_layers * (2.0 * s * self._enc_layer_linear + 4.0 * d * s * s * attention)
        first, second = self.projector_per_token
        return {"conv1": 2.0 * 3 * self.mel_bins * d * 2 * s, "tower": tower,
                "projector": 2.0 * (first + second) * tokens, "projector_input_grad": 2.0 * first * tokens}

    @property
    def projector_per_token(self) -> tuple[int, int]:
        """Multiply-adds of the separate projector's first layer and of the rest of it, per audio token."""
        if not self.proj_layers:
            return 0, 0
        return self.proj_in * self.hidden, (self.proj_layers - 1) * self.hidden * self.hidden


def sparse_layers(text_config) -> int:
    """How many decoder layers are mixture-of-experts (transformers' Qwen3-MoE rule: not in
    mlp_only_layers, and (index + 1) divisible by decoder_sparse_step)."""
    step = int(getattr(text_config, "decoder_sparse_step", 1) or 1)
    dense = set(getattr(text_config, "mlp_only_layers", None) or ())
    return sum(1 for i in range(text_config.num_hidden_layers) if i not in dense and (i + 1) % step == 0)


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
    # the encoder (Qwen2-Audio's, Audio Flamingo 3's, Voxtral's) runs, and trains.
    enc_loss = (proj if freeze_encoder else conv1 + tower + proj) * copies
    if shared:
        ref = enc_loss + arch.text(b, p, 0, attention) + arch.text(n, t - 1, p, attention) + arch.head(n * t)
    else:
        ref = enc_loss + arch.text(n, p + t, 0, attention) + arch.head(n * t)
    # Backward = 2 x forward, less the input gradient of the first module on the audio path
    # (conv1 when the encoder trains, the projector's first layer when it is frozen): nothing upstream needs it.
    policy = 3.0 * ref - (enc["projector_input_grad"] if freeze_encoder else conv1) * copies
    return {"generation": gen, "reference": ref, "policy": policy, "step": gen + ref + policy}


def flops_summary(flops: dict[str, dict[str, float]], per_path: dict[str, dict[str, Any]], matmul: float) -> dict[str, Any]:
    """bench.json's `flops`: per path, the counted TFLOPs and the rates they were done at.

    Args:
        flops: path -> `step_flops` of that path.
        per_path: path -> its median times (`<phase>_s`).
        matmul: the reference matrix-product rate (GFLOP/s).
    """
    paths = list(flops)
    achieved = {p: flops[p]["step"] / per_path[p]["step_s"] / 1e9 for p in paths}
    out = {
        "model_tflops_per_step": {p: flops[p]["step"] / 1e12 for p in paths},
        "per_phase_tflops": {p: {k: v / 1e12 for k, v in flops[p].items()} for p in paths},
        "achieved_gflops": achieved,
        "achieved_gflops_per_phase": {
            p: {ph: flops[p][ph] / per_path[p][f"{ph}_s"] / 1e9 for ph in ("generation", "reference", "policy")}
            for p in paths
        },
        "matmul_gflops": matmul,
        "utilisation": {p: achieved[p] / matmul for p in paths},
    }
    if {"shared", "naive"} <= set(paths):
        out["predicted_step_speedup"] = flops["naive"]["step"] / flops["shared"]["step"]
        out["predicted_policy_speedup"] = flops["naive"]["policy"] / flops["shared"]["policy"]
    return out
