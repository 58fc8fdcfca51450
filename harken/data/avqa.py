"""AVQA preparation: AVQA annotations plus the source videos -> a canonical training set.

Owns: `prepare_avqa` (`harken data avqa`): reading and validating AVQA annotation files,
finding each video, one 16 kHz mono 16-bit wav per video extracted in parallel, every file
written atomically, reruns that continue where an interrupted run stopped, bad videos reported;
the AVQA clip key of a video name (`clip_key`).

Does not own: decoding a video's audio track (`harken.data.video`), the video -> audio question
rule (`harken.data.readers.video_to_audio`), split and stats (`harken.data.split`,
`harken.data.stats`), the command line (`harken.cli.data`), prompts, training.
(`harken.data.readers`'s "avqa" format reads annotations whose clips already exist; this module
makes the clips and so validates the annotations itself: it needs `video_name` on every item and
ignores any `audio_path`.)

Output of `harken data avqa --out OUT` (the layout the published AVQA training recipe reads):

    OUT/audio/<video_name>.wav   one clip per video, shared by every question about it
    OUT/train.jsonl              canonical `Example` lines (name set by --name)
    OUT/manifest.jsonl           per clip: video_name, wav (relative to OUT), duration, frames, sha256
    OUT/report.json              videos that gave no clip: reason, error text, questions dropped
    OUT/info.json                provenance: annotation files + sha256, videos dir, tool versions, counts

Choices made here, and why:
- `Example.audio` is the ABSOLUTE path of the clip, so train.jsonl can be read from anywhere and
  copied next to other files without a root; the manifest keeps paths relative to OUT because it
  describes that folder's content (and stays valid if OUT is moved).
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

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from harken.data.benchmarks import file_sha256
from harken.data.readers import video_to_audio
from harken.data.records import Example
from harken.data.video import VideoError, decode_mono, tool_versions, wav_bytes
from harken.io import atomic_write, iter_records, write_json_atomic, write_jsonl

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")  # search order when several files match
REASONS = ("missing", "unreadable", "no-audio-track")
REQUIRED_FIELDS = ("id", "video_name", "question_text", "multi_choice", "answer")
META_FIELDS = ("question_type", "question_relation", "video_name", "video_id")
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
        for where, obj in iter_records(path):
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


def _write_wav_atomic(path: Path, data: bytes) -> None:
    """Write a clip atomically; its temporary name `.<name>.wav.<random>.tmp` matches TMP_GLOB."""
    with atomic_write(path, "wb", suffix=".tmp") as f:
        f.write(data)


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


def _run_jobs(jobs: list[tuple[str, str, str, int]], workers: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Run extract_clip over (clip, video, wav, rate) jobs; results by clip key."""
    from harken.progress import Progress

    results: dict[str, dict[str, Any]] = {}
    with Progress(len(jobs), "audio clips", "clip", bar=progress) as bar:
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
        progress: a progress bar on a terminal (False: plain progress lines there too, as elsewhere).

    Returns:
        The summary written to info.json["counts"] plus file paths: questions (total, written,
        dropped), clips (total, extracted, reused, failed), failed_by_reason, offenders.
    """
    t0 = time.time()
    ann_paths = [Path(p) for p in annotations]
    _check_prepare_args(ann_paths, sampling_rate, name)
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

    jobs, results, sources = _plan_jobs(questions_per_clip, audio_dir, sampling_rate, videos, by_name, by_stem)
    results.update(_run_jobs(jobs, workers, progress))

    # Outputs: dataset in annotation order, manifest sorted by clip, failures sorted by clip.
    examples = [
        avqa_example(it, str(audio_dir / f"{it.clip}.wav")) for it in items if results[it.clip]["status"] != "failed"
    ]
    manifest, failed = _manifest_and_failures(questions_per_clip, results, sources, videos, sampling_rate)
    counts = _counts(len(items), len(examples), results, failed, ambiguous)

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


def _plan_jobs(
    questions_per_clip: dict[str, list[AvqaItem]],
    audio_dir: Path,
    sampling_rate: int,
    videos: Path,
    by_name: dict[str, Path],
    by_stem: dict[str, Path],
) -> tuple[list[tuple[str, str, str, int]], dict[str, dict[str, Any]], dict[str, Path]]:
    """(clip, video, wav, rate) jobs for `extract_clip`, the results of the clips already known to
    be missing, and the video file of each clip that has one."""
    jobs, results, sources = [], {}, {}
    for clip, its in questions_per_clip.items():
        video = find_video(its[0].raw["video_name"], by_name, by_stem)
        wav = audio_dir / f"{clip}.wav"
        if video is None and _reusable(wav, sampling_rate) is not None:
            # The clip is the product: keep it even if its video was deleted after extraction.
            jobs.append((clip, "", str(wav), sampling_rate))
        elif video is None:
            error = f"no {clip}{{{','.join(VIDEO_EXTS)}}} under {videos}"
            results[clip] = {"status": "failed", "reason": "missing", "error": error}
        else:
            sources[clip] = video
            jobs.append((clip, str(video), str(wav), sampling_rate))
    return jobs, results, sources


def _check_prepare_args(ann_paths: list[Path], sampling_rate: int, name: str) -> None:
    if not ann_paths:
        raise ValueError("no annotation files given")
    for p in ann_paths:
        if not p.is_file():
            raise FileNotFoundError(f"annotation file {p} not found")
    if sampling_rate <= 0:
        raise ValueError(f"sampling rate must be positive, got {sampling_rate}")
    if not name or any(c in name for c in "/\\") or name in ("manifest", "."):
        raise ValueError(f"--name must be a plain file stem other than 'manifest', got {name!r}")


def _manifest_and_failures(
    questions_per_clip: dict[str, list[AvqaItem]],
    results: dict[str, dict[str, Any]],
    sources: dict[str, Path],
    videos: Path,
    sampling_rate: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifest rows of the clips made and the report rows of the videos that failed, by clip."""
    manifest, failed = [], []
    for clip in sorted(questions_per_clip):
        r = results[clip]
        its = questions_per_clip[clip]
        video = sources.get(clip)
        video_rel = str(video.relative_to(videos)) if video is not None else None
        if r["status"] == "failed":
            ids = [str(it.raw["id"]) for it in its]
            failed.append(
                {"video_name": clip, "video": video_rel, "reason": r["reason"], "error": r["error"], "questions": len(its), "ids": ids}
            )
            continue
        manifest.append(
            {
                "video_name": clip,
                "wav": f"audio/{clip}.wav",
                "video": video_rel,
                "duration": round(r["duration"], 6),
                "frames": r["frames"],
                "sampling_rate": sampling_rate,
                "sha256": r["sha256"],
                "questions": len(its),
            }
        )
    return manifest, failed


def _counts(
    n_items: int, n_written: int, results: dict[str, dict[str, Any]], failed: list[dict[str, Any]], ambiguous: int
) -> dict[str, Any]:
    status = Counter(r["status"] for r in results.values())
    return {
        "questions": {"total": n_items, "written": n_written, "dropped": n_items - n_written},
        "clips": {
            "total": len(results),
            "extracted": status["extracted"],
            "reused": status["reused"],
            "failed": status["failed"],
        },
        "failed_by_reason": {reason: sum(1 for f in failed if f["reason"] == reason) for reason in REASONS},
        "questions_dropped_by_reason": {
            reason: sum(f["questions"] for f in failed if f["reason"] == reason) for reason in REASONS
        },
        "ambiguous_videos": ambiguous,
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
