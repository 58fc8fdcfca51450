"""`harken demo`: the paper's comparison (GRPO vs SFT for audio QA, R1-AQA) in miniature, on a CPU.

Owns: the design of the demo (below), its sizes (`FULL`, and `QUICK` for the test suite), the
order of its stages, the budget bookkeeping of its arms, and `demo.json` (what the report is
regenerated from). Every stage calls the project's own modules; nothing here trains, scores or
plots by itself. Does not own: the data sets (`harken.demo.data`), training (`harken.train.sft`,
`harken.train.grpo`), evaluation (`harken.eval.run`), the report (`harken.demo.report`), the
command line (`harken.cli.demo`).

The claim under test. R1-AQA (arXiv 2503.11197): with a small post-training set (38k AVQA
questions) GRPO beats SFT, measured on a *different* benchmark (MMAU: other sources, other
question styles, other skills). The miniature keeps that shape and reports what it finds.

How the design was fixed. The parts of the test, the arms' recipes and budgets, and the seeds
were written down before any arm was trained. Only two things were measured first, neither of
them a GRPO or SFT result: which skills a warm-up teaches a toy at all (the base's accuracy per
skill), and how long the arms' steps take. A first full run then changed two settings, again not
for its GRPO-vs-SFT numbers: toms were dropped from the drum skill (the base was at chance on
held-out drums with them), and the SFT run given GRPO's wall time was shortened from 140 to 115
steps (140 had taken 15 % longer than GRPO).

1. Data (`harken.demo.data`; one data seed, 0 unless --data-seed). Five skills that a hidden-64
   toy learns from the audio within the warm-up: `count` (1-4 beeps) and `timbre` (sine, square,
   sawtooth, noise), synthetic; `drum` (kick, snare or cymbal: one sonic-pi sample),
   `alert-count` (a freedesktop alert played 1-3 times) and `word-count` (1-3 words said by
   flite), real audio whose sources are dealt to a train side and a test side (no clip, sample
   file, alert file or spoken word is on both). The base's held-out accuracy, measured before
   the design was fixed (two warm-ups of this size): count 60 %, timbre 43-64 %, drum 77 %,
   alert-count 77-88 %, word-count 73-96 %. Pitch, loudness, duration and sweep comparisons, a
   pitch register, which word is spoken and the speaker's sex stayed at chance, so they are not
   used.
   - warm-up set: 1,600 questions over all five skills, every phrasing (3-4 per skill), 2-4
     options in any order: the broad mixture standing in for the instruct model's prior.
   - training set: 160 questions (80 count, 80 timbre), ONE phrasing, always 3 options in their
     natural order (e.g. one, two, four): small and narrow, as AVQA is next to MMAU.
   - test: five parts of 60 questions each, reported separately: in-domain (the training set's
     skills, phrasing and options); rephrased (the other phrasings, seen only in the warm-up);
     options (4 options, shuffled: re-ordered and one more); drum (a skill seen only in the
     warm-up, on held-out samples); real-count (alerts and spoken words from held-out sources,
     asked as the warm-up asks). 60 per part keeps the evaluation of ten models to about a
     minute; three seeds give 180 answers per arm and part.
2. Base (preset demo-warmup): a toy Qwen2-Audio (0.26 M parameters, its tokenizer trained on the
   data's texts) given 200 supervised steps of 16 warm-up questions (3,200 examples, two passes,
   lr 3e-3 constant): partly skilled on every part, so both arms have room to improve and
   something to lose. Built once, from the data seed, and shared by every seed: the paper's arms
   also start from one released model.
3. Arms, from that base, on the same 160 training questions, for each seed (0, 1, 2 unless
   --seeds; a seed sets the data order and the sampling of each run):
   - GRPO (preset demo-grpo): 100 steps x 4 prompts = 400 questions, 8 completions each = 3,200
     sampled completions; prompt 2, accuracy + format rewards, k3 KL 0.04, lr 3e-4 constant.
   - SFT (preset demo-sft): 50 steps x 8 = 400 questions (the same number), one teacher-forced
     target each, lr 1e-3 constant.
   - SFT given GRPO's wall time: the same SFT run continued (resumed from its last checkpoint,
     so its first 50 steps are the SFT arm's) to 115 steps = 920 questions. A GRPO step (32
     completions) took about 1.3x an SFT step (8 questions), 0.18 s against 0.14 s on two
     shared cores, so 115 SFT steps and their extra start-up take about as long as 100 GRPO
     steps; the report shows every arm's wall time as measured.
   The rates are the demo presets' (each preset says where it comes from); none was tuned on
   the test.
4. Evaluation: the base once and each seed's three arms on the whole test (300 questions,
   prompt 2, greedy), with `harken.eval.run.run_benchmark`; accuracy per part and per skill,
   mean and spread over the seeds.
5. Report (`harken.demo.report`): tables, a verdict per part, budgets, charts, index.html.

Deviations from the paper, by necessity of scale: a 0.26 M-parameter toy for an 8.2 B model; a
1,600-question supervised warm-up for instruction tuning; synthetic skills and Debian sound
files for AVQA and MMAU; 160 training questions for 38k; learning rates far above 1e-6 (a toy
learns nothing at the paper's rate). The report repeats them beside the verdict.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from harken import __version__
from harken.io import read_json, write_json_atomic
from harken.report.metrics import DEMO_FILE

TEMPLATE = "prompt2"  # one prompt for the warm-up, every arm and every evaluation (the paper's best)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: data sizes, seeds, and per-stage overrides of the demo-* presets."""

    name: str
    n_warmup: int = 1600  # warm-up questions (all skills, all phrasings, 2-4 options)
    n_train: int = 160  # the arms' training questions (count and timbre, one phrasing, 3 options)
    n_val: int = 40  # held-out training-style questions for the arms' validation curves
    n_test_part: int = 60  # questions per test part
    seeds: tuple[int, ...] = (0, 1, 2)
    sft_wall_steps: int = 115  # SFT's total steps when given GRPO's wall time (the SFT arm: 50)
    eval_batch_size: int = 50
    eval_max_new_tokens: int = 16  # the answers are ~4 toy tokens; 16 leaves room for rambling
    overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage -> dotted key=value


FULL = DemoSize("full")

QUICK = DemoSize(
    "quick",
    n_warmup=24,
    n_train=12,
    n_val=8,
    n_test_part=4,
    seeds=(0, 1),
    sft_wall_steps=5,
    eval_batch_size=20,
    overrides={
        # 4 x 4 = 16 warm-up examples; 3 x 4 = 12 SFT questions = 6 x 2 GRPO questions (x 4 samples)
        "warmup": ("run.max_steps=4", "train.batch_size=4", "optim.warmup_steps=0", "run.sample_every=0"),
        "sft": ("run.max_steps=3", "train.batch_size=4", "run.eval_every=3", "run.eval_limit=8", "run.sample_every=0"),
        "grpo": ("run.max_steps=6", "rollout.prompts_per_step=2", "rollout.group_size=4", "run.eval_every=3",
                 "run.eval_limit=8", "run.sample_every=0"),
    },
)

# Arm key -> (label, preset, trainer kind). "sft-wall" is the SFT run continued, not a preset of its own.
ARMS = {
    "sft": ("SFT", "demo-sft", "sft"),
    "sft-wall": ("SFT, GRPO's wall time", "demo-sft", "sft"),
    "grpo": ("GRPO", "demo-grpo", "grpo"),
}
BASE_LABEL = "base (warm-up)"


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


class _Stages:
    """Times each stage and prints its header and a closing line (readable in a log file too)."""

    def __init__(self, total: int):
        self.total, self.n = total, 0
        self.timings: dict[str, float] = {}

    def run(self, key: str, title: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {title}", flush=True)
        t0 = time.perf_counter()
        result = fn()
        self.timings[key] = round(time.perf_counter() - t0, 2)
        print(f"      done in {self.timings[key]:.1f} s", flush=True)
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


def _rel(out: Path, path: str | Path) -> str:
    return str(Path(path).resolve().relative_to(out))


def make_data(out: Path, size: DemoSize, seed: int) -> dict[str, Any]:
    """Stage 1: the warm-up, training, validation and test sets (`harken.demo.data.make_data`)."""
    from harken.demo.data import make_data as write_sets

    info = write_sets(out / "data", seed, size.n_warmup, size.n_train, size.n_val, size.n_test_part)
    info["files"] = {k: _rel(out, p) for k, p in info["files"].items()}
    parts = ", ".join(f"{p['key']} {p['n']}" for p in info["parts"])
    print(f"      warm-up {size.n_warmup} questions (count, timbre{''.join(', ' + s for s in info['real_skills'])}); "
          f"training {size.n_train} (count, timbre, one phrasing); test by part: {parts}")
    for note in info["skipped"]:
        print(f"      {note}")
    return info


def _dataset_texts(files: Sequence[Path]) -> list[str]:
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
    """Stage 2: the untrained toy Qwen2-Audio, saved as a model folder."""
    from harken.models.loading import count_parameters
    from harken.models.toy import build_tiny

    path = out / "models" / "init"
    lm = build_tiny("qwen2-audio", path, size="toy", seed=seed,
                    extra_texts=_dataset_texts([out / p for p in data["files"].values()]))
    n = count_parameters(lm.model)["total"]
    print(f"      toy Qwen2-Audio: {n / 1e6:.2f} M parameters, vocabulary {len(lm.tokenizer)}, "
          f"{lm.window_seconds:.0f} s audio window")
    return path


def _train(kind: str, preset: str, overrides: list[str]) -> tuple[Any, Path, int, int, str]:
    """Train with harken.train.sft or .grpo; returns (config, final model, questions per step,
    completions sampled per step, recipe)."""
    from harken.config import load_config

    if kind == "sft":
        from harken.schema import SFTConfig
        from harken.train.sft import train_sft

        cfg = load_config(SFTConfig, preset, overrides)
        final = train_sft(cfg)
        recipe = f"{cfg.train.batch_size} questions per step, teacher-forced, lr {cfg.optim.lr:g} ({cfg.optim.schedule})"
        return cfg, final, cfg.train.batch_size * cfg.optim.grad_accum, 0, recipe
    from harken.schema import GRPOConfig
    from harken.train.grpo import train_grpo

    cfg = load_config(GRPOConfig, preset, overrides)
    final = train_grpo(cfg)
    per_step = cfg.rollout.prompts_per_step * cfg.optim.grad_accum
    rewards = " + ".join(r.name for r in cfg.reward.rewards)
    recipe = (f"{per_step} questions x G={cfg.rollout.group_size} per step, rewards {rewards}, "
              f"KL {cfg.algo.kl_coef:g}, lr {cfg.optim.lr:g} ({cfg.optim.schedule}), T={cfg.rollout.temperature:g}")
    return cfg, final, per_step, per_step * cfg.rollout.group_size, recipe


def train_run(out: Path, label: str, preset: str, kind: str, run_dir: Path, model: Path, train_file: Path,
              val_file: Path, seed: int, overrides: Sequence[str]) -> dict[str, Any]:
    """One training run from `model`; returns its bookkeeping for demo.json."""
    paths = [f"model.path={model}", f"data.path={train_file}", f"val.path={val_file}", f"run.out_dir={run_dir}"]
    settings = [f"run.seed={seed}", "run.progress=true", *overrides]
    t0 = time.perf_counter()
    cfg, final, per_step, completions, recipe = _train(kind, preset, paths + settings)
    wall = time.perf_counter() - t0
    steps = cfg.run.max_steps  # every demo stage sets it (SFT by epochs is not used here)
    return {
        "label": label,
        "preset": preset,
        "kind": kind,
        "recipe": recipe,
        "run_dir": _rel(out, run_dir),
        "model": _rel(out, final),
        "steps": steps,
        "questions_per_step": per_step,
        "questions": steps * per_step,
        "completions": steps * completions,
        "wall_s": round(wall, 2),
        "settings": settings,
    }


def _line(arm: dict[str, Any]) -> str:
    sampled = f", {arm['completions']} completions sampled" if arm["completions"] else ""
    return f"      {arm['label']}: {arm['steps']} steps, {arm['questions']} questions seen{sampled}, {arm['wall_s']:.1f} s"


def train_base(out: Path, init: Path, data: dict[str, Any], size: DemoSize, seed: int) -> dict[str, Any]:
    """Stage 3: the supervised warm-up that makes the base (the stand-in for the instruct model)."""
    arm = train_run(out, BASE_LABEL, "demo-warmup", "sft", out / "runs" / "warmup", init,
                    out / data["files"]["warmup"], out / data["files"]["val"], seed,
                    ["run.resume=never", *size.overrides.get("warmup", ())])
    print(_line(arm))
    return arm


def train_arms(out: Path, base: Path, data: dict[str, Any], size: DemoSize, seed: int) -> dict[str, Any]:
    """GRPO, SFT, and SFT continued to about GRPO's wall time, each from `base`, for one seed."""
    train, val = out / data["files"]["train"], out / data["files"]["val"]
    runs = out / "runs" / f"seed{seed}"
    arms: dict[str, Any] = {}
    label, preset, kind = ARMS["grpo"]
    arms["grpo"] = train_run(out, label, preset, kind, runs / "grpo", base, train, val, seed,
                             ["run.resume=never", *size.overrides.get("grpo", ())])
    print(_line(arms["grpo"]))
    label, preset, kind = ARMS["sft"]
    sft_over = list(size.overrides.get("sft", ()))
    arms["sft"] = train_run(out, label, preset, kind, runs / "sft", base, train, val, seed, ["run.resume=never", *sft_over])
    print(_line(arms["sft"]))
    label, preset, kind = ARMS["sft-wall"]
    checkpoint = _last_checkpoint(out / arms["sft"]["run_dir"])
    more = train_run(out, label, preset, kind, runs / "sft-wall", base, train, val, seed,
                     [f"run.resume={checkpoint}", *sft_over, f"run.max_steps={size.sft_wall_steps}"])
    # The arm is the whole SFT run: its first steps are the SFT arm's, resumed from its checkpoint.
    more["continues"] = arms["sft"]["run_dir"]
    more["wall_s"] = round(arms["sft"]["wall_s"] + more["wall_s"], 2)
    more["questions"] = more["steps"] * more["questions_per_step"]
    arms["sft-wall"] = more
    print(_line(more) + f" (the SFT run continued from step {arms['sft']['steps']})")
    return arms


def _last_checkpoint(run_dir: Path) -> Path:
    from harken.train.checkpoint import CKPT_PREFIX

    found = sorted((run_dir / "checkpoints").glob(f"{CKPT_PREFIX}*"))
    if not found:
        raise RuntimeError(f"{run_dir} left no checkpoint to continue from")
    return found[-1]


def evaluate(out: Path, models: dict[str, Path], data: dict[str, Any], size: DemoSize, where: Path) -> dict[str, str]:
    """Each model on the whole test (prompt 2, greedy); returns {model key: evaluation folder}."""
    from harken.eval.run import run_benchmark

    dirs = {}
    for key, model in models.items():
        eval_dir = where / key
        res = run_benchmark("jsonl", str(model), eval_dir, data=str(out / data["files"]["test"]), template=TEMPLATE,
                            max_new_tokens=size.eval_max_new_tokens, batch_size=size.eval_batch_size)
        parts = res["groups"].get("category", {})
        print(f"      {key:8s} " + "  ".join(f"{p['key']} {parts[p['key']]['accuracy']:.1f}" for p in data["parts"])
              + f"  (all {res['accuracy']:.1f} %)", flush=True)
        dirs[key] = _rel(out, eval_dir)
    return dirs


# ---------------------------------------------------------------------------------------------
# Results: accuracy per part (and per part and skill), per model, over the seeds
# ---------------------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min and max of per-seed accuracies."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"per_seed": [round(v, 4) for v in values], "mean": round(mean, 4), "sd": round(sd, 4),
            "min": round(min(values), 4), "max": round(max(values), 4)}


def _accuracies(out: Path, eval_dir: str) -> dict[tuple[str, str], list[int]]:
    """{(part, skill): [correct, total]} and {(part, ""): ...} of one evaluation, from its items.jsonl."""
    from harken.io import iter_jsonl

    tally: dict[tuple[str, str], list[int]] = {}
    for _, item in iter_jsonl(out / eval_dir / "items.jsonl"):
        for key in ((item["category"], item["task"]), (item["category"], "")):
            c = tally.setdefault(key, [0, 0])
            c[0] += bool(item["correct"])
            c[1] += 1
    return tally


def collect_results(out: Path, parts: Sequence[dict[str, Any]], evaluations: dict[str, Any]) -> dict[str, Any]:
    """Accuracy (%) per part (and per skill within it) and model: each seed's, and their spread.

    The base is one model (built once): its single value stands for every seed.

    Returns:
        {"parts": {part: {model: spread + "n"}}, "skills": {part: {skill: {model: spread + "n"}}},
         "shifted": {model: spread of each seed's mean over the shifted parts + "n"} (empty without
         shifted parts)}
    """
    seeds = list(evaluations["seeds"])
    per_model = {"base": [_accuracies(out, evaluations["base"])]}
    for key in ARMS:
        per_model[key] = [_accuracies(out, evaluations["seeds"][s][key]) for s in seeds]
    results: dict[str, Any] = {"parts": {}, "skills": {}, "shifted": {}}
    shifted = [p["key"] for p in parts if p["shift"] != "none"]
    for model, tallies in per_model.items():
        # Per seed, the mean of the shifted parts' accuracies (each part weighs the same).
        means = [sum(100 * t[(p, "")][0] / t[(p, "")][1] for p in shifted) / len(shifted) for t in tallies if shifted]
        if means:
            results["shifted"][model] = {**spread(means), "n": sum(tallies[0][(p, "")][1] for p in shifted)}
    for part in parts:
        p = part["key"]
        for skill in ["", *part["skills"]]:
            row = {}
            for model, tallies in per_model.items():
                cells = [t[(p, skill)] for t in tallies if (p, skill) in t]
                if cells:
                    row[model] = {**spread([100 * c / n for c, n in cells]), "n": cells[0][1]}
            if skill:
                results["skills"].setdefault(p, {})[skill] = row
            else:
                results["parts"][p] = row
    return results


# ---------------------------------------------------------------------------------------------
# The whole demo
# ---------------------------------------------------------------------------------------------


TITLE = "GRPO vs SFT for audio question answering, in miniature"
QUESTION = (
    "R1-AQA (arXiv 2503.11197) found that, post-training Qwen2-Audio-7B-Instruct on a small set "
    "(38k AVQA questions), GRPO beats supervised fine-tuning on a different benchmark (MMAU: other "
    "sources, question styles and skills). Does that hold for a toy Qwen2-Audio on a CPU? One "
    "base with a broad prior; SFT and GRPO train from it on the same small, narrow set of "
    "questions; the test has an in-domain part and shifted parts, reported separately, over "
    "several seeds."
)
DIFFERENCES = (
    "What differs from the paper: a 0.26 M-parameter toy instead of an 8.2 B model; a short "
    "supervised warm-up on {n_warmup:,} questions instead of instruction tuning on millions; synthetic "
    "sounds and Debian sound files (drum samples, desktop alerts, a speech synthesiser) instead "
    "of AVQA's videos and MMAU's recordings; {n_train} training questions of two skills instead of 38k; "
    "learning rates near 1e-3 instead of 1e-6; minutes of CPU instead of hours on 8 GPUs; one base "
    "model, so the seeds vary only the post-training. The shifts have the shape of AVQA -> MMAU "
    "(wording, options, skills, sources), not its size. The verdict is what this run measured, "
    "whichever arm it favours."
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


def _run_stages(out: Path, size: DemoSize, seeds: Sequence[int], data_seed: int) -> dict[str, Any]:
    """Every stage but the report; returns demo.json's data, base, arms and evaluations."""
    stages = _Stages(4 + 2 * len(seeds) + 1)
    data = stages.run("data", "data: warm-up mixture, narrow training set, test in parts",
                      lambda: make_data(out, size, data_seed))
    init = stages.run("model", "model: toy Qwen2-Audio", lambda: build_model(out, data, data_seed))
    base_arm = stages.run("base", "base: supervised warm-up on the broad mixture (the 'instruct' model)",
                          lambda: train_base(out, init, data, size, data_seed))
    base = out / base_arm["model"]
    evaluations: dict[str, Any] = {"seeds": {}}
    evaluations["base"] = stages.run("eval-base", "evaluation: the base on every test part",
                                     lambda: evaluate(out, {"base": base}, data, size, out / "eval"))["base"]
    arms: dict[str, Any] = {}
    for i, seed in enumerate(seeds, 1):
        key = str(seed)
        arms[key] = stages.run(f"train-seed{seed}", f"seed {seed} ({i}/{len(seeds)}): GRPO, SFT, and SFT for GRPO's wall time",
                               lambda: train_arms(out, base, data, size, seed))
        models = {k: out / arms[key][k]["model"] for k in ARMS}
        evaluations["seeds"][key] = stages.run(f"eval-seed{seed}", f"seed {seed} ({i}/{len(seeds)}): evaluation",
                                               lambda: evaluate(out, models, data, size, out / "eval" / f"seed{seed}"))
    return {"data": data, "base": base_arm, "arms": arms, "evaluations": evaluations, "stages": stages}


def run_demo(out: str | Path = "runs/demo", quick: bool = False, seeds: Sequence[int] | None = None,
             data_seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Run every stage; returns the stored results (also in OUT/demo.json) with the report's path.

    Args:
        out: the demo folder (an earlier demo there is replaced; any other non-empty folder is refused).
        quick: the QUICK size (seconds; for tests) instead of FULL (minutes).
        seeds: the arms' seeds (data order, sampling); None: the size's (FULL: 0, 1, 2).
        data_seed: the seed of the data sets, the toy's initialisation and the base's warm-up.
        threads: torch CPU threads (0: torch's default). The toy's matrices are too small to gain
            from more than one, and on a shared machine extra threads only contend.
    """
    import torch

    from harken.demo.report import demo_report, print_summary

    out = Path(out).resolve()  # runs record absolute paths: the folder reads the same from anywhere
    size = QUICK if quick else FULL
    seeds = list(dict.fromkeys(size.seeds if seeds is None else seeds))
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    t_start = time.perf_counter()
    _prepare_out(out)
    with _demo_session(out, threads):
        print(f"harken demo ({size.name}): GRPO vs SFT on audio QA in miniature, seeds {', '.join(map(str, seeds))}; "
              f"everything goes to {out}/")
        done = _run_stages(out, size, seeds, data_seed)
        stages = done.pop("stages")
        demo = {
            "harken_version": __version__,
            "title": TITLE,
            "question": QUESTION,
            "differences": DIFFERENCES.format(n_warmup=size.n_warmup, n_train=size.n_train),
            "command": "harken demo" + (" --quick" if quick else "")
                       + f" --seeds {','.join(map(str, seeds))} --data-seed {data_seed} --out {out}",
            "mode": size.name,
            "seeds": seeds,
            "data_seed": data_seed,
            "threads": torch.get_num_threads(),
            "size": asdict(size),
            **done,
            "results": collect_results(out, done["data"]["parts"], done["evaluations"]),
            "timings": dict(stages.timings),
        }
        write_json_atomic(out / DEMO_FILE, demo)
        page = stages.run("report", "report: tables, charts, index.html", lambda: demo_report(out))
        # The report of a later `harken report OUT` shows these too.
        demo["timings"] = {**stages.timings, "total": round(time.perf_counter() - t_start, 2)}
        write_json_atomic(out / DEMO_FILE, demo)
    total = time.perf_counter() - t_start
    print_summary(out, read_json(out / DEMO_FILE), page, total)
    return {**demo, "page": str(page), "total_s": total}
