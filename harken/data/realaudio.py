"""Real-audio QA built offline from Debian packages: a small test set, and skills to train and test on.

Owns: the three tasks of the test set (`make_real`), the three learnable skills split by source
(`real_skills`: drum, alert-count, word-count; the last section of this module), which files
they draw from, how file names map to readable answer classes, and the decoding of those files
into 16 kHz mono wav clips. Does not own: synthetic data and writing question sets
(`harken.data.synth`), benchmark readers (`harken.data.readers`), feature extraction
(`harken.data.audio`), the `harken data real` command (`harken.cli.data`).

The test set's tasks:

| task (``meta["task"]``) | package (apt-get install ...) | what is asked                          |
|-------------------------|-------------------------------|----------------------------------------|
| instrument              | sonic-pi-samples              | instrument family, from the file prefix |
| system-sound            | sound-theme-freedesktop       | kind of desktop sound, from its name    |
| spoken-word             | flite                         | which digit / word a synthetic voice says |

Every clip is decoded with soundfile, mixed to mono by averaging the channels, resampled with
soxr to 16 kHz, cut to at most 4.5 s (a 10 ms fade-out where cut) and padded with silence to at
least 0.5 s. Each question offers four choices; classes that share sounds (a snare is also part
of the drum kit) are never offered together, so every question has one defensible answer. At most
`per_class` clips per answer class keep the answers roughly balanced; the correct position is
balanced within each task.

A missing package skips its task with a logged notice that names the package and the apt-get
command; with nothing available `make_real` writes nothing and returns None. The same seed gives
byte-identical files (flite is deterministic).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, Iterable

import numpy as np
import soundfile as sf
import soxr

from harken.data.records import Example
from harken.data.synth import SAMPLE_RATE, Skill, assemble, write_wav
from harken.io import write_json_atomic, write_jsonl

logger = logging.getLogger(__name__)

VERSION = "1"  # bump when the questions or clips of a given seed change
MAX_CLIP_S = 4.5
MIN_CLIP_S = 0.5
N_CHOICES = 4
DEFAULT_PER_CLASS = 4

# Where the Debian packages install their files (module attributes so tests can point elsewhere).
SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
FREEDESKTOP_DIR = Path("/usr/share/sounds/freedesktop/stereo")
FLITE_BIN = "flite"

PACKAGES = {"instrument": "sonic-pi-samples", "system-sound": "sound-theme-freedesktop", "spoken-word": "flite"}

# sonic-pi file prefix -> instrument family. mehackit_ (phones, robots) and misc_ (burp, crow,
# boom) are not families and are left out.
INSTRUMENT_FAMILIES = {
    "ambi": "ambient",
    "bass": "synth bass",
    "bd": "bass drum",
    "drum": "drum kit",
    "elec": "electronic",
    "glitch": "glitch",
    "guit": "guitar",
    "loop": "loop",
    "perc": "percussion",
    "sn": "snare drum",
    "tabla": "tabla",
    "vinyl": "vinyl",
}
# Families that share sounds: drum_ holds kicks and snares, elec_ has snares and kicks, glitch_
# has percussion, loop_tabla is a tabla loop. Members of one group never share a question.
INSTRUMENT_CONFUSABLE = (
    {"bass drum", "snare drum", "drum kit", "percussion", "electronic"},
    {"electronic", "glitch"},
    {"percussion", "glitch", "tabla"},
    {"loop", "tabla"},
)

# freedesktop sound name patterns -> class. The theme's symlinks (window-* -> dialog-warning,
# power-* and network-* -> device-*, screen-capture -> camera-shutter) are used once, via their
# target.
SYSTEM_SOUND_CLASSES = (
    ("spoken voice", ("audio-channel-*",)),  # a voice naming a speaker position
    ("telephone", ("phone-*",)),
    ("alarm clock", ("alarm-clock-*",)),
    ("camera shutter", ("camera-shutter", "screen-capture")),
    ("dialog alert", ("dialog-*", "window-*", "suspend-error")),
    ("message", ("message", "message-*")),
    ("device plugged or unplugged", ("device-*", "power-*", "network-connectivity-*")),
    ("login or logout", ("service-log*",)),
    ("bell", ("bell", "complete")),
    ("trash emptied", ("trash-empty",)),
    ("test signal", ("audio-test-signal",)),
    ("volume click", ("audio-volume-change",)),
)
# Short chimes and beeps are too alike to tell apart by ear; ringing is ringing.
SYSTEM_SOUND_CONFUSABLE = (
    {"dialog alert", "message", "device plugged or unplugged", "login or logout", "bell", "volume click"},
    {"telephone", "alarm clock"},
)

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
FLITE_VOICES = ("slt", "rms", "awb", "kal")  # US female, US male, Scottish male, US male (8 kHz diphone)

QUESTIONS = {
    "instrument": (
        "Which instrument family does this sample belong to?",
        "What kind of instrument or sound source is this sample?",
        "Which of these best describes the instrument you hear?",
    ),
    "system-sound": (
        "What kind of system sound is this?",
        "Which kind of desktop sound do you hear?",
        "What type of computer sound is this?",
    ),
    "digit": ("Which number is spoken?", "Which digit does the speaker say?"),
    "word": ("Which word is spoken?", "What word does the speaker say?"),
}


@dataclass
class _Item:
    """One question before its clip is written."""

    task: str
    kind: str  # key into QUESTIONS
    answer: str
    pool: tuple[str, ...]  # every class the distractors may come from
    confusable: frozenset[str]  # classes never offered beside this answer
    load: Callable[[], tuple[np.ndarray, int]]  # () -> (mono samples, sample rate)
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Sources.


def _flite_path() -> str | None:
    return shutil.which(FLITE_BIN)


def available_sources() -> dict[str, bool]:
    """Package name -> whether its files (or binary) are present."""
    return {
        PACKAGES["instrument"]: SONIC_PI_DIR.is_dir() and any(SONIC_PI_DIR.glob("*.flac")),
        PACKAGES["system-sound"]: FREEDESKTOP_DIR.is_dir() and any(FREEDESKTOP_DIR.glob("*.oga")),
        PACKAGES["spoken-word"]: _flite_path() is not None,
    }


def install_hint(packages: Iterable[str]) -> str:
    """The apt-get command that installs `packages`."""
    return f"sudo apt-get install --no-install-recommends {' '.join(packages)}"


def _confusable_map(groups: Iterable[set[str]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for g in groups:
        for name in g:
            out.setdefault(name, set()).update(g - {name})
    return {k: frozenset(v) for k, v in out.items()}


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def _pick(rng: np.random.Generator, files: list[Path], k: int) -> list[Path]:
    return [files[i] for i in sorted(rng.permutation(len(files))[:k])]


def _class_items(
    task: str, by_class: dict[str, list[Path]], confusable_groups: Iterable[set[str]], rng: np.random.Generator, per_class: int
) -> list[_Item]:
    """Up to `per_class` files of each answer class (picked by `rng`), as questions of `task`."""
    pool = tuple(sorted(by_class))
    confusable = _confusable_map(confusable_groups)
    return [
        _Item(
            task, task, label, pool, confusable.get(label, frozenset()), partial(_read_file, f),
            {"source": str(f), "package": PACKAGES[task]},
        )
        for label, files in sorted(by_class.items())
        for f in _pick(rng, files, per_class)
    ]


def _instrument_items(rng: np.random.Generator, per_class: int) -> list[_Item]:
    by_family: dict[str, list[Path]] = {}
    for f in sorted(SONIC_PI_DIR.glob("*.flac")):
        family = INSTRUMENT_FAMILIES.get(f.name.split("_", 1)[0])
        if family:
            by_family.setdefault(family, []).append(f)
    return _class_items("instrument", by_family, INSTRUMENT_CONFUSABLE, rng, per_class)


def _system_class(stem: str) -> str | None:
    for label, patterns in SYSTEM_SOUND_CLASSES:
        if any(fnmatch.fnmatchcase(stem, p) for p in patterns):
            return label
    return None


def _system_sound_items(rng: np.random.Generator, per_class: int) -> list[_Item]:
    by_class: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for f in sorted(FREEDESKTOP_DIR.glob("*.oga")):
        real = f.resolve()  # symlinked aliases are one sound
        label = _system_class(real.name.removesuffix(".oga"))
        if label is None or real in seen or not real.is_file():
            continue
        seen.add(real)
        by_class.setdefault(label, []).append(real)
    return _class_items("system-sound", by_class, SYSTEM_SOUND_CONFUSABLE, rng, per_class)


def flite_voices() -> list[str]:
    """The preferred voices this flite offers (`flite -lv`), in FLITE_VOICES order; [] = default only."""
    try:
        out = subprocess.run([FLITE_BIN, "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    offered = out.split(":", 1)[-1].split()
    return [v for v in FLITE_VOICES if v in offered]


def flite_version() -> str | None:
    try:
        out = subprocess.run([FLITE_BIN, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version:\s*(\S+)", out)
    return m.group(1) if m else (out.strip() or None)


def _speak(text: str, voice: str | None) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="harken-flite-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = [FLITE_BIN] + (["-voice", voice] if voice else []) + ["-t", text, "-o", str(wav)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[:200]}")
        return _read_file(wav)


def _spoken_items(per_class: int, voices: list[str]) -> list[_Item]:
    cycle = voices or [None]
    items = []
    for kind, words in (("digit", DIGITS), ("word", WORDS)):
        for w_idx, word in enumerate(words):
            # Rotate the voices so each is used about equally, and each word by up to per_class of them.
            for j in range(min(per_class, len(cycle))):
                voice = cycle[(w_idx + j) % len(cycle)]
                meta = {"source": word, "voice": voice or "default", "kind": kind, "package": PACKAGES["spoken-word"]}
                items.append(_Item("spoken-word", kind, word, words, frozenset(), partial(_speak, word, voice), meta))
    return items


# ---------------------------------------------------------------------------------------------
# Clips and questions.


def to_clip(x: np.ndarray, sr: int) -> np.ndarray:
    """Mono samples at `sr` -> float32 at 16 kHz, MIN_CLIP_S..MAX_CLIP_S long, within [-1, 1]."""
    x = np.asarray(x, dtype=np.float32)
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE).astype(np.float32)
    n_max = int(MAX_CLIP_S * SAMPLE_RATE)
    if len(x) > n_max:
        x = x[:n_max].copy()
        k = SAMPLE_RATE // 100  # 10 ms fade-out: a hard cut would add a click
        x[-k:] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
    n_min = int(MIN_CLIP_S * SAMPLE_RATE)
    if len(x) < n_min:
        x = np.pad(x, (0, n_min - len(x)))
    return np.clip(x, -1.0, 1.0)


def _choices(rng: np.random.Generator, item: _Item, position: int) -> list[str]:
    candidates = [c for c in item.pool if c != item.answer and c not in item.confusable]
    others = [candidates[i] for i in rng.permutation(len(candidates))[: N_CHOICES - 1]]
    position %= len(others) + 1
    return others[:position] + [item.answer] + others[position:]


def make_real(out_dir: str | Path, seed: int = 0, per_class: int = DEFAULT_PER_CLASS) -> Path | None:
    """Write the real-audio test set: out_dir/test.jsonl, out_dir/audio/*.wav, out_dir/info.json.

    Args:
        out_dir: folder to write into (created); earlier ``real-*.wav`` clips there are replaced.
        seed: picks the files, the distractors, the phrasings and the order.
        per_class: at most this many clips per answer class (spoken words: voices per word).

    Returns:
        The path of test.jsonl, or None when no source package is installed.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out_dir = Path(out_dir)
    have = _available_or_warn()
    if have is None:
        return None

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 7])  # 7: a stream of its own, apart from harken.data.synth's splits
    voices = flite_voices() if have["flite"] else []
    planned = _plan(rng, have, per_class, voices)
    examples = _write_clips(out_dir, planned, rng)
    path = out_dir / "test.jsonl"
    write_jsonl(path, examples)
    write_json_atomic(out_dir / "info.json", _info(examples, have, voices, seed, per_class))
    logger.info("real audio: %d questions in %s (%.1f s)", len(examples), out_dir, time.perf_counter() - t0)
    return path


def _available_or_warn() -> dict[str, bool] | None:
    """`available_sources()`, with a notice per missing package; None when none is available."""
    have = available_sources()
    where = {"instrument": SONIC_PI_DIR, "system-sound": FREEDESKTOP_DIR, "spoken-word": f"`{FLITE_BIN}` on PATH"}
    for task, package in PACKAGES.items():
        if not have[package]:
            logger.warning(
                "real audio: %s is not installed (%s not found); skipping the %s questions. Install it with: %s",
                package, where[task], task, install_hint([package]),
            )
    if not any(have.values()):
        logger.warning(
            "real audio: no source package is available, nothing written. Install them with: %s",
            install_hint(PACKAGES.values()),
        )
        return None
    return have


def _plan(rng: np.random.Generator, have: dict[str, bool], per_class: int, voices: list[str]) -> list[tuple[_Item, int]]:
    """Every question and its correct position: balanced within each task, then the tasks mixed."""
    tasks: list[list[_Item]] = []
    if have["sonic-pi-samples"]:
        tasks.append(_instrument_items(rng, per_class))
    if have["sound-theme-freedesktop"]:
        tasks.append(_system_sound_items(rng, per_class))
    if have["flite"]:
        tasks.append(_spoken_items(per_class, voices))
    planned: list[tuple[_Item, int]] = []
    for items in tasks:
        positions = rng.permutation([j % N_CHOICES for j in range(len(items))])
        planned += list(zip(items, positions.tolist()))
    return [planned[j] for j in rng.permutation(len(planned))]


def _write_clips(out_dir: Path, planned: list[tuple[_Item, int]], rng: np.random.Generator) -> list[Example]:
    """Decode and write each planned question's clip; a file that cannot be read is left out."""
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for stale in audio_dir.glob("real-*.wav"):
        stale.unlink()
    examples: list[Example] = []
    for item, position in planned:
        choices = _choices(rng, item, position)
        question = QUESTIONS[item.kind][int(rng.integers(len(QUESTIONS[item.kind])))]
        if len(choices) < 2:
            logger.warning("real audio: only one class for %s (%s); question left out", item.task, item.meta["source"])
            continue
        try:
            x, sr = item.load()
        except (RuntimeError, OSError, sf.LibsndfileError, subprocess.SubprocessError) as e:
            logger.warning("real audio: could not read %s (%s); question left out", item.meta["source"], e)
            continue
        clip = to_clip(x, sr)
        ex_id = f"real-test-{len(examples):06d}"
        rel = f"audio/{ex_id}.wav"
        write_wav(out_dir / rel, clip)
        meta = {"task": item.task, "dataset": "debian-real", **item.meta}
        meta["clip_s"] = round(len(clip) / SAMPLE_RATE, 4)
        examples.append(Example(ex_id, rel, question, choices, item.answer, meta))
    return examples


def _info(examples: list[Example], have: dict[str, bool], voices: list[str], seed: int, per_class: int) -> dict[str, Any]:
    """info.json: the sources used, and the questions per task and per answer class."""
    counts: dict[str, int] = {t: sum(e.meta["task"] == t for e in examples) for t in PACKAGES}
    classes: dict[str, dict[str, int]] = {t: {} for t in PACKAGES}
    for e in examples:
        classes[e.meta["task"]][e.answer] = classes[e.meta["task"]].get(e.answer, 0) + 1
    sources: dict[str, dict[str, Any]] = {
        "sonic-pi-samples": {"available": have["sonic-pi-samples"], "path": str(SONIC_PI_DIR)},
        "sound-theme-freedesktop": {"available": have["sound-theme-freedesktop"], "path": str(FREEDESKTOP_DIR)},
        "flite": {
            "available": have["flite"],
            "binary": _flite_path(),
            "version": flite_version() if have["flite"] else None,
            "voices": voices,
        },
    }
    for task, package in PACKAGES.items():
        sources[package]["questions"] = counts[task]
    return {
        "dataset": "debian-real",
        "generator": "harken.data.realaudio",
        "version": VERSION,
        "seed": seed,
        "per_class": per_class,
        "sample_rate": SAMPLE_RATE,
        "max_clip_s": MAX_CLIP_S,
        "audio_format": "wav PCM_16 mono",
        "audio_paths": "relative to this folder",
        "sources": sources,
        "counts": {**counts, "total": len(examples)},
        "answers": {t: dict(sorted(c.items())) for t, c in classes.items()},
    }


# ---------------------------------------------------------------------------------------------
# Learnable real-audio skills, split by source (`real_skills`).
#
# The test set above asks about classes that no training set covers. These skills are the
# real-audio counterpart of `harken.data.synth.SKILLS`, for training and testing alike: each
# class has several sources, every source belongs to the train side or to the test side only (no
# clip, and no recording or spoken word behind a clip, is on both sides), and each question's clip
# is a fresh rendering of a source (speed, level, silence around it), so a side gives as many
# questions as asked for.

REAL_SKILL_PACKAGES = {"drum": "sonic-pi-samples", "alert-count": "sound-theme-freedesktop", "word-count": "flite"}
SIDES = ("train", "test")
TEST_SHARE = 1 / 3  # of each class's sources (at least one; and at least one stays on the train side)

# sonic-pi file name patterns -> the piece of a drum kit the sample is, in the skill's value order.
# Toms (drum_tom_*) are left out: with them as a fourth piece, a toy warmed up for the demo called
# held-out toms and snares kick or cymbal and stayed at chance on held-out samples.
DRUM_PIECES = {
    "kick": ("bd_*", "drum_bass_*", "drum_heavy_kick", "elec_hollow_kick", "elec_soft_kick"),
    "snare": ("sn_*", "drum_snare_*", "elec_*snare"),
    "cymbal": ("drum_cymbal_*", "drum_splash_*", "elec_cymbal"),
}
DRUM_MAX_S = 2.0  # a long cymbal is cut (with a fade), so every clip stays short
COUNTS = ("one", "two", "three")  # answers of the two counting skills
ALERT_MAX_S = 1.5  # alerts longer than this (ringing phones, alarm clocks) are left out
ALERT_SNIPPET_S = 0.3  # each play of an alert: its first 0.3 s from the onset, faded in and out
WORD_MAX_S = 1.0  # each spoken word, cut to this

REAL_QUESTIONS = {
    "drum": (
        "Which piece of a drum kit is struck in this sample?",
        "What part of a drum kit do you hear?",
        "Which drum kit piece is playing?",
    ),
    "alert-count": (
        "How many times does the alert sound play?",
        "How many alert sounds do you hear?",
        "Count the alert sounds. How many are there?",
    ),
    "word-count": (
        "How many words are spoken?",
        "How many words does the speaker say?",
        "Count the spoken words. How many are there?",
    ),
}


def split_sources(by_class: dict[str, list[Any]], seed: int, task: str) -> dict[str, dict[str, list[Any]]]:
    """{"train": {class: sources}, "test": {class: sources}}: each class's sources dealt to one side only.

    A seeded shuffle per class puts round(TEST_SHARE x n) of them (at least one) on the test side
    and the rest (at least one) on the train side; a class with a single source is left out.
    """
    sides: dict[str, dict[str, list[Any]]] = {s: {} for s in SIDES}
    for i, (label, sources) in enumerate(sorted(by_class.items())):
        if len(sources) < 2:
            logger.warning("real audio: %s class %r has one source; it cannot be on both sides and is left out", task, label)
            continue
        rng = np.random.default_rng([seed, 11, zlib.crc32(task.encode()), i])
        order = [sources[j] for j in rng.permutation(len(sources))]
        k = min(len(sources) - 1, max(1, round(TEST_SHARE * len(sources))))
        sides["test"][label], sides["train"][label] = sorted(order[:k], key=str), sorted(order[k:], key=str)
    return sides


def _fit(x: np.ndarray, seconds: float) -> np.ndarray:
    """At most `seconds` long, with a 10 ms fade-out where cut."""
    n = int(seconds * SAMPLE_RATE)
    if len(x) <= n:
        return x
    x = x[:n].copy()
    k = SAMPLE_RATE // 100
    x[-k:] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
    return x


def _at_peak(x: np.ndarray, level_db: float) -> np.ndarray:
    return (x * (10 ** (level_db / 20) / max(float(np.abs(x).max()), 1e-9))).astype(np.float32)


def _speed(rng: np.random.Generator, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Played 0.9-1.1x as fast (pitch and length change together, as on a turntable)."""
    speed = float(rng.uniform(0.9, 1.1))
    return soxr.resample(x, SAMPLE_RATE * speed, SAMPLE_RATE).astype(np.float32), speed


class _Once:
    """A source loaded once, as 16 kHz mono without leading or trailing silence (rendered many times)."""

    def __init__(self, load: Callable[[Any], tuple[np.ndarray, int]]):
        self.load, self.cache = load, {}

    def __call__(self, key: Any) -> np.ndarray:
        if key not in self.cache:
            x = to_clip(*self.load(key))
            loud = np.flatnonzero(np.abs(x) > 0.02 * max(float(np.abs(x).max()), 1e-9))
            self.cache[key] = x[loud[0]: loud[-1] + 1] if len(loud) else x
        return self.cache[key]


def _faded(x: np.ndarray, seconds: float) -> np.ndarray:
    """The first `seconds` of `x`, with 10 ms ramps at both ends."""
    x = x[: int(seconds * SAMPLE_RATE)].copy()
    k = min(SAMPLE_RATE // 100, len(x) // 2)
    ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
    x[:k] *= ramp
    x[len(x) - k:] *= ramp[::-1]
    return x


def _drum_skill(pools: dict[str, list[Path]]) -> Skill:
    """`pools` is {piece: sample files}: one sample, at a random speed and level."""
    source = _Once(lambda f: _read_file(f))

    def render(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
        f = pools[value][int(rng.integers(len(pools[value])))]
        x, speed = _speed(rng, source(f))
        x = _at_peak(_fit(x, DRUM_MAX_S), rng.uniform(-12, -3))
        return assemble(rng, [x], []), {"source": str(f), "package": PACKAGES["instrument"], "speed": round(speed, 3)}

    values = tuple(v for v in DRUM_PIECES if v in pools)
    return Skill("drum", values, min(4, len(values)), REAL_QUESTIONS["drum"], render, "debian-real")


def _count_skill(name: str, pool: list[Any], source: Callable[[Any], np.ndarray], seconds: float,
                 describe: Callable[[list[Any]], dict[str, Any]]) -> Skill:
    """One, two or three sounds drawn from `pool` (the same one repeated when `name` is alert-count)."""
    repeat = name == "alert-count"

    def render(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
        n = COUNTS.index(value) + 1
        keys = [pool[int(rng.integers(len(pool)))]] * n if repeat else [pool[int(j)] for j in rng.integers(len(pool), size=n)]
        level = rng.uniform(-12, -4)
        sounds = [_at_peak(_faded(_speed(rng, source(k))[0], seconds), level + rng.uniform(-2, 2)) for k in keys]
        return assemble(rng, sounds, rng.uniform(0.2, 0.45, size=n - 1)), describe(keys)

    return Skill(name, COUNTS, len(COUNTS), REAL_QUESTIONS[name], render, "debian-real")


def _alert_files() -> list[Path]:
    """Every distinct freedesktop sound of at most ALERT_MAX_S (a symlinked alias counts once), voices aside."""
    files = sorted({f.resolve() for f in FREEDESKTOP_DIR.glob("*.oga") if f.resolve().is_file()})
    return [f for f in files if not fnmatch.fnmatchcase(f.stem, "audio-channel-*") and sf.info(str(f)).duration <= ALERT_MAX_S]


def _drum_files() -> dict[str, list[Path]]:
    by_piece: dict[str, list[Path]] = {}
    for f in sorted(SONIC_PI_DIR.glob("*.flac")):
        piece = next((p for p, pats in DRUM_PIECES.items() if any(fnmatch.fnmatchcase(f.stem, x) for x in pats)), None)
        if piece:
            by_piece.setdefault(piece, []).append(f)
    return by_piece


def real_skills(side: str, seed: int = 0) -> dict[str, Skill]:
    """The real-audio skills whose package is installed, drawing their clips from `side`'s sources.

    | skill       | package                 | clip                                      | answers                  |
    |-------------|-------------------------|-------------------------------------------|--------------------------|
    | drum        | sonic-pi-samples        | one drum sample                           | kick, snare, cymbal      |
    | alert-count | sound-theme-freedesktop | a desktop alert played one to three times | one, two, three          |
    | word-count  | flite                   | one to three spoken words (one voice)     | one, two, three          |

    Args:
        side: "train" or "test": which share of the sources (`split_sources`: drum samples,
            alert files, the words flite says) the clips come from. The sides share none.
        seed: the seed of that split (the same for both sides).

    Returns:
        {name: `harken.data.synth.Skill`} in REAL_SKILL_PACKAGES order, for
        `harken.data.synth.make_questions`; a missing package leaves its skill out with a notice.
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    have = available_sources()
    skills: dict[str, Skill] = {}
    for name, package in REAL_SKILL_PACKAGES.items():
        if not have[package]:
            logger.warning("real audio: %s is not installed; the %s skill is left out. Install it with: %s",
                           package, name, install_hint([package]))
        elif name == "drum":
            skills[name] = _drum_skill(split_sources(_drum_files(), seed, name)[side])
        elif name == "alert-count":
            files = split_sources({"alert": _alert_files()}, seed, name)[side]["alert"]
            skills[name] = _count_skill(name, files, _Once(_read_file), ALERT_SNIPPET_S,
                                        lambda keys: {"source": str(keys[0]), "package": PACKAGES["system-sound"], "plays": len(keys)})
        else:  # word-count: the words are the sources (no number word: "two" said once is one word)
            said = [w for w in WORDS + DIGITS if w not in COUNTS]
            words = split_sources({"word": said}, seed, name)[side]["word"]
            voices = flite_voices() or [None]
            pool = [(v, w) for v in voices for w in words]
            skills[name] = _count_skill(name, pool, _Once(lambda vw: _speak(vw[1], vw[0])), WORD_MAX_S,
                                        lambda keys: {"source": " ".join(w for _, w in keys), "voice": keys[0][0] or "default",
                                                      "package": PACKAGES["spoken-word"], "words": len(keys)})
    return skills
