"""The model a run trains, and its frozen reference.

Owns: loading the policy named by `model.path` (full or LoRA, encoder frozen or not, gradient
checkpointing, sharded or not), the precision it trains in (fp32 master weights, compute in
`model.dtype`), the reference for the KL term (a frozen copy for full fine-tuning; none with
LoRA, where the policy with its adapter disabled is the reference), which parameters train, how
many updates a low-precision weight would lose, and the train/eval flags of an RL pass
(`set_dropout`: dropout on or off, activation checkpointing kept).
Does not own: loading checkpoints (`harken.models.loading`), the optimizer (`harken.train.optim`).
"""

from __future__ import annotations

import copy

import torch

from harken.models.audio_lm import AudioLM
from harken.models.families import base_model
from harken.models.loading import load_audio_lm, resolve_dtype
from harken.train.sharding import ensure_process_group, local_shard, shard_audio_lm


def precision(model_cfg, device) -> tuple[torch.dtype, torch.dtype]:
    """(storage, compute) dtypes of the trained weights.

    With `model.master_weights` (the default) full fine-tuning stores the trained weights, their
    gradients and AdamW's state in fp32 and computes in `model.dtype` (autocast, or the sharding
    engine's mixed precision). LoRA stores the frozen base in the compute dtype (peft keeps its
    adapters in fp32). Without master weights everything is in `model.dtype`.
    """
    compute = resolve_dtype(model_cfg.dtype, device)
    if model_cfg.master_weights and not model_cfg.lora:
        return torch.float32, compute
    return compute, compute


def load_base(model_cfg, device, dtype: torch.dtype) -> AudioLM:
    """The model named by `model.path` in `dtype` ("tiny:FAMILY" builds a toy model in memory)."""
    return load_audio_lm(
        model_cfg.path,
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        trust_remote_code=model_cfg.trust_remote_code,
        attn_implementation=model_cfg.attn_implementation,
        tiny_seed=model_cfg.tiny_seed,
    )


def lora_target_regex(lm: AudioLM, names: list[str]) -> str:
    """A peft target regex matching `names` everywhere except in the audio encoder."""
    enc = "|".join(p.rstrip(".").replace(".", r"\.") for p in lm.family.encoder_modules)
    return rf"^(?!(?:{enc})\.).*\.(?:{'|'.join(names)})$"


def prepare_model(model_cfg, device, need_reference: bool) -> tuple[AudioLM, AudioLM | None]:
    """Load the policy (LoRA-wrapped or not, encoder frozen or not, sharded or not) and, if asked, a reference.

    The reference is a frozen copy in the compute dtype for full fine-tuning (sharded like the
    policy); with LoRA it is None because the policy with its adapter disabled IS the reference
    (no second copy in memory).
    """
    storage, compute = precision(model_cfg, device)
    lm = load_base(model_cfg, device, storage)
    if compute != storage:
        lm.compute_dtype = compute
    ref = _reference(lm, compute) if need_reference and not model_cfg.lora else None
    frozen = lm.family.unused_modules + (lm.family.encoder_modules if model_cfg.freeze_encoder else ())
    for name, p in lm.model.named_parameters():
        if frozen and name.startswith(frozen):
            p.requires_grad_(False)
    if model_cfg.lora:
        lm.model = _with_lora(lm, model_cfg)
    if model_cfg.gradient_checkpointing:
        lm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if model_cfg.sharding == "fsdp":
        ensure_process_group()
        shard_audio_lm(lm, compute)
        if ref is not None:
            shard_audio_lm(ref, compute)
    lm.model.train()
    return lm, ref


def _reference(lm: AudioLM, compute: torch.dtype) -> AudioLM:
    """A frozen copy of the policy as loaded, in the compute dtype (run under the same autocast)."""
    ref_model = copy.deepcopy(lm.model).to(compute).eval().requires_grad_(False)
    return AudioLM(ref_model, lm.tokenizer, lm.feature_extractor, lm.family, lm.path, compute_dtype=lm.compute_dtype)


def _with_lora(lm: AudioLM, model_cfg) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=model_cfg.lora_r,
        lora_alpha=model_cfg.lora_alpha,
        lora_dropout=model_cfg.lora_dropout,
        target_modules=lora_target_regex(lm, list(model_cfg.lora_target_modules)),
        bias="none",
    )
    # peft keeps adapters in fp32 over a low-precision base unless master weights are turned off.
    return get_peft_model(lm.model, cfg, autocast_adapter_dtype=model_cfg.master_weights)


def rounded_away_fraction(params: list[torch.nn.Parameter], lr: float) -> float:
    """Fraction of the weights an update of size `lr` leaves unchanged in their own dtype.

    AdamW moves each weight by about `lr` per step; a weight w stored with m mantissa bits only
    changes when the step exceeds half its spacing, about |w| * eps / 2 (eps = 2^-m: bf16 has
    m = 7, fp16 m = 10, fp32 m = 23).
    """
    total = unchanged = 0
    for p in params:
        half_step = torch.finfo(p.dtype).eps / 2  # relative spacing 2^-m, halved
        w = local_shard(p.detach())
        unchanged += int((w.float().abs() * half_step > lr).sum())
        total += w.numel()
    return unchanged / max(total, 1)


def encoder_is_frozen(lm: AudioLM) -> bool:
    """True when no audio-encoder parameter trains (then its output can be reused across passes)."""
    base = base_model(lm.model)
    return not any(p.requires_grad for n, p in base.named_parameters() if n.startswith(lm.family.encoder_modules))


def trainable_parameters(lm: AudioLM) -> list[torch.nn.Parameter]:
    return [p for p in lm.model.parameters() if p.requires_grad]


def _checkpointed_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Layers that transformers wraps for activation checkpointing and that have it switched on."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]


def set_dropout(model: torch.nn.Module, on: bool, generating: bool = False) -> None:
    """Set the train/eval flags of `model` for an RL pass: dropout on (train mode) or off (eval mode).

    With dropout off, layers with activation checkpointing stay in train mode outside generation,
    because transformers checkpoints a layer only in train mode; their submodules (attention, MLP,
    LoRA) are in eval mode, so dropout is off everywhere unless a layer applies dropout in its own
    forward (`layers_with_own_dropout` finds those). Generation puts them in eval mode too: a
    checkpointed layer in train mode drops its key/value cache.
    """
    model.train(on)
    if not on and not generating:
        for _, layer in _checkpointed_layers(model):
            layer.training = True


def layers_with_own_dropout(model: torch.nn.Module) -> list[str]:
    """Checkpointed layers whose own forward applies dropout (p > 0): `set_dropout(off)` cannot reach it."""
    return [n for n, m in _checkpointed_layers(model)
            if any(isinstance(p, float) and p > 0 for p in (getattr(m, "dropout", 0.0), getattr(m, "activation_dropout", 0.0)))]
