"""Evaluation: benchmark runs, the benchmarks' scoring rule, result files, tables and charts.

Where things live:
    benchmarks.py  what each benchmark is: its group fields, prediction keys, `--benchmark` names
    scoring.py     the official correctness rule and answer extraction (shared with the rewards)
    answers.py     greedy answers from a model (evaluation and the trainers' validation)
    run.py         `harken eval run`: a model over a benchmark, resumable
    score_file.py  `harken eval score`: a predictions file in a benchmark's own format
    results.py     scored items, accuracy per group, the evaluation folder, its tables and charts
    compare.py     `harken eval compare`: several evaluation folders side by side (--audio-gain: the
                   score that needs the audio)
    ablation.py    what the model hears in `eval run --audio`: the clip, none, silence, another's clip
    curate.py      `harken data curate`: pass rates with and without the audio per training item, splits
The command-line options live in `harken.cli.eval`.
"""
