"""Audio decoding: from a clip's path to the float32 mono waveform the model's processor expects.

Owns: opening clips with soundfile (wav, flac, ogg/vorbis/opus, and mp3 where the installed
libsndfile can), mixing channels down to mono by averaging them, resampling with soxr, the
long-clip policy (`truncate` / `error` / `keep`), one summary warning per dataset for long clips
(`AudioLoader`), cheap header-only inspection (`audio_info`) and the full decode check used when
a dataset is validated (`verify_audio`), whether a clip is there (`clip_exists`). A clip is a
file, or a clip embedded in a parquet / Arrow table (`harken.data.tables.embedded_ref`), decoded
from its bytes by the same path. Every failure is an `AudioError` naming the clip and what is
wrong.

Does not own: feature extraction (mel spectrograms belong to the model's processor), reading
dataset files (`harken.data.readers`), fetching an embedded clip's bytes (`harken.data.tables`),
or any caching of decoded audio.
"""

from __future__ import annotations

import io
import logging
import math
import os
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from harken.data.tables import embedded_bytes, is_embedded, parse_embedded

logger = logging.getLogger(__name__)

LONG_POLICIES = ("truncate", "error", "keep")

# Frames read past the cut point before resampling, so that the resampler's filter sees real
# signal (not an artificial end) around the last kept sample. 100 ms is far wider than soxr's
# filter at any quality setting.
_TRUNCATE_MARGIN_S = 0.1

# Block size for the streaming decode in `verify_audio` (frames): bounded memory on long clips.
_VERIFY_BLOCK = 1 << 16


class AudioError(ValueError):
    """A clip that cannot be used: missing, undecodable, empty, non-finite or too long.

    Attributes:
        path: the clip's path as given.
        kind: a short problem name used for counting: `missing_audio`, `corrupt_audio`,
            `empty_audio`, `nonfinite_audio` or `long_audio`.
    """

    def __init__(self, path: str | os.PathLike, kind: str, problem: str):
        self.path = str(path)
        self.kind = kind
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _check_args(sampling_rate: int, max_seconds: float | None, long_policy: str) -> None:
    if not (isinstance(sampling_rate, int) and sampling_rate > 0):
        raise ValueError(f"sampling_rate must be a positive integer (Hz), got {sampling_rate!r}")
    if max_seconds is not None and not (max_seconds > 0 and math.isfinite(max_seconds)):
        raise ValueError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
    if long_policy not in LONG_POLICIES:
        raise ValueError(f"long_policy must be one of {', '.join(LONG_POLICIES)}, got {long_policy!r}")


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """Open a clip for reading; missing, zero-byte and unrecognised files become AudioError."""
    p = os.fspath(path)
    if is_embedded(p):
        return _open_embedded(p)
    if not os.path.exists(p):
        raise AudioError(p, "missing_audio", "audio file not found")
    if os.path.isdir(p):
        raise AudioError(p, "missing_audio", "expected an audio file, found a directory")
    if os.path.getsize(p) == 0:
        raise AudioError(p, "empty_audio", "empty file (0 bytes)")
    try:
        return sf.SoundFile(p)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(p, "corrupt_audio", f"cannot decode audio ({_reason(e)})") from None


def _open_embedded(ref: str) -> sf.SoundFile:
    """Open a clip embedded in a table from its bytes (the table's file must be there)."""
    try:
        data = embedded_bytes(ref)
    except FileNotFoundError as e:
        raise AudioError(ref, "missing_audio", str(e)) from None
    except ValueError as e:
        raise AudioError(ref, "corrupt_audio", str(e)) from None
    if not data:
        raise AudioError(ref, "empty_audio", "empty embedded clip (0 bytes)")
    try:
        return sf.SoundFile(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(ref, "corrupt_audio", f"cannot decode audio ({_reason(e)})") from None


def clip_exists(path: str | os.PathLike) -> bool:
    """Whether a clip's file is there (for an embedded clip: its table's file); nothing is decoded."""
    p = os.fspath(path)
    if is_embedded(p):
        try:
            return parse_embedded(p)[0].is_file()
        except ValueError:
            return False
    return os.path.isfile(p)


def _reason(e: Exception) -> str:
    # libsndfile's messages start with "Error opening '<path>': "; the path is already in ours.
    msg = str(e)
    return msg.split(": ", 1)[1] if msg.startswith("Error opening") and ": " in msg else msg


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g} s"


def audio_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read a clip's header only (no decoding of the samples).

    Returns:
        {"path", "duration" (seconds), "sample_rate" (Hz), "channels", "frames", "format",
        "subtype"}.

    Raises:
        AudioError: missing, empty or unrecognised file.
    """
    with _open(path) as f:
        frames, sr = int(f.frames), int(f.samplerate)
        return {
            "path": os.fspath(path),
            "duration": frames / sr if sr else 0.0,
            "sample_rate": sr,
            "channels": int(f.channels),
            "frames": frames,
            "format": f.format,
            "subtype": f.subtype,
        }


def verify_audio(path: str | os.PathLike) -> dict[str, Any]:
    """Decode a whole clip block by block and check that it is usable.

    The checks are those of `load_audio` (exists, decodable, non-empty, finite samples) without
    resampling or keeping the samples, so whole datasets can be validated in bounded memory.

    Returns:
        `audio_info(path)`, with "frames" and "duration" as actually decoded.

    Raises:
        AudioError: with `kind` missing_audio / corrupt_audio / empty_audio / nonfinite_audio.
    """
    p = os.fspath(path)
    with _open(p) as f:
        info = {
            "path": p,
            "sample_rate": int(f.samplerate),
            "channels": int(f.channels),
            "format": f.format,
            "subtype": f.subtype,
        }
        decoded = 0
        try:
            for block in f.blocks(blocksize=_VERIFY_BLOCK, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(p, "nonfinite_audio", f"audio contains NaN or infinite samples (near frame {decoded})")
                decoded += len(block)
        except (sf.SoundFileError, RuntimeError) as e:
            raise AudioError(p, "corrupt_audio", f"cannot decode audio after frame {decoded} ({_reason(e)})") from None
    if decoded == 0:
        raise AudioError(p, "empty_audio", "zero-length audio (no samples)")
    info["frames"] = decoded
    info["duration"] = decoded / info["sample_rate"]
    return info


def _load(
    path: str | os.PathLike, sampling_rate: int, max_seconds: float | None, long_policy: str
) -> tuple[np.ndarray, bool]:
    """Decode, mix down, resample and apply the long-clip policy. Returns (wave [N], was_long)."""
    p = os.fspath(path)
    with _open(p) as f:
        src_sr, total = int(f.samplerate), int(f.frames)
        if total == 0:
            raise AudioError(p, "empty_audio", "zero-length audio (no samples)")
        is_long = max_seconds is not None and total / src_sr > max_seconds
        if is_long and long_policy == "error":
            raise AudioError(
                p, "long_audio", f"clip is {total / src_sr:.2f} s long, more than max_seconds={_fmt_s(max_seconds)}"
                " (use long_policy='truncate' to keep the first part, or 'keep')",
            )
        n_read = total
        if is_long and long_policy == "truncate":
            # Only decode what is kept (plus a margin for the resampler), not a whole hour-long file.
            n_read = min(total, math.ceil((max_seconds + _TRUNCATE_MARGIN_S) * src_sr))
        try:
            data = f.read(frames=n_read, dtype="float32", always_2d=True)  # [frames, channels]
        except (sf.SoundFileError, RuntimeError) as e:
            raise AudioError(p, "corrupt_audio", f"cannot decode audio ({_reason(e)})") from None
    if len(data) == 0:
        raise AudioError(p, "empty_audio", "zero-length audio (no samples could be decoded)")
    if not np.isfinite(data).all():
        bad = int(np.argwhere(~np.isfinite(data))[0, 0])
        raise AudioError(p, "nonfinite_audio", f"audio contains NaN or infinite samples (first at frame {bad})")
    # Average, not sum and not "first channel": a stereo clip whose channels differ keeps both.
    wave = data.mean(axis=1, dtype=np.float32)  # [frames]
    if src_sr != sampling_rate:
        wave = soxr.resample(wave, src_sr, sampling_rate, quality="HQ")  # [frames * sampling_rate / src_sr]
    if is_long and long_policy == "truncate":
        wave = wave[: int(round(max_seconds * sampling_rate))]
    return np.ascontiguousarray(wave, dtype=np.float32), is_long


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int = 16000,
    max_seconds: float | None = 30.0,
    long_policy: str = "truncate",
) -> np.ndarray:
    """Load one clip as a float32 mono waveform at `sampling_rate`.

    Args:
        path: a file soundfile can decode (wav, flac, ogg; mp3 with libsndfile >= 1.1).
        sampling_rate: output rate in Hz (16000 for Whisper-style encoders such as Qwen2-Audio's).
        max_seconds: clips longer than this follow `long_policy`; None means no limit.
        long_policy: "truncate" keeps the first `max_seconds` (exactly
            round(max_seconds * sampling_rate) samples), "error" raises AudioError, "keep"
            returns the whole clip. Use `AudioLoader` to get one summary warning per dataset.

    Returns:
        [N] float32 array, channels averaged.

    Raises:
        AudioError: missing file, undecodable/corrupt file, zero-length audio, NaN/inf samples,
            or (long_policy="error") a clip longer than max_seconds.
    """
    _check_args(sampling_rate, max_seconds, long_policy)
    return _load(path, sampling_rate, max_seconds, long_policy)[0]


class AudioLoader:
    """`load_audio` with fixed settings that counts long clips, to warn once per dataset.

    Usage: load every clip with `loader.load(path)`, then call `loader.warn_long()` once; it logs
    e.g. "12 of 340 clips longer than 30 s were cut to the first 30 s" instead of one line per clip.
    """

    def __init__(self, sampling_rate: int = 16000, max_seconds: float | None = 30.0, long_policy: str = "truncate"):
        _check_args(sampling_rate, max_seconds, long_policy)
        self.sampling_rate = sampling_rate
        self.max_seconds = max_seconds
        self.long_policy = long_policy
        self.n_loaded = 0  # clips loaded successfully
        self.n_long = 0  # of those, clips longer than max_seconds (cut or kept, per the policy)
        self.long_paths: list[str] = []  # the first few long clips, for the log line
        self._warned_at: int | None = None  # n_long when the last warning was logged

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Load one clip (see `load_audio`); long clips are counted, not logged one by one."""
        wave, was_long = _load(path, self.sampling_rate, self.max_seconds, self.long_policy)
        self.n_loaded += 1
        if was_long:
            self.n_long += 1
            if len(self.long_paths) < 3:
                self.long_paths.append(os.fspath(path))
        return wave

    __call__ = load

    def count(self, path: str | os.PathLike, seconds: float) -> None:
        """Count a clip decoded elsewhere (`verify_audio`, by `harken data validate`) as `load` would."""
        self.n_loaded += 1
        if self.max_seconds is not None and seconds > self.max_seconds:
            self.n_long += 1
            if len(self.long_paths) < 3:
                self.long_paths.append(os.fspath(path))

    def summary(self, ahead: bool = False) -> str:
        """One line on how many clips were loaded and what happened to the long ones.

        Args:
            ahead: the clips were only counted (`count`): say what loading them will do.
        """
        if self.n_long == 0:
            limit = f"none longer than {_fmt_s(self.max_seconds)}" if self.max_seconds is not None else "no length limit"
            return f"{self.n_loaded} clips loaded, {limit}"
        limit = _fmt_s(self.max_seconds)  # type: ignore[arg-type]
        verb = "will be" if ahead else "were"
        if self.long_policy == "truncate":
            what = f"{verb} cut to the first {limit}"
        else:  # "keep" ("error" raises before counting)
            what = f"{verb} kept whole (the model's feature extractor may still cut them at its own window)"
        return f"{self.n_long} of {self.n_loaded} clips longer than {limit} {what}"

    def warn_long(self) -> str | None:
        """Log the long-clip summary once (again only if more long clips were loaded since).

        Returns:
            the logged line, or None when there was nothing new to report.
        """
        if self.n_long == 0 or self._warned_at == self.n_long:
            return None
        self._warned_at = self.n_long
        line = self.long_line()
        logger.warning(line)
        return line

    def long_line(self, ahead: bool = False) -> str:
        """`summary(ahead)` with the first few long clips named: the line `warn_long` logs."""
        line = self.summary(ahead)
        if self.long_paths:
            line += f" (e.g. {', '.join(self.long_paths)})"
        return line

    def stats(self) -> dict[str, Any]:
        """Counts for run records: loaded, long, and the settings they were counted under."""
        return {
            "sampling_rate": self.sampling_rate,
            "max_seconds": self.max_seconds,
            "long_policy": self.long_policy,
            "loaded": self.n_loaded,
            "long": self.n_long,
        }
