"""The demo's arithmetic and wording, without running it: spreads over seeds, the GRPO-vs-SFT call,
the verdict sentences, and the log filter that keeps one progress line per tenth of a loop."""

from __future__ import annotations

import logging
import math

import pytest

from harken.cli.demo import EveryTenth
from harken.demo.report import accuracy_table, compare, verdict
from harken.demo.run import spread


def test_spread_is_mean_sample_sd_min_max():
    s = spread([50.0, 70.0, 60.0])
    assert s == {"per_seed": [50.0, 70.0, 60.0], "mean": 60.0, "sd": 10.0, "min": 50.0, "max": 70.0}
    assert spread([42.5])["sd"] == 0.0  # one seed: no spread


def test_compare_calls_a_difference_only_when_every_seed_agrees_and_it_exceeds_noise():
    a, b = spread([70.0, 72.0, 74.0]), spread([60.0, 61.0, 62.0])
    c = compare(a, b, n=60)
    # 2 SE of the difference over 3 x 60 answers each: 200 * sqrt((.72 * .28 + .61 * .39) / 180)
    assert c["noise"] == pytest.approx(200 * math.sqrt((0.72 * 0.28 + 0.61 * 0.39) / 180))
    assert c["per_seed"] == [10.0, 11.0, 12.0] and c["diff"] == pytest.approx(11.0) and c["call"] == "a"
    assert compare(b, a, n=60)["call"] == "b"
    mixed = compare(spread([70.0, 58.0, 74.0]), b, n=60)  # one seed disagrees
    assert mixed["per_seed"] == [10.0, -3.0, 12.0] and mixed["call"] == "tie"
    small = compare(spread([63.0, 64.0, 65.0]), b, n=60)  # every seed agrees, but within the noise
    assert small["diff"] == pytest.approx(3.0) and small["call"] == "tie"


def _demo(parts: dict[str, dict[str, list[float]]]) -> dict:
    shift = {"in-domain": "none"}
    return {
        "seeds": [0, 1, 2],
        "data": {"parts": [{"key": k, "title": k, "skills": ["count"], "shift": shift.get(k, "wording"), "n": 60}
                           for k in parts]},
        "results": {"parts": {k: {m: {**spread(v), "n": 60} for m, v in row.items()} for k, row in parts.items()},
                    "shifted": {}},
    }


def test_verdict_says_which_arm_is_ahead_with_the_seeds_and_the_base():
    demo = _demo({
        "in-domain": {"base": [50.0], "sft": [90.0, 92.0, 94.0], "sft-wall": [95.0, 95.0, 96.0],
                      "grpo": [70.0, 72.0, 74.0]},
        "rephrased": {"base": [60.0], "sft": [30.0, 31.0, 32.0], "grpo": [58.0, 61.0, 59.0]},
    })
    lines = verdict(demo)
    assert lines[0].startswith("in-domain (60 questions x 3 seeds): GRPO 72.0 ± 2.0, SFT 92.0 ± 2.0: SFT ahead by 20.0 points")
    assert "GRPO - SFT per seed: -20.0, -20.0, -20.0" in lines[0]
    assert "SFT given GRPO's wall time: 95.3 ± 0.6, GRPO - it = -23.3 (SFT ahead)." in lines[0]
    assert "The base scored 50.0; SFT and GRPO rose above it." in lines[0]
    assert "GRPO ahead by 28.3 points, in every seed" in lines[1]
    assert "The base scored 60.0; SFT fell below it." in lines[1]
    header, rows = accuracy_table(demo)
    assert header[0] == "test part" and rows[1] == ["rephrased", "60.0", "31.0 ± 1.0", "-", "59.3 ± 1.5", "60"]


def _line(done: int, total: int, at: float, desc: str = "grpo") -> logging.LogRecord:
    record = logging.LogRecord("harken.progress", logging.INFO, __file__, 1, "%s",
                               (f"{desc}: step {done}/{total}  reward 1.0",), None)
    record.created = at
    return record


def test_every_tenth_keeps_one_progress_line_per_tenth_of_each_loop():
    f = EveryTenth(gap_s=10)
    kept = [d for d in range(1, 101) if f.filter(_line(d, 100, at=2.0 * d))]  # 2 s per step
    assert kept == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    # the next loop under the same label starts afresh (a resumed run starts part way)
    assert [d for d in range(51, 141) if f.filter(_line(d, 140, at=1000.0 + d))][:3] == [51, 61, 71]
    # a quick loop (0.1 s per step) shows its first line, then a tenth only once 10 s have passed
    assert [d for d in range(1, 201) if f.filter(_line(d, 200, at=2000 + 0.1 * d, desc="eval"))] == [1, 101]
    other = logging.LogRecord("harken.train.sft", logging.INFO, __file__, 1, "validation accuracy", (), None)
    warning = logging.LogRecord("harken.train.trainer", logging.WARNING, __file__, 1, "learned nothing", (), None)
    assert not f.filter(other) and f.filter(warning)
