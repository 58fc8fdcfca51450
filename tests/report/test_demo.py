"""`harken demo --quick`: every stage runs end to end and the report is complete, truthful and repeatable.

One quick demo (two seeds) is run for the module; the tests then check its files, that demo.json's
results are what the evaluations' items.jsonl say, that the report's tables repeat demo.json,
that the HTML page links only to files in the demo folder, that `harken report` regenerates it,
and that a second demo of one of the seeds gives the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

from harken.cli import main as cli_main
from harken.data import realaudio
from harken.demo import data as demo_data
from harken.demo import report as dr
from harken.demo import run as dm
from harken.io import iter_jsonl
from test_report import PNG_MAGIC, assert_links_resolve

HAVE_REAL = all(realaudio.available_sources().values())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run `harken demo --quick --out demo` (seeds 0 and 1) from an empty working folder."""
    cwd = tmp_path_factory.mktemp("demo-cwd")
    mp = pytest.MonkeyPatch()
    mp.chdir(cwd)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        rc = cli_main(["demo", "--quick", "--out", "demo"])
    finally:
        mp.undo()
    elapsed = time.perf_counter() - t0
    out = (cwd / "demo").resolve()
    return {"rc": rc, "cwd": cwd, "out": out, "elapsed": elapsed, "threads_before": threads,
            "threads_after": torch.get_num_threads(), "demo": json.loads((out / "demo.json").read_text())}


def test_demo_runs_and_keeps_everything_under_out(demo_run):
    assert demo_run["rc"] == 0
    assert sorted(p.name for p in demo_run["cwd"].iterdir()) == ["demo"]
    assert demo_run["threads_after"] == demo_run["threads_before"]  # --threads is undone afterwards
    assert demo_run["demo"]["seeds"] == [0, 1] and demo_run["demo"]["mode"] == "quick"


def test_report_files_exist(demo_run):
    out, demo = demo_run["out"], demo_run["demo"]
    expected = ["index.html", "report.md", "comparison.md", "demo.json", "demo.log",
                "data/warmup.jsonl", "data/train.jsonl", "data/val.jsonl", "data/test.jsonl",
                "models/init/config.json", "models/init/tokenizer.json", "runs/warmup/final/config.json",
                f"plots/{dr.ACCURACY_CHART}", f"plots/{dr.CURVES_CHART}", "eval/base/items.jsonl"]
    for seed in (0, 1):
        for arm in dm.ARMS:
            expected += [f"runs/seed{seed}/{arm}/metrics.jsonl", f"runs/seed{seed}/{arm}/final/config.json",
                         f"eval/seed{seed}/{arm}/results.json", f"eval/seed{seed}/{arm}/items.jsonl"]
    for chart in ("reward", "accuracy", "kl", "completion_length", "loss"):
        expected.append(f"plots/seed0-grpo-{chart}.png")
    missing = [e for e in expected if not (out / e).is_file()]
    assert not missing, missing
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC, png
    parts = [p["key"] for p in demo["data"]["parts"]]
    if HAVE_REAL:
        assert parts == [p.key for p in demo_data.PARTS]
    else:
        assert parts[:3] == ["in-domain", "rephrased", "options"] and demo["data"]["skipped"]


def _part_accuracy(out: Path, eval_dir: str) -> dict[str, float]:
    """Accuracy (%) per test part of one evaluation, recounted from its items.jsonl."""
    tally: dict[str, list[int]] = {}
    for _, item in iter_jsonl(out / eval_dir / "items.jsonl"):
        c = tally.setdefault(item["category"], [0, 0])
        c[0] += bool(item["correct"])
        c[1] += 1
    return {k: 100 * c / n for k, (c, n) in tally.items()}


def test_results_are_what_the_evaluations_say(demo_run):
    out, demo = demo_run["out"], demo_run["demo"]
    base = _part_accuracy(out, demo["evaluations"]["base"])
    for part, row in demo["results"]["parts"].items():
        assert row["base"]["per_seed"] == [pytest.approx(base[part], abs=1e-3)]
        for arm in dm.ARMS:
            values = [_part_accuracy(out, demo["evaluations"]["seeds"][str(s)][arm])[part] for s in (0, 1)]
            stats = row[arm]
            assert stats["per_seed"] == pytest.approx(values, abs=1e-3)
            assert stats["mean"] == pytest.approx(sum(values) / 2, abs=1e-3)
            assert stats["sd"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2), abs=1e-3)
            assert (stats["min"], stats["max"]) == pytest.approx((min(values), max(values)), abs=1e-3)
        # results.json's own breakdown by category agrees with the recount
        res = json.loads((out / demo["evaluations"]["seeds"]["1"]["grpo"] / "results.json").read_text())
        assert res["groups"]["category"][part]["accuracy"] == pytest.approx(row["grpo"]["per_seed"][1], abs=1e-3)
    shifted = [p["key"] for p in demo["data"]["parts"] if p["shift"] != "none"]
    per_seed = [sum(demo["results"]["parts"][p]["sft"]["per_seed"][i] for p in shifted) / len(shifted) for i in (0, 1)]
    assert demo["results"]["shifted"]["sft"]["per_seed"] == pytest.approx(per_seed, abs=1e-3)


def _md_tables(text: str) -> dict[str, list[list[str]]]:
    """{section title: the data rows (cells) of the first table in that section}."""
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip()
        elif title is not None and line.startswith("|"):
            tables.setdefault(title, []).append([c.strip() for c in line.strip().strip("|").split("|")])
        elif title in tables:
            title = None  # the table ended: only the first one of a section counts
    return {t: rows[2:] for t, rows in tables.items()}  # drop the header and the |---| line


def test_tables_repeat_demo_json(demo_run):
    out, demo = demo_run["out"], demo_run["demo"]
    for name, section in (("comparison.md", "Accuracy (%) of base, SFT and GRPO by test part"),
                          ("report.md", "Accuracy by test part")):
        tables = _md_tables((out / name).read_text())
        rows = {r[0]: r for r in tables[section]}
        for part in demo["data"]["parts"]:
            row = demo["results"]["parts"][part["key"]]
            cells = rows[part["key"]]
            assert cells[1] == f"{row['base']['mean']:.1f}"  # one base model: no spread
            for i, arm in enumerate(dm.ARMS, start=2):
                assert cells[i] == f"{row[arm]['mean']:.1f} ± {row[arm]['sd']:.1f}", (name, part["key"], arm)
            assert cells[-1] == str(part["n"])
        shifted = demo["results"]["shifted"]["grpo"]
        assert rows[dr.SHIFTED][4] == f"{shifted['mean']:.1f} ± {shifted['sd']:.1f}"
        seeds = {(r[0], r[1]): r[2:] for r in _md_tables((out / name).read_text())["Each seed"]}
        for part, row in demo["results"]["parts"].items():
            assert seeds[(part, "GRPO")] == [f"{v:.1f}" for v in row["grpo"]["per_seed"]]


def test_html_shows_the_same_numbers_and_links_only_existing_files(demo_run):
    out, demo = demo_run["out"], demo_run["demo"]
    page = out / "index.html"
    links = assert_links_resolve(page, out)
    assert f"plots/{dr.ACCURACY_CHART}" in links and "plots/seed0-grpo-reward.png" in links
    text = page.read_text()
    for row in demo["results"]["parts"].values():
        assert f"<td class=\"num\">{row['sft']['mean']:.1f} ± {row['sft']['sd']:.1f}</td>" in text
    assert "Verdict" in text and "Budget" in text and "What differs from the paper" in text


def test_same_questions_same_base_budgets_stated(demo_run):
    out, demo = demo_run["out"], demo_run["demo"]
    import yaml

    for seed, arms in demo["arms"].items():
        sft, wall, grpo = arms["sft"], arms["sft-wall"], arms["grpo"]
        assert sft["questions"] == grpo["questions"] == 12 and grpo["completions"] == 12 * 4
        assert wall["steps"] == dm.QUICK.sft_wall_steps > sft["steps"] and wall["continues"] == sft["run_dir"]
        assert wall["wall_s"] >= sft["wall_s"]  # the continued run includes the SFT arm's time
        cfg = {k: yaml.safe_load((out / arms[k]["run_dir"] / "config.yaml").read_text()) for k in dm.ARMS}
        paths = {(c["data"]["path"], c["model"]["path"], c["prompt"]["template"]) for c in cfg.values()}
        assert paths == {(str(out / "data/train.jsonl"), str(out / demo["base"]["model"]), "prompt2")}
        assert cfg["sft-wall"]["run"]["resume"].startswith(str(out / sft["run_dir"] / "checkpoints"))
        assert cfg["grpo"]["run"]["seed"] == cfg["sft"]["run"]["seed"] == int(seed)
    header, rows = dr.budget_table(demo)
    assert header == dr.BUDGET_HEADER and [r[0] for r in rows] == ["base (warm-up)", "SFT", "SFT, GRPO's wall time", "GRPO"]
    assert "12 (one teacher-forced target each)" in dr.budget_note(demo)


def test_a_second_demo_of_one_seed_gives_the_same_numbers(demo_run, tmp_path):
    again = dm.run_demo(tmp_path / "again", quick=True, seeds=[1])
    first = demo_run["demo"]["results"]["parts"]
    for part, row in again["results"]["parts"].items():
        assert row["base"]["per_seed"] == first[part]["base"]["per_seed"]
        for arm in dm.ARMS:
            assert row[arm]["per_seed"] == [first[part][arm]["per_seed"][1]], (part, arm)
    items = lambda root, d: (root / d / "items.jsonl").read_text()  # noqa: E731
    assert items(tmp_path / "again", again["evaluations"]["seeds"]["1"]["grpo"]) == \
        items(demo_run["out"], demo_run["demo"]["evaluations"]["seeds"]["1"]["grpo"])


def test_report_command_regenerates_the_demo_report(demo_run, tmp_path):
    out = demo_run["out"]
    before = (out / "comparison.md").read_text()
    for f in ("index.html", "report.md", "comparison.md"):
        (out / f).unlink()
    for png in (out / "plots").glob("*.png"):
        png.unlink()
    assert cli_main(["report", str(out)]) == 0
    assert (out / "comparison.md").read_text() == before
    assert (out / "plots" / dr.ACCURACY_CHART).is_file() and (out / "report.md").is_file()
    assert_links_resolve(out / "index.html", out)
    # elsewhere: links point back into the demo folder
    assert cli_main(["report", str(out), "--out", str(tmp_path / "copy")]) == 0
    links = assert_links_resolve(tmp_path / "copy" / "index.html", Path(os.path.commonpath([tmp_path, out])))
    assert any(link.endswith("demo/runs/seed0/grpo/metrics.jsonl") for link in links)


def test_data_stage_without_packages_keeps_the_synthetic_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(realaudio, "available_sources", lambda: {p: False for p in realaudio.PACKAGES.values()})
    info = dm.make_data(tmp_path, dm.QUICK, seed=0)
    assert [p["key"] for p in info["parts"]] == ["in-domain", "rephrased", "options"]
    assert info["real_skills"] == []
    assert any("test part 'drum' skipped" in s and "apt-get install" in s for s in info["skipped"])
    assert any("the warm-up has no real audio" in s for s in info["skipped"])
    rows = [row for _, row in iter_jsonl(tmp_path / info["files"]["test"])]
    assert {r["meta"]["category"] for r in rows} == {"in-domain", "rephrased", "options"}


def test_out_that_is_not_a_demo_folder_is_refused(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert cli_main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "is not a demo folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_quick_demo_is_quick(demo_run):
    # The suite's budget for it; measured ~35 s on 2 busy cores.
    assert demo_run["elapsed"] < 180, demo_run["elapsed"]
