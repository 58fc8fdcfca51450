"""Training data for a run: the dataset, the per-process resumable stream, and audio loading.

Owns: resolving `data.path` (`synthetic:SPLIT` makes the offline set under the run folder),
`DataStream` (seeded epochs, disjoint positions per process, a two-integer state for resume) and
the run's audio loader (clips cut to the encoder's window).
Does not own: reading dataset files (`harken.data.readers`), decoding audio (`harken.data.audio`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from harken.data.audio import AudioLoader
from harken.data.readers import DatasetConfig, load_dataset
from harken.data.records import Example
from harken.models.audio_lm import AudioLM

log = logging.getLogger(__name__)


def resolve_dataset(cfg: DatasetConfig, out_dir: Path, seed: int) -> list[Example]:
    """Load a dataset; `synthetic:SPLIT` makes the offline synthetic set under out_dir/data first."""
    if cfg.path.startswith("synthetic:"):
        from harken.data.synth import make_synthetic

        split = cfg.path.split(":", 1)[1] or "train"
        data_dir = out_dir / "data"
        if not (data_dir / f"{split}.jsonl").exists():
            make_synthetic(data_dir, seed=seed)
        cfg = DatasetConfig(**{**cfg.__dict__, "path": str(data_dir / f"{split}.jsonl"), "format": "canonical"})
    ds = load_dataset(cfg)
    if not ds.report.clean:
        log.warning("%s", ds.report.summary())
    return list(ds)


class DataStream:
    """Endless, resumable stream of examples for one process.

    Each epoch is a seeded permutation; process r of W takes positions r, r+W, r+2W, ... so
    processes never draw the same example in an epoch. The state is two integers.
    """

    def __init__(self, examples: list[Example], seed: int, rank: int = 0, world: int = 1):
        if not examples:
            raise ValueError("the training set is empty")
        self.examples, self.seed, self.rank, self.world = examples, seed, rank, world
        self.epoch, self.index = 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))
        mine = order[self.rank :: self.world]
        return mine.tolist() if len(mine) else order.tolist()

    def take(self, n: int) -> list[Example]:
        out = []
        while len(out) < n:
            if self.index >= len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.examples[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    @staticmethod
    def rescaled(state: dict[str, int], old_world: int, new_world: int) -> dict[str, int]:
        """A process's position when a run written by `old_world` processes resumes on `new_world`.

        Process r of W takes positions r, r+W, ... of the epoch's permutation, so after `index`
        draws each, the first index x W positions are used; the new processes continue from there.
        """
        return {"epoch": int(state["epoch"]), "index": int(state["index"]) * old_world // new_world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._perm()


def make_audio_loader(lm: AudioLM, prompt_cfg) -> AudioLoader:
    # Never keep more than the encoder's window: the feature extractor would cut it anyway.
    max_s = min(prompt_cfg.max_audio_seconds, lm.window_seconds)
    policy = prompt_cfg.long_clip_policy
    return AudioLoader(lm.sampling_rate, max_s, policy)
