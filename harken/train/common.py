"""Training machinery shared by the GRPO and SFT trainers (one implementation, two loops).

Owns: process/device set-up through `accelerate`; loading the policy (full or LoRA, encoder
frozen or not) and, when needed, the frozen reference; optimizer and schedule; the resumable,
per-process data stream; audio loading for a run; gradient averaging across processes; atomic
checkpoints with everything needed to continue exactly, and resume; metrics (JSON lines,
TensorBoard, optional wandb) and the progress bar; validation; the final `save_pretrained`
export. Does not own: what a step computes (`harken.train.grpo`, `harken.train.sft`).

Several processes: `accelerate launch --num_processes N -m harken.cli train ...` on GPUs, or
`torchrun --nproc_per_node N -m harken.cli train ...` on CPU (gloo). Each process holds a full
copy of the model, draws its own disjoint prompts, and gradients are averaged before every
optimizer step, so all copies stay identical.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from harken.data.audio import AudioLoader
from harken.config import save_config
from harken.data.readers import DatasetConfig, load_dataset
from harken.models.audio_lm import AudioLM
from harken.models.families import base_model
from harken.models.loading import load_audio_lm, save_audio_lm
from harken.data.records import Example
from harken.io import write_json_atomic

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def make_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def average_gradients(params: Iterable[torch.nn.Parameter], accelerator) -> None:
    """Mean of every gradient over processes (no-op with one process)."""
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= accelerator.num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def load_base(model_cfg, device) -> AudioLM:
    """The model named by `model.path` ("tiny:FAMILY" builds a toy model in memory)."""
    return load_audio_lm(
        model_cfg.path,
        dtype=model_cfg.dtype,
        device=str(device),
        trust_remote_code=model_cfg.trust_remote_code,
        attn_implementation=model_cfg.attn_implementation,
        tiny_seed=model_cfg.tiny_seed,
    )


def lora_target_regex(lm: AudioLM, names: list[str]) -> str:
    """A peft target regex matching `names` everywhere except in the audio encoder."""
    enc = "|".join(p.rstrip(".").replace(".", r"\.") for p in lm.family.encoder_modules)
    return rf"^(?!(?:{enc})\.).*\.(?:{'|'.join(names)})$"


def prepare_model(model_cfg, device, need_reference: bool) -> tuple[AudioLM, AudioLM | None]:
    """Load the policy (LoRA-wrapped or not, encoder frozen or not) and, if asked, a reference.

    The reference is a frozen copy for full fine-tuning; with LoRA it is None because the
    policy with its adapter disabled IS the reference (no second copy in memory).
    """
    lm = load_base(model_cfg, device)
    ref = None
    if need_reference and not model_cfg.lora:
        ref_model = copy.deepcopy(lm.model).eval().requires_grad_(False)
        ref = AudioLM(ref_model, lm.tokenizer, lm.feature_extractor, lm.family, lm.path)
    frozen = lm.family.unused_modules + (lm.family.encoder_modules if model_cfg.freeze_encoder else ())
    for name, p in lm.model.named_parameters():
        if frozen and name.startswith(frozen):
            p.requires_grad_(False)
    if model_cfg.lora:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=model_cfg.lora_r,
            lora_alpha=model_cfg.lora_alpha,
            lora_dropout=model_cfg.lora_dropout,
            target_modules=lora_target_regex(lm, list(model_cfg.lora_target_modules)),
            bias="none",
        )
        lm.model = get_peft_model(lm.model, cfg)
    if model_cfg.gradient_checkpointing:
        lm.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    lm.model.train()
    return lm, ref


def encoder_is_frozen(lm: AudioLM) -> bool:
    """True when no audio-encoder parameter trains (then its output can be reused across passes)."""
    base = base_model(lm.model)
    return not any(p.requires_grad for n, p in base.named_parameters() if n.startswith(lm.family.encoder_modules))


def check_replicas_agree(lm: AudioLM, accelerator) -> None:
    """With several processes, verify every copy of the model holds the same weights."""
    if accelerator.num_processes == 1:
        return
    local = torch.stack([p.detach().double().sum() for p in lm.model.parameters() if p.requires_grad]).sum()
    everyone = accelerator.gather(local.reshape(1).to(accelerator.device))
    if not torch.allclose(everyone, everyone[0].expand_as(everyone), rtol=1e-9, atol=0):
        raise RuntimeError(f"model replicas diverged across processes: {everyone.tolist()}")
    log.info("all %d model replicas agree (parameter checksum %.9g)", accelerator.num_processes, float(everyone[0]))


def trainable_parameters(lm: AudioLM) -> list[torch.nn.Parameter]:
    return [p for p in lm.model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------


def build_optimizer(params: list[torch.nn.Parameter], optim_cfg, total_steps: int):
    from transformers import get_scheduler

    opt = torch.optim.AdamW(
        params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, betas=(optim_cfg.adam_beta1, optim_cfg.adam_beta2)
    )
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[optim_cfg.schedule]
    sched = get_scheduler(name, opt, num_warmup_steps=optim_cfg.warmup_steps, num_training_steps=max(total_steps, 1))
    return opt, sched


def clip_and_step(params, optimizer, scheduler, max_grad_norm: float, accelerator) -> float:
    """Average gradients over processes, clip, step, zero. Returns the pre-clip grad norm."""
    average_gradients(params, accelerator)
    if max_grad_norm and max_grad_norm > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    else:
        grads = [p.grad.detach().norm() for p in params if p.grad is not None]
        norm = float(torch.stack(grads).norm()) if grads else 0.0
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def resolve_dataset(cfg: DatasetConfig, out_dir: Path, seed: int) -> list[Example]:
    """Load a dataset; `synthetic:SPLIT` makes the offline synthetic set under out_dir/data first."""
    if cfg.path.startswith("synthetic:"):
        from harken.data.synth import make_synthetic

        split = cfg.path.split(":", 1)[1] or "train"
        data_dir = out_dir / "data"
        if not (data_dir / f"{split}.jsonl").exists():
            make_synthetic(data_dir, seed=seed)
        cfg = DatasetConfig(**{**cfg.__dict__, "path": str(data_dir / f"{split}.jsonl"), "format": "canonical"})
    ds = load_dataset(cfg)
    if not ds.report.clean:
        log.warning("%s", ds.report.summary())
    return list(ds)


class DataStream:
    """Endless, resumable stream of examples for one process.

    Each epoch is a seeded permutation; process r of W takes positions r, r+W, r+2W, ... so
    processes never draw the same example in an epoch. The state is two integers.
    """

    def __init__(self, examples: list[Example], seed: int, rank: int = 0, world: int = 1):
        if not examples:
            raise ValueError("the training set is empty")
        self.examples, self.seed, self.rank, self.world = examples, seed, rank, world
        self.epoch, self.index = 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))
        mine = order[self.rank :: self.world]
        return mine.tolist() if len(mine) else order.tolist()

    def take(self, n: int) -> list[Example]:
        out = []
        while len(out) < n:
            if self.index >= len(self._order):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.examples[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._perm()


def make_audio_loader(lm: AudioLM, prompt_cfg) -> AudioLoader:
    # Never keep more than the encoder's window: the feature extractor would cut it anyway.
    max_s = min(prompt_cfg.max_audio_seconds, lm.window_seconds)
    policy = prompt_cfg.long_clip_policy
    return AudioLoader(lm.sampling_rate, max_s, policy)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

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
             generator: torch.Generator | None, accelerator) -> Path:
        from safetensors.torch import save_file

        final = self.dir / f"{CKPT_PREFIX}{step:06d}"
        tmp = self.dir / f".tmp-{CKPT_PREFIX}{step:06d}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        torch.save({"rng": _rng_state(generator), **rank_state}, tmp / f"rank{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            save_file(_trainable_state(lm), str(tmp / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json_atomic(tmp / "state.json", {"step": step, "world": accelerator.num_processes, **state})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.all()[: -self.keep_last] if self.keep_last > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(path: Path, lm: AudioLM, optimizer, scheduler, generator, accelerator) -> tuple[dict, dict]:
        from safetensors.torch import load_file

        state = json.loads((path / "state.json").read_text())
        if state.get("world", 1) != accelerator.num_processes:
            raise ValueError(
                f"{path} was written by {state.get('world')} processes; resume it with the same number "
                f"(now {accelerator.num_processes})"
            )
        weights = load_file(str(path / "trainable.safetensors"))
        params = dict(lm.model.named_parameters())
        missing = [k for k in weights if k not in params]
        if missing:
            raise ValueError(f"{path}: checkpoint has weights this model lacks, e.g. {missing[:3]}")
        with torch.no_grad():
            for k, v in weights.items():
                params[k].copy_(v.to(params[k].device, params[k].dtype))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True, map_location="cpu"))
        rank = torch.load(path / f"rank{accelerator.process_index}.pt", weights_only=True, map_location="cpu")
        _set_rng_state(rank.pop("rng"), generator)
        return state, rank


def resume_point(run_cfg, run_dir: Path) -> Path | None:
    if run_cfg.resume == "never":
        return None
    if run_cfg.resume == "auto":
        return Checkpoints(run_dir, run_cfg.keep_last).latest()
    p = Path(run_cfg.resume)
    if not (p / "state.json").exists():
        raise FileNotFoundError(f"no complete checkpoint at {p} (state.json missing)")
    return p


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


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
        close_run_log(self.path.parent)
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
        if not p.exists():
            continue
        keep = [line for line in p.read_text(encoding="utf-8").splitlines() if line and json.loads(line).get("step", 0) <= step]
        tmp = p.with_name(f".{name}.tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        os.replace(tmp, p)


def progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Runs and export
# --------------------------------------------------------------------------------------------


_RUN_LOGS: dict[Path, logging.Handler] = {}  # run folder -> its train.log handler


def close_run_log(run_dir: Path) -> None:
    """Detach and close a run's train.log handler (so later runs in this process don't write to it)."""
    handler = _RUN_LOGS.pop(Path(run_dir).resolve(), None)
    if handler is not None:
        logging.getLogger("harken").removeHandler(handler)
        handler.close()


def start_run(cfg, accelerator, kind: str) -> Path:
    """Create the run folder, save the resolved config, add a log file, log the set-up."""
    run_dir = Path(cfg.run.out_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("harken").addHandler(handler)
        _RUN_LOGS[run_dir.resolve()] = handler
        write_json_atomic(run_dir / "run.json", {"kind": kind, "processes": accelerator.num_processes,
                                                  "device": str(accelerator.device)})
    accelerator.wait_for_everyone()
    torch.manual_seed(cfg.run.seed + accelerator.process_index)
    return run_dir


def export_final(lm: AudioLM, run_dir: Path, merged: bool, accelerator) -> Path:
    """save_pretrained of the final model (LoRA: the adapter, plus a merged model on request)."""
    final = run_dir / "final"
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return final
    tmp = run_dir / ".tmp-final"
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(lm.model, "peft_config"):
        lm.model.save_pretrained(tmp)  # adapter_config.json + adapter_model.safetensors
        lm.tokenizer.save_pretrained(tmp)
        lm.feature_extractor.save_pretrained(tmp)
        if merged:
            merged_model = copy.deepcopy(lm.model).merge_and_unload()
            save_audio_lm(AudioLM(merged_model, lm.tokenizer, lm.feature_extractor, lm.family), run_dir / "final-merged")
    else:
        save_audio_lm(lm, tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def base_model_for_adapter(run_dir: Path) -> str | None:
    """The base model path a LoRA run was trained from (for `--adapter` evaluation)."""
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        return None
    import yaml

    return (yaml.safe_load(cfg_path.read_text()) or {}).get("model", {}).get("path")
