"""Model families: what differs between the supported architectures, and nothing else.

Owns: one `Family` per architecture (Qwen2-Audio, the Qwen2.5-Omni thinker) that knows the chat
layout, the audio placeholder, how many placeholder tokens a clip needs, which modules are the
audio encoder and the language model, and how to run the encoder on its own (the rollout and
log-prob code composes encoder and language model, which is what lets a group share its prompt);
`base_model`, which unwraps peft and DDP wrappers.
Does not own: the model bundle (`harken.models.audio_lm`), loading (`harken.models.loading`),
toy models (`harken.models.toy`).

A real checkpoint (`Qwen/Qwen2-Audio-7B-Instruct`) and a toy model go through exactly the same
code: the family is read from the checkpoint's `config.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_BOS = "<|audio_bos|>"
AUDIO_EOS = "<|audio_eos|>"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"


def audio_tokens_for_frames(n_frames: int | torch.Tensor):
    """Placeholder tokens for a clip of `n_frames` valid mel frames (both families: conv stride 2, pool 2)."""
    after_conv = (n_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """What differs between supported architectures. Everything else is shared code."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values this family loads
    system_prompt: str
    audio_prefix: str  # text before the user text, holding one AUDIO_TOKEN placeholder
    module_paths: dict[str, str]  # audio_tower / projector / language_model / embed_tokens / lm_head
    encoder_modules: tuple[str, ...]  # parameter-name prefixes of the audio encoder (freeze, LoRA exclusion)
    unused_modules: tuple[str, ...]  # parameter-name prefixes never used for audio questions (always frozen)
    # Runs the audio encoder: (model, input_features [A, M, F], feature_mask [A, F]) -> [sum tokens, D_enc]
    run_encoder: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    model_class_name: str

    def chat_text(self, user_text: str) -> str:
        """The full prompt string, ending with the assistant header (one audio placeholder)."""
        return (
            f"{IM_START}system\n{self.system_prompt}{IM_END}\n"
            f"{IM_START}user\n{self.audio_prefix}{user_text}{IM_END}\n"
            f"{IM_START}assistant\n"
        )

    def module(self, model: nn.Module, role: str) -> nn.Module:
        obj = base_model(model)
        for part in self.module_paths[role].split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def model_class(self):
        import transformers

        return getattr(transformers, self.model_class_name)


def base_model(model: nn.Module) -> nn.Module:
    """Unwrap peft and accelerate/DDP wrappers to the transformers model (LoRA layers stay in place)."""
    while True:
        if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) and not hasattr(model, "config"):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def _qwen2_audio_encoder(model: nn.Module, feats: torch.Tensor, fmask: torch.Tensor) -> torch.Tensor:
    # Same computation as Qwen2AudioModel.forward: padded frames are masked out in attention,
    # then only each clip's valid pooled positions are kept.
    from transformers.masking_utils import create_bidirectional_mask

    tower = QWEN2_AUDIO.module(model, "audio_tower")
    feat_lens, out_lens = tower._get_feat_extract_output_lengths(fmask.sum(-1))
    n_audio, _, mel_len = feats.shape
    max_len = (mel_len - 2) // 2 + 1
    valid = torch.arange(max_len, device=feats.device)[None, :] < feat_lens[:, None].to(feats.device)
    dtype = next(tower.parameters()).dtype
    mask = create_bidirectional_mask(
        config=tower.config,
        inputs_embeds=torch.zeros(n_audio, max_len, 1, dtype=dtype, device=feats.device),
        attention_mask=valid.long(),
    )
    hidden = tower(feats.to(dtype), attention_mask=mask).last_hidden_state  # [A, max_len/2, D_enc]
    keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < out_lens[:, None].to(hidden.device)
    return hidden[keep]  # [sum tokens, D_enc]


def _omni_encoder(model: nn.Module, feats: torch.Tensor, fmask: torch.Tensor) -> torch.Tensor:
    # The thinker's encoder only processes valid frames and projects to the text width itself.
    thinker_model = QWEN25_OMNI.module(model, "thinker_model")
    dtype = next(thinker_model.audio_tower.parameters()).dtype
    return thinker_model.get_audio_features(feats.to(dtype), fmask, return_dict=True).last_hidden_state


QWEN2_AUDIO = Family(
    name="qwen2-audio",
    model_types=("qwen2_audio",),
    system_prompt="You are a helpful assistant.",
    audio_prefix=f"Audio 1: {AUDIO_BOS}{AUDIO_TOKEN}{AUDIO_EOS}\n",
    module_paths={
        "audio_tower": "model.audio_tower",
        "projector": "model.multi_modal_projector",
        "language_model": "model.language_model",
        "embed_tokens": "model.language_model.embed_tokens",
        "lm_head": "lm_head",
    },
    encoder_modules=("model.audio_tower.",),
    unused_modules=(),
    run_encoder=_qwen2_audio_encoder,
    model_class_name="Qwen2AudioForConditionalGeneration",
)

QWEN25_OMNI = Family(
    name="qwen2.5-omni",
    model_types=("qwen2_5_omni_thinker", "qwen2_5_omni"),
    system_prompt=(
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
        "auditory and visual inputs, as well as generating text and speech."
    ),
    audio_prefix=f"{AUDIO_BOS}{AUDIO_TOKEN}{AUDIO_EOS}",
    module_paths={
        "thinker_model": "model",
        "audio_tower": "model.audio_tower",
        "projector": "",  # projection lives inside the Omni audio tower
        "language_model": "model.language_model",
        "embed_tokens": "model.language_model.embed_tokens",
        "lm_head": "lm_head",
    },
    encoder_modules=("model.audio_tower.",),
    # The thinker's vision encoder, and an audio-tower embedding only its streaming mode uses.
    unused_modules=("model.visual.", "model.audio_tower.audio_bos_eos_token."),
    run_encoder=_omni_encoder,
    model_class_name="Qwen2_5OmniThinkerForConditionalGeneration",
)

FAMILIES: dict[str, Family] = {f.name: f for f in (QWEN2_AUDIO, QWEN25_OMNI)}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; supported: {', '.join(FAMILIES)}") from None


def family_for_config(config: Any) -> Family:
    mt = getattr(config, "model_type", None)
    for fam in FAMILIES.values():
        if mt in fam.model_types:
            return fam
    raise ValueError(f"model type {mt!r} is not supported; supported families: {', '.join(FAMILIES)}")
