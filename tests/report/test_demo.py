"""`harken demo --quick`: every stage runs end to end and the report is complete and truthful.

One quick demo is run for the module (about a minute on 2 CPU cores); the tests then check its
files, that the report's tables repeat the evaluation results.json numbers exactly, that the
HTML page links only to files in the demo folder, and that `harken report` regenerates it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from harken.demo import run as dm
from harken.data import realaudio
from harken.cli import main as cli_main
from test_report import PNG_MAGIC, assert_links_resolve

HAVE_REAL = any(realaudio.available_sources().values())

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run `harken demo --quick --out demo` from an empty working folder."""
    cwd = tmp_path_factory.mktemp("demo-cwd")
    mp = pytest.MonkeyPatch()
    mp.chdir(cwd)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        rc = cli_main(["demo", "--quick", "--out", "demo", "--seed", "0"])
    finally:
        mp.undo()
    elapsed = time.perf_counter() - t0
    return {"rc": rc, "cwd": cwd, "out": (cwd / "demo").resolve(), "elapsed": elapsed, "threads_before": threads,
            "threads_after": torch.get_num_threads()}


def test_demo_runs_and_keeps_everything_under_out(demo_run):
    assert demo_run["rc"] == 0
    assert sorted(p.name for p in demo_run["cwd"].iterdir()) == ["demo"]
    assert demo_run["threads_after"] == demo_run["threads_before"]  # --threads is undone afterwards


def test_report_files_exist(demo_run):
    out = demo_run["out"]
    demo = json.loads((out / "demo.json").read_text())
    expected = ["index.html", "report.md", "comparison.md", "demo.json", "demo.log",
                "data/synthetic/train.jsonl", "data/synthetic/test.jsonl", "data/synthetic/warmup.jsonl",
                "models/init/config.json", "models/init/tokenizer.json",
                "plots/compare-synthetic.png", "plots/val-accuracy-arms.png"]
    for arm in ("warmup", "sft", "grpo"):
        expected += [f"runs/{arm}/metrics.jsonl", f"runs/{arm}/config.yaml", f"runs/{arm}/final/config.json"]
    for chart in ("reward", "accuracy", "kl", "completion_length", "loss", "lr", "grad_norm", "more"):
        expected.append(f"plots/grpo-{chart}.png")
    for chart in ("accuracy", "loss", "lr", "grad_norm"):
        expected.append(f"plots/sft-{chart}.png")
    sets = ["synthetic"] + (["real"] if HAVE_REAL else [])
    assert [e["key"] for e in demo["evaluations"]] == sets
    for key in sets:
        expected.append(f"plots/compare-{key}.png")
        for model in ("base", "sft", "grpo"):
            expected += [f"eval/{key}/{model}/results.json", f"eval/{key}/{model}/items.jsonl"]
    if HAVE_REAL:
        expected.append("data/real/test.jsonl")
    else:
        assert any("real-audio evaluation skipped" in s for s in demo["skipped"])
    missing = [e for e in expected if not (out / e).is_file()]
    assert not missing, missing
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC, png


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


def test_tables_equal_the_evaluation_results(demo_run):
    out = demo_run["out"]
    demo = json.loads((out / "demo.json").read_text())
    for name in ("comparison.md", "report.md"):
        tables = _md_tables((out / name).read_text())
        for ev in demo["evaluations"]:
            rows = tables[ev["title"]]
            assert [r[0] for r in rows] == ["base (warm-up)", "SFT", "GRPO"]
            for row, model in zip(rows, ("base", "sft", "grpo")):
                res = json.loads((out / ev["runs"][model] / "results.json").read_text())
                tasks = list(res["groups"]["task"])
                cells = dict(zip(tasks + ["avg", "n"], row[1:]))
                for task in tasks:
                    assert cells[task] == f"{res['groups']['task'][task]['accuracy']:.2f}", (name, ev["key"], model, task)
                assert cells["avg"] == f"**{res['accuracy']:.2f}**"
                assert int(cells["n"]) == res["n_scored"]
                # the overall accuracy is the correct count over the items, as the results say
                assert res["accuracy"] == pytest.approx(100 * res["n_correct"] / res["n_scored"], abs=1e-3)


def test_html_shows_the_same_numbers_and_links_only_existing_files(demo_run):
    out = demo_run["out"]
    demo = json.loads((out / "demo.json").read_text())
    page = out / "index.html"
    links = assert_links_resolve(page, out)
    assert "plots/compare-synthetic.png" in links and "plots/grpo-reward.png" in links
    text = page.read_text()
    for ev in demo["evaluations"]:
        for model in ("base", "sft", "grpo"):
            res = json.loads((out / ev["runs"][model] / "results.json").read_text())
            assert f"<td class=\"num\">{res['accuracy']:.2f}</td>" in text
    assert "GRPO" in text and "Verdict" in text and "Budget" in text


def test_same_questions_same_base_same_budget(demo_run):
    out = demo_run["out"]
    demo = json.loads((out / "demo.json").read_text())
    sft, grpo = demo["arms"]["sft"], demo["arms"]["grpo"]
    assert sft["questions"] == grpo["questions"] == 12
    assert grpo["completions"] == 12 * 4
    import yaml

    cfg = {k: yaml.safe_load((out / demo["arms"][k]["run_dir"] / "config.yaml").read_text()) for k in ("sft", "grpo")}
    assert cfg["sft"]["data"]["path"] == cfg["grpo"]["data"]["path"] == str(out / "data/synthetic/train.jsonl")
    assert cfg["sft"]["model"]["path"] == cfg["grpo"]["model"]["path"] == str(out / demo["arms"]["warmup"]["model"])
    assert cfg["sft"]["prompt"]["template"] == cfg["grpo"]["prompt"]["template"] == "prompt2"
    for ev in demo["evaluations"]:
        settings = [json.loads((out / ev["runs"][m] / "run.json").read_text())["settings"] for m in ("base", "sft", "grpo")]
        assert {s["template"] for s in settings} == {"prompt2"}
    assert re.search(r"SFT \d+ steps x \d+ = 12 questions", demo["budget_note"])


def test_report_command_regenerates_the_demo_report(demo_run, tmp_path):
    out = demo_run["out"]
    before = (out / "comparison.md").read_text()
    for f in ("index.html", "report.md", "comparison.md"):
        (out / f).unlink()
    for png in (out / "plots").glob("*.png"):
        png.unlink()
    assert cli_main(["report", str(out)]) == 0
    assert (out / "comparison.md").read_text() == before
    assert (out / "plots" / "grpo-reward.png").is_file() and (out / "report.md").is_file()
    assert_links_resolve(out / "index.html", out)
    # elsewhere: links point back into the demo folder
    assert cli_main(["report", str(out), "--out", str(tmp_path / "copy")]) == 0
    links = assert_links_resolve(tmp_path / "copy" / "index.html", Path(os.path.commonpath([tmp_path, out])))
    assert any(link.endswith("demo/runs/grpo/metrics.jsonl") for link in links)


def test_data_stage_skips_real_audio_without_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(realaudio, "available_sources", lambda: {p: False for p in realaudio.PACKAGES.values()})
    info = dm.make_data(tmp_path, dm.QUICK, seed=0)
    assert info["real"] is None
    assert "real-audio evaluation skipped" in info["skipped"][0] and "apt-get install" in info["skipped"][0]
    assert (tmp_path / info["synthetic"]["test"]).is_file()


def test_out_that_is_not_a_demo_folder_is_refused(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert cli_main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "is not a demo folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_quick_demo_is_quick(demo_run):
    # The suite's budget for it; measured ~35 s on 2 busy cores.
    assert demo_run["elapsed"] < 180, demo_run["elapsed"]
