"""Training data for a run: the dataset, the per-process resumable stream, and audio loading.

Owns: resolving `data.path` (`synthetic:SPLIT` makes the offline set under the run folder: the
main process writes it, the others wait for it and read it), a cheap check of every clip at start
(exists, opens, has frames: its header only; `data.check_audio` decodes them all instead),
`DataStream` (seeded epochs, disjoint positions per process, a two-integer state for resume, and
the ids to pass over once: prompts whose GRPO group had zero variance when last drawn, with
`rollout.skip_zero_variance`), the run's audio loader (clips cut to the encoder's window) and
`ClipDraw` (examples with their decoded clips); `data.filter`: training on chosen splits of a
curation. A bad clip, at start or when decoded, stops the run with the dataset file, the item id,
the clip and the reason; with `data.skip_bad` it is skipped and counted per problem kind.
Does not own: reading dataset files (`harken.data.readers`), decoding audio (`harken.data.audio`),
the curation and its splits (`harken.eval.curate`), which groups had zero variance (`harken.train.grpo`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

from harken.data.audio import AudioError, AudioLoader, audio_info
from harken.data.readers import DatasetConfig, load_dataset
from harken.data.records import Example
from harken.models.audio_lm import AudioLM

log = logging.getLogger(__name__)


def resolve_dataset(cfg: DatasetConfig, out_dir: Path, seed: int, accelerator,
                    skipped: Counter | None = None) -> list[Example]:
    """Load a dataset and check its clips; `synthetic:SPLIT` makes the offline synthetic set under out_dir/data first.

    Args:
        accelerator: the run's processes: the main one writes the synthetic set, the others wait for it.
        skipped: counts the items dropped for a bad clip (with `data.skip_bad`) per problem kind.
    """
    if cfg.path.startswith("synthetic:"):
        split = cfg.path.split(":", 1)[1] or "train"
        data_dir = out_dir / "data"
        _make_synthetic_once(data_dir, seed, accelerator)
        cfg = dataclasses.replace(cfg, path=str(data_dir / f"{split}.jsonl"), format="canonical")
    ds = load_dataset(cfg)
    if not ds.report.clean:
        log.warning("%s", ds.report.summary())
    examples = _filtered(list(ds), cfg, ds.source["sha256"])
    return examples if cfg.check_audio else _open_clips(examples, cfg, skipped if skipped is not None else Counter())


def _filtered(examples: list[Example], cfg: DatasetConfig, sha256: str) -> list[Example]:
    """The examples in the splits `data.filter.keep` of the curation `data.filter.curation` (all without a filter)."""
    f = getattr(cfg, "filter", None)  # training sets have one, validation sets not
    if f is None or not f.curation:
        return examples
    from harken.eval.curate import selected_ids

    ids = selected_ids(f.curation, f.keep, sha256)
    kept = [ex for ex in examples if ex.id in ids]
    if not kept:
        raise ValueError(f"data.filter keeps no item of {cfg.path}: the splits {', '.join(f.keep)} of {f.curation} are empty")
    log.info("data.filter: %d of %d items, the splits %s of %s", len(kept), len(examples), ", ".join(f.keep), f.curation)
    return kept


def _make_synthetic_once(data_dir: Path, seed: int, accelerator) -> None:
    """The run's synthetic set, written by the main process unless complete already; the others wait for it."""
    from harken.data.synth import is_complete, make_synthetic

    if accelerator.is_main_process and not is_complete(data_dir):
        make_synthetic(data_dir, seed=seed)
    accelerator.wait_for_everyone()


CLIP_PROBLEMS = ("missing_audio", "corrupt_audio", "empty_audio", "nonfinite_audio", "long_audio")  # AudioError kinds


def bad_clip(dataset: str, ex: Example, e: AudioError) -> str:
    """What an error about a bad clip says: the dataset, the item, the clip and the reason."""
    return f"{dataset}: item {ex.id!r}: clip {e.path}: {e.problem}"


def _open_clips(examples: list[Example], cfg: DatasetConfig, skipped: Counter) -> list[Example]:
    """Keep the items whose clip opens and has frames (each distinct clip's header read once)."""
    found: dict[str, AudioError | None] = {}
    kept = []
    for ex in examples:
        if ex.audio not in found:
            try:
                if audio_info(ex.audio)["frames"] <= 0:
                    raise AudioError(ex.audio, "empty_audio", "zero-length audio (no samples)")
                found[ex.audio] = None
            except AudioError as e:
                found[ex.audio] = e
        err = found[ex.audio]
        if err is None:
            kept.append(ex)
        elif not cfg.skip_bad:
            raise ValueError(f"{bad_clip(cfg.path, ex, err)} (data.skip_bad=true skips and counts bad clips)")
        else:
            skipped[err.kind] += 1
    if len(kept) < len(examples):
        log.warning("%s: %d of %d items skipped for a bad clip (%s)", cfg.path, len(examples) - len(kept),
                    len(examples), ", ".join(f"{k} {n}" for k, n in skipped.most_common()))
    return kept


class DataStream:
    """Endless, resumable stream of examples for one process.

    Each epoch is a seeded permutation; process r of W takes positions r, r+W, r+2W, ... so
    processes never draw the same example in an epoch. The state is two integers, and the ids to
    skip when there are any (`mark`): the next draw of one of them passes over it (counted in
    `skipped`) and forgets it, so an item is left out for one epoch at a time.
    """

    def __init__(self, examples: list[Example], seed: int, rank: int = 0, world: int = 1):
        if not examples:
            raise ValueError("the training set is empty")
        self.examples, self.seed, self.rank, self.world = examples, seed, rank, world
        self.epoch, self.index = 0, 0
        self.skip: set[str] = set()  # ids passed over at their next draw
        self.skipped = 0  # draws passed over so far
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
            ex = self.examples[self._order[self.index]]
            self.index += 1
            if ex.id in self.skip:
                self.skip.discard(ex.id)
                self.skipped += 1
                continue
            out.append(ex)
        return out

    def mark(self, zero_variance: Mapping[str, bool]) -> None:
        """Record the groups just sampled (id -> whether its rewards were all equal): those are passed
        over at their next draw, the others drawn as usual."""
        for ex_id, zero in zero_variance.items():
            if zero:
                self.skip.add(ex_id)
            else:
                self.skip.discard(ex_id)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, **({"skip": sorted(self.skip)} if self.skip else {})}

    @staticmethod
    def rescaled(state: dict, old_world: int, new_world: int) -> dict:
        """A process's position when a run written by `old_world` processes resumes on `new_world`.

        Process r of W takes positions r, r+W, ... of the epoch's permutation, so after `index`
        draws each, the first index x W positions are used; the new processes continue from there.
        The ids to skip are the same in every process.
        """
        return {**state, "epoch": int(state["epoch"]), "index": int(state["index"]) * old_world // new_world}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.skip = set(state.get("skip", ()))
        self._order = self._perm()


class ClipDraw:
    """Examples drawn from a `DataStream` with their clips decoded.

    A clip that fails to decode (corrupt past its header, NaN samples, too long under
    `long_clip_policy=error`) stops the run naming the dataset, item, clip and reason, or with
    `data.skip_bad` is skipped (the next item is drawn) and counted in `skipped` per kind.
    """

    def __init__(self, stream: DataStream, audio: AudioLoader, dataset: str, skip_bad: bool):
        self.stream, self.audio, self.dataset, self.skip_bad = stream, audio, dataset, skip_bad
        self.skipped: Counter = Counter()  # problem kind -> clips skipped when decoded

    def take(self, n: int) -> tuple[list[Example], list[np.ndarray]]:
        examples, waves = [], []
        misses = 0
        while len(examples) < n:
            for ex in self.stream.take(n - len(examples)):
                try:
                    waves.append(self.audio.load(ex.audio))
                    examples.append(ex)
                except AudioError as e:
                    if not self.skip_bad:
                        raise ValueError(f"{bad_clip(self.dataset, ex, e)} (data.skip_bad=true skips and counts "
                                         f"bad clips)") from None
                    self.skipped[e.kind] += 1
                    misses += 1
                    log.warning("skipped: %s", bad_clip(self.dataset, ex, e))
            if misses > len(self.stream.examples):
                raise ValueError(f"{self.dataset}: no clip decodes (data.skip_bad skipped {misses} in a row)")
        return examples, waves


def make_audio_loader(lm: AudioLM, prompt_cfg) -> AudioLoader:
    # Never keep more than the encoder's window: the feature extractor would cut it anyway.
    max_s = min(prompt_cfg.max_audio_seconds, lm.window_seconds)
    policy = prompt_cfg.long_clip_policy
    return AudioLoader(lm.sampling_rate, max_s, policy)
