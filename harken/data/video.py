"""Decoding the audio track of a video file into the bytes of a clip.

Owns: decoding the first audio stream of a media file to mono float32 at a given rate
(`decode_mono`), the failures that give no clip (`VideoError`: "unreadable", "no-audio-track"),
the 16-bit PCM wav bytes of a clip (`wav_bytes`) and the versions of the tools that shape those
bytes (`tool_versions`).

Does not own: finding videos, AVQA annotations, writing clips and datasets (`harken.data.avqa`),
decoding clips for training (`harken.data.audio`).

Choices made here, and why:
- PyAV (FFmpeg) decodes the first audio stream; sample-format conversion and the mono mix-down
  (mean of the channels, per decoded frame, so a mid-stream channel-count change is harmless) are
  done in numpy; soxr (quality "HQ") converts the rate, per run of frames sharing one input rate.
  The result is rounded to 16-bit PCM (clipped to [-1, 1]) and written with soundfile. The same
  input always gives the same bytes, so sha256 compares runs.
- Trailing codec padding (AAC pads its last frame) beyond the stream's declared duration is
  trimmed when it is under 0.1 s; a decode that stops well short of the declared duration (a
  truncated download: by more than max(0.5 s, 10 %)) counts as "unreadable". Only the audio
  stream's own declared duration is trusted (mp4/mov stream duration, Matroska/WebM DURATION
  tag); a container-wide duration may belong to the video track and is not used. A start offset
  of the audio track relative to the video is ignored (the audio alone is the input).
"""

from __future__ import annotations

import io
import os
import re
import sys
from typing import Any

import numpy as np

from harken import __version__

PADDING_TRIM_S = 0.1  # trailing samples past the declared duration dropped if under this (codec padding)
TRUNCATION_MIN_S = 0.5  # a decode short of the declared duration by more than max(this, 10 %) is truncated


class VideoError(Exception):
    """A video that gives no clip; `reason` is "unreadable" or "no-audio-track"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _to_float(frame: Any) -> np.ndarray:
    """One decoded audio frame as float32 [C, n] in [-1, 1] (any FFmpeg sample format)."""
    a = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:  # packed: [1, n*C] interleaved
        a = a.reshape(-1, channels).T
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(a.dtype, np.integer):
        return (a.astype(np.float64) / float(-np.iinfo(a.dtype).min)).astype(np.float32)
    return a.astype(np.float32)


def _declared_seconds(stream: Any) -> float | None:
    """The audio stream's own declared duration, if the container states one."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag:
        m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip())
        if m:
            return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def decode_mono(path: str | os.PathLike, sampling_rate: int) -> np.ndarray:
    """Decode the first audio stream of a media file to mono float32 at `sampling_rate`.

    Args:
        path: a video (or audio) file FFmpeg can read.
        sampling_rate: output rate in Hz.

    Returns:
        float32 array [n] (mean of the channels), resampled with soxr HQ.

    Raises:
        VideoError: reason "unreadable" or "no-audio-track", with FFmpeg's message.
    """
    import soxr

    runs, declared = _decode_runs(path)
    pieces = []
    for rate, chunks in runs:
        x = np.concatenate(chunks)
        pieces.append(x if rate == sampling_rate else soxr.resample(x, rate, sampling_rate, quality="HQ"))
    y = np.concatenate(pieces).astype(np.float32)
    return y if declared is None else _fit_declared(y, declared, sampling_rate)


def _decode_runs(path: str | os.PathLike) -> tuple[list[tuple[int, list[np.ndarray]]], float | None]:
    """(input rate, mono chunks) per run of frames at one rate, and the declared duration."""
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # FFmpeg reports corrupt/truncated/unknown files in many ways
        raise VideoError("unreadable", f"cannot open: {type(e).__name__}: {e}") from None
    with container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise VideoError("no-audio-track", f"no audio stream (streams: {kinds})")
        stream = container.streams.audio[0]
        runs: list[tuple[int, list[np.ndarray]]] = []
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                mono = _to_float(frame).mean(axis=0)  # [n]: average the channels
                if not runs or runs[-1][0] != frame.sample_rate:
                    runs.append((frame.sample_rate, []))
                runs[-1][1].append(mono)
        except Exception as e:
            raise VideoError("unreadable", f"decode failed: {type(e).__name__}: {e}") from None
        declared = _declared_seconds(stream)
    if not runs:
        raise VideoError("unreadable", "the audio stream decoded to no samples")
    return runs, declared


def _fit_declared(y: np.ndarray, declared: float, sampling_rate: int) -> np.ndarray:
    """Refuse a decode well short of the declared duration; trim codec padding past it."""
    got = len(y) / sampling_rate
    if declared - got > max(TRUNCATION_MIN_S, 0.1 * declared):
        raise VideoError("unreadable", f"truncated: decoded {got:.2f} s of the {declared:.2f} s the file declares")
    extra = len(y) - int(round(declared * sampling_rate))
    if 0 < extra <= PADDING_TRIM_S * sampling_rate:
        y = y[: len(y) - extra]
    return y


def wav_bytes(samples: np.ndarray, sampling_rate: int) -> bytes:
    """16-bit PCM mono wav file content for float samples in [-1, 1] (clipped)."""
    import soundfile as sf

    pcm = np.clip(np.round(samples.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, sampling_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def tool_versions() -> dict[str, Any]:
    """Versions of everything that shapes the clip bytes."""
    import av
    import soundfile as sf
    import soxr

    return {
        "harken": __version__,
        "python": sys.version.split()[0],
        "av": av.__version__,
        "ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "ffmpeg_libraries": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "soxr": soxr.__version__,
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "numpy": np.__version__,
    }
