"""Loading and saving models: one entry point for checkpoints, hub ids and `tiny:` toy models.

Owns: `load_audio_lm` (safetensors only, no remote code unless asked; a full Qwen2.5-Omni
checkpoint loads its thinker only; `tiny:FAMILY` builds the toy model in memory), dtype names,
`save_audio_lm` (a `save_pretrained` folder that transformers loads), parameter counts.
Does not own: building toy models (`harken.models.toy`), training set-up (`harken.train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from harken.models.audio_lm import AudioLM
from harken.models.families import QWEN2_AUDIO, base_model, family_for_config


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
    evaluated with `--model tiny:FAMILY --adapter RUN/final`.

    Safe by default: weights from safetensors only, no remote code unless asked for.
    A full Qwen2.5-Omni checkpoint loads its thinker only (the talker is not needed for text).
    """
    if str(path).startswith("tiny:"):
        from harken.models.toy import build_tiny

        lm = build_tiny(str(path).split(":", 1)[1], seed=tiny_seed)
        lm.model.to(device=device, dtype=resolve_dtype(dtype, device))
    else:
        lm = _load_checkpoint(str(path), dtype, device, trust_remote_code, attn_implementation)
    if adapter:
        from peft import PeftModel

        lm.model = PeftModel.from_pretrained(lm.model, adapter)
    lm.model.eval()
    return lm


def _load_checkpoint(path: str, dtype: str, device: str, trust_remote_code: bool, attn_implementation: str | None) -> AudioLM:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    family = family_for_config(config)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = dict(dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if config.model_type == "qwen2_5_omni":
        import transformers

        full = transformers.Qwen2_5OmniForConditionalGeneration.from_pretrained(path, **kwargs)
        model = full.thinker
        del full
    else:
        model = family.model_class.from_pretrained(path, **kwargs)
    model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    feature_extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return AudioLM(model, tokenizer, feature_extractor, family, str(path))


def save_audio_lm(lm: AudioLM, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                  dtype: torch.dtype | None = None) -> None:
    """save_pretrained of model, tokenizer and feature extractor (and processor for Qwen2-Audio).

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
    if lm.family is QWEN2_AUDIO:
        from transformers import Qwen2AudioProcessor

        proc = Qwen2AudioProcessor(feature_extractor=lm.feature_extractor, tokenizer=lm.tokenizer)
        proc.save_pretrained(out)


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
