"""Checkpoints: atomic, complete, and enough to continue a run exactly.

Owns: writing RUN/checkpoints/step-NNNNNN (trainable weights, optimizer, schedule, each process's
RNG and data position, the step, the run's config) into a temporary folder synced and renamed
into place when complete; loading one back; choosing where to resume (`run.resume`: with `auto`,
the newest complete checkpoint, then older ones if a file of it does not load); the settings
that differ from a checkpoint's (`config_changes`). A sharded run saves its weights and
optimizer state with `torch.distributed.checkpoint` (each process writes its shards), which
reloads on any number of processes. A write that fails (disk full, permissions) or a file that
does not load is a one-line `PathError` naming the folder or file and what to do.
Does not own: the final `save_pretrained` export (`harken.train.run_folder`).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from harken.config import save_config
from harken.io import PathError, describe_error, replace_folder, write_json_atomic
from harken.models.audio_lm import AudioLM


CKPT_PREFIX = "step-"
START_AFRESH = "start afresh with run.resume=never or choose another run.out_dir=DIR"  # what a refused resume can do


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
             generator: torch.Generator | None, accelerator, sharded: bool = False, config=None) -> Path:
        final = self.dir / f"{CKPT_PREFIX}{step:06d}"
        tmp = self.dir / f".tmp-{CKPT_PREFIX}{step:06d}"
        try:
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
                if config is not None:
                    save_config(config, tmp / "config.yaml")
                write_json_atomic(tmp / "state.json", {"step": step, "world": accelerator.num_processes,
                                                       "sharded": sharded, **state})
                replace_folder(tmp, final)  # files and folder synced, then renamed
        except (OSError, RuntimeError, SafetensorError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._write_error(final, e) from None
        if accelerator.is_main_process:
            for old in self.all()[: -self.keep_last] if self.keep_last > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def _write_error(self, final: Path, e: BaseException) -> PathError:
        """Why a checkpoint could not be written, and what to do (the previous checkpoints are untouched)."""
        reason = describe_error(e)
        try:
            if shutil.disk_usage(self.dir).free < 64 * 2**20:
                reason += " (the disk is full)"
        except OSError:
            pass
        kept = self.latest()
        return PathError(
            f"could not write checkpoint {final}: {reason}; free disk space or fix the folder's permissions, then "
            f"run again with --resume ({'it continues from ' + str(kept) if kept else 'no earlier checkpoint'})"
        )

    @staticmethod
    def load(path: Path, lm: AudioLM, optimizer, scheduler, generator, accelerator,
             sharded: bool = False) -> tuple[dict, dict | None]:
        """Restore weights, optimizer and schedule; returns (state.json, this process's saved state).

        A sharded checkpoint resumes on any number of processes (the shards are re-split on
        load); the per-process state is then None, because data positions and random streams
        belong to the old processes (the caller maps them).
        """
        state = _read(path / "state.json", lambda f: json.loads(f.read_text()))
        world = state.get("world", 1)
        if bool(state.get("sharded", False)) != sharded:
            written = "model.sharding=fsdp" if state.get("sharded") else "model.sharding=none"
            raise ValueError(f"{path} was written with {written}: resume it with {written}, or {START_AFRESH}")
        if not sharded and world != accelerator.num_processes:
            raise ValueError(
                f"{path} was written by {world} process(es) and cannot resume on {accelerator.num_processes}: run "
                f"it with {world}, or {START_AFRESH} (checkpoints of model.sharding=fsdp resume on any number)"
            )
        if sharded:
            _read(path / SHARDED_DIR, lambda f: _load_sharded(f, lm, optimizer))
        else:
            _load_whole(path, lm, optimizer)
        scheduler.load_state_dict(_read(path / "scheduler.pt", _torch_load))
        if world != accelerator.num_processes:
            return state, None
        rank = _read(path / f"rank{accelerator.process_index}.pt", _torch_load)
        _set_rng_state(rank.pop("rng"), generator)
        return state, rank

    @staticmethod
    def rank_state(path: Path, rank: int = 0) -> dict:
        """A process's saved state (data position, random streams) of a checkpoint."""
        return _read(path / f"rank{rank}.pt", _torch_load)


class CorruptCheckpoint(PathError):
    """A checkpoint file that does not load (cut short, overwritten, unreadable); the message names it."""

    def __init__(self, file: Path, reason: str):
        super().__init__(f"checkpoint file {file} does not load ({reason}); delete {file.parent} to resume from the "
                         f"checkpoint before it, or set run.resume=never to start over")
        self.file, self.reason = file, reason


def _torch_load(file: Path):
    return torch.load(file, weights_only=True, map_location="cpu")


def _read(file: Path, load):
    """`load(file)`, with any failure to read it turned into a `CorruptCheckpoint` naming the file."""
    try:
        return load(file)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as e:
        raise CorruptCheckpoint(file, describe_error(e)) from None


SHARDED_DIR = "sharded"  # torch.distributed.checkpoint folder of a sharded run's weights and optimizer


def _save_whole(folder: Path, lm: AudioLM, optimizer) -> None:
    from safetensors.torch import save_file

    save_file(_trainable_state(lm), str(folder / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")


def _load_whole(folder: Path, lm: AudioLM, optimizer) -> None:
    from safetensors.torch import load_file

    weights = _read(folder / "trainable.safetensors", lambda f: load_file(str(f)))
    params = dict(lm.model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise ValueError(f"{folder}: checkpoint has weights this model lacks, e.g. {missing[:3]}: resume with the "
                         f"model.* settings it was written with, or {START_AFRESH}")
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))
    optimizer.load_state_dict(_read(folder / "optimizer.pt", _torch_load))


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


def resume_candidates(run_cfg, run_dir: Path) -> list[Path]:
    """The checkpoints to try, in order: `auto` the run's complete ones newest first, a path itself, `never` none."""
    if run_cfg.resume == "never":
        return []
    if run_cfg.resume == "auto":
        return Checkpoints(run_dir, run_cfg.keep_last).all()[::-1]
    p = Path(run_cfg.resume)
    if not (p / "state.json").exists():
        raise FileNotFoundError(f"no complete checkpoint at {p} (state.json missing): set run.resume to a folder "
                                f"RUN/checkpoints/{CKPT_PREFIX}NNNNNN, or to auto (the run's newest) or never")
    return [p]


def config_changes(path: Path, cfg) -> list[str] | None:
    """The settings of `cfg` that differ from the config saved with checkpoint `path`, as "key: old -> new".

    Keys in `harken.schema.RESUME_EXEMPT` and keys only one of the two configs has (a schema that
    gained or lost a key) are left out. None when the checkpoint holds no config (older runs).
    """
    from omegaconf import OmegaConf

    from harken.schema import RESUME_EXEMPT

    saved = path / "config.yaml"
    if not saved.exists():
        return None
    old = _flatten(_read(saved, lambda f: OmegaConf.to_container(OmegaConf.load(f))))
    new = _flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))

    def exempt(key: str) -> bool:
        return any(key == e or (e.endswith(".") and key.startswith(e)) for e in RESUME_EXEMPT)

    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k] and not exempt(k)]


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
