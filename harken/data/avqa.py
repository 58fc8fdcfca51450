"""AVQA preparation, and dataset split / stats commands.

Owns:
- `harken data avqa`: turn AVQA annotations plus the source videos into a canonical training set
  (`prepare_avqa`): one 16 kHz mono 16-bit wav per video, extracted in parallel, every file
  written atomically, reruns continue where an interrupted run stopped, bad videos reported.
- `harken data split`: a held-out validation split that never puts one clip on both sides
  (`split_by_clip`).
- `harken data stats`: counts, answer-position balance and clip durations (`dataset_stats`).

Does not own: reading dataset files for split/stats (`harken.data.readers.read_dataset`), the
video -> audio question rule (`harken.data.readers.video_to_audio`), clip headers (`harken.data.audio`),
prompts, training. (`harken.data.readers`'s "avqa" format reads annotations whose clips already exist;
this module makes the clips and so validates the annotations itself: it needs `video_name` on
every item and ignores any `audio_path`.)

Output of `harken data avqa --out OUT` (reference.md section 2):

    OUT/audio/<video_name>.wav   one clip per video, shared by every question about it
    OUT/train.jsonl              canonical `Example` lines (name set by --name)
    OUT/manifest.jsonl           per clip: video_name, wav (relative to OUT), duration, frames, sha256
    OUT/report.json              videos that gave no clip: reason, error text, questions dropped
    OUT/info.json                provenance: annotation files + sha256, videos dir, tool versions, counts

Choices made here, and why:
- `Example.audio` is the ABSOLUTE path of the clip, so train.jsonl can be read from anywhere and
  copied next to other files without a root; the manifest keeps paths relative to OUT because it
  describes that folder's content (and stays valid if OUT is moved).
- Decoding: PyAV (FFmpeg) decodes the first audio stream; sample-format conversion and the mono
  mix-down (mean of the channels, per decoded frame, so a mid-stream channel-count change is
  harmless) are done in numpy; soxr (quality "HQ") converts the rate, per run of frames sharing
  one input rate. The result is rounded to 16-bit PCM (clipped to [-1, 1]) and written with
  soundfile. The same input always gives the same bytes, so sha256 compares runs.
- Trailing codec padding (AAC pads its last frame) beyond the stream's declared duration is
  trimmed when it is under 0.1 s; a decode that stops well short of the declared duration (a
  truncated download: by more than max(0.5 s, 10 %)) counts as "unreadable". Only the audio
  stream's own declared duration is trusted (mp4/mov stream duration, Matroska/WebM DURATION
  tag); a container-wide duration may belong to the video track and is not used. A start offset
  of the audio track relative to the video is ignored (the audio alone is the input).
- Failure reasons: "missing" (no file found for video_name), "unreadable" (FFmpeg cannot open or
  decode it, nothing decoded, or truncated), "no-audio-track" (the file has no audio stream).
  Their questions are left out of train.jsonl and counted.
- Rerun: a clip whose final name exists, reads as mono 16-bit wav at the requested rate, is
  "reused" (not decoded again; only hashed for the manifest), even if its video has since been
  deleted. A clip at another rate is redone. Failed videos are tried again on every run.
  Leftover temporary files of an interrupted run (`.<name>.wav.*.tmp`) are removed at start, so
  run one `harken data avqa` at a time per output folder.
- Questions: the whole word "video" becomes "audio" (`harken.data.readers.video_to_audio`, the same
  rule the raw-AVQA reader applies), as R1-AQA did.
- `--workers N` uses a process pool (decoding and resampling are CPU-bound); `--workers 1` runs
  in this process, which is easiest to debug.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harken import __version__
from harken.data.readers import FORMATS, file_sha256, read_dataset, video_to_audio
from harken.data.records import Example
from harken.io import iter_jsonl, write_json_atomic, write_jsonl


VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")  # search order when several files match
REASONS = ("missing", "unreadable", "no-audio-track")
REQUIRED_FIELDS = ("id", "video_name", "question_text", "multi_choice", "answer")
META_FIELDS = ("question_type", "question_relation", "video_name", "video_id")
PADDING_TRIM_S = 0.1  # trailing samples past the declared duration dropped if under this (codec padding)
TRUNCATION_MIN_S = 0.5  # a decode short of the declared duration by more than max(this, 10 %) is truncated
TMP_GLOB = ".*.wav.*.tmp"  # temporary names of clips being written (see _write_wav_atomic)


# --------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------


@dataclass
class AvqaItem:
    """One validated AVQA annotation and where it came from (for error messages)."""

    raw: dict[str, Any]  # the annotation object as read
    where: str  # "file:N" (JSON lines, 1-based line) or "file: item [N]" (JSON list, 0-based index)
    source: str  # the annotation file
    clip: str  # clip key: video_name without a video extension; names the wav


def clip_key(video_name: str) -> str:
    """`video_name` without a trailing video extension (`abc.mp4` and `abc` name one clip)."""
    for ext in VIDEO_EXTS:
        if video_name.lower().endswith(ext) and len(video_name) > len(ext):
            return video_name[: -len(ext)]
    return video_name


def _validate_item(obj: Any, where: str, source: str) -> AvqaItem:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with AVQA fields, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise ValueError(
            f"{where}: missing field(s) {', '.join(missing)}; an AVQA item needs {', '.join(REQUIRED_FIELDS)}"
        )
    name = obj["video_name"]
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"{where}: video_name must be a plain file name (no folders), got {name!r}")
    if not isinstance(obj["question_text"], str):
        raise ValueError(f"{where}: question_text must be a string, got {obj['question_text']!r}")
    choices = obj["multi_choice"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: multi_choice must be a list of at least 2 strings, got {choices!r}")
    ans = obj["answer"]
    if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(choices):
        raise ValueError(
            f"{where}: answer must be an integer index into multi_choice (0..{len(choices) - 1}), got {ans!r}"
        )
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
        raise ValueError(f"{where}: id must be a string or an integer, got {obj['id']!r}")
    return AvqaItem(raw=obj, where=where, source=source, clip=clip_key(name))


def read_avqa_annotations(paths: Sequence[str | os.PathLike]) -> list[AvqaItem]:
    """Read AVQA annotation files (a JSON list, or JSON lines) and validate every item.

    Raises:
        ValueError: naming the file and line (JSON lines) or item index (JSON list) of the first
            malformed entry, or of a duplicated id.
    """
    items: list[AvqaItem] = []
    seen: dict[str, str] = {}
    for path in paths:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            entries: Iterable[tuple[str, Any]] = ((f"{path}: item [{i}]", obj) for i, obj in enumerate(data))
        else:
            entries = ((f"{path}:{n}", obj) for n, obj in iter_jsonl(path))
        for where, obj in entries:
            item = _validate_item(obj, where, str(path))
            key = str(item.raw["id"])
            if key in seen:
                raise ValueError(f"{where}: id {key!r} already used at {seen[key]}; ids must be unique")
            seen[key] = where
            items.append(item)
    return items


def avqa_example(item: AvqaItem, audio: str) -> Example:
    """The canonical record of one AVQA question whose clip is at `audio`."""
    raw = item.raw
    meta = {k: raw.get(k) for k in META_FIELDS}
    meta["dataset"] = "AVQA"
    return Example(
        id=str(raw["id"]),
        audio=audio,
        question=video_to_audio(raw["question_text"]),
        choices=list(raw["multi_choice"]),
        answer=raw["multi_choice"][raw["answer"]],
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


def index_videos(root: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Path], int]:
    """Walk `root` once (recursively) and index every video file.

    Returns:
        (by_name, by_stem, ambiguous): file name -> path, name without extension -> path, and how
        many stems had several candidate files (the first in VIDEO_EXTS order, then the shallowest
        path, wins).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"videos folder {root} does not exist or is not a folder")
    candidates: dict[str, list[tuple[int, int, str, Path]]] = {}
    by_name: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        depth = len(Path(dirpath).relative_to(root).parts)
        for fn in sorted(filenames):
            ext = os.path.splitext(fn)[1].lower()
            if ext not in VIDEO_EXTS or fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            by_name.setdefault(fn, p)
            candidates.setdefault(fn[: -len(ext)], []).append((VIDEO_EXTS.index(ext), depth, str(p), p))
    by_stem = {stem: min(c)[3] for stem, c in candidates.items()}
    ambiguous = sum(1 for c in candidates.values() if len(c) > 1)
    return by_name, by_stem, ambiguous


def find_video(video_name: str, by_name: dict[str, Path], by_stem: dict[str, Path]) -> Path | None:
    """The file for `video_name`: an exact file name first (when it has an extension), else by stem."""
    return by_name.get(video_name) or by_stem.get(clip_key(video_name))


class VideoError(Exception):
    """A video that gives no clip; `reason` is one of REASONS."""

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
    import av
    import soxr

    try:
        container = av.open(str(path))
    except Exception as e:  # FFmpeg reports corrupt/truncated/unknown files in many ways
        raise VideoError("unreadable", f"cannot open: {type(e).__name__}: {e}") from None
    with container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise VideoError("no-audio-track", f"no audio stream (streams: {kinds})")
        stream = container.streams.audio[0]
        runs: list[tuple[int, list[np.ndarray]]] = []  # (input rate, mono chunks) per run of one rate
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
    pieces = []
    for rate, chunks in runs:
        x = np.concatenate(chunks)
        pieces.append(x if rate == sampling_rate else soxr.resample(x, rate, sampling_rate, quality="HQ"))
    y = np.concatenate(pieces).astype(np.float32)
    if declared is not None:
        got = len(y) / sampling_rate
        if declared - got > max(TRUNCATION_MIN_S, 0.1 * declared):
            raise VideoError(
                "unreadable", f"truncated: decoded {got:.2f} s of the {declared:.2f} s the file declares"
            )
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


def _write_wav_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name in the same folder, then rename: never a half file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _reusable(wav: Path, sampling_rate: int) -> Any:
    """soundfile info of an existing clip if it is a mono PCM_16 wav at the rate, else None."""
    import soundfile as sf

    if not wav.is_file():
        return None
    try:
        info = sf.info(str(wav))
    except Exception:
        return None
    if info.samplerate != sampling_rate or info.channels != 1 or info.subtype != "PCM_16" or info.frames == 0:
        return None
    return info


def extract_clip(video: str, wav: str, sampling_rate: int) -> dict[str, Any]:
    """Extract one clip (or reuse a complete one). Runs in a worker process.

    Returns:
        {"status": "extracted" | "reused" | "failed", and for clips: frames, duration, sha256;
        for failures: reason, error}. Errors writing the output are raised, not reported.
    """
    wav_path = Path(wav)
    info = _reusable(wav_path, sampling_rate)
    if info is not None:
        return {
            "status": "reused",
            "frames": int(info.frames),
            "duration": info.frames / sampling_rate,
            "sha256": file_sha256(wav_path),
        }
    if not os.path.exists(video):
        return {"status": "failed", "reason": "missing", "error": f"{video} disappeared after indexing"}
    try:
        samples = decode_mono(video, sampling_rate)
    except VideoError as e:
        return {"status": "failed", "reason": e.reason, "error": str(e)}
    data = wav_bytes(samples, sampling_rate)
    _write_wav_atomic(wav_path, data)
    return {
        "status": "extracted",
        "frames": int(len(samples)),
        "duration": len(samples) / sampling_rate,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# --------------------------------------------------------------------------------------------
# prepare_avqa
# --------------------------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


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


def _run_jobs(jobs: list[tuple[str, str, str, int]], workers: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Run extract_clip over (clip, video, wav, rate) jobs; results by clip key."""
    from tqdm import tqdm

    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc="audio clips", unit="clip", disable=not progress, file=sys.stderr)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for clip, video, wav, sr in jobs:
                results[clip] = extract_clip(video, wav, sr)
                bar.update(1)
        else:
            # spawn: workers start clean (no forked FFmpeg/thread state from this process).
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(extract_clip, video, wav, sr): clip for clip, video, wav, sr in jobs}
                try:
                    for fut in cf.as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.update(1)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return results


def prepare_avqa(
    annotations: Sequence[str | os.PathLike],
    videos: str | os.PathLike,
    out: str | os.PathLike,
    workers: int | None = None,
    sampling_rate: int = 16000,
    *,
    name: str = "train",
    progress: bool = True,
) -> dict[str, Any]:
    """Extract AVQA audio clips and write a canonical dataset (see the module docstring).

    Args:
        annotations: AVQA annotation files (JSON list or JSON lines).
        videos: folder searched recursively for `<video_name>.{mp4,mkv,webm,avi,mov}`.
        out: output folder (created); an earlier run's complete clips are reused.
        workers: extraction processes (default min(4, CPUs)); 1 runs in this process.
        sampling_rate: clip rate in Hz.
        name: stem of the dataset file (`OUT/<name>.jsonl`).
        progress: show a progress bar on stderr.

    Returns:
        The summary written to info.json["counts"] plus file paths: questions (total, written,
        dropped), clips (total, extracted, reused, failed), failed_by_reason, offenders.
    """
    t0 = time.time()
    ann_paths = [Path(p) for p in annotations]
    if not ann_paths:
        raise ValueError("no annotation files given")
    for p in ann_paths:
        if not p.is_file():
            raise FileNotFoundError(f"annotation file {p} not found")
    if sampling_rate <= 0:
        raise ValueError(f"sampling rate must be positive, got {sampling_rate}")
    if not name or any(c in name for c in "/\\") or name in ("manifest", "."):
        raise ValueError(f"--name must be a plain file stem other than 'manifest', got {name!r}")
    workers = default_workers() if workers is None else max(1, int(workers))
    out = Path(out).resolve()
    videos = Path(videos).resolve()
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)

    items = read_avqa_annotations(ann_paths)
    by_name, by_stem, ambiguous = index_videos(videos)

    # One clip per video, in first-appearance order; the first item's video_name picks the file.
    questions_per_clip: dict[str, list[AvqaItem]] = {}
    for it in items:
        questions_per_clip.setdefault(it.clip, []).append(it)

    for stray in audio_dir.glob(TMP_GLOB):  # left by an interrupted run (killed mid-write)
        stray.unlink()

    results: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    jobs = []
    for clip, its in questions_per_clip.items():
        video = find_video(its[0].raw["video_name"], by_name, by_stem)
        wav = audio_dir / f"{clip}.wav"
        if video is None and _reusable(wav, sampling_rate) is not None:
            # The clip is the product: keep it even if its video was deleted after extraction.
            jobs.append((clip, "", str(wav), sampling_rate))
            continue
        if video is None:
            results[clip] = {
                "status": "failed",
                "reason": "missing",
                "error": f"no {clip}{{{','.join(VIDEO_EXTS)}}} under {videos}",
            }
            continue
        sources[clip] = video
        jobs.append((clip, str(video), str(wav), sampling_rate))
    results.update(_run_jobs(jobs, workers, progress))

    # Outputs: dataset in annotation order, manifest sorted by clip, failures sorted by clip.
    examples = [
        avqa_example(it, str(audio_dir / f"{it.clip}.wav")) for it in items if results[it.clip]["status"] != "failed"
    ]
    manifest = []
    failed = []
    for clip in sorted(questions_per_clip):
        r = results[clip]
        n_q = len(questions_per_clip[clip])
        video = sources.get(clip)
        video_rel = str(video.relative_to(videos)) if video is not None else None
        if r["status"] == "failed":
            failed.append(
                {
                    "video_name": clip,
                    "video": video_rel,
                    "reason": r["reason"],
                    "error": r["error"],
                    "questions": n_q,
                    "ids": [str(it.raw["id"]) for it in questions_per_clip[clip]],
                }
            )
        else:
            manifest.append(
                {
                    "video_name": clip,
                    "wav": f"audio/{clip}.wav",
                    "video": video_rel,
                    "duration": round(r["duration"], 6),
                    "frames": r["frames"],
                    "sampling_rate": sampling_rate,
                    "sha256": r["sha256"],
                    "questions": n_q,
                }
            )
    status = Counter(r["status"] for r in results.values())
    by_reason = {reason: sum(1 for f in failed if f["reason"] == reason) for reason in REASONS}
    counts = {
        "questions": {
            "total": len(items),
            "written": len(examples),
            "dropped": len(items) - len(examples),
        },
        "clips": {
            "total": len(questions_per_clip),
            "extracted": status["extracted"],
            "reused": status["reused"],
            "failed": status["failed"],
        },
        "failed_by_reason": by_reason,
        "questions_dropped_by_reason": {
            reason: sum(f["questions"] for f in failed if f["reason"] == reason) for reason in REASONS
        },
        "ambiguous_videos": ambiguous,
    }

    dataset_path = out / f"{name}.jsonl"
    write_jsonl(out / "manifest.jsonl", manifest)
    write_json_atomic(out / "report.json", {"counts": counts, "failed": failed})
    write_jsonl(dataset_path, examples)
    write_json_atomic(
        out / "info.json",
        {
            "command": "harken data avqa",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - t0, 3),
            "annotations": [
                {"path": str(p.resolve()), "sha256": file_sha256(p), "items": sum(1 for it in items if it.source == str(p))}
                for p in ann_paths
            ],
            "videos": str(videos),
            "dataset": str(dataset_path),
            "sampling_rate": sampling_rate,
            "audio": "wav, 16-bit PCM, mono (mean of channels), soxr HQ resampling",
            "audio_paths": "absolute in the dataset; relative to this folder in manifest.jsonl",
            "workers": workers,
            "versions": tool_versions(),
            "counts": counts,
        },
    )
    return {
        **counts,
        "dataset": str(dataset_path),
        "report": str(out / "report.json"),
        "offenders": failed,
    }


def print_avqa_summary(summary: dict[str, Any], show: int = 5, file: Any = None) -> None:
    """Human summary: what was written, counts per failure reason and the first offenders."""
    file = file or sys.stdout
    q, c = summary["questions"], summary["clips"]
    print(
        f"AVQA: {q['written']} of {q['total']} questions written to {summary['dataset']} "
        f"({q['dropped']} dropped)",
        file=file,
    )
    print(f"clips: {c['total']} videos, {c['extracted']} extracted, {c['reused']} reused, {c['failed']} failed", file=file)
    for reason in REASONS:
        bad = [f for f in summary["offenders"] if f["reason"] == reason]
        if not bad:
            continue
        n_q = summary["questions_dropped_by_reason"][reason]
        print(f"  {reason}: {len(bad)} video(s), {n_q} question(s) dropped", file=file)
        for f in bad[:show]:
            print(f"    {f['video_name']}: {f['error']}", file=file)
        if len(bad) > show:
            print(f"    ... {len(bad) - show} more", file=file)
    if c["failed"]:
        print(f"details: {summary['report']}", file=file)


# --------------------------------------------------------------------------------------------
# Split and stats
# --------------------------------------------------------------------------------------------


def load_examples(path: str | os.PathLike, format: str = "canonical", audio_root: str | None = None) -> list[Example]:
    """Read a dataset for split/stats with `harken.data.readers.read_dataset`.

    Relative clip paths are resolved against `audio_root`, by default the dataset file's folder,
    so a split written elsewhere still points at the clips.
    """
    if audio_root is None and os.path.isfile(path):
        audio_root = str(Path(path).resolve().parent)
    return list(read_dataset(path, format=format, audio_root=audio_root))


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


def _question_kind(ex: Example) -> str:
    meta = ex.meta or {}
    return str(meta.get("question_type") or meta.get("task") or "(none)")


def _clip_durations(paths: Iterable[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Duration in seconds per readable clip (header only), and the error per unreadable one."""
    from harken.data.audio import audio_info

    durations, errors = {}, {}
    for p in paths:
        try:
            durations[p] = float(audio_info(p)["duration"])
        except Exception as e:  # an AudioError, or an OS error on a broken mount: listed, not fatal
            errors[p] = f"{type(e).__name__}: {e}"
    return durations, errors


def dataset_stats(
    examples: Sequence[Example], durations: dict[str, float], window_seconds: float = 30.0, bins: int = 20, show: int = 5
) -> dict[str, Any]:
    """Counts and duration statistics of a dataset (pure: durations are given).

    Args:
        examples: the questions.
        durations: seconds per audio path (paths absent here count as unreadable clips).
        window_seconds: encoder window; longer clips are cut by the feature extractor.
        bins: histogram bins (equal width from 0 to the longest clip).
        show: how many offenders to list.
    """
    by_kind = Counter(_question_kind(ex) for ex in examples)
    by_n = Counter(len(ex.choices) for ex in examples)
    positions: Counter = Counter()
    not_in_choices = []
    for ex in examples:
        if ex.answer in ex.choices:
            positions[ex.choices.index(ex.answer) + 1] += 1
        else:
            not_in_choices.append(ex.id)
    clips = sorted({ex.audio for ex in examples})
    d = np.array([durations[p] for p in clips if p in durations], dtype=np.float64)
    unreadable = [p for p in clips if p not in durations]
    long_clips = [p for p in clips if durations.get(p, 0.0) > window_seconds]
    long_set = set(long_clips)
    hist: dict[str, Any] = {"edges": [], "counts": []}
    if len(d):
        top = max(float(d.max()), 1e-3)
        counts, edges = np.histogram(d, bins=bins, range=(0.0, top))
        hist = {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}
    total = len(examples)
    return {
        "questions": total,
        "clips": len(clips),
        "by_question_type": dict(sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_num_choices": {str(k): v for k, v in sorted(by_n.items())},
        "answer_position": {str(k): v for k, v in sorted(positions.items())},
        "answer_position_share": {str(k): round(v / total, 4) for k, v in sorted(positions.items())},
        "answer_not_in_choices": {"count": len(not_in_choices), "first": not_in_choices[:show]},
        "durations": {
            "readable": int(len(d)),
            "unreadable": len(unreadable),
            "unreadable_first": unreadable[:show],
            "min": float(d.min()) if len(d) else None,
            "max": float(d.max()) if len(d) else None,
            "mean": float(d.mean()) if len(d) else None,
            "median": float(np.median(d)) if len(d) else None,
            "total_hours": float(d.sum() / 3600) if len(d) else 0.0,
            "histogram": hist,
        },
        "longer_than_window": {
            "window_seconds": window_seconds,
            "clips": len(long_clips),
            "questions": sum(1 for ex in examples if ex.audio in long_set),
            "first": [{"audio": p, "duration": round(durations[p], 3)} for p in long_clips[:show]],
        },
    }


def plot_durations(stats: dict[str, Any], path: str | os.PathLike) -> None:
    """Histogram of clip durations with the encoder window marked, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hist = stats["durations"]["histogram"]
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if hist["counts"]:
        edges = np.array(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", edgecolor="black", linewidth=0.5)
    window = stats["longer_than_window"]["window_seconds"]
    ax.axvline(window, color="red", linestyle="--", label=f"encoder window {window:g} s")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips")
    ax.set_title(f"{stats['clips']} clips, {stats['questions']} questions")
    ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)


def print_stats(stats: dict[str, Any], show: int = 5) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    total = stats["questions"]
    con.print(f"{total} questions, {stats['clips']} clips")
    for title, key in (("question type / task", "by_question_type"), ("choices", "by_num_choices"), ("answer position", "answer_position")):
        t = Table(title=title, title_justify="left")
        t.add_column(title)
        t.add_column("questions", justify="right")
        t.add_column("share", justify="right")
        for k, v in stats[key].items():
            t.add_row(str(k), str(v), f"{100 * v / total:.1f}%")
        con.print(t)
    if stats["answer_not_in_choices"]["count"]:
        con.print(f"answer not among the choices: {stats['answer_not_in_choices']['count']}")
    d = stats["durations"]
    if d["readable"]:
        con.print(
            f"clip durations: min {d['min']:.2f} s, median {d['median']:.2f} s, mean {d['mean']:.2f} s, "
            f"max {d['max']:.2f} s, total {d['total_hours']:.2f} h"
        )
        edges, counts = d["histogram"]["edges"], d["histogram"]["counts"]
        peak = max(counts) or 1
        for lo, hi, c in zip(edges[:-1], edges[1:], counts):
            con.print(f"  {lo:7.2f}-{hi:7.2f} s | {'#' * math.ceil(40 * c / peak) if c else '':40s} {c}", markup=False)
    if d["unreadable"]:
        con.print(f"unreadable clips: {d['unreadable']} (e.g. {', '.join(d['unreadable_first'])})", markup=False)
    lw = stats["longer_than_window"]
    con.print(
        f"longer than the {lw['window_seconds']:g} s encoder window (cut by the feature extractor): "
        f"{lw['clips']} clips, {lw['questions']} questions"
    )
    for item in lw["first"][:show]:
        con.print(f"  {item['audio']} ({item['duration']:.1f} s)", markup=False)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cmd_avqa(args: argparse.Namespace) -> int:
    summary = prepare_avqa(
        args.annotations,
        args.videos,
        args.out,
        workers=args.workers,
        sampling_rate=args.sampling_rate,
        name=args.name,
        progress=not args.no_progress,
    )
    print_avqa_summary(summary)
    if summary["questions"]["written"] == 0:
        print("harken: error: no question has a usable clip; see the report", file=sys.stderr)
        return 1
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    dataset = Path(args.dataset)
    examples = load_examples(dataset, args.format, args.audio_root)
    out = Path(args.out) if args.out else dataset.resolve().parent
    train_path, val_path = out / "train.jsonl", out / "val.jsonl"
    if dataset.resolve() in (train_path.resolve(), val_path.resolve()):
        raise ValueError(
            f"{dataset}: the split would overwrite its own input; pass --out DIR "
            f"(e.g. --out {dataset.resolve().parent / 'split'})"
        )
    train, val = split_by_clip(examples, args.val, args.seed)
    write_jsonl(train_path, train)
    write_jsonl(val_path, val)
    info = {
        "dataset": str(dataset.resolve()),
        "format": args.format,
        "val_requested": args.val,
        "seed": args.seed,
        "train": {"questions": len(train), "clips": len({clip_group(e) for e in train}), "path": str(train_path)},
        "val": {"questions": len(val), "clips": len({clip_group(e) for e in val}), "path": str(val_path)},
    }
    write_json_atomic(out / "split.json", info)
    print(
        f"train: {len(train)} questions ({info['train']['clips']} clips) -> {train_path}\n"
        f"val:   {len(val)} questions ({info['val']['clips']} clips) -> {val_path}\n"
        f"no clip is shared between them (seed {args.seed})"
    )
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    dataset = Path(args.dataset)
    examples = load_examples(dataset, args.format, args.audio_root)
    out = Path(args.out) if args.out else dataset.resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    durations, errors = _clip_durations(sorted({ex.audio for ex in examples}))
    stats = dataset_stats(examples, durations, window_seconds=args.window_seconds, bins=args.bins)
    stats["dataset"] = str(dataset.resolve())
    stats["durations"]["unreadable_errors"] = dict(list(errors.items())[:5])
    print_stats(stats)
    plot_durations(stats, out / "durations.png")
    write_json_atomic(out / "stats.json", stats)
    print(f"wrote {out / 'stats.json'} and {out / 'durations.png'}")
    return 0


def register(top: Any, groups: dict[str, Any]) -> None:
    """Add `harken data avqa | split | stats`."""
    data = groups["data"]

    p = data.add_parser(
        "avqa",
        help="extract AVQA audio from the videos and write a canonical dataset",
        description="Extract one 16 kHz mono wav per AVQA video (PyAV decode, soxr resample) and "
        "write OUT/train.jsonl, manifest.jsonl, report.json, info.json. Rerunning continues an "
        "interrupted run: complete clips are reused.",
    )
    p.add_argument("--annotations", nargs="+", required=True, metavar="FILE", help="AVQA annotation files (JSON list or JSON lines)")
    p.add_argument("--videos", required=True, metavar="DIR", help="folder with the videos (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--workers", type=int, default=default_workers(), help="extraction processes (1: in this process)")
    p.add_argument("--sampling-rate", type=int, default=16000, help="clip sampling rate in Hz")
    p.add_argument("--name", default="train", help="dataset file stem: OUT/NAME.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_avqa)

    p = data.add_parser(
        "split",
        help="hold out a validation split that shares no clip with training",
        description="Assign whole clips (all their questions) to validation, in a seeded shuffle, "
        "until it has at least --val questions; write train.jsonl and val.jsonl.",
    )
    p.add_argument("dataset", help="dataset file")
    p.add_argument("--val", type=int, required=True, help="minimum number of validation questions")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--format", choices=FORMATS, default="canonical", help="dataset format")
    p.add_argument("--audio-root", default=None, help="folder relative clip paths are joined to (default: the dataset's folder)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the dataset)")
    p.set_defaults(func=_cmd_split)

    p = data.add_parser(
        "stats",
        help="question types, answer balance, clip durations",
        description="Counts per question type/task and number of choices, answer-position balance, "
        "clip-duration histogram (terminal + OUT/durations.png) and clips longer than the encoder window; "
        "writes OUT/stats.json.",
    )
    p.add_argument("dataset", help="dataset file")
    p.add_argument("--format", choices=FORMATS, default="canonical", help="dataset format")
    p.add_argument("--audio-root", default=None, help="folder relative clip paths are joined to (default: the dataset's folder)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: next to the dataset)")
    p.add_argument("--window-seconds", type=float, default=30.0, help="encoder window (Whisper: 30 s)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins")
    p.set_defaults(func=_cmd_stats)
