"""Model families: turning audio questions into model inputs, loading checkpoints, toy models.

Owns: one `Family` per supported architecture (Qwen2-Audio, the Qwen2.5-Omni thinker) that
knows the chat layout, the audio placeholder, how many placeholder tokens a clip needs, which
tokens end a turn, and how to run the audio encoder and the language model separately (the
rollout and log-prob code composes them, which is what lets a group share its prompt); the
`AudioLM` bundle (model + tokenizer + feature extractor + family); safe loading of a checkpoint
or adapter; offline construction of toy-size models of the real architectures.

Does not own: sampling (`harken.rl.rollout`), losses (`harken.rl.algorithm`), prompt wording
(`harken.data.prompts`).

A real checkpoint (`Qwen/Qwen2-Audio-7B-Instruct`) and a toy model go through exactly the same
code: the family is read from the checkpoint's `config.json`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

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
        obj = _base_model(model)
        for part in self.module_paths[role].split("."):
            obj = getattr(obj, part)
        return obj

    @property
    def model_class(self):
        import transformers

        return getattr(transformers, self.model_class_name)


def _base_model(model: nn.Module) -> nn.Module:
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


# --------------------------------------------------------------------------------------------
# The bundle every trainer and evaluator uses
# --------------------------------------------------------------------------------------------


@dataclass
class PromptBatch:
    """B left-padded prompts with their clips. Shapes: B prompts, P prompt tokens, F mel frames."""

    input_ids: torch.Tensor  # [B, P] long, left padded
    attention_mask: torch.Tensor  # [B, P] long
    input_features: torch.Tensor  # [B, M, F] log-mel
    feature_mask: torch.Tensor  # [B, F] long, valid mel frames
    audio_token_counts: list[int]  # placeholder tokens per prompt

    def to(self, device) -> "PromptBatch":
        return PromptBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.input_features.to(device),
            self.feature_mask.to(device),
            self.audio_token_counts,
        )

    def repeat_interleave(self, g: int) -> "PromptBatch":
        """Each prompt repeated g times in place (the naive GRPO layout: [p0]*g + [p1]*g ...)."""
        return PromptBatch(
            self.input_ids.repeat_interleave(g, 0),
            self.attention_mask.repeat_interleave(g, 0),
            self.input_features.repeat_interleave(g, 0),
            self.feature_mask.repeat_interleave(g, 0),
            [c for c in self.audio_token_counts for _ in range(g)],
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class AudioLM:
    """A model with everything needed to feed it audio questions."""

    model: nn.Module
    tokenizer: Any
    feature_extractor: Any
    family: Family
    path: str = ""

    # --- token facts -------------------------------------------------------------------------
    @property
    def audio_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)

    @property
    def pad_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return pid if pid is not None else self.tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    @property
    def eos_ids(self) -> list[int]:
        """Tokens that end the assistant's turn."""
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in (IM_END, ENDOFTEXT)}
        return sorted(i for i in ids if i is not None and i >= 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def window_seconds(self) -> float:
        return float(self.feature_extractor.n_samples) / self.sampling_rate

    # --- inputs ---------------------------------------------------------------------------------
    def encode_prompts(self, user_texts: Sequence[str], audios: Sequence[np.ndarray]) -> PromptBatch:
        """Chat-format, expand the audio placeholder to the clip's token count, left pad."""
        if len(user_texts) != len(audios):
            raise ValueError(f"{len(user_texts)} prompts but {len(audios)} clips")
        fe = self.feature_extractor(
            [np.asarray(a, dtype=np.float32) for a in audios],
            sampling_rate=self.sampling_rate,
            return_attention_mask=True,
            padding="max_length",
            return_tensors="pt",
        )
        feats, fmask = fe["input_features"], fe["attention_mask"].long()
        counts = [int(audio_tokens_for_frames(int(n))) for n in fmask.sum(-1)]
        rows = []
        for text, n in zip(user_texts, counts):
            chat = self.family.chat_text(text).replace(AUDIO_TOKEN, AUDIO_TOKEN * n, 1)
            rows.append(self.tokenizer(chat, add_special_tokens=False)["input_ids"])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        return PromptBatch(ids, mask, feats, fmask, counts)

    # --- the pieces of a forward pass (composed by harken.rl.rollout) -----------------------------
    def encode_audio(self, batch: PromptBatch) -> torch.Tensor:
        """Audio encoder output for the batch's clips, valid tokens only: [sum tokens, D_enc]."""
        return self.family.run_encoder(self.model, batch.input_features, batch.feature_mask)

    def project_audio(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoder output -> text embedding width ([sum tokens, H])."""
        if not self.family.module_paths["projector"]:
            return encoded
        return self.family.module(self.model, "projector")(encoded)

    def embed_prompts(self, batch: PromptBatch, encoded_audio: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the audio placeholders replaced by projected audio: [B, P, H].

        Args:
            encoded_audio: a previous `encode_audio` result to reuse (frozen encoder), else computed.
        """
        embed = self.family.module(self.model, "embed_tokens")
        emb = embed(batch.input_ids)
        audio = self.project_audio(self.encode_audio(batch) if encoded_audio is None else encoded_audio)
        where = (batch.input_ids == self.audio_token_id).unsqueeze(-1)
        if int(where.sum()) != audio.shape[0]:
            raise ValueError(f"{int(where.sum())} audio placeholders but {audio.shape[0]} audio features")
        return emb.masked_scatter(where, audio.to(emb.dtype))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.family.module(self.model, "embed_tokens")(ids)

    def text_forward(self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache=None):
        """Run the language model (no head). Returns (hidden [N, L, H], cache)."""
        lm = self.family.module(self.model, "language_model")
        out = lm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
        )
        return out.last_hidden_state, out.past_key_values

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.family.module(self.model, "lm_head")(hidden)

    def new_cache(self):
        from transformers import DynamicCache

        lm = self.family.module(self.model, "language_model")
        return DynamicCache(config=lm.config)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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
) -> AudioLM:
    """Load a checkpoint (local folder or hub id already in the local cache) of a supported family.

    `tiny:FAMILY` rebuilds the toy model that training runs with `model.path=tiny:FAMILY` start
    from, so their LoRA adapters can be evaluated with `--model tiny:FAMILY --adapter RUN/final`.

    Safe by default: weights from safetensors only, no remote code unless asked for.
    A full Qwen2.5-Omni checkpoint loads its thinker only (the talker is not needed for text).
    """
    from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer

    if str(path).startswith("tiny:"):
        # The toy model a "tiny:FAMILY" training run started from (seed 0), rebuilt in memory.
        lm = build_tiny(str(path).split(":", 1)[1], seed=0)
        lm.model.to(device=device, dtype=resolve_dtype(dtype, device))
        if adapter:
            from peft import PeftModel

            lm.model = PeftModel.from_pretrained(lm.model, adapter)
        lm.model.eval()
        return lm
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
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return AudioLM(model, tokenizer, feature_extractor, family, str(path))


# --------------------------------------------------------------------------------------------
# Toy models
# --------------------------------------------------------------------------------------------

# Named architecture sizes for tests, the demo and the benchmark. "small" matches the prototype
# the performance notes were measured on (real 30 s window).
SIZES: dict[str, dict[str, int]] = {
    "toy": dict(window=5, enc_d=64, enc_layers=2, enc_heads=4, enc_ffn=128, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "small": dict(window=30, enc_d=256, enc_layers=4, enc_heads=4, enc_ffn=1024, hidden=256, layers=4, heads=4, kv_heads=2, ffn=1024),
}

_CORPUS = [
    "Please choose the answer from the following options:",
    "Output the final answer in <answer> </answer>.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer>.",
    "Answer with the option's letter in <answer> </answer>.",
    "What is the sound in the audio? Which instrument is playing? How many times? Is the second one higher or lower?",
    "louder softer longer shorter rising falling higher lower sine square sawtooth noise one two three four five six",
    "seven eight nine zero yes no man woman child speech music sound the a of in what which how many",
]


def train_toy_tokenizer(extra_texts: Iterable[str] = (), vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen2's pre-tokenizer and special tokens, trained locally."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS, "<think>", "</think>", "<answer>", "</answer>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials[:6],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(_CORPUS) * 20 + list(extra_texts)
    tok.train_from_iterator(texts, trainer)
    # Tags are added as ordinary (non-special) tokens so they decode with skip_special_tokens.
    tokenizer = Qwen2Tokenizer(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT)
    tokenizer.add_tokens(specials[6:])
    return tokenizer


def build_tiny(
    family: str = "qwen2-audio",
    out: str | Path | None = None,
    *,
    size: str = "toy",
    seed: int = 0,
    extra_texts: Iterable[str] = (),
    vocab_size: int = 512,
) -> AudioLM:
    """Build a toy-size model of a real architecture, offline, and optionally save it.

    The saved folder loads with `from_pretrained` (model, tokenizer, feature extractor; for
    Qwen2-Audio also the processor), and with `load_audio_lm`.
    """
    import transformers
    from transformers import WhisperFeatureExtractor

    fam = get_family(family)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of: {', '.join(SIZES)}")
    s = SIZES[size]
    torch.manual_seed(seed)
    tokenizer = train_toy_tokenizer(extra_texts, vocab_size=vocab_size)
    vocab = len(tokenizer)
    audio_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    head_dim = s["hidden"] // s["heads"]
    text = dict(
        vocab_size=vocab,
        hidden_size=s["hidden"],
        intermediate_size=s["ffn"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
    )
    audio = dict(
        num_mel_bins=128,
        encoder_layers=s["enc_layers"],
        encoder_attention_heads=s["enc_heads"],
        encoder_ffn_dim=s["enc_ffn"],
        d_model=s["enc_d"],
        # The encoder requires mel length == 2 x max_source_positions; 100 mel frames per second.
        max_source_positions=s["window"] * 50,
    )
    if fam is QWEN2_AUDIO:
        config = transformers.Qwen2AudioConfig(
            audio_config={"model_type": "qwen2_audio_encoder", **audio},
            text_config={"model_type": "qwen2", **text},
            audio_token_index=audio_id,
        )
        model = transformers.Qwen2AudioForConditionalGeneration(config)
    else:
        third = head_dim // 2
        mrope = [third - 2 * (third // 3), third // 3, third // 3]
        config = transformers.Qwen2_5OmniThinkerConfig(
            audio_config={**audio, "n_window": 50, "output_dim": s["hidden"]},
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=s["hidden"],
                               fullatt_block_indexes=[0]),
            text_config={**text, "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": mrope}},
            audio_token_index=audio_id,
            audio_start_token_id=tokenizer.convert_tokens_to_ids(AUDIO_BOS),
            audio_end_token_id=tokenizer.convert_tokens_to_ids(AUDIO_EOS),
            image_token_index=vocab + 10,
            video_token_index=vocab + 11,
        )
        # Read by the thinker's own rope-index code (the full Omni config carries it).
        config.vision_start_token_id = vocab + 12
        model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=s["window"], n_fft=400)
    model.eval()
    lm = AudioLM(model, tokenizer, fe, fam, str(out or ""))
    if out is not None:
        save_audio_lm(lm, out)
    return lm


def save_audio_lm(lm: AudioLM, out: str | Path) -> None:
    """save_pretrained of model, tokenizer and feature extractor (and processor for Qwen2-Audio)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _base_model(lm.model).save_pretrained(out, safe_serialization=True)
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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _cmd_tiny(args) -> int:
    lm = build_tiny(args.family, args.out, size=args.size, seed=args.seed)
    n = count_parameters(lm.model)["total"]
    print(f"built a {args.size} {args.family} model ({n / 1e6:.2f} M parameters, {lm.window_seconds:.0f} s audio window) in {args.out}")
    return 0


def _cmd_info(args) -> int:
    lm = load_audio_lm(args.path, trust_remote_code=args.trust_remote_code)
    info = {
        "path": args.path,
        "family": lm.family.name,
        "parameters": count_parameters(lm.model)["total"],
        "audio_window_seconds": lm.window_seconds,
        "vocab": len(lm.tokenizer),
        "eos_ids": lm.eos_ids,
    }
    print(json.dumps(info, indent=2))
    return 0


def register(top, groups) -> None:
    p = groups["model"].add_parser("tiny", help="build a toy-size model of a real architecture, offline")
    p.add_argument("--family", default="qwen2-audio", choices=sorted(FAMILIES))
    p.add_argument("--size", default="toy", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_tiny)
    p = groups["model"].add_parser("info", help="load a model and print its family and size")
    p.add_argument("path")
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=_cmd_info)
