"""`harken report`: charts and page of a training run from its metrics.jsonl (GRPO and SFT runs)."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

import harken.report as rp
from harken.cli import main as cli_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append(value)


def page_links(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def assert_links_resolve(page: Path, inside: Path) -> list[str]:
    """Every src/href of the page is a relative path to an existing file or folder under `inside`."""
    links = page_links(page)
    assert links, f"{page} links to nothing"
    for link in links:
        assert "://" not in link and not link.startswith(("/", "#", "data:")), f"{page}: non-relative link {link!r}"
        target = (page.parent / link).resolve()
        assert target.exists(), f"{page}: {link!r} does not exist"
        assert inside.resolve() in (target, *target.parents), f"{page}: {link!r} leaves {inside}"
    return links


def write_run(run: Path, kind: str, rows: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps({"kind": kind, "processes": 1, "device": "cpu"}))
    (run / "config.yaml").write_text("run:\n  max_steps: 40\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def grpo_rows(steps: int = 40) -> list[dict]:
    rows = []
    for s in range(1, steps + 1):
        acc = 0.3 + 0.01 * s
        rows.append({
            "step": s, "time": 1000.0 + s,
            "reward/accuracy": acc, "reward/format": 0.95, "reward/total": acc + 0.95, "reward/std_in_group": 0.4,
            "groups/zero_variance_frac": 0.1, "completion/length": 4.0 + 0.01 * s, "completion/truncated_frac": 0.0,
            "advantage/mean": 0.0, "advantage/std": 0.9, "kl": 0.001 * s, "clip_frac": 0.0, "ratio_mean": 1.0,
            "loss": 0.01, "policy_loss": 0.0, "lr": 3e-4, "grad_norm": 0.5, "time/step_s": 0.4,
            "accuracy": acc,  # GRPO's alias of reward/accuracy
        })
        if s % 10 == 0:
            rows.append({"step": s, "time": 1000.5 + s, "val/accuracy": 0.5 + 0.005 * s, "val/accuracy/count": 0.5})
    rows[3]["kl"] = None  # a non-finite value is logged as null: left out of its series
    return rows


def sft_rows(steps: int = 40) -> list[dict]:
    rows = [{"step": 0, "time": 999.0, "val/accuracy": 0.25}]
    for s in range(1, steps + 1):
        rows.append({"step": s, "time": 1000.0 + s, "loss": 5.0 / s, "token_accuracy": min(1.0, 0.02 * s),
                     "lr": 1e-3 * (1 - s / steps), "grad_norm": 2.0 / math.sqrt(s), "time/step_s": 0.3,
                     "throughput/tokens_per_s": 3000.0})
        if s % 20 == 0:
            rows.append({"step": s, "time": 1000.5 + s, "val/accuracy": 0.25 + 0.01 * s})
    return rows


def pngs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path


# ---------------------------------------------------------------------------------------------


def test_grpo_run_report(tmp_path, capsys):
    run = write_run(tmp_path / "grpo-run", "grpo", grpo_rows())
    assert cli_main(["report", str(run)]) == 0
    page = run / "report" / "index.html"
    assert str(page) in capsys.readouterr().out
    plots = run / "report" / "plots"
    expected = {"reward.png", "accuracy.png", "kl.png", "completion_length.png", "loss.png", "lr.png",
                "grad_norm.png", "more.png"}
    assert pngs(plots) == expected
    for name in expected:
        assert_png(plots / name)
    links = assert_links_resolve(page, run)
    for name in expected:
        assert f"plots/{name}" in links
    assert "../metrics.jsonl" in links and "../config.yaml" in links
    text = page.read_text(encoding="utf-8")
    assert "GRPO run grpo-run" in text and "reward/accuracy" in text and "val/accuracy" in text


def test_sft_run_report_skips_what_was_not_logged(tmp_path):
    run = write_run(tmp_path / "sft-run", "sft", sft_rows())
    page = rp.report(run, tmp_path / "elsewhere")  # --out: the page links back into the run folder
    assert page == tmp_path / "elsewhere" / "index.html"
    assert pngs(page.parent / "plots") == {"accuracy.png", "loss.png", "lr.png", "grad_norm.png", "more.png"}
    links = assert_links_resolve(page, tmp_path)
    assert "../sft-run/metrics.jsonl" in links
    assert not (run / "report").exists()


def test_only_present_metrics_are_charted(tmp_path):
    rows = [{"step": s, "loss": 1.0 / s, "kl": None} for s in range(1, 6)]
    run = write_run(tmp_path / "run", "sft", rows)
    assert cli_main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    assert pngs(tmp_path / "out" / "plots") == {"loss.png"}  # kl was always null: no chart
    assert_links_resolve(tmp_path / "out" / "index.html", tmp_path)


def test_run_without_any_metric_gives_a_page(tmp_path):
    run = write_run(tmp_path / "run", "grpo", [{"step": 1, "time": 1.0}])
    page = rp.run_report(run)
    assert pngs(page.parent / "plots") == set()
    assert "nothing to chart" in page.read_text(encoding="utf-8")


def test_rerun_replaces_stale_charts(tmp_path):
    run = write_run(tmp_path / "run", "grpo", grpo_rows())
    rp.run_report(run)
    write_run(run, "sft", sft_rows())
    rp.run_report(run)
    assert "kl.png" not in pngs(run / "report" / "plots")


def test_folder_without_metrics_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl not found" in err and "demo.json" in err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rp.read_metrics(tmp_path / "nowhere")


def test_malformed_metrics(tmp_path):
    run = write_run(tmp_path / "run", "sft", sft_rows(5))
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(good + '{"step": 6, "loss": 0.')  # cut short by a crash
    assert len(rp.read_metrics(run)) == len(good.splitlines())
    lines = good.splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + ["{oops"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:3: malformed"):
        rp.read_metrics(run)
    (run / "metrics.jsonl").write_text('{"loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: expected an object with a numeric \"step\""):
        rp.read_metrics(run)


def test_plan_panels_registry_then_families():
    keys = ["reward/total", "reward/accuracy", "accuracy", "reward/std_in_group", "kl", "advantage/std",
            "clip_frac", "clip_frac_low", "loss", "val/accuracy", "val/accuracy/count"]
    panels, families = rp.plan_panels(keys)
    by_name = {p.name: k for p, k in panels}
    assert by_name["reward"] == ["reward/total", "reward/accuracy"]
    assert by_name["accuracy"] == ["val/accuracy", "val/accuracy/count", "reward/accuracy"]  # alias dropped
    assert families == {"reward": ["reward/std_in_group"], "advantage": ["advantage/std"],
                        "clip": ["clip_frac", "clip_frac_low"]}
    # Without reward/accuracy the alias is an ordinary key.
    assert rp.plan_panels(["accuracy"]) == ([], {"accuracy": ["accuracy"]})


def test_metric_series_skips_nulls_and_text():
    series = rp.metric_series([{"step": 1, "a": 1.0, "b": None, "c": "x", "d": True},
                               {"step": 2, "a": float("nan"), "b": 2}])
    assert set(series) == {"a", "b"}
    assert series["a"].steps == [1.0] and series["b"].values == [2.0]


def test_sft_titles_name_only_what_sft_logs():
    from harken.report.charts import plot_run

    series = rp.metric_series(sft_rows())
    panels, _ = rp.plan_panels(list(series))
    titles = {panel.name: panel.title_for(keys) for panel, keys in panels}
    assert titles["accuracy"] == "accuracy (val: greedy answers, held-out; token_accuracy: next target token, training)"
    assert "reward" not in titles["accuracy"]
    grpo = {p.name: p.title_for(k) for p, k in rp.plan_panels(list(rp.metric_series(grpo_rows())))[0]}
    assert "reward/accuracy: sampled completions, training" in grpo["accuracy"]
    assert "token_accuracy" not in grpo["accuracy"]


def test_charts_link_to_full_size_and_the_grid_spans_the_page(tmp_path):
    page = rp.run_report(write_run(tmp_path / "run", "grpo", grpo_rows()))
    html = page.read_text(encoding="utf-8")
    for name in ("reward.png", "more.png"):
        assert f'<a href="plots/{name}"><img src="plots/{name}"' in html
    assert '<figure class="wide"><a href="plots/more.png">' in html
    assert html.count('class="wide"') == 1
    assert "learned nothing" not in html


def test_legend_is_below_the_lines(tmp_path):
    """The legend box sits under the axes, never over the plotted area."""
    import matplotlib

    matplotlib.use("Agg")
    from harken.report.charts import _draw
    from harken.report.plotting import figure

    series = rp.metric_series(grpo_rows())
    fig = figure(6.4, 4.0)
    ax = fig.subplots()
    _draw(ax, series, ["reward/total", "reward/accuracy", "reward/format"])
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    axes = ax.get_window_extent()
    assert legend.y1 < axes.y0


@pytest.mark.parametrize("change,phrase", [
    ({"reward/std_in_group": 0.0}, "equal rewards on all 40 logged steps"),
    ({"grad_norm": 0.0}, "gradient norm was 0 on all 40 logged steps"),
])
def test_a_run_that_learned_nothing_is_flagged(tmp_path, change, phrase):
    rows = [{**r, **change} if "grad_norm" in r else r for r in grpo_rows()]
    page = rp.run_report(write_run(tmp_path / "run", "grpo", rows))
    html = page.read_text(encoding="utf-8")
    assert '<p class="warning"><b>This run learned nothing:</b>' in html and phrase in html


def test_one_step_with_signal_is_not_flagged():
    rows = [{**r, "reward/std_in_group": 0.0} if "grad_norm" in r else r for r in grpo_rows()]
    rows[5]["reward/std_in_group"] = 0.1
    assert rp.learned_nothing(rp.metric_series(rows)) is None
