"""Checkpoints: atomic, complete, and enough to continue a run exactly.

Owns: writing RUN/checkpoints/step-NNNNNN (trainable weights, optimizer, schedule, each process's
RNG and data position, the step) into a temporary folder renamed into place when complete;
loading one back; choosing where to resume (`run.resume`). A sharded run saves its weights and
optimizer state with `torch.distributed.checkpoint` (each process writes its shards), which
reloads on any number of processes.
Does not own: the final `save_pretrained` export (`harken.train.run_folder`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from harken.io import write_json_atomic
from harken.models.audio_lm import AudioLM


CKPT_PREFIX = "step-"


def _rng_state(generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if generator is not None:
        state["sampling"] = generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if generator is not None and "sampling" in state:
        generator.set_state(state["sampling"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _trainable_state(lm: AudioLM) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in lm.model.named_parameters() if v.requires_grad}


class Checkpoints:
    """Atomic, complete checkpoints under RUN/checkpoints/step-NNNNNN.

    A checkpoint is written to a temporary folder and renamed into place only once every file
    (trainable weights, optimizer, schedule, each process's RNG and data position, the step) is
    on disk, so the newest folder with the final name is always complete.
    """

    def __init__(self, run_dir: Path, keep_last: int):
        self.dir = run_dir / "checkpoints"
        self.keep_last = keep_last

    def all(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if p.name.startswith(CKPT_PREFIX) and (p / "state.json").exists())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, lm: AudioLM, optimizer, scheduler, state: dict[str, Any], rank_state: dict[str, Any],
             generator: torch.Generator | None, accelerator, sharded: bool = False) -> Path:
        final = self.dir / f"{CKPT_PREFIX}{step:06d}"
        tmp = self.dir / f".tmp-{CKPT_PREFIX}{step:06d}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        torch.save({"rng": _rng_state(generator), **rank_state}, tmp / f"rank{accelerator.process_index}.pt")
        if sharded:
            _save_sharded(tmp / SHARDED_DIR, lm, optimizer)  # every process writes its shards
        elif accelerator.is_main_process:
            _save_whole(tmp, lm, optimizer)
        if accelerator.is_main_process:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json_atomic(tmp / "state.json", {"step": step, "world": accelerator.num_processes, "sharded": sharded,
                                                   **state})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.all()[: -self.keep_last] if self.keep_last > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(path: Path, lm: AudioLM, optimizer, scheduler, generator, accelerator,
             sharded: bool = False) -> tuple[dict, dict | None]:
        """Restore weights, optimizer and schedule; returns (state.json, this process's saved state).

        A sharded checkpoint resumes on any number of processes (the shards are re-split on
        load); the per-process state is then None, because data positions and random streams
        belong to the old processes (the caller maps them).
        """
        state = json.loads((path / "state.json").read_text())
        world = state.get("world", 1)
        if bool(state.get("sharded", False)) != sharded:
            written = "model.sharding=fsdp" if state.get("sharded") else "model.sharding=none"
            raise ValueError(f"{path} was written with {written}; resume it with the same setting")
        if not sharded and world != accelerator.num_processes:
            raise ValueError(
                f"{path} was written by {world} processes; resume it with the same number "
                f"(now {accelerator.num_processes}), or train with model.sharding=fsdp, whose checkpoints "
                f"resume on any number"
            )
        if sharded:
            _load_sharded(path / SHARDED_DIR, lm, optimizer)
        else:
            _load_whole(path, lm, optimizer)
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True, map_location="cpu"))
        if world != accelerator.num_processes:
            return state, None
        rank = torch.load(path / f"rank{accelerator.process_index}.pt", weights_only=True, map_location="cpu")
        _set_rng_state(rank.pop("rng"), generator)
        return state, rank

    @staticmethod
    def rank_state(path: Path, rank: int = 0) -> dict:
        """A process's saved state (data position, random streams) of a checkpoint."""
        return torch.load(path / f"rank{rank}.pt", weights_only=True, map_location="cpu")


SHARDED_DIR = "sharded"  # torch.distributed.checkpoint folder of a sharded run's weights and optimizer


def _save_whole(folder: Path, lm: AudioLM, optimizer) -> None:
    from safetensors.torch import save_file

    save_file(_trainable_state(lm), str(folder / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")


def _load_whole(folder: Path, lm: AudioLM, optimizer) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(folder / "trainable.safetensors"))
    params = dict(lm.model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise ValueError(f"{folder}: checkpoint has weights this model lacks, e.g. {missing[:3]}")
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))


def _save_sharded(folder: Path, lm: AudioLM, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(lm.model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder))


def _load_sharded(folder: Path, lm: AudioLM, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(lm.model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(lm.model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def resume_point(run_cfg, run_dir: Path) -> Path | None:
    if run_cfg.resume == "never":
        return None
    if run_cfg.resume == "auto":
        return Checkpoints(run_dir, run_cfg.keep_last).latest()
    p = Path(run_cfg.resume)
    if not (p / "state.json").exists():
        raise FileNotFoundError(f"no complete checkpoint at {p} (state.json missing)")
    return p
