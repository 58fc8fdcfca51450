"""Model families: what differs between the supported architectures, and nothing else.

Owns: one `Family` per architecture (Qwen2-Audio, the Qwen2.5-Omni and Qwen3-Omni thinkers, Audio Flamingo 3)
that knows the chat layout and its special tokens, the audio placeholder, how many placeholder
tokens a clip needs, the tokens that end a turn, which modules are the audio encoder and the
language model, and how to run the encoder on its own (the rollout and log-prob code composes
encoder and language model, which is what lets a group share its prompt); the transformers
classes a checkpoint loads and saves with; `base_model`, which unwraps peft and DDP wrappers.
Does not own: the model bundle (`harken.models.audio_lm`), loading (`harken.models.loading`),
toy models (`harken.models.toy`).

A real checkpoint (`Qwen/Qwen2-Audio-7B-Instruct`) and a toy model go through exactly the same
code: the family is read from the checkpoint's `config.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_BOS = "<|audio_bos|>"
AUDIO_EOS = "<|audio_eos|>"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
AF3_SOUND = "<sound>"  # Audio Flamingo 3's audio placeholder
# Qwen3-Omni's audio placeholder and the tokens around it.
AUDIO_PAD, AUDIO_START, AUDIO_END = "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>"


def audio_tokens_for_frames(n_frames: int | torch.Tensor):
    """Placeholder tokens for a clip of `n_frames` valid mel frames (Whisper conv stride 2, then pool 2:
    Qwen2-Audio, the Qwen2.5-Omni thinker, Audio Flamingo 3)."""
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
    audio_token: str = AUDIO_TOKEN  # the placeholder, repeated once per audio token of the clip
    # The special tokens the chat layout and audio placeholders use (a toy tokenizer gets exactly these).
    special_tokens: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS)
    eos_tokens: tuple[str, ...] = (IM_END, ENDOFTEXT)  # tokens that end the assistant's turn
    # Placeholder tokens for a clip of n valid mel frames (the model's own processor's count).
    audio_token_count: Callable[[Any], Any] = audio_tokens_for_frames
    feature_mask_arg: str = "feature_attention_mask"  # the model forward's name for the valid-frame mask
    processor_class_name: str = ""  # saved beside the model when set, so AutoProcessor loads the folder
    # config.model_type of a full (talker-carrying) checkpoint -> its class; only its `.thinker` is loaded.
    thinker_of: dict[str, str] = field(default_factory=dict)

    def chat_text(self, user_text: str) -> str:
        """The full prompt string, ending with the assistant header (one audio placeholder).

        A family without a default system prompt gets no system turn (as its own chat template)."""
        system = f"{IM_START}system\n{self.system_prompt}{IM_END}\n" if self.system_prompt else ""
        return (
            f"{system}"
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


# Module paths (see `Family.module_paths`) of an encoder + projector + language model, and of an
# Omni thinker, whose audio tower projects to the text width itself.
_ENCODER_PROJECTOR_LM = {
    "audio_tower": "model.audio_tower",
    "projector": "model.multi_modal_projector",
    "language_model": "model.language_model",
    "embed_tokens": "model.language_model.embed_tokens",
    "lm_head": "lm_head",
}
_OMNI_THINKER = {
    "thinker_model": "model",
    "audio_tower": "model.audio_tower",
    "projector": "",
    "language_model": "model.language_model",
    "embed_tokens": "model.language_model.embed_tokens",
    "lm_head": "lm_head",
}


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


def _thinker_audio(family: "Family", model: nn.Module, feats: torch.Tensor, fmask: torch.Tensor) -> torch.Tensor:
    # An Omni thinker's encoder only processes valid frames and projects to the text width itself.
    thinker_model = family.module(model, "thinker_model")
    dtype = next(thinker_model.audio_tower.parameters()).dtype
    return thinker_model.get_audio_features(feats.to(dtype), fmask, return_dict=True).last_hidden_state


QWEN2_AUDIO = Family(
    name="qwen2-audio",
    model_types=("qwen2_audio",),
    system_prompt="You are a helpful assistant.",
    audio_prefix=f"Audio 1: {AUDIO_BOS}{AUDIO_TOKEN}{AUDIO_EOS}\n",
    module_paths=_ENCODER_PROJECTOR_LM,
    encoder_modules=("model.audio_tower.",),
    unused_modules=(),
    run_encoder=_qwen2_audio_encoder,
    model_class_name="Qwen2AudioForConditionalGeneration",
    processor_class_name="Qwen2AudioProcessor",
)

QWEN25_OMNI = Family(
    name="qwen2.5-omni",
    model_types=("qwen2_5_omni_thinker", "qwen2_5_omni"),
    system_prompt=(
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
        "auditory and visual inputs, as well as generating text and speech."
    ),
    audio_prefix=f"{AUDIO_BOS}{AUDIO_TOKEN}{AUDIO_EOS}",
    module_paths=_OMNI_THINKER,
    encoder_modules=("model.audio_tower.",),
    # The thinker's vision encoder, and an audio-tower embedding only its streaming mode uses.
    unused_modules=("model.visual.", "model.audio_tower.audio_bos_eos_token."),
    run_encoder=lambda model, feats, fmask: _thinker_audio(QWEN25_OMNI, model, feats, fmask),
    model_class_name="Qwen2_5OmniThinkerForConditionalGeneration",
    thinker_of={"qwen2_5_omni": "Qwen2_5OmniForConditionalGeneration"},
)

def _af3_encoder(model: nn.Module, feats: torch.Tensor, fmask: torch.Tensor) -> torch.Tensor:
    # Same computation as AudioFlamingo3Model.get_audio_features before its projector (a per-token
    # MLP, applied by `AudioLM.project_audio`): the tower masks padded frames in attention itself.
    tower = AUDIO_FLAMINGO_3.module(model, "audio_tower")
    dtype = next(tower.parameters()).dtype
    hidden = tower(feats.to(dtype), input_features_mask=fmask).last_hidden_state  # [A, window/4, D_enc]
    _, out_lens = tower._get_feat_extract_output_lengths(fmask.sum(-1))
    keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < out_lens[:, None].to(hidden.device)
    return hidden[keep]  # [sum tokens, D_enc]


# Audio Flamingo 3 (nvidia/audio-flamingo-3-hf): a Whisper-large encoder (pool 2, layer norm), a
# two-layer MLP projector and Qwen2.5-7B. Its processor's chat template: the default system turn,
# then `<sound>` (expanded to one token per pooled frame) directly before the user text. Its
# processor cuts longer audio into 30 s windows (up to 20); harken feeds one window per clip
# (clips are truncated to the window), where the count is the same formula as Qwen2-Audio's.
AUDIO_FLAMINGO_3 = Family(
    name="audio-flamingo-3",
    model_types=("audioflamingo3",),
    system_prompt="You are a helpful assistant.",
    audio_prefix=AF3_SOUND,
    module_paths=_ENCODER_PROJECTOR_LM,
    encoder_modules=("model.audio_tower.",),
    unused_modules=(),
    run_encoder=_af3_encoder,
    model_class_name="AudioFlamingo3ForConditionalGeneration",
    audio_token=AF3_SOUND,
    special_tokens=(ENDOFTEXT, IM_START, IM_END, AF3_SOUND),
    feature_mask_arg="input_features_mask",
    processor_class_name="AudioFlamingo3Processor",
)

def qwen3_omni_audio_tokens(n_frames: int | torch.Tensor, n_window: int = 50):
    """Qwen3-Omni's placeholder count (its processor's): 13 tokens per 100-frame chunk, then the rest."""
    chunk = n_window * 2
    rest = (n_frames % chunk - 1) // 2 + 1
    return ((rest - 1) // 2 + 1 - 1) // 2 + 1 + (n_frames // chunk) * 13


# The Qwen3-Omni thinker (Qwen/Qwen3-Omni-30B-A3B-Instruct): its own audio encoder (chunks of 100
# mel frames, projection to the text width inside the tower, valid frames only) and a mixture-of-
# experts language model (48 layers, 128 experts, 8 per token). Its chat template has no default
# system turn; a clip is `<|audio_start|>` + one `<|audio_pad|>` per token + `<|audio_end|>`
# before the user text. Routing is per token, so the shared prefix routes each prompt token
# exactly as the naive path does, with the configured expert count and top-k.
QWEN3_OMNI = Family(
    name="qwen3-omni",
    model_types=("qwen3_omni_moe_thinker", "qwen3_omni_moe"),
    system_prompt="",
    audio_prefix=f"{AUDIO_START}{AUDIO_PAD}{AUDIO_END}",
    module_paths=_OMNI_THINKER,
    encoder_modules=("model.audio_tower.",),
    unused_modules=("model.visual.",),  # the vision encoder
    run_encoder=lambda model, feats, fmask: _thinker_audio(QWEN3_OMNI, model, feats, fmask),
    model_class_name="Qwen3OmniMoeThinkerForConditionalGeneration",
    audio_token=AUDIO_PAD,
    special_tokens=(ENDOFTEXT, IM_START, IM_END, AUDIO_PAD, AUDIO_START, AUDIO_END),
    audio_token_count=qwen3_omni_audio_tokens,
    thinker_of={"qwen3_omni_moe": "Qwen3OmniMoeForConditionalGeneration"},
)

FAMILIES: dict[str, Family] = {f.name: f for f in (QWEN2_AUDIO, QWEN25_OMNI, AUDIO_FLAMINGO_3, QWEN3_OMNI)}


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
