"""A held-out validation split that never puts one clip on both sides.

Owns: which clip a question is about (`clip_group`), the seeded split by whole clips
(`split_by_clip`) and the files `harken data split` writes (`split_dataset`: train.jsonl,
val.jsonl and split.json).

Does not own: reading the dataset (`harken.data.readers.load_examples`), AVQA clip names
(`harken.data.avqa.clip_key`), the command line (`harken.cli.data`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Sequence

from harken.data.avqa import clip_key
from harken.data.readers import load_examples
from harken.data.records import Example
from harken.io import write_json_atomic, write_jsonl


def clip_group(ex: Example) -> str:
    """The clip an example is about: meta video_name when present, else its audio path."""
    name = ex.meta.get("video_name") if ex.meta else None
    return f"video:{clip_key(str(name))}" if name else f"audio:{os.path.normpath(ex.audio)}"


def split_by_clip(examples: Sequence[Example], val: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out at least `val` questions, never splitting one clip's questions across sides.

    Whole clip groups (in a seeded shuffle of their first-appearance order) go to validation until
    it has >= `val` questions. Both sides keep the input order.

    Returns:
        (train, val) examples.
    """
    if val <= 0:
        raise ValueError(f"--val must be a positive number of questions, got {val}")
    if val >= len(examples):
        raise ValueError(f"--val {val} leaves nothing to train on: the dataset has {len(examples)} questions")
    groups: dict[str, int] = {}
    for ex in examples:
        g = clip_group(ex)
        groups[g] = groups.get(g, 0) + 1
    order = list(groups)
    random.Random(seed).shuffle(order)
    held: set[str] = set()
    n = 0
    for g in order:
        if n >= val:
            break
        held.add(g)
        n += groups[g]
    if len(held) == len(groups):
        raise ValueError(f"--val {val} would take every clip; there are {len(groups)} clips, use a smaller --val")
    train = [ex for ex in examples if clip_group(ex) not in held]
    valid = [ex for ex in examples if clip_group(ex) in held]
    return train, valid


def split_dataset(
    dataset: str | os.PathLike,
    val: int,
    seed: int = 0,
    format: str = "canonical",
    audio_root: str | None = None,
    out: str | os.PathLike | None = None,
    fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Split a dataset file by clip and write OUT/train.jsonl, OUT/val.jsonl and OUT/split.json.

    A table's embedded clips are written as references into the table (`harken.data.tables`), so
    the split files keep reading them from there; each row counts as a clip of its own.

    Args:
        dataset: the dataset file or table.
        val: minimum number of validation questions.
        seed: shuffle seed.
        format: its format (see `harken.data.readers.FORMATS`).
        audio_root: folder relative clip paths are joined to (default: the dataset's folder).
        out: output folder (default: the dataset's folder).
        fields: canonical name -> the dataset's key (jsonl, mmau, mmar), as `data.fields`.

    Returns:
        What split.json holds: the input, the request, and per side questions, clips and path.
    """
    dataset = Path(dataset)
    examples = load_examples(dataset, format, audio_root, fields)
    out = Path(out) if out else dataset.resolve().parent
    train_path, val_path = out / "train.jsonl", out / "val.jsonl"
    if dataset.resolve() in (train_path.resolve(), val_path.resolve()):
        raise ValueError(
            f"{dataset}: the split would overwrite its own input; pass --out DIR "
            f"(e.g. --out {dataset.resolve().parent / 'split'})"
        )
    train, valid = split_by_clip(examples, val, seed)
    write_jsonl(train_path, train)
    write_jsonl(val_path, valid)
    info = {
        "dataset": str(dataset.resolve()),
        "format": format,
        "val_requested": val,
        "seed": seed,
        "train": {"questions": len(train), "clips": len({clip_group(e) for e in train}), "path": str(train_path)},
        "val": {"questions": len(valid), "clips": len({clip_group(e) for e in valid}), "path": str(val_path)},
    }
    write_json_atomic(out / "split.json", info)
    return info
