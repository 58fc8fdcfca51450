"""Test helpers: parquet and Arrow datasets with embedded audio, written with pyarrow alone.

The layouts are those of Hugging Face `datasets`: an audio column is a struct `{"bytes": binary,
"path": string}`; `save_to_disk` writes Arrow IPC *stream* files `data-0000i-of-0000n.arrow`
with `state.json` and `dataset_info.json` beside them. Clips are synthesised tones, or the
synthetic set's clips (`harken.data.synth`) re-encoded in memory as wav, flac or ogg.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
CODECS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def tone(seconds: float = 0.5, sr: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine tone, [frames] or [frames, channels] float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def encode(wave: np.ndarray, sr: int, codec: str) -> bytes:
    """A clip's file bytes in memory: wav, flac or ogg (vorbis)."""
    fmt, subtype = CODECS[codec]
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def reencode(path: str | Path, codec: str) -> bytes:
    """A clip file's samples as the bytes of another codec."""
    wave, sr = sf.read(str(path), dtype="float32")
    return encode(wave, sr, codec)


def table(rows: Sequence[dict[str, Any]], audio_columns: Sequence[str] = ("audio",)) -> pa.Table:
    """Rows as an Arrow table; the named columns get the Hugging Face audio struct type."""
    names = list(rows[0])
    arrays = {}
    for name in names:
        values = [r.get(name) for r in rows]
        arrays[name] = pa.array(values, type=AUDIO) if name in audio_columns else pa.array(values)
    return pa.table(arrays)


def write_parquet(path: Path, rows: Sequence[dict], audio_columns: Sequence[str] = ("audio",), **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(rows, audio_columns), path, **kw)
    return path


def write_arrow(path: Path, rows: Sequence[dict], audio_columns: Sequence[str] = ("audio",), stream: bool = True) -> Path:
    """An Arrow IPC stream file (what `datasets` writes) or, with stream=False, an IPC file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = table(rows, audio_columns)
    with pa.OSFile(str(path), "wb") as sink:
        writer = pa.ipc.new_stream(sink, t.schema) if stream else pa.ipc.new_file(sink, t.schema)
        with writer:
            writer.write_table(t, max_chunksize=3)
    return path


def save_to_disk(folder: Path, rows: Sequence[dict], shards: int = 2, audio_columns: Sequence[str] = ("audio",)) -> Path:
    """A folder as `datasets.Dataset.save_to_disk` writes it: stream shards, state.json, dataset_info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(rows), shards + 1).astype(int)
    files = []
    for i in range(shards):
        name = f"data-{i:05d}-of-{shards:05d}.arrow"
        write_arrow(folder / name, rows[bounds[i] : bounds[i + 1]], audio_columns)
        files.append({"filename": name})
    state = {"_data_files": files, "_fingerprint": "0", "_format_columns": None, "_format_kwargs": {},
             "_format_type": None, "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    features = {k: ({"_type": "Audio"} if k in audio_columns else {"dtype": "string", "_type": "Value"}) for k in rows[0]}
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}, indent=2))
    return folder


def embedded_rows(examples, codecs: Sequence[str] = ("wav", "flac", "ogg")) -> list[dict]:
    """Canonical rows of `Example`s with each clip embedded (codecs in turn), meta flattened."""
    rows = []
    for i, ex in enumerate(examples):
        codec = codecs[i % len(codecs)]
        audio = {"bytes": reencode(ex.audio, codec), "path": f"{ex.id}.{codec}"}
        rows.append({"id": ex.id, "audio": audio, "question": ex.question, "choices": ex.choices,
                     "answer": ex.answer, "task": ex.meta.get("task", "sound")})
    return rows
