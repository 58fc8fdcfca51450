"""The bundle every trainer and evaluator uses: a model with everything needed to feed it audio.

Owns: `AudioLM` (model + tokenizer + feature extractor + family: prompt encoding, audio features,
the composed encoder / language-model forward, caches) and `PromptBatch`, a batch of prompts.
Does not own: what differs between architectures (`harken.models.families`), sampling
(`harken.rl.rollout`), prompt wording (`harken.data.prompts`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from harken.models.families import ENDOFTEXT, Family


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

    @staticmethod
    def join(rows: Sequence[tuple["PromptBatch", int]], pad_id: int) -> "PromptBatch":
        """The given (batch, row) prompts as one batch, left padded to the longest of them.

        Equal to encoding those prompts together (`AudioLM.encode_prompts`): rows are right
        aligned, so a row keeps its last `width` columns, and clips are padded to the window.
        """
        width = max(int(b.attention_mask[i].sum()) for b, i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (b, i) in enumerate(rows):
            w = min(width, b.input_ids.shape[1])
            ids[r, width - w :] = b.input_ids[i, -w:].cpu()
            mask[r, width - w :] = b.attention_mask[i, -w:].cpu()
        device = rows[0][0].input_ids.device
        return PromptBatch(
            ids.to(device),
            mask.to(device),
            torch.stack([b.input_features[i] for b, i in rows]),
            torch.stack([b.feature_mask[i] for b, i in rows]),
            [b.audio_token_counts[i] for b, i in rows],
        )


@dataclass
class AudioLM:
    """A model with everything needed to feed it audio questions.

    Every pass through the model (a prompt pass, a micro-batch of completions, a whole rollout)
    goes through `call`, which runs it in the compute dtype (autocast over fp32 master weights)
    and, for a sharded model, as a forward of the sharding engine's root module, so that the
    pieces the shared-prefix path calls one by one (embeddings, norm, head, encoder stem) are
    gathered for the pass and their gradients reduced after it.
    """

    model: nn.Module
    tokenizer: Any
    feature_extractor: Any
    family: Family
    path: str = ""
    compute_dtype: torch.dtype | None = None  # autocast to this dtype in `call` (None: the weights' own dtype)
    entry: Callable[..., Any] | None = None  # the sharded root's registered forward method, see `call`
    gather: Callable[[], Any] | None = None  # context manager that keeps a sharded model gathered (rollouts)

    # --- passes ----------------------------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """Run `fn(*args, **kwargs)` as one pass of the model.

        Under a sharding engine, `fn`'s tensor outputs (tuples and lists of them, not dataclasses)
        must be what later backward passes start from.
        """
        with self.autocast():
            if self.entry is not None:
                return self.entry(fn, *args, **kwargs)
            return fn(*args, **kwargs)

    def autocast(self):
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    def gathered(self):
        """Keep a sharded model's weights gathered for a whole rollout (no-op when not sharded)."""
        return self.gather() if self.gather is not None else contextlib.nullcontext()

    # --- token facts -------------------------------------------------------------------------
    @property
    def audio_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.family.audio_token)

    @property
    def pad_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return pid if pid is not None else self.tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    @property
    def eos_ids(self) -> list[int]:
        """Tokens that end the assistant's turn."""
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in self.family.eos_tokens}
        return sorted(i for i in ids if i is not None and i >= 0)

    @property
    def end_of_turn_id(self) -> int:
        """The token a finished assistant turn ends with (what SFT teaches the model to stop with)."""
        return self.tokenizer.convert_tokens_to_ids(self.family.end_of_turn)

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
    def encode_prompts(self, user_texts: Sequence[str], audios: Sequence[np.ndarray | None]) -> PromptBatch:
        """Chat-format, expand the audio placeholder to the clip's token count, left pad.

        A clip of None gives a prompt without audio (the family's layout without its audio prefix,
        `Family.layout`): no placeholder, zero features, no valid frame.
        """
        if len(user_texts) != len(audios):
            raise ValueError(f"{len(user_texts)} prompts but {len(audios)} clips")
        feats, fmask = self._features(audios)
        counts = [int(self.family.audio_token_count(int(n))) if a is not None else 0
                  for n, a in zip(fmask.sum(-1), audios)]
        rows = [self.family.prompt_ids(self.tokenizer, text, n if a is not None else None)
                for text, n, a in zip(user_texts, counts, audios)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        return PromptBatch(ids, mask, feats, fmask, counts)

    def _features(self, audios: Sequence[np.ndarray | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features [B, M, F] and valid-frame mask [B, F] of the clips, zeros for a clip of None."""
        fe = self.feature_extractor
        heard = [i for i, a in enumerate(audios) if a is not None]
        feats = torch.zeros(len(audios), fe.feature_size, fe.nb_max_frames)
        fmask = torch.zeros(len(audios), fe.nb_max_frames, dtype=torch.long)
        if heard:
            out = fe([np.asarray(audios[i], dtype=np.float32) for i in heard], sampling_rate=self.sampling_rate,
                     return_attention_mask=True, padding="max_length", return_tensors="pt")
            feats[heard], fmask[heard] = out["input_features"], out["attention_mask"].long()
            if self.family.whole_window:  # the encoder hears the silence after the clip too
                fmask[heard] = 1
        return feats, fmask

    # --- the pieces of a forward pass (composed by harken.rl.rollout) -----------------------------
    def encode_audio(self, batch: PromptBatch) -> torch.Tensor:
        """Audio encoder output for the batch's clips, valid tokens only: [sum tokens, D_enc]
        (prompts without a clip contribute none)."""
        feats, fmask = batch.input_features, batch.feature_mask
        if not all(batch.audio_token_counts):
            heard = torch.tensor([n > 0 for n in batch.audio_token_counts], device=feats.device)
            feats, fmask = feats[heard], fmask[heard]
        return self.family.run_encoder(self.model, feats, fmask)

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
        if not any(batch.audio_token_counts):  # text-only prompts: the encoder is not run
            return emb
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
