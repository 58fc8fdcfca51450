"""Per-step metrics of a run: metrics.jsonl, TensorBoard, optional wandb, samples.

Owns: `MetricsLogger` (only the main process writes; keys grouped TensorBoard-style, e.g.
"reward/accuracy") and dropping rows written after the checkpoint a run resumes from.
Does not own: what the metrics are (the trainers), plots of them (`harken.report`), the progress
bar or lines a person reads (`harken.progress`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from harken.io import read_appended_jsonl, write_jsonl


class MetricsLogger:
    """Per-step metrics as JSON lines (metrics.jsonl), TensorBoard under tb/, optional wandb.

    Only the main process writes. Keys are grouped TensorBoard-style ("reward/accuracy").
    """

    def __init__(self, run_dir: Path, run_cfg, config_dict: dict, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.samples = run_dir / "samples.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if run_cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        if run_cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise ValueError("run.wandb=true but wandb is not installed: pip install wandb") from None
            self.wandb = wandb.init(project=run_cfg.wandb_project, dir=str(run_dir), config=config_dict)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **{k: _num(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        if not self.enabled:
            return
        with open(self.samples, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"step": step, **r}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _num(v):
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def truncate_metrics_after(run_dir: Path, step: int) -> None:
    """On resume, drop metric rows written after the checkpoint (they will be written again)."""
    for name in ("metrics.jsonl", "samples.jsonl"):
        p = run_dir / name
        if p.exists():
            rows, _ = read_appended_jsonl(p)
            write_jsonl(p, (row for _, row in rows if row.get("step", 0) <= step))
