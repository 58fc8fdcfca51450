"""Every command in the README's bash blocks, run as written, in order, where it fits on a CPU.

Each command is classified by the first rule of `RULES` that matches it: run as written, run
with a few overrides that only make it shorter (fewer steps), or skipped for a stated reason
(8 GPUs, a 7B download, audio that cannot be shipped). A README command that no rule matches
fails the test, so a new example is classified when it is written.

The files the examples assume (a trained model in runs/r1aqa/final, an MMAU-layout file with its
clips, an MMAR file, parquet and `save_to_disk` tables, a JSON-lines set with its own keys, a
predictions file, earlier evaluation folders) are made as small stand-ins from the synthetic set
and a toy model, in a fresh working folder.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

from harken.cli import main
from table_files import embedded_rows, save_to_disk, write_parquet

README = Path(__file__).resolve().parents[2] / "README.md"

RUN, SKIP, SHRINK = "run", "skip", "shrink"
SHORT_TRAIN = ["run.max_steps=2", "run.save_every=1"]

# (pattern, action, overrides or reason), first match wins.
RULES: list[tuple[str, str, object]] = [
    (r"^make (demo|test)$", SKIP, "the README's two top-level commands: the demo has its own tests, the tests are this suite"),
    (r"^accelerate launch --num_processes 8 ", SKIP, "8 GPUs"),
    (r"^harken data avqa ", SKIP, "needs AVQA's videos (tests/data/test_avqa.py runs it on made-up videos)"),
    (r"data/avqa/", SKIP, "needs the prepared AVQA set"),
    (r"^harken train (grpo|sft) --config r1aqa", SKIP, "downloads the 7B model"),
    (r"--benchmark mmau-test-mini", SKIP, "needs MMAU's 1000 test-mini clips"),
    (r"^harken bench ", SKIP, "a timed benchmark (tests/bench runs it on a toy size)"),
    (r"^harken data split --data my_set/ .*--val 500", SHRINK, ("--val 500", "--val 4")),  # the stand-in has 12 questions
    (r"^harken train (grpo|sft) --config tiny", RUN, SHORT_TRAIN),
    (r"^harken ", RUN, []),
]


def readme_commands(text: str) -> list[str]:
    """The commands of the README's bash blocks, in order (continuations joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            out.append(shlex.join(shlex.split(line, comments=True)))
    return out


def classify(command: str) -> tuple[str, object]:
    for pattern, action, arg in RULES:
        if re.search(pattern, command):
            return action, arg
    raise AssertionError(f"README command not classified in {__file__}: {command}")


# ---------------------------------------------------------------------------------------------
# Stand-ins for the files the examples assume.
# ---------------------------------------------------------------------------------------------


def _mmau_item(ex, audio_id: str, answer: bool = True) -> dict:
    item = {"id": ex.id, "audio_id": audio_id, "question": ex.question, "choices": ex.choices,
            "task": "sound", "category": ex.meta.get("task", "tones"), "sub-category": "tones",
            "difficulty": "easy", "dataset": "synthetic", "split": "test-mini"}
    return {**item, "answer": ex.answer} if answer else item


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def make_stand_ins(work: Path) -> None:
    from harken.data.readers import read_dataset
    from harken.data.synth import make_synthetic
    from harken.eval.score_file import score_file
    from harken.models.toy import build_tiny

    src = work / "_src"
    make_synthetic(src, seed=0, n_train=0, n_test=12, n_warmup=0)
    examples = read_dataset(src / "test.jsonl").examples
    build_tiny("qwen2-audio", work / "runs" / "r1aqa" / "final", seed=0)

    def copy_clips(folder: Path) -> dict[str, str]:  # id -> clip path relative to folder
        folder.mkdir(parents=True, exist_ok=True)
        names = {}
        for ex in examples:
            shutil.copy(ex.audio, folder / Path(ex.audio).name)
            names[ex.id] = Path(ex.audio).name
        return names

    clips = copy_clips(work / "clips")
    _write_json(work / "own.json", [_mmau_item(ex, clips[ex.id]) for ex in examples])
    mmau = copy_clips(work / "mmau")
    _write_json(work / "mmau-test.json", [_mmau_item(ex, mmau[ex.id], answer=False) for ex in examples])
    mmar = copy_clips(work / "mmar-audio")
    (work / "MMAR-Benchmark.json").write_text("".join(json.dumps({
        "id": ex.id, "audio_path": f"mmar-audio/{mmar[ex.id]}", "question": ex.question, "choices": ex.choices,
        "answer": ex.answer, "modality": "sound", "category": "Signal Layer", "sub-category": "tones",
        "language": "en", "source": "synthetic"}) + "\n" for ex in examples))
    qa = copy_clips(work / "qa-audio")
    (work / "qa.jsonl").write_text("".join(json.dumps({
        "uid": ex.id, "wav": f"qa-audio/{qa[ex.id]}", "question": ex.question, "choices": ex.choices,
        "label": ex.answer}) + "\n" for ex in examples))

    rows = embedded_rows(examples, codecs=("wav", "flac"))
    own_keys = [{("options" if k == "choices" else k): v for k, v in r.items()} for r in rows]
    write_parquet(work / "my_set.parquet", own_keys)
    save_to_disk(work / "my_set", own_keys)
    hf = [{**_mmau_item(ex, r["audio"]["path"]), "audio": r["audio"]} for ex, r in zip(examples, rows)]
    write_parquet(work / "mmau" / "data" / "test_mini-00000-of-00002.parquet", hf[:6])
    write_parquet(work / "mmau" / "data" / "test_mini-00001-of-00002.parquet", hf[6:])

    predictions = [{**_mmau_item(ex, clips[ex.id]), "model_output": ex.answer if i % 2 else ex.choices[-1]}
                   for i, ex in enumerate(examples)]
    _write_json(work / "my_predictions.json", predictions)
    for name in ("base", "sft", "grpo", "own-base"):
        score_file(work / "my_predictions.json", "mmau", work / "eval" / name)


# ---------------------------------------------------------------------------------------------


def test_every_readme_command_is_classified():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 30
    ran = [c for c in commands if classify(c)[0] == RUN]
    assert any(c.startswith("harken train grpo --config tiny") for c in ran)
    assert any(c.startswith("harken eval run") for c in ran)


def test_readme_parsing():
    text = "x\n```bash\n# a comment\nharken a --b 'c d'   # note\nharken e \\\n  --f\n```\n```python\nno\n```\n"
    assert readme_commands(text) == ["harken a --b 'c d'", "harken e --f"]
    assert classify("accelerate launch --num_processes 8 -m harken.cli train grpo --config r1aqa")[0] == SKIP
    assert classify("harken train grpo --config tiny") == (RUN, SHORT_TRAIN)
    with pytest.raises(AssertionError, match="not classified"):
        classify("rm -rf runs")


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, monkeypatch, capsys):
    make_stand_ins(tmp_path)
    monkeypatch.chdir(tmp_path)
    ran, skipped = [], []
    for command in readme_commands(README.read_text(encoding="utf-8")):
        action, arg = classify(command)
        if action == SKIP:
            skipped.append(f"{command}  ({arg})")
            continue
        argv = shlex.split(command.replace(*arg) if action == SHRINK else command)[1:] + (arg if action == RUN else [])
        t0 = time.perf_counter()
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        assert code == 0, f"README command failed with exit status {code}: {command}\n{out.out[-2000:]}\n{out.err[-2000:]}"
        assert "Traceback" not in out.err, f"{command}\n{out.err[-2000:]}"
        ran.append(f"{time.perf_counter() - t0:5.1f} s  {command}")
    with capsys.disabled():
        print(f"\nREADME: {len(ran)} commands ran:\n  " + "\n  ".join(ran))
        print(f"{len(skipped)} skipped:\n  " + "\n  ".join(skipped))
    assert (tmp_path / "runs" / "tiny-grpo" / "report" / "index.html").exists()
    assert json.loads((tmp_path / "eval" / "qa" / "results.json").read_text())["n_items"] == 12
