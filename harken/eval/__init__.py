"""Evaluation: benchmark runs, the benchmarks' scoring rule, result files, tables and charts.

Where things live:
    benchmarks.py  what each benchmark is: its group fields, prediction keys, `--benchmark` names
    scoring.py     the official correctness rule and answer extraction (shared with the rewards)
    answers.py     greedy answers from a model (evaluation and the trainers' validation)
    run.py         `harken eval run`: a model over a benchmark, resumable
    score_file.py  `harken eval score`: a predictions file in a benchmark's own format
    results.py     scored items, accuracy per group, the evaluation folder, its tables and charts
    compare.py     `harken eval compare`: several evaluation folders side by side
The command-line options live in `harken.cli.eval`.
"""
