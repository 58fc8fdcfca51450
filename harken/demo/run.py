"""`harken demo`: the paper's comparison (GRPO vs SFT for audio QA, R1-AQA) in miniature, on a CPU.

Owns: the order of the demo's stages, the sizes of its data, the budget bookkeeping of its two
arms, and `demo.json` (what the report is regenerated from). Every stage calls the project's own
modules; nothing here trains, scores or plots by itself:

    1. data        synthetic train / test / warmup splits (`harken.data.synth`), and the real-audio
                   test set from Debian packages (`harken.data.realaudio`; skipped with a notice)
    2. base        a toy Qwen2-Audio (`harken.models.toy.build_tiny`; its tokenizer is trained on the
                   dataset's texts so sequences stay short), given a partial skill by a short
                   supervised warm-up on the warmup split (`harken.train.sft`, preset demo-warmup):
                   the stand-in for the instruct model the paper starts from
    3. arms        from that base, on the SAME training questions and the same number of them:
                   SFT (`harken.train.sft`, preset demo-sft) and GRPO (`harken.train.grpo`, preset demo-grpo:
                   prompt 2, accuracy + format rewards, k3 KL)
    4. evaluation  base, SFT and GRPO on the held-out synthetic test split (in-domain) and the
                   real-audio set (out-of-domain: none of its tasks is trained), with
                   `harken.eval.run.run_benchmark` (benchmark jsonl, prompt 2, greedy) for all three
    5. report      `harken.demo.report.demo_report`: comparison tables, verdict, budget, curves,
                   index.html

Everything the demo makes stays under --out. Sizes: `FULL` (a few minutes on 2 CPU cores) and
`QUICK` (`--quick`, for the test suite: every stage runs, nothing is meant to learn).

Does not own: training, evaluating and scoring (the modules named above), the report
(`harken.demo.report`), the command line (`harken.cli.demo`).

Deviations from the paper, by necessity of scale: a 0.26 M-parameter toy instead of an 8.2 B
model, a supervised warm-up instead of instruction tuning, synthetic skills instead of AVQA, and
rates far above 1e-6 (a randomly initialised toy learns nothing at the paper's rate).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from harken import __version__
from harken.io import iter_jsonl, write_json_atomic
from harken.report.metrics import DEMO_FILE

TEMPLATE = "prompt2"  # one prompt for the warm-up, both arms and every evaluation (the paper's best)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: data sizes and per-stage overrides of the demo-* presets."""

    name: str
    # count and timbre: a hidden-64, 2-layer toy learns them in about a hundred steps; the
    # two-tone comparisons (pitch, loudness, duration, sweep) stayed at chance for minutes.
    skills: tuple[str, ...] = ("count", "timbre")
    n_train: int = 400  # training questions shared by both arms
    n_test: int = 120  # held-out in-domain test questions
    n_warmup: int = 240  # questions of the supervised warm-up that makes the base
    real_per_class: int = 4  # clips per answer class of the real-audio set (0: no real audio)
    eval_limit: int | None = None  # items per evaluation (None: all)
    eval_batch_size: int = 30  # generation batch of the evaluations
    eval_max_new_tokens: int = 16  # the answers are ~4 toy tokens; 16 leaves room for rambling
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> dotted key=value


FULL = DemoSize("full")

QUICK = DemoSize(
    "quick",
    n_train=24,
    n_test=12,
    n_warmup=24,
    real_per_class=1,
    eval_limit=12,
    eval_batch_size=12,
    overrides={
        # 4 x 4 = 16 warm-up examples; 3 x 4 = 12 SFT questions = 6 x 2 GRPO questions (x 4 samples)
        "warmup": ("run.max_steps=4", "train.batch_size=4", "optim.warmup_steps=0"),
        "sft": ("run.max_steps=3", "train.batch_size=4", "run.eval_every=3", "run.eval_limit=8", "run.sample_every=0"),
        "grpo": ("run.max_steps=6", "rollout.prompts_per_step=2", "rollout.group_size=4", "run.eval_every=6",
                 "run.eval_limit=8", "run.sample_every=0"),
    },
)

ARMS = {
    # key: (label, preset, trainer kind)
    "warmup": ("warm-up (SFT) -> base", "demo-warmup", "sft"),
    "sft": ("SFT", "demo-sft", "sft"),
    "grpo": ("GRPO", "demo-grpo", "grpo"),
}


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


class _Stages:
    """Times each stage and prints its header."""

    def __init__(self, total: int):
        self.total, self.n = total, 0
        self.timings: dict[str, float] = {}

    def run(self, key: str, title: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {title}", flush=True)
        t0 = time.perf_counter()
        result = fn()
        self.timings[key] = round(time.perf_counter() - t0, 2)
        print(f"      {key}: {self.timings[key]:.1f} s", flush=True)
        return result


def _prepare_out(out: Path) -> None:
    """Start from a clean folder: the demo's own files of an earlier run are replaced, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_FILE).is_file() and not (out / "demo.log").is_file():
            raise ValueError(
                f"{out} exists and is not a demo folder (no {DEMO_FILE}); choose another --out or empty it"
            )
        for name in ("data", "models", "runs", "eval", "plots"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (DEMO_FILE, "index.html", "report.md", "comparison.md", "demo.log"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def make_data(out: Path, size: DemoSize, seed: int) -> dict[str, Any]:
    """Stage 1: the synthetic splits and (when the Debian packages are there) the real-audio set."""
    from harken.data.realaudio import PACKAGES, make_real
    from harken.data.synth import make_synthetic

    syn = make_synthetic(out / "data" / "synthetic", seed=seed, n_train=size.n_train, n_test=size.n_test,
                         n_warmup=size.n_warmup, skills=list(size.skills))
    info: dict[str, Any] = {"synthetic": {k: str(p.relative_to(out)) for k, p in syn.items()}, "real": None, "skipped": []}
    print(f"      synthetic: {size.n_train} train / {size.n_test} test / {size.n_warmup} warm-up questions "
          f"({', '.join(size.skills)})")
    real = make_real(out / "data" / "real", seed=seed, per_class=size.real_per_class) if size.real_per_class else None
    if real is None:
        note = ("real-audio evaluation skipped: none of the Debian packages is installed "
                f"(apt-get install -y --no-install-recommends {' '.join(PACKAGES.values())})")
        info["skipped"].append(note)
        print(f"      {note}")
    else:
        info["real"] = str(real.relative_to(out))
        print(f"      real audio: {_count_items(real)} questions ({real})")
    return info


def _count_items(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path))


def _dataset_texts(files: list[Path]) -> list[str]:
    """The texts the toy tokenizer learns merges from: questions, choices, targets, whole prompts."""
    from harken.data.prompts import get_template
    from harken.data.synth import load_split

    tmpl = get_template(TEMPLATE)
    texts = []
    for f in files:
        for ex in load_split(f):
            texts += [ex.question, " ".join(ex.choices), tmpl.render(ex), tmpl.render_target(ex)]
    return texts


def build_model(out: Path, data: dict[str, Any], seed: int) -> Path:
    """Stage 2a: the untrained toy Qwen2-Audio, saved as a model folder."""
    from harken.models.loading import count_parameters
    from harken.models.toy import build_tiny

    files = [out / p for p in data["synthetic"].values()] + ([out / data["real"]] if data["real"] else [])
    path = out / "models" / "init"
    lm = build_tiny("qwen2-audio", path, size="toy", seed=seed, extra_texts=_dataset_texts(files))
    n = count_parameters(lm.model)["total"]
    print(f"      toy Qwen2-Audio: {n / 1e6:.2f} M parameters, vocabulary {len(lm.tokenizer)}, "
          f"{lm.window_seconds:.0f} s audio window -> {path}")
    return path


def _sft_arm(preset: str, overrides: list[str]) -> tuple[Any, Path, int, int | None, str]:
    """Train with harken.train.sft; returns (config, final model, questions per step, completions, recipe)."""
    from harken.config import load_config
    from harken.schema import SFTConfig
    from harken.train.sft import train_sft

    cfg = load_config(SFTConfig, preset, overrides)
    final = train_sft(cfg)
    recipe = (f"SFT: {cfg.train.batch_size} examples x {cfg.optim.grad_accum} accumulation per step, "
              f"lr {cfg.optim.lr:g} ({cfg.optim.schedule})")
    return cfg, final, cfg.train.batch_size * cfg.optim.grad_accum, None, recipe


def _grpo_arm(preset: str, overrides: list[str]) -> tuple[Any, Path, int, int | None, str]:
    """Train with harken.train.grpo; returns (config, final model, questions per step, completions, recipe)."""
    from harken.config import load_config
    from harken.train.grpo import train_grpo
    from harken.schema import GRPOConfig

    cfg = load_config(GRPOConfig, preset, overrides)
    final = train_grpo(cfg)
    per_step = cfg.rollout.prompts_per_step * cfg.optim.grad_accum
    rewards = " + ".join(r.name for r in cfg.reward.rewards)
    recipe = (f"GRPO: {cfg.rollout.prompts_per_step} prompts x {cfg.optim.grad_accum} accumulation x "
              f"G={cfg.rollout.group_size} per step, rewards {rewards}, KL {cfg.algo.kl_coef:g}, "
              f"lr {cfg.optim.lr:g} ({cfg.optim.schedule}), T={cfg.rollout.temperature:g}")
    return cfg, final, per_step, cfg.run.max_steps * per_step * cfg.rollout.group_size, recipe


TRAINERS = {"sft": _sft_arm, "grpo": _grpo_arm}  # ARMS' trainer kind -> how to run it


def train_arm(key: str, out: Path, model: Path, train_file: Path, val_file: Path, size: DemoSize, seed: int) -> dict[str, Any]:
    """Train one arm (warm-up, SFT or GRPO) from `model`; returns its bookkeeping for demo.json."""
    label, preset, kind = ARMS[key]
    run_dir = out / "runs" / key
    paths = [f"model.path={model}", f"data.path={train_file}", f"val.path={val_file}", f"run.out_dir={run_dir}"]
    settings = [f"run.seed={seed}", "run.resume=never", "run.progress=true", *size.overrides.get(key, ())]
    t0 = time.perf_counter()
    cfg, final, per_step, completions, recipe = TRAINERS[kind](preset, paths + settings)
    wall = time.perf_counter() - t0
    steps = cfg.run.max_steps  # every demo preset sets it (SFT by epochs is not used here)
    sampled = f", {completions} completions sampled" if completions is not None else ""
    print(f"      {label}: {steps} steps, {steps * per_step} training questions{sampled}, {wall:.1f} s -> {final}")
    return {
        "label": label,
        "preset": preset,
        "kind": kind,
        "recipe": recipe,
        "run_dir": str(run_dir.relative_to(out)),
        "model": str(Path(final).relative_to(out)),
        "steps": steps,
        "questions_per_step": per_step,
        "questions": steps * per_step,
        "completions": completions,
        "val_items": min(cfg.run.eval_limit, _count_items(val_file)) if cfg.run.eval_every else 0,
        "wall_s": round(wall, 2),
        "settings": settings,
    }


def evaluate(out: Path, data: dict[str, Any], models: dict[str, Path], size: DemoSize) -> list[dict[str, Any]]:
    """Stage 4: every model on every test set, same prompt, greedy; returns demo.json's `evaluations`."""
    from harken.eval.run import run_benchmark

    sets = [("synthetic", "synthetic test split (held-out, in-domain)", out / data["synthetic"]["test"])]
    if data["real"]:
        sets.append(("real", "real audio from Debian packages (out-of-domain, never trained)", out / data["real"]))
    evaluations = []
    for key, title, file in sets:
        runs = {}
        for name, model in models.items():
            eval_dir = out / "eval" / key / name
            res = run_benchmark("jsonl", str(model), eval_dir, data=str(file), template=TEMPLATE,
                                max_new_tokens=size.eval_max_new_tokens, batch_size=size.eval_batch_size,
                                limit=size.eval_limit)
            print(f"      {key:9s} {name:5s} {res['accuracy']:6.2f} % ({res['n_correct']}/{res['n_scored']})", flush=True)
            runs[name] = str(eval_dir.relative_to(out))
        evaluations.append({"key": key, "title": title, "data": str(file.relative_to(out)), "runs": runs})
    return evaluations


# ---------------------------------------------------------------------------------------------
# The whole demo
# ---------------------------------------------------------------------------------------------


def _budget_note(arms: dict[str, Any], n_train: int) -> str:
    s, g = arms["sft"], arms["grpo"]
    same = "the same number of" if s["questions"] == g["questions"] else "DIFFERENT numbers of"
    return (
        f"Both arms start from the same base and draw from the same {n_train} training questions, {same} times: "
        f"SFT {s['steps']} steps x {s['questions_per_step']} = {s['questions']} questions (one teacher-forced target each), "
        f"GRPO {g['steps']} steps x {g['questions_per_step']} = {g['questions']} questions ({g['completions']} sampled "
        f"completions scored by the rewards). Compute differs: wall time SFT {s['wall_s']:.0f} s, GRPO {g['wall_s']:.0f} s."
    )


TITLE = "GRPO vs SFT for audio question answering, in miniature"
QUESTION = (
    "R1-AQA (arXiv 2503.11197) found that GRPO beats supervised fine-tuning when post-training "
    "Qwen2-Audio-7B-Instruct on ~38k audio questions. Does the comparison hold for a toy "
    "Qwen2-Audio trained for minutes on a CPU? Same base, same training questions, same "
    "number of them, same prompt and greedy decoding at evaluation."
)
HONESTY_NOTE = (
    "A toy of a quarter of a million parameters trained for minutes is not an 8 B model trained "
    "for hours: the verdict above is what THIS run measured, reported as is, whichever arm it "
    "favours. SFT is told the answer to every question; GRPO only learns from the rewards of its "
    "own samples, which for a toy start out mostly wrong. The real-audio set asks about "
    "instruments, system sounds and spoken words that no stage trained on: it tests whether an "
    "arm can still pick among unfamiliar options, not a skill."
)


@contextlib.contextmanager
def _demo_session(out: Path, threads: int) -> Iterator[None]:
    """Log harken's messages to OUT/demo.log and use `threads` torch threads (0: leave as is); undone on exit."""
    import torch

    file_log = logging.FileHandler(out / "demo.log")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    harken_log = logging.getLogger("harken")
    harken_log.addHandler(file_log)
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        harken_log.removeHandler(file_log)
        file_log.close()


def _train_and_evaluate(stages: _Stages, out: Path, size: DemoSize, seed: int) -> tuple[dict, dict, list]:
    """Stages 1-4; returns (data, arms, evaluations) for demo.json."""
    data = stages.run("data", "data: synthetic splits and real audio", lambda: make_data(out, size, seed))
    init = stages.run("model", "model: toy Qwen2-Audio", lambda: build_model(out, data, seed))
    syn = {k: out / p for k, p in data["synthetic"].items()}
    arms: dict[str, Any] = {}
    arms["warmup"] = stages.run("warmup", "base: supervised warm-up of the toy (the 'instruct' model)",
                                lambda: train_arm("warmup", out, init, syn["warmup"], syn["test"], size, seed))
    base = out / arms["warmup"]["model"]
    arms["sft"] = stages.run("sft", "arm 1: SFT from the base",
                             lambda: train_arm("sft", out, base, syn["train"], syn["test"], size, seed))
    arms["grpo"] = stages.run("grpo", "arm 2: GRPO from the base",
                              lambda: train_arm("grpo", out, base, syn["train"], syn["test"], size, seed))
    models = {"base": base, "sft": out / arms["sft"]["model"], "grpo": out / arms["grpo"]["model"]}
    evaluations = stages.run("eval", "evaluation: base, SFT and GRPO (prompt2, greedy)",
                             lambda: evaluate(out, data, models, size))
    return data, arms, evaluations


def run_demo(out: str | Path = "runs/demo", quick: bool = False, seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Run every stage; returns the stored results (also in OUT/demo.json) with the report's path.

    Args:
        out: the demo folder (an earlier demo there is replaced; any other non-empty folder is refused).
        quick: the QUICK size (seconds; for tests) instead of FULL (minutes).
        seed: data, model initialisation, data order and sampling.
        threads: torch CPU threads (0: torch's default). The toy's matrices are too small to gain
            from more than one, and on a shared machine extra threads only contend.
    """
    import torch

    from harken.demo.report import curve_notes, demo_report, demo_tables, verdict

    out = Path(out).resolve()  # runs record absolute paths: the folder reads the same from anywhere
    size = QUICK if quick else FULL
    t_start = time.perf_counter()
    _prepare_out(out)
    with _demo_session(out, threads):
        print(f"harken demo ({size.name}): GRPO vs SFT on audio QA, in miniature; everything goes to {out}/")
        stages = _Stages(7)
        data, arms, evaluations = _train_and_evaluate(stages, out, size, seed)
        demo = {
            "harken_version": __version__,
            "title": TITLE,
            "question": QUESTION,
            "honesty_note": HONESTY_NOTE,
            "command": "harken demo" + (" --quick" if quick else "") + f" --seed {seed} --out {out}",
            "mode": size.name,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "size": asdict(size),
            "data": data,
            "skipped": data["skipped"],
            "val_items": arms["sft"]["val_items"],
            "arms": arms,
            "evaluations": evaluations,
            "timings": dict(stages.timings),
            "budget_note": _budget_note(arms, size.n_train),
        }
        write_json_atomic(out / DEMO_FILE, demo)
        page = stages.run("report", "report: tables, charts, index.html", lambda: demo_report(out))
        # The report of a later `harken report OUT` shows these too.
        demo["timings"] = {**stages.timings, "total": round(time.perf_counter() - t_start, 2)}
        write_json_atomic(out / DEMO_FILE, demo)
    total = time.perf_counter() - t_start
    tables = demo_tables(out, demo)
    _print_summary(demo, tables, verdict(tables) + curve_notes(out, demo), page, total)
    return {**demo, "page": str(page), "total_s": total}


def _print_summary(demo: dict[str, Any], tables: list[dict[str, Any]], verdicts: list[str], page: Path, total: float) -> None:
    from rich.console import Console
    from rich.table import Table

    from harken.demo.report import accuracy_cells

    console = Console()
    console.print()
    console.rule(demo["title"])
    for t in tables:
        table = t["table"]
        rt = Table(title=f"{t['title']}: accuracy (%)")
        rt.add_column("model")
        for c in table["columns"]:
            rt.add_column("overall" if c == "avg" else c, justify="right", style="bold" if c == "avg" else None)
        rt.add_column("n", justify="right")
        for row in table["rows"]:
            rt.add_row(row["name"], *accuracy_cells(row, table["columns"]), str(row["n"]))
        console.print(rt)
    for s in demo.get("skipped", []):
        console.print(f"[yellow]{s}[/yellow]")
    console.print("[bold]budget[/bold]: " + demo["budget_note"])
    for v in verdicts:
        console.print("[bold]verdict[/bold]: " + v)
    console.print(f"report: {page} (open in a browser: file://{page.resolve()})")
    console.print(f"total time: {total:.1f} s ({total / 60:.1f} min)")
