"""What the model hears in each `--audio` mode: the clip, nothing, silence, or another item's clip.

Owns: the modes (`AUDIO_MODES`), the seeded derangement that gives every clip another clip to be
heard in its place (`donor_clips`), what stands for a clip without its audio (`without_audio`:
None, a prompt without audio, or silence of its length; `harken data curate` uses it too), and
the waveform a mode gives for an item (`Hearing.clip`). Comparing an evaluation in `real` mode with one in `none` or
`silence` mode tells how much of the score needs the audio (`harken eval compare --audio-gain`).

Does not own: decoding clips (`harken.data.audio`), a prompt without audio (`AudioLM.encode_prompts`
with a clip of None: the family's chat layout without its audio prefix), running and recording the
evaluation (`harken.eval.run`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from harken.data.records import Example

AUDIO_MODES = {
    "real": "the clip as given",
    "none": "no audio: a text-only prompt, the chat layout without its audio placeholder",
    "silence": "silence (zeros) of the clip's length",
    "shuffled": "another item's clip (a seeded derangement: never the item's own clip)",
}
SHUFFLE_SEED = 0  # the derangement of `shuffled`: fixed, so a rerun pairs the same clips
WITHOUT_AUDIO = ("none", "silence")  # the modes that take the audio away


def without_audio(mode: str, wave: np.ndarray) -> np.ndarray | None:
    """What the model hears instead of `wave` in a mode of `WITHOUT_AUDIO`."""
    if mode not in WITHOUT_AUDIO:
        raise ValueError(f"{mode!r} is not one of: {', '.join(WITHOUT_AUDIO)}")
    return None if mode == "none" else np.zeros_like(wave)


def check_mode(mode: str) -> str:
    if mode not in AUDIO_MODES:
        raise ValueError(f"--audio {mode!r} is not one of: {', '.join(AUDIO_MODES)}")
    return mode


def donor_clips(examples: Sequence[Example], seed: int = SHUFFLE_SEED) -> dict[str, str]:
    """Clip -> the clip heard in its place: one seeded random cycle through the distinct clips.

    A cycle over all of them, so no clip is its own donor and items that share a clip (several
    questions about one recording) hear another recording. Depends only on the clips and `seed`.
    """
    clips = list(dict.fromkeys(ex.audio for ex in examples))
    if len(clips) < 2:
        raise ValueError(f"--audio shuffled needs at least 2 distinct clips to swap, the set has {len(clips)}")
    order = np.random.default_rng(seed).permutation(len(clips))
    return {clips[order[i]]: clips[order[(i + 1) % len(clips)]] for i in range(len(clips))}


class Hearing:
    """The waveform an item is evaluated with, in one mode.

    Args:
        mode: one of `AUDIO_MODES`.
        examples: every item of the set (the derangement of `shuffled` is over all of them, so it
            does not change with --limit or between the invocations of a resumed run).
        load: clip path -> waveform (`harken.data.audio.AudioLoader.load`).
    """

    def __init__(self, mode: str, examples: Sequence[Example], load: Callable[[str], np.ndarray]):
        self.mode, self.load = check_mode(mode), load
        self.donors = donor_clips(examples) if mode == "shuffled" else {}

    def clip(self, ex: Example) -> np.ndarray | None:
        """The waveform `ex` is asked about: its clip, None (no audio), zeros of its length, or its donor's clip."""
        if self.mode == "none":
            return None
        if self.mode == "shuffled":
            return self.load(self.donors[ex.audio])
        wave = self.load(ex.audio)
        return without_audio(self.mode, wave) if self.mode == "silence" else wave
