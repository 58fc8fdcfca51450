"""The demo: base vs SFT vs GRPO in miniature, end to end on a toy model.

Modules: `run` (the stages and demo.json) and `report` (the demo's tables, verdict, charts and
page, regenerated from what `run` stored). The command is `harken.cli.demo`.
"""
