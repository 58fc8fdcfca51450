"""Synthetic audio questions: a deterministic, numpy-only generator of short clips and their QA.

Owns: six toy skills whose answers can be read only from the audio (and `register`, outside the
defaults), the balanced sampling of answers and answer positions, writing the clips (16 kHz mono,
PCM_16 wav) and the canonical JSON lines of the train / test / warmup splits (`make_synthetic`),
and of named question sets asked in a chosen way (`make_questions` with a `Style`: which
phrasings, how many options, in what order; also for the real-audio skills of
`harken.data.realaudio.real_skills`). Does not own: real recordings (`harken.data.realaudio`),
feature extraction (`harken.data.audio`), prompts (`harken.data.prompts`), the `harken data
synth` command (`harken.cli.data`).

The skills (``meta["task"]``), each a comparison or a count a tiny encoder can learn from a mel
spectrogram, with absolute values drawn at random so that only a comparison answers them:

| skill    | clip                                    | choices                               |
|----------|-----------------------------------------|---------------------------------------|
| count    | 1-4 short beeps                         | one, two, three, four                 |
| pitch    | two tones, frequency ratio 1.5-2.5      | higher, lower                         |
| loudness | two tones, 12-18 dB apart               | louder, softer                        |
| duration | two tones, duration ratio 2-3           | longer, shorter                       |
| timbre   | one sine / square / sawtooth / noise    | sine, square, sawtooth, noise         |
| sweep    | one exponential glide, ratio 2-4        | rising, falling                       |

For two-tone skills the pair's *centre* (geometric mean frequency, mean level, geometric mean
duration) is random and the two values sit symmetrically around it, so the first and second
tones have the same distribution whatever the answer: the absolute value of either tone alone
says nothing.

Balance: within each split and skill, item i gets answer value ``i % V`` and correct position
``(i // V + i % V) % C`` (V values, C choices), so over every V*C items each (value, position)
pair occurs once; the items are then shuffled with the seeded generator and checked. The
question phrasing is drawn independently of the answer, so the question text alone never
determines the answer.

Files: ``out_dir/{train,test,warmup}.jsonl`` (``Example`` rows whose ``audio`` is relative to
``out_dir``, e.g. ``audio/synth-train-000123.wav``; `load_split` resolves it),
``out_dir/audio/<id>.wav`` and ``out_dir/info.json``, written last (`is_complete`); a question set
is ``out_dir/NAME.jsonl`` with clips ``out_dir/audio/NAME-NNNNNN.wav``. The same seed gives
byte-identical files in any folder.
"""

from __future__ import annotations

import logging
import re
import time
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harken.data.records import Example
from harken.io import iter_jsonl, write_json_atomic, write_jsonl

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Hz; what the Whisper-style feature extractor expects
GENERATOR_VERSION = "1"  # bump when the clips or questions of a given seed change
MAX_CLIP_S = 4.5  # every clip fits a 5 s encoder window
MIN_CLIP_S = 0.5  # shorter clips are padded with (noisy) silence
SPLITS = ("train", "test", "warmup")
_SPLIT_CODE = {"train": 0, "test": 1, "warmup": 2}  # separate random streams: splits share no clip
_FADE_S = 0.01  # raised-cosine on/off ramps, so tone edges do not click (and smear the spectrum)
DEFAULT_COUNTS = {"train": 600, "test": 180, "warmup": 300}


# ---------------------------------------------------------------------------------------------
# Signal building blocks. All return float32 arrays at SAMPLE_RATE.


def _n(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def _fade(x: np.ndarray) -> np.ndarray:
    k = min(_n(_FADE_S), len(x) // 2)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k, dtype=np.float64))
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _tone(freq: float, seconds: float, amp: float) -> np.ndarray:
    t = np.arange(_n(seconds)) / SAMPLE_RATE
    return _fade(amp * np.sin(2 * np.pi * freq * t))


def _harmonic(freq: float, seconds: float, kind: str) -> np.ndarray:
    """Band-limited square or sawtooth (harmonics below Nyquist only, so no aliasing).

    One period is built by additive synthesis on a fine grid, then read out at the tone's phase:
    as exact as summing every harmonic over the whole clip, at a fraction of the cost.
    """
    ks = np.arange(1, int((SAMPLE_RATE / 2 - 1) // freq) + 1)
    if kind == "square":  # odd harmonics at 1/k
        ks = ks[ks % 2 == 1]
        weights = 4 / np.pi / ks
    else:  # sawtooth: every harmonic at 1/k, alternating sign
        weights = 2 / np.pi * ((-1.0) ** (ks + 1)) / ks
    grid = np.linspace(0.0, 1.0, 4097)  # one period, closed so interpolation wraps cleanly
    table = weights @ np.sin(2 * np.pi * np.outer(ks, grid))
    cycles = np.mod(freq * np.arange(_n(seconds)) / SAMPLE_RATE, 1.0)
    return np.interp(cycles, grid, table)


def _glide(f_start: float, f_end: float, seconds: float, amp: float) -> np.ndarray:
    """Exponential sweep: the instantaneous frequency moves evenly on a log (mel-like) scale."""
    n = _n(seconds)
    t = np.arange(n) / SAMPLE_RATE
    k = np.log(f_end / f_start) / seconds
    phase = 2 * np.pi * f_start * (np.expm1(k * t) / k)  # integral of f_start * exp(k t)
    return _fade(amp * np.sin(phase))


def _rms_normalise(x: np.ndarray, rms: float) -> np.ndarray:
    return x * (rms / max(float(np.sqrt(np.mean(x**2))), 1e-12))


def _db(level_db: float) -> float:
    return float(10 ** (level_db / 20))


def assemble(rng: np.random.Generator, parts: Sequence[np.ndarray], gaps: Sequence[float]) -> np.ndarray:
    """Lead silence, parts separated by gaps, tail silence, at least MIN_CLIP_S, plus faint noise."""
    lead, tail = rng.uniform(0.05, 0.3, size=2)
    pieces = [np.zeros(_n(lead))]
    for i, p in enumerate(parts):
        if i:
            pieces.append(np.zeros(_n(gaps[i - 1])))
        pieces.append(p)
    pieces.append(np.zeros(_n(tail)))
    x = np.concatenate(pieces)
    if len(x) < _n(MIN_CLIP_S):
        x = np.pad(x, (0, _n(MIN_CLIP_S) - len(x)))
    if len(x) > _n(MAX_CLIP_S):  # cannot happen with the ranges below; a guard for edits
        raise AssertionError(f"synthetic clip of {len(x) / SAMPLE_RATE:.2f} s exceeds {MAX_CLIP_S} s")
    # A little background noise (-66 to -54 dBFS): clips are never digitally silent, yet the
    # softest tone stays >= 20 dB above it.
    x = x + rng.uniform(0.0005, 0.002) * rng.standard_normal(len(x), dtype=np.float32)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _pair(centre: float, spread: float, first_is_high: bool) -> tuple[float, float]:
    """Two values symmetric around `centre` (multiplicatively): (first, second)."""
    lo, hi = centre / np.sqrt(spread), centre * np.sqrt(spread)
    return (hi, lo) if first_is_high else (lo, hi)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono wav via the standard library.

    soundfile would do, but it syncs every file to disk on close (~2 ms each on a busy disk),
    which dominated generation time; the bytes are the same kind of plain RIFF/WAVE file.
    """
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


# ---------------------------------------------------------------------------------------------
# Skills. Each `render(rng, value)` returns (audio, generating parameters for meta).

_Render = Callable[[np.random.Generator, str], tuple[np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class Skill:
    name: str
    values: tuple[str, ...]  # every possible answer, in the skill's own (canonical) order
    n_choices: int  # options shown per question by default (<= len(values))
    questions: tuple[str, ...]  # phrasings, drawn independently of the answer
    render: _Render
    dataset: str = "synthetic"  # meta["dataset"] of its questions (real-audio skills: "debian-real")


@dataclass(frozen=True)
class Style:
    """How the questions of a set are asked (`make_questions`); the default is `make_synthetic`'s.

    phrasings: indices into each skill's `questions` to draw from (None: all of them); an index a
        skill lacks is left out for that skill, but each skill must keep at least one.
    n_choices: option counts to draw from per question, each capped at the skill's number of
        values (None: the skill's own `n_choices`).
    order: "shuffled" (the answer's position balanced) or "canonical" (the options in the skill's
        value order, e.g. one, two, four).
    """

    phrasings: tuple[int, ...] | None = None
    n_choices: tuple[int, ...] | None = None
    order: str = "shuffled"

    def choice_counts(self, skill: Skill) -> list[int]:
        """The option counts a question of `skill` draws from (at least 2, at most its values)."""
        if self.n_choices is None:
            return [skill.n_choices]
        return sorted({min(max(2, c), len(skill.values)) for c in self.n_choices})

    def phrasing_indices(self, skill: Skill) -> list[int]:
        """The phrasings a question of `skill` draws from."""
        if self.phrasings is None:
            return list(range(len(skill.questions)))
        kept = [i for i in self.phrasings if 0 <= i < len(skill.questions)]
        if not kept:
            raise ValueError(f"skill {skill.name!r} has {len(skill.questions)} phrasings; none of {list(self.phrasings)}")
        return kept


_COUNT_WORDS = ("one", "two", "three", "four")


def _render_count(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    n_beeps = _COUNT_WORDS.index(value) + 1
    freq = float(np.exp(rng.uniform(np.log(400), np.log(2000))))
    amp = _db(rng.uniform(-14, -6))
    # Beeps >= 80 ms and gaps >= 120 ms: each spans several 40 ms encoder tokens.
    beeps = [_tone(freq, rng.uniform(0.08, 0.15), amp * _db(rng.uniform(-2, 2))) for _ in range(n_beeps)]
    gaps = rng.uniform(0.12, 0.3, size=n_beeps - 1)
    x = assemble(rng, beeps, gaps)
    return x, {"n_beeps": n_beeps, "freq_hz": round(freq, 2)}


def _render_pitch(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    centre = float(np.exp(rng.uniform(np.log(300), np.log(1200))))
    ratio = float(rng.uniform(1.5, 2.5))
    f1, f2 = _pair(centre, ratio, first_is_high=(value == "lower"))
    seconds, amp = rng.uniform(0.25, 0.5), _db(rng.uniform(-14, -6))
    x = assemble(rng, [_tone(f1, seconds, amp), _tone(f2, seconds, amp)], [rng.uniform(0.1, 0.3)])
    return x, {"freq1_hz": round(f1, 2), "freq2_hz": round(f2, 2), "ratio": round(ratio, 3)}


def _render_loudness(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    freq = float(np.exp(rng.uniform(np.log(300), np.log(1500))))
    centre_db, diff_db = rng.uniform(-22, -10), rng.uniform(12, 18)
    hi_db, lo_db = centre_db + diff_db / 2, centre_db - diff_db / 2
    l1, l2 = (lo_db, hi_db) if value == "louder" else (hi_db, lo_db)
    seconds = rng.uniform(0.25, 0.5)
    x = assemble(rng, [_tone(freq, seconds, _db(l1)), _tone(freq, seconds, _db(l2))], [rng.uniform(0.1, 0.3)])
    return x, {"freq_hz": round(freq, 2), "level1_db": round(float(l1), 2), "level2_db": round(float(l2), 2)}


def _render_duration(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    freq = float(np.exp(rng.uniform(np.log(300), np.log(1500))))
    centre, ratio = rng.uniform(0.25, 0.45), float(rng.uniform(2.0, 3.0))
    d1, d2 = _pair(centre, ratio, first_is_high=(value == "shorter"))
    amp = _db(rng.uniform(-14, -6))
    x = assemble(rng, [_tone(freq, d1, amp), _tone(freq, d2, amp)], [rng.uniform(0.1, 0.3)])
    return x, {"freq_hz": round(freq, 2), "dur1_s": round(float(d1), 4), "dur2_s": round(float(d2), 4)}


def _render_timbre(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    freq = float(np.exp(rng.uniform(np.log(200), np.log(800))))
    seconds = rng.uniform(0.4, 0.9)
    if value == "sine":
        sig = np.sin(2 * np.pi * freq * np.arange(_n(seconds)) / SAMPLE_RATE)
    elif value == "noise":
        sig = rng.standard_normal(_n(seconds))
    else:
        sig = _harmonic(freq, seconds, value)
    # Same loudness for every waveform, so level is no cue.
    sig = _fade(_rms_normalise(sig, _db(rng.uniform(-22, -14))))
    x = assemble(rng, [sig], [])
    params: dict[str, Any] = {"waveform": value}
    if value != "noise":
        params["freq_hz"] = round(freq, 2)
    return x, params


def _render_sweep(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    centre = float(np.exp(rng.uniform(np.log(300), np.log(1500))))
    ratio = float(rng.uniform(2.0, 4.0))
    f_start, f_end = _pair(centre, ratio, first_is_high=(value == "falling"))
    seconds, amp = rng.uniform(0.5, 1.5), _db(rng.uniform(-14, -6))
    x = assemble(rng, [_glide(f_start, f_end, seconds, amp)], [])
    return x, {"f_start_hz": round(f_start, 2), "f_end_hz": round(f_end, 2), "glide_s": round(float(seconds), 4)}


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill(
            "count",
            _COUNT_WORDS,
            4,
            (
                "How many beeps are there in the audio?",
                "How many short tones do you hear?",
                "Count the beeps in this clip. How many are there?",
                "How many times does the tone beep?",
            ),
            _render_count,
        ),
        Skill(
            "pitch",
            ("higher", "lower"),
            2,
            (
                "Is the second tone higher or lower in pitch than the first?",
                "Compared with the first tone, is the second tone higher or lower?",
                "How does the pitch of the second tone compare with the first one?",
            ),
            _render_pitch,
        ),
        Skill(
            "loudness",
            ("louder", "softer"),
            2,
            (
                "Is the second tone louder or softer than the first?",
                "Compared with the first tone, is the second one louder or softer?",
                "How does the volume of the second tone compare with the first one?",
            ),
            _render_loudness,
        ),
        Skill(
            "duration",
            ("longer", "shorter"),
            2,
            (
                "Is the second tone longer or shorter than the first?",
                "Compared with the first tone, does the second one last longer or shorter?",
                "How does the length of the second tone compare with the first one?",
            ),
            _render_duration,
        ),
        Skill(
            "timbre",
            ("sine", "square", "sawtooth", "noise"),
            4,
            (
                "Which waveform is this sound?",
                "What kind of signal do you hear?",
                "Which of these waveforms produced the sound?",
            ),
            _render_timbre,
        ),
        Skill(
            "sweep",
            ("rising", "falling"),
            2,
            (
                "Is the pitch of this glide rising or falling?",
                "Does the sweep go up or down in pitch: rising or falling?",
                "Which way does the tone's pitch move over time?",
            ),
            _render_sweep,
        ),
    )
}


# Skills outside the defaults (`make_synthetic` never draws them, so its files stay as they were);
# `make_questions` takes them by name. Each asks for an absolute judgement, which the default
# skills avoid on purpose, and is easy for a small encoder: the demo's base learns it in its warm-up.
REGISTER_BANDS = {"low": (150.0, 300.0), "middle": (600.0, 1200.0), "high": (2400.0, 4800.0)}  # Hz, two octaves apart


def _render_register(rng: np.random.Generator, value: str) -> tuple[np.ndarray, dict[str, Any]]:
    lo, hi = REGISTER_BANDS[value]
    freq = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    x = assemble(rng, [_tone(freq, rng.uniform(0.3, 0.8), _db(rng.uniform(-16, -6)))], [])
    return x, {"freq_hz": round(freq, 2)}


MORE_SKILLS: dict[str, Skill] = {
    "register": Skill(
        "register",
        tuple(REGISTER_BANDS),
        3,
        (
            "Is this tone low, middle or high in pitch?",
            "In which pitch register is the tone?",
            "How high is the tone you hear?",
        ),
        _render_register,
    ),
}

# ---------------------------------------------------------------------------------------------
# Balanced plans.


def balanced_plan(n: int, n_values: int, n_choices: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(answer value index, correct position) for n items, shuffled.

    Item i gets value ``i % V`` and position ``(i // V + i % V) % C``: every V*C items contain
    each (value, position) pair exactly once, so values are balanced within 1 and positions within
    the remainder of one V*C block.
    """
    plan = [(i % n_values, (i // n_values + i % n_values) % n_choices) for i in range(n)]
    return [plan[j] for j in rng.permutation(n)]


def _check_balance(items: list[tuple[str, int, int]], skills: dict[str, Skill], n_choices: dict[str, int]) -> None:
    """Fail loudly if a skill's answers or positions drift from even by more than one block."""
    for name, skill in skills.items():
        rows = [(v, p) for s, v, p in items if s == name]
        n, block = len(rows), len(skill.values) * n_choices[name]
        for what, k, counts in (
            ("answer value", len(skill.values), np.bincount([v for v, _ in rows], minlength=len(skill.values))),
            ("answer position", n_choices[name], np.bincount([p for _, p in rows], minlength=n_choices[name])),
        ):
            if n and counts.max() - counts.min() > max(1, block // k):
                raise AssertionError(f"synthetic {name}: unbalanced {what} counts {counts.tolist()}")


def _split_counts(n: int, k: int) -> list[int]:
    return [n // k + (1 if j < n % k else 0) for j in range(k)]


# ---------------------------------------------------------------------------------------------
# Public API.


def resolve_skills(skills: Sequence[str] | str | None) -> list[str]:
    """Skill names in canonical order; `skills` may be a comma-separated string. Unknown -> ValueError."""
    if skills is None:
        return list(SKILLS)
    if isinstance(skills, str):
        skills = [s for s in (x.strip() for x in skills.split(",")) if s]
    unknown = [s for s in skills if s not in SKILLS]
    if unknown or not skills:
        raise ValueError(
            f"unknown synthetic skill(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from: {', '.join(SKILLS)}"
        )
    return [s for s in SKILLS if s in set(skills)]


def _make_split(out_dir: Path, split: str, n: int, seed: int, skill_names: list[str]) -> list[Example]:
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    return _write_questions(out_dir, rng, f"synth-{split}", n, {s: SKILLS[s] for s in skill_names}, Style(),
                            {"split": split})


def _write_questions(out_dir: Path, rng: np.random.Generator, id_prefix: str, n: int, skills: dict[str, Skill],
                     style: Style, meta: dict[str, Any]) -> list[Example]:
    """n questions shared evenly among `skills`, asked as `style`; clips written to out_dir/audio/ID.wav.

    The draws, in order: each skill's balanced (value, position) plan, the mixing permutation,
    then per item its option count (only when `style` offers several), distractors, phrasing and
    clip. The default style therefore gives exactly the files `make_synthetic` always gave.
    """
    if style.order not in ("shuffled", "canonical"):
        raise ValueError(f"question order must be 'shuffled' or 'canonical', got {style.order!r}")
    counts = {name: style.choice_counts(s) for name, s in skills.items()}
    phrasings = {name: style.phrasing_indices(s) for name, s in skills.items()}
    items: list[tuple[str, int, int]] = []
    for name, n_skill in zip(skills, _split_counts(n, len(skills))):
        s = skills[name]
        items += [(name, v, p) for v, p in balanced_plan(n_skill, len(s.values), max(counts[name]), rng)]
    items = [items[j] for j in rng.permutation(len(items))]  # mix the skills through the split
    _check_balance(items, skills, {name: max(c) for name, c in counts.items()})

    examples = []
    for idx, (name, v, pos) in enumerate(items):
        skill = skills[name]
        options = counts[name]
        n_choices = options[0] if len(options) == 1 else options[int(rng.integers(len(options)))]
        answer = skill.values[v]
        others = [skill.values[j] for j in rng.permutation(len(skill.values)) if j != v][: n_choices - 1]
        if style.order == "canonical":
            choices = [x for x in skill.values if x == answer or x in others]
        else:
            pos %= n_choices
            choices = others[:pos] + [answer] + others[pos:]
        ways = phrasings[name]
        question = skill.questions[ways[int(rng.integers(len(ways)))]]
        audio, params = skill.render(rng, answer)
        ex_id = f"{id_prefix}-{idx:06d}"
        rel = f"audio/{ex_id}.wav"
        write_wav(out_dir / rel, audio)
        row_meta = {"task": name, "dataset": skill.dataset, **meta, **params}
        row_meta["clip_s"] = round(len(audio) / SAMPLE_RATE, 4)
        examples.append(Example(ex_id, rel, question, choices, answer, row_meta))
    return examples


def make_questions(out_dir: str | Path, name: str, n: int, seed: int, skills: Sequence[Skill | str],
                   style: Style = Style(), meta: dict[str, Any] | None = None) -> Path:
    """Write one question set, out_dir/NAME.jsonl, and its clips (out_dir/audio/NAME-NNNNNN.wav).

    Args:
        name: the set's name: its file, its clips' ids, and its own random stream (two sets of one
            seed share no clip).
        n: questions, shared evenly among `skills`.
        skills: names of `SKILLS`, or `Skill` objects (e.g. the real-audio skills of
            `harken.data.realaudio.real_skills`).
        style: which phrasings, how many options, in what order.
        meta: fields added to every question's meta (e.g. {"category": "rephrased"}).

    Returns:
        The path of the JSON-lines file. The same arguments give byte-identical files.
    """
    if n < 0:
        raise ValueError(f"question set {name!r}: the number of questions must be >= 0, got {n}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"question set name {name!r}: use letters, digits, '.', '_' and '-'")
    chosen: dict[str, Skill] = {}
    for k in skills:
        skill = k if isinstance(k, Skill) else MORE_SKILLS.get(k) or SKILLS[resolve_skills([k])[0]]  # unknown: ValueError
        chosen[skill.name] = skill
    if not chosen:
        raise ValueError(f"question set {name!r}: no skill given")
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "audio").glob(f"{name}-*.wav"):
        stale.unlink()
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    examples = _write_questions(out_dir, rng, name, n, chosen, style, dict(meta or {}))
    path = out_dir / f"{name}.jsonl"
    write_jsonl(path, examples)
    return path


def make_synthetic(
    out_dir: str | Path,
    seed: int = 0,
    n_train: int = DEFAULT_COUNTS["train"],
    n_test: int = DEFAULT_COUNTS["test"],
    n_warmup: int = DEFAULT_COUNTS["warmup"],
    skills: Sequence[str] | str | None = None,
) -> dict[str, Path]:
    """Write the synthetic train / test / warmup splits, their clips and info.json.

    Args:
        out_dir: folder to write into (created); earlier ``synth-*.wav`` clips there are replaced.
        seed: the same seed gives byte-identical files.
        n_train, n_test, n_warmup: questions per split, shared evenly among the skills.
        skills: subset of `SKILLS` (names or a comma-separated string); None = all.

    Returns:
        {"train": path, "test": path, "warmup": path} of the JSON-lines files.
    """
    out_dir = Path(out_dir)
    skill_names = resolve_skills(skills)
    counts = {"train": n_train, "test": n_test, "warmup": n_warmup}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"synthetic split {split!r}: the number of questions must be >= 0, got {n}")
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    for stale in audio_dir.glob("synth-*.wav"):  # a previous run with other counts
        stale.unlink()

    t0 = time.perf_counter()
    paths: dict[str, Path] = {}
    info_counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        examples = _make_split(out_dir, split, counts[split], seed, skill_names)
        paths[split] = out_dir / f"{split}.jsonl"
        write_jsonl(paths[split], examples)
        per_skill = {s: sum(e.meta["task"] == s for e in examples) for s in skill_names}
        info_counts[split] = {**per_skill, "total": len(examples)}
    write_json_atomic(
        out_dir / "info.json",
        {
            "dataset": "synthetic",
            "generator": "harken.data.synth",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "sample_rate": SAMPLE_RATE,
            "audio_format": "wav PCM_16 mono",
            "skills": {s: list(SKILLS[s].values) for s in skill_names},
            "counts": info_counts,
            "audio_paths": "relative to this folder",
        },
    )
    logger.info("synthetic data: %d clips in %s (%.1f s)", sum(counts.values()), out_dir, time.perf_counter() - t0)
    return paths


def is_complete(out_dir: str | Path) -> bool:
    """Whether `make_synthetic` finished writing `out_dir` (its info.json is written last)."""
    return (Path(out_dir) / "info.json").exists()


def load_split(path: str | Path, split: str | None = None) -> list[Example]:
    """Read a split written here (or by `harken.data.realaudio`), audio paths made absolute.

    Args:
        path: the JSON-lines file, or the output folder together with `split`.
        split: "train" / "test" / "warmup" when `path` is a folder.
    """
    path = Path(path)
    if split is not None:
        path = path / f"{split}.jsonl"
    out = []
    for lineno, row in iter_jsonl(path):
        try:
            ex = Example.from_dict(row)
        except KeyError as e:
            raise ValueError(f"{path}:{lineno}: missing field {e.args[0]!r}") from None
        if not Path(ex.audio).is_absolute():
            ex.audio = str((path.parent / ex.audio).resolve())
        out.append(ex)
    return out


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    """A small text table: one row per split, one column per skill (info.json's "counts")."""
    cols = list(next(iter(counts.values())).keys()) if counts else []
    width = max([len(c) for c in cols] + [6])
    lines = ["split".ljust(8) + "".join(c.rjust(width + 1) for c in cols)]
    for split, row in counts.items():
        lines.append(split.ljust(8) + "".join(str(row.get(c, 0)).rjust(width + 1) for c in cols))
    return "\n".join(lines)
