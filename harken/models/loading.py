"""Loading and saving models: one entry point for checkpoints, hub ids and `tiny:` toy models.

Owns: `load_audio_lm` (safetensors only, no remote code unless asked; a full Omni checkpoint
loads its thinker only; `tiny:FAMILY` builds the toy model in memory, `tiny-warm:FAMILY` loads the
warmed-up toy from its cache folder), `toy_family` (the family a toy path names), dtype names,
`save_audio_lm` (a `save_pretrained` folder that transformers loads), parameter counts; a model
path that is not there, and a tokenizer without the family's audio tokens ("tokenizer missing in
DIR"), are one-line `PathError`s.
Does not own: building toy models (`harken.models.toy`, `harken.models.warm`), training set-up (`harken.train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from harken.io import PathError, describe_error, umask_permissions
from harken.models.audio_lm import AudioLM
from harken.models.families import base_model, family_for_config

WARM_PREFIX = "tiny-warm:"  # the warmed-up toy (`harken.models.warm`)


def resolve_dtype(dtype: str, device: str | torch.device) -> torch.dtype:
    if dtype == "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_audio_lm(
    path: str,
    *,
    adapter: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    tiny_seed: int = 0,
) -> AudioLM:
    """Load a checkpoint (local folder or hub id already in the local cache) of a supported family.

    `tiny:FAMILY` builds the toy model of that family from `tiny_seed` in memory: the model a
    training run with `model.path=tiny:FAMILY` starts from, so that its LoRA adapters can be
    evaluated with `--model tiny:FAMILY --adapter RUN/final`. `tiny-warm:FAMILY` is that toy after
    a short supervised warm-up (`harken.models.warm`), built on first use and cached on disk.

    Safe by default: weights from safetensors only, no remote code unless asked for.
    A full Omni checkpoint loads its thinker only (the talker is not needed for text).
    """
    if str(path).startswith("tiny:"):
        from harken.models.toy import build_tiny

        lm = build_tiny(str(path).split(":", 1)[1], seed=tiny_seed)
        lm.model.to(device=device, dtype=resolve_dtype(dtype, device))
    elif str(path).startswith(WARM_PREFIX):
        from harken.models.warm import ensure_warm_toy

        folder = ensure_warm_toy(str(path).split(":", 1)[1], seed=tiny_seed)
        lm = _load_checkpoint(str(folder), dtype, device, False, attn_implementation)
    else:
        lm = _load_checkpoint(str(path), dtype, device, trust_remote_code, attn_implementation)
    if adapter:
        from peft import PeftModel

        lm.model = PeftModel.from_pretrained(lm.model, adapter)
    lm.model.eval()
    return lm


def toy_family(path: str) -> str | None:
    """The family of a toy model path (`tiny:FAMILY`, `tiny-warm:FAMILY`: the same architecture), else None."""
    for prefix in ("tiny:", WARM_PREFIX):
        if str(path).startswith(prefix):
            return str(path)[len(prefix):]
    return None


def _load_checkpoint(path: str, dtype: str, device: str, trust_remote_code: bool, attn_implementation: str | None) -> AudioLM:
    from transformers import AutoFeatureExtractor, AutoTokenizer

    config = _read_config(path, trust_remote_code)
    family = family_for_config(config)
    family.check_installed()
    _refuse_router_aux_loss(config, path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    check_tokenizer(tokenizer, family, path)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = dict(dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if config.model_type in family.thinker_of:
        import transformers

        full = getattr(transformers, family.thinker_of[config.model_type]).from_pretrained(path, **kwargs)
        model = full.thinker
        del full
    else:
        model = family.model_class.from_pretrained(path, **kwargs)
    model.to(device)
    feature_extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return AudioLM(model, tokenizer, feature_extractor, family, str(path))


def _read_config(path: str, trust_remote_code: bool):
    """The checkpoint's config; a folder that is not there, or a hub id not in the local cache, is one line."""
    from transformers import AutoConfig

    hint = ("give a model folder (config.json, weights, tokenizer), a hub id in the local cache, tiny:FAMILY "
            "or tiny-warm:FAMILY")
    p = Path(path).expanduser()
    looks_local = p.is_absolute() or path.startswith((".", "~")) or path.count("/") != 1 or path.endswith("/")
    if not p.exists() and looks_local:
        raise PathError(f"model {path}: no such folder; {hint}")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise PathError(f"model {path}: cannot read its config ({describe_error(e)}); {hint}") from None


def _refuse_router_aux_loss(config: Any, path: str) -> None:
    """A mixture-of-experts model trains without the router's load-balancing loss, as its own
    forward does with the released config (`output_router_logits: false`, Qwen3-Omni). A config
    that asks for the loss is refused rather than silently trained without it."""
    text = getattr(getattr(config, "thinker_config", config), "text_config", None)
    if getattr(text, "output_router_logits", False):
        raise ValueError(
            f"{path}: text_config.output_router_logits is true, i.e. the router's load-balancing loss "
            f"(coefficient {getattr(text, 'router_aux_loss_coef', '?')}) is part of its training loss; harken "
            "trains mixture-of-experts models without it, as the released Qwen3-Omni config does. "
            "Set output_router_logits to false in config.json to train without it."
        )


def check_tokenizer(tokenizer, family, path: str) -> None:
    """The family's audio tokens must be in the tokenizer, or prompts get no audio placeholders."""
    audio = [t for t in dict.fromkeys((family.audio_token, *family.special_tokens)) if t in family.audio_prefix]
    vocab = tokenizer.get_vocab()
    missing = [t for t in audio if t not in vocab]
    if missing:
        raise PathError(
            f"tokenizer missing in {path}: it lacks the {family.name} audio token(s) {', '.join(missing)}; copy the "
            f"base model's tokenizer files (tokenizer.json, tokenizer_config.json, ...) into {path}"
        )


def save_audio_lm(lm: AudioLM, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                  dtype: torch.dtype | None = None) -> None:
    """save_pretrained of model, tokenizer and feature extractor (and the family's processor, if it has one).

    Args:
        state_dict: the weights to write instead of the model's own (e.g. gathered from shards).
        dtype: the dtype `state_dict` holds, recorded in config.json (default: the model's).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = base_model(lm.model)
    if dtype is not None:
        model.config.dtype = dtype
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    lm.tokenizer.save_pretrained(out)
    lm.feature_extractor.save_pretrained(out)
    if lm.family.processor_class_name:
        import transformers

        processor_class = getattr(transformers, lm.family.processor_class_name)
        processor_class(feature_extractor=lm.feature_extractor, tokenizer=lm.tokenizer).save_pretrained(out)
    umask_permissions(out)  # safetensors' files come out 0600 otherwise


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
