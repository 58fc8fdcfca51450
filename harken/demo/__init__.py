"""The demo: base vs SFT vs GRPO in miniature, end to end on a toy model, over several seeds.

Modules: `data` (the warm-up mixture, the narrow training set and the test's parts), `run` (the
design, the stages and demo.json) and `report` (the demo's tables, verdict, charts and page,
regenerated from what `run` stored). The command is `harken.cli.demo`.
"""
