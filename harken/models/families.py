"""Model families: what differs between the supported architectures, and nothing else.

Owns: one `Family` per architecture (Qwen2-Audio, the Qwen2.5-Omni and Qwen3-Omni thinkers, Audio Flamingo 3,
Voxtral) that knows the chat layout and its special tokens, how a prompt becomes token ids, the
audio placeholder, how many placeholder tokens a clip needs, the tokens that end a turn, which
modules are the audio encoder and the language model, and how to run the encoder on its own (the
rollout and log-prob code composes encoder and language model, which is what lets a group share
its prompt); the transformers classes a checkpoint loads and saves with, and the packages its
tokenizer needs; `base_model`, which unwraps peft and DDP wrappers.
Does not own: the model bundle (`harken.models.audio_lm`), loading (`harken.models.loading`),
toy models (`harken.models.toy`).

A real checkpoint (`Qwen/Qwen2-Audio-7B-Instruct`) and a toy model go through exactly the same
code: the family is read from the checkpoint's `config.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
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
# Mistral's control tokens (mistral_common's SpecialTokens) that Voxtral's chat layout uses.
BOS, EOS, INST, END_INST = "<s>", "</s>", "[INST]", "[/INST]"
VOX_AUDIO, VOX_BEGIN_AUDIO = "[AUDIO]", "[BEGIN_AUDIO]"


def audio_tokens_for_frames(n_frames: int | torch.Tensor):
    """Placeholder tokens for a clip of `n_frames` valid mel frames (Whisper conv stride 2, then pool 2:
    Qwen2-Audio, the Qwen2.5-Omni thinker, Audio Flamingo 3)."""
    after_conv = (n_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def _chatml_parts(fam: "Family") -> tuple[str, str]:
    """The ChatML layout around the user text (Qwen's chat templates): an optional system turn, the
    user turn opening with the audio prefix, then the assistant header."""
    system = f"{IM_START}system\n{fam.system_prompt}{IM_END}\n" if fam.system_prompt else ""
    return f"{system}{IM_START}user\n{fam.audio_prefix}", f"{IM_END}\n{IM_START}assistant\n"


def _mistral_instruct_parts(fam: "Family") -> tuple[str, str]:
    """mistral_common's instruct encoding of one user turn (tokenizer v7): `<s>`, `[INST]`, the turn's
    chunks in order (the clip, then the text), `[/INST]`; no system turn (Voxtral has none)."""
    return f"{BOS}{INST}{fam.audio_prefix}", END_INST


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
    # The special tokens the chat layout and audio placeholders use (a toy Qwen2 tokenizer gets exactly these).
    special_tokens: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS)
    eos_tokens: tuple[str, ...] = (IM_END, ENDOFTEXT)  # tokens that end the assistant's turn
    end_of_turn: str = IM_END  # the token a finished assistant turn ends with in the chat layout (SFT targets)
    # Placeholder tokens for a clip of n valid mel frames (the model's own processor's count).
    audio_token_count: Callable[[Any], Any] = audio_tokens_for_frames
    # The model forward's name for the valid-frame mask ("": the model takes none).
    feature_mask_arg: str = "feature_attention_mask"
    # The encoder hears the whole window, the silence after the clip included: every frame counts as
    # valid, so every clip gets the same placeholder count.
    whole_window: bool = False
    # (family) -> (text before the user text, text after it): the chat layout.
    chat_parts: Callable[["Family"], tuple[str, str]] = _chatml_parts
    processor_class_name: str = ""  # saved beside the model when set, so AutoProcessor loads the folder
    # config.model_type of a full (talker-carrying) checkpoint -> its class; only its `.thinker` is loaded.
    thinker_of: dict[str, str] = field(default_factory=dict)
    # Packages its tokenizer needs beyond harken's own dependencies (installed by `harken[<name>]`),
    # by transformers' name: each `transformers.utils.is_<name>_available()` must be true.
    needs: tuple[str, ...] = ()

    def layout(self, audio: bool = True) -> tuple[str, str]:
        """(text before the user text, text after it); without `audio`, the same layout with no
        audio prefix: a user turn of text alone, as the model's chat template writes one."""
        return self.chat_parts(self if audio else dataclasses.replace(self, audio_prefix=""))

    def chat_text(self, user_text: str, audio: bool = True) -> str:
        """The full prompt string, ending with the assistant header (one audio placeholder, or none
        without `audio`)."""
        before, after = self.layout(audio)
        return f"{before}{user_text}{after}"

    def prompt_ids(self, tokenizer, user_text: str, n_audio: int | None) -> list[int]:
        """The prompt's token ids, the audio placeholder repeated `n_audio` times (None: a prompt
        without a clip, `layout(audio=False)`).

        The layout's special tokens are put in by id and the text between them is tokenized as
        text (the user text together with the layout text next to it), as the model's own
        processor does: a tokenizer that splits special tokens out of text (Qwen's) gives the same
        ids as for the whole string, and one that never does (Mistral's) gets its control tokens.
        """
        before, after = (_special_split(self.special_tokens).split(part) for part in self.layout(n_audio is not None))
        pieces = [*before[:-1], before[-1] + user_text + after[0], *after[1:]]  # text, special, text, ...
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                ids += [tokenizer.convert_tokens_to_ids(piece)] * (n_audio if piece == self.audio_token else 1)
            elif piece:
                ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    def check_installed(self) -> None:
        """One line naming the extra to install when a package the tokenizer needs is missing (or
        too old for transformers, which would then load the tokenizer another way)."""
        import transformers.utils

        missing = [m for m in self.needs if not getattr(transformers.utils, f"is_{m}_available")()]
        if missing:
            raise ValueError(f"the {self.name} model family needs {', '.join(missing)} (a version transformers "
                             f"accepts) for its tokenizer: pip install 'harken[{self.name}]'")

    def module(self, model: nn.Module, role: str) -> nn.Module:
        obj = base_model(model)
        for part in self.module_paths[role].split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def model_class(self):
        import transformers

        return getattr(transformers, self.model_class_name)


@functools.lru_cache(maxsize=None)
def _special_split(tokens: tuple[str, ...]) -> re.Pattern:
    """The regex whose `split` cuts a string into text, special token, text, ... (text possibly empty)."""
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ")")


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

def voxtral_audio_tokens(n_frames: int | torch.Tensor):
    """Voxtral's placeholder count (mistral_common's audio encoder: 12.5 tokens per second): one token
    per 8 mel frames of the whole window, 375 per 30 s (conv stride 2, then 4 frames per token)."""
    return n_frames // 8


def _voxtral_encoder(model: nn.Module, feats: torch.Tensor, fmask: torch.Tensor) -> torch.Tensor:
    # Same computation as VoxtralModel.get_audio_features before its projector (a per-token MLP,
    # applied by `AudioLM.project_audio`): the whole window, no valid-frame mask (Voxtral's encoder
    # takes none), then 4 consecutive frames side by side as one token of width intermediate_size.
    tower = VOXTRAL.module(model, "audio_tower")
    hidden = tower(feats).last_hidden_state  # [A, window/2, D_enc]; the tower casts to its own dtype
    return hidden.reshape(-1, tower.config.intermediate_size)  # [A * window/8, 4 * D_enc]


# Voxtral (mistralai/Voxtral-Mini-3B-2507): a Whisper-large encoder, a two-layer MLP projector
# (multi_modal_projector, 4 x 1280 -> 3072 -> 3072) and a Llama language model (Ministral-3B).
# Checked against the installed code (transformers' Voxtral model and processor, mistral_common):
# the chat layout is mistral_common's instruct encoding of one user turn holding the clip then the
# text, `<s>[INST][BEGIN_AUDIO]` + one `[AUDIO]` per token + the text + `[/INST]` (tokenizer v7:
# control tokens are never parsed out of text, so `Family.prompt_ids` puts them in by id); audio
# is padded to whole 30 s windows and every window gives 375 tokens whatever the clip's length
# (no mask: the silence is heard); `[AUDIO]` has id 24 (the processor's own constant); an
# assistant turn ends with `</s>`. Assumed, not checked (no checkpoint offline): the released
# tekken.json's special-token ids other than 24 (`[BEGIN_AUDIO]` 25 in the toy) and its version
# v7; that `</s>` is the only end-of-turn token of its generation_config. harken feeds one window per
# clip (clips are truncated to 30 s); the processor would feed every window of a longer clip.
VOXTRAL = Family(
    name="voxtral",
    model_types=("voxtral",),
    system_prompt="",
    audio_prefix=f"{VOX_BEGIN_AUDIO}{VOX_AUDIO}",
    module_paths=_ENCODER_PROJECTOR_LM,
    encoder_modules=("model.audio_tower.",),
    unused_modules=(),
    run_encoder=_voxtral_encoder,
    model_class_name="VoxtralForConditionalGeneration",
    audio_token=VOX_AUDIO,
    special_tokens=(BOS, EOS, INST, END_INST, VOX_AUDIO, VOX_BEGIN_AUDIO),
    eos_tokens=(EOS,),
    end_of_turn=EOS,
    audio_token_count=voxtral_audio_tokens,
    feature_mask_arg="",
    whole_window=True,
    chat_parts=_mistral_instruct_parts,
    processor_class_name="VoxtralProcessor",
    needs=("mistral_common",),
)

FAMILIES: dict[str, Family] = {f.name: f for f in (QWEN2_AUDIO, QWEN25_OMNI, AUDIO_FLAMINGO_3, QWEN3_OMNI, VOXTRAL)}


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
