"""The model a run trains, and its frozen reference.

Owns: loading the policy named by `model.path` (full or LoRA, encoder frozen or not, gradient
checkpointing), the reference for the KL term (a frozen copy for full fine-tuning; none with LoRA,
where the policy with its adapter disabled is the reference), and which parameters train.
Does not own: loading checkpoints (`harken.models.loading`), the optimizer (`harken.train.optim`).
"""

from __future__ import annotations

import copy

import torch

from harken.models.audio_lm import AudioLM
from harken.models.families import base_model
from harken.models.loading import load_audio_lm


def load_base(model_cfg, device) -> AudioLM:
    """The model named by `model.path` ("tiny:FAMILY" builds a toy model in memory)."""
    return load_audio_lm(
        model_cfg.path,
        dtype=model_cfg.dtype,
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
    """Load the policy (LoRA-wrapped or not, encoder frozen or not) and, if asked, a reference.

    The reference is a frozen copy for full fine-tuning; with LoRA it is None because the
    policy with its adapter disabled IS the reference (no second copy in memory).
    """
    lm = load_base(model_cfg, device)
    ref = None
    if need_reference and not model_cfg.lora:
        ref_model = copy.deepcopy(lm.model).eval().requires_grad_(False)
        ref = AudioLM(ref_model, lm.tokenizer, lm.feature_extractor, lm.family, lm.path)
    frozen = lm.family.unused_modules + (lm.family.encoder_modules if model_cfg.freeze_encoder else ())
    for name, p in lm.model.named_parameters():
        if frozen and name.startswith(frozen):
            p.requires_grad_(False)
    if model_cfg.lora:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=model_cfg.lora_r,
            lora_alpha=model_cfg.lora_alpha,
            lora_dropout=model_cfg.lora_dropout,
            target_modules=lora_target_regex(lm, list(model_cfg.lora_target_modules)),
            bias="none",
        )
        lm.model = get_peft_model(lm.model, cfg)
    if model_cfg.gradient_checkpointing:
        lm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lm.model.train()
    return lm, ref


def encoder_is_frozen(lm: AudioLM) -> bool:
    """True when no audio-encoder parameter trains (then its output can be reused across passes)."""
    base = base_model(lm.model)
    return not any(p.requires_grad for n, p in base.named_parameters() if n.startswith(lm.family.encoder_modules))


def trainable_parameters(lm: AudioLM) -> list[torch.nn.Parameter]:
    return [p for p in lm.model.parameters() if p.requires_grad]
