"""The one trainer skeleton GRPO and SFT share: set-up, resume, the step loop, validation, save, finish.

Owns: the life of a run, top to bottom:
    processes -> run folder -> policy (and reference) -> data -> optimizer -> resume ->
    loop { step -> log -> samples -> validate -> checkpoint } -> validate -> save -> check
    replicas -> export RUN/final.
A step whose loss or gradient norm is NaN or infinite stops the run ("non-finite loss at step N;
last good checkpoint: DIR") before anything non-finite is written; with `optim.on_nonfinite=skip`
a non-finite gradient norm drops that step's update instead and counts it (train/skipped_steps,
kept across a resume). A resume refuses settings
that differ from the checkpoint's (`run.resume_changed`), falls back to an older checkpoint when
a file of the newest does not load, and cuts metrics and samples back to its step (0 without one).
Each step shows on a bar on a terminal, else (and with `run.progress=false`) in a plain line every
`run.log_every` steps with the `postfix` numbers (`harken.progress`). With several processes only
the main one logs, shows progress and writes, and an error they all meet is printed once.
A subclass gives only what differs: `kind`, `train_step()` (one optimizer step, returning its
metrics), `log_samples()`, and optionally `total_steps()`, `make_generator()`, `log_setup()`,
`before_loop()` and `postfix`.
Does not own: what a step computes (`harken.train.grpo`, `harken.train.sft`), the pieces it
orchestrates (`harken.train.policy`, `stream`, `optim`, `checkpoint`, `metrics`, `run_folder`,
`processes`), the bar and progress lines (`harken.progress`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from harken.data.prompts import get_template
from harken.eval.answers import accuracy
from harken.config import ConfigError
from harken.models.trained_with import training_settings
from harken.progress import Progress, quiet_library_bars
from harken.report.metrics import METRICS_FILE, learned_nothing, metric_series, read_metrics
from harken.train.checkpoint import START_AFRESH, Checkpoints, CorruptCheckpoint, config_changes, resume_candidates
from harken.train.metrics import MetricsLogger, truncate_metrics_after
from harken.train.optim import NonFiniteError, all_finite, apply_settings, build_optimizer, state_bytes
from harken.train.policy import encoder_is_frozen, prepare_model, rounded_away_fraction, trainable_parameters
from harken.train.processes import check_replicas_agree, errors_from_main, make_accelerator
from harken.train.run_folder import close_run_log, export_final, record_in_run_json, start_run
from harken.train.stream import CLIP_PROBLEMS, ClipDraw, DataStream, make_audio_loader, resolve_dataset

log = logging.getLogger(__name__)


class Trainer:
    """A training run. Subclasses set `kind` and implement `train_step()` and `log_samples()`."""

    kind = ""  # "grpo" or "sft": run.json, checkpoints and the progress bar name it
    postfix: dict[str, tuple[str, str]] = {}  # label -> (metric key, format): on the bar / progress line of a step

    def __init__(self, cfg, need_reference: bool = False):
        self.cfg = cfg
        self.acc = make_accelerator()
        quiet_library_bars()
        with errors_from_main(self.acc):  # a refused resume, a missing file: printed once, not per process
            self.run_dir = start_run(cfg, self.acc, self.kind)
            self.lm, self.ref = prepare_model(cfg.model, self.acc.device, need_reference=need_reference)
            self.template = get_template(cfg.prompt.template)
            self.skipped_at_start: Counter = Counter()  # items dropped for a clip that does not open (data.skip_bad)
            train = resolve_dataset(cfg.data, self.run_dir, cfg.run.seed, self.acc, self.skipped_at_start)
            self.n_train = len(train)
            self.val = (resolve_dataset(cfg.val, self.run_dir, cfg.run.seed, self.acc)[: cfg.run.eval_limit]
                        if cfg.val.path else [])
            self.stream = DataStream(train, cfg.run.seed, self.acc.process_index, self.acc.num_processes)
            self.audio = make_audio_loader(self.lm, cfg.prompt)
            self.clips = ClipDraw(self.stream, self.audio, cfg.data.path, cfg.data.skip_bad)
            self.sharded = cfg.model.sharding == "fsdp"
            self.params = trainable_parameters(self.lm)
            self.frozen_encoder = encoder_is_frozen(self.lm)
            self.max_steps = self.total_steps()
            self.optimizer, self.scheduler = build_optimizer(self.params, cfg.optim, self.scheduler_steps())
            self._warn_low_precision()
            self.generator = self.make_generator()
            self.ckpts = Checkpoints(self.run_dir, cfg.run.keep_last)
            self.step = 0
            self.last_checkpoint: Path | None = None  # the newest checkpoint with finite weights (written or resumed from)
            self.memory_logged = False
            self.skipped_steps = 0  # steps whose update was dropped for a non-finite gradient norm (optim.on_nonfinite=skip)
            self.resumed = self._resume()
            self.metrics = MetricsLogger(self.run_dir, cfg.run, {}, self.acc.is_main_process)
            self.log_setup()

    # --- what a subclass may change --------------------------------------------------------------
    def total_steps(self) -> int:
        return self.cfg.run.max_steps

    def scheduler_steps(self) -> int:
        """Optimizer steps the learning-rate schedule spans."""
        return self.max_steps

    def make_generator(self) -> torch.Generator | None:
        """A random generator saved in checkpoints (GRPO: sampling); None when the run samples nothing."""
        return None

    def log_setup(self) -> None:
        pass

    def before_loop(self) -> None:
        pass

    def train_step(self) -> tuple[dict[str, float], Any]:
        """One optimizer step. Returns its metrics and what `log_samples` shows of it."""
        raise NotImplementedError

    def log_samples(self, sample: Any) -> None:
        raise NotImplementedError

    # --- the run ---------------------------------------------------------------------------------
    def train(self) -> Path:
        with errors_from_main(self.acc):  # an error every process meets (a non-finite loss) printed once
            self.before_loop()
            self._loop()
            return self.finish()

    def _loop(self) -> None:
        """The steps, with a bar on a terminal (`run.progress`) or a plain line every `run.log_every` steps."""
        run = self.cfg.run
        with Progress(self.max_steps, self.kind, "step", initial=self.step, bar=run.progress, every=run.log_every,
                      enabled=self.acc.is_main_process) as shown:
            while self.step < self.max_steps:
                try:
                    metrics, sample = self.train_step()
                    self._check_step(metrics)
                except NonFiniteError as e:
                    self._stop_non_finite(e, self.step + 1)
                self.step += 1
                shown.update(1, {label: format(metrics[key], fmt) for label, (key, fmt) in self.postfix.items()
                                 if key in metrics})
                self._after_step(metrics, sample)

    def _after_step(self, metrics: dict[str, float], sample: Any) -> None:
        run, step = self.cfg.run, self.step
        if not self.memory_logged:
            self._log_memory()
        if step % run.log_every == 0 or step == self.max_steps:
            self.metrics.log(step, metrics)
        if run.sample_every and (step % run.sample_every == 0 or step == 1):
            self.log_samples(sample)
        if run.eval_every and self.val and step % run.eval_every == 0:
            self.validate()
        if run.save_every and step % run.save_every == 0 and step < self.max_steps:
            self.save()

    def _check_step(self, metrics: dict[str, float]) -> None:
        """Stop on a non-finite loss or gradient norm; with optim.on_nonfinite=skip, a non-finite gradient
        norm (the update was not taken: `optim.clip_and_step`) is counted in train/skipped_steps instead."""
        skip = self.cfg.optim.on_nonfinite == "skip"
        if _check_finite(metrics, skip):
            self.skipped_steps += 1
            log.warning("step %d: gradient norm %s, its update skipped (optim.on_nonfinite=skip; %d skipped so far)",
                        self.step + 1, metrics["grad_norm"], self.skipped_steps)
        if skip:
            metrics["train/skipped_steps"] = self.skipped_steps

    def _stop_non_finite(self, error: NonFiniteError, step: int) -> None:
        """Stop the run: nothing non-finite was written; name the last checkpoint that holds finite weights."""
        last = self.last_checkpoint
        msg = f"non-finite loss at step {step}; last good checkpoint: {last if last is not None else 'none'}"
        log.error("%s (%s; lower optim.lr or set optim.max_grad_norm > 0)", msg, error)
        self.metrics.close()
        close_run_log(self.run_dir)
        raise NonFiniteError(msg) from None

    def finish(self) -> Path:
        run = self.cfg.run
        if run.eval_every and self.val and self.step % run.eval_every != 0:
            self.validate()
        self.save()
        if not self.sharded:  # sharded weights are one copy, not replicas
            check_replicas_agree(self.lm, self.acc)
        self.audio.warn_long()
        self._record_skipped()
        final = export_final(self.lm, self.run_dir, run.export_merged, self.acc, self.sharded,
                             training_settings(self.cfg, self.kind))
        self.metrics.close()
        close_run_log(self.run_dir)
        log.info("done: %d steps; final model in %s", self.step, final)
        self._warn_if_learned_nothing()
        return final

    def _warn_if_learned_nothing(self) -> None:
        """Say so when every logged step left the weights as they were (the report flags it too)."""
        if self.acc.is_main_process and (self.run_dir / METRICS_FILE).is_file():
            warning = learned_nothing(metric_series(read_metrics(self.run_dir)))
            if warning:
                log.warning("this run learned nothing: %s", warning)

    def _record_skipped(self) -> None:
        """Clips skipped under data.skip_bad, per problem kind, in run.json (all processes' counts)."""
        decoded = self.global_reduce({k: float(self.clips.skipped[k]) for k in CLIP_PROBLEMS}, "sum")  # same keys everywhere
        if self.acc.is_main_process and (self.skipped_at_start or any(decoded.values())):
            skipped = {"at_start": dict(self.skipped_at_start), "when_decoded": {k: int(v) for k, v in decoded.items() if v}}
            record_in_run_json(self.run_dir, {"skipped_clips": skipped})
            log.warning("clips skipped (data.skip_bad): %s", skipped)

    def validate(self) -> dict[str, float]:
        """Greedy accuracy on the validation set (main process), logged as val/accuracy[/TASK]."""
        res: dict[str, float] = {}
        if self.acc.is_main_process or self.sharded:  # a sharded model generates with every process
            run = self.cfg.run
            res = accuracy(self.lm, self.val, self.template, self.audio.load, run.eval_batch_size, run.eval_max_new_tokens)
        if self.acc.is_main_process:
            self.metrics.log(self.step, {f"val/accuracy{'' if k == 'all' else '/' + k}": v for k, v in res.items()})
            log.info("step %d: validation accuracy %.3f", self.step, res.get("all", math.nan))
        self.acc.wait_for_everyone()
        return res

    def save(self) -> Path:
        """Checkpoint the run; weights that are not finite are never written (the run stops instead)."""
        bad = self.global_reduce({"bad": float(not all_finite(self.params))}, "sum")["bad"]
        if bad:
            self._stop_non_finite(NonFiniteError("non-finite weights"), self.step)
        state = {"kind": self.kind, "skipped_steps": self.skipped_steps}
        self.last_checkpoint = self.ckpts.save(self.step, self.lm, self.optimizer, self.scheduler, state,
                                               {"data": self.stream.state_dict()}, self.generator, self.acc,
                                               self.sharded, self.cfg)
        return self.last_checkpoint

    def _resume(self) -> bool:
        """Load the checkpoint to continue from, if any; cut metrics and samples back to its step (0 without one)."""
        candidates = resume_candidates(self.cfg.run, self.run_dir)
        for i, start in enumerate(candidates):
            try:
                changes = self._check_config(start)
                state, rank_state = Checkpoints.load(start, self.lm, self.optimizer, self.scheduler, self.generator,
                                                     self.acc, self.sharded)
            except CorruptCheckpoint as e:
                if i + 1 == len(candidates):
                    raise
                log.warning("checkpoint file %s does not load (%s): falling back to %s", e.file, e.reason,
                            candidates[i + 1])
                continue
            self._continue_from(start, state, rank_state, bool(changes))
            break
        if self.acc.is_main_process:
            truncate_metrics_after(self.run_dir, self.step)
        if self.last_checkpoint is not None:
            log.info("resumed from %s at step %d", self.last_checkpoint, self.step)
        return self.last_checkpoint is not None

    def _check_config(self, start: Path) -> list[str] | None:
        """Refuse (or warn about) settings that differ from the checkpoint's, as `run.resume_changed` says."""
        changes = config_changes(start, self.cfg)
        mode = self.cfg.run.resume_changed
        if changes is None:
            log.warning("%s holds no config (written by an older harken): its settings cannot be compared", start)
        elif changes and mode == "refuse":
            raise ConfigError(f"resuming from {start} with changed settings ({'; '.join(changes)}): restore them, or "
                              f"set run.resume_changed=warn to continue with the new ones, or {START_AFRESH}")
        elif changes:
            (log.warning if mode == "warn" else log.info)("resuming from %s with changed settings: %s", start,
                                                          "; ".join(changes))
        return changes

    def _continue_from(self, start: Path, state: dict, rank_state: dict | None, changed: bool) -> None:
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.last_checkpoint = start
        if rank_state is None:  # written by another number of processes
            old_world = int(state["world"])
            data = Checkpoints.rank_state(start)["data"]
            self.stream.load_state_dict(DataStream.rescaled(data, old_world, self.acc.num_processes))
            if self.generator is not None:
                self.generator.manual_seed(self.cfg.run.seed * 1000 + self.acc.process_index + 7919 * self.step)
            log.warning("%s was written by %d process(es), resumed on %d: the data continue from the same point "
                        "of the epoch; sampling is re-seeded", start, old_world, self.acc.num_processes)
        else:
            self.stream.load_state_dict(rank_state["data"])
        if changed:  # allowed by run.resume_changed: the new optim.* take effect
            apply_settings(self.optimizer, self.scheduler, self.cfg.optim)

    def _warn_low_precision(self) -> None:
        """Full fine-tuning in a low-precision dtype without master weights loses small updates: say how many."""
        m = self.cfg.model
        dtype = self.params[0].dtype if self.params else torch.float32
        if m.lora or m.master_weights or dtype == torch.float32:
            return
        lost = rounded_away_fraction(self.params, self.cfg.optim.lr)
        log.warning(
            "model.master_weights=false: the trained weights are %s; at optim.lr=%g an update is below half "
            "a step of %.1f%% of them, which will not change. Set model.master_weights=true to keep fp32 "
            "master weights (compute stays in %s)", str(dtype).removeprefix("torch."), self.cfg.optim.lr, 100 * lost,
            str(dtype).removeprefix("torch."),
        )

    def _log_memory(self) -> None:
        """After the first step, the bytes this process holds for weights, gradients and optimizer state."""
        self.memory_logged = True
        held = state_bytes(self.params, self.optimizer)
        log.info("per process: trained weights %.2f MB, gradients %.2f MB, optimizer state %.2f MB (%s)",
                 held["weights"] / 1e6, held["gradients"] / 1e6, held["optimizer"] / 1e6,
                 "sharded over %d processes" % self.acc.num_processes if self.sharded else "whole copy")
        if torch.cuda.is_available():  # what the first step needed at its peak, activations included
            held["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
        if self.acc.is_main_process:
            record_in_run_json(self.run_dir, {"memory_bytes_per_process": held})

    def global_reduce(self, values: dict[str, float], op: str) -> dict[str, float]:
        """Element-wise "sum" or "mean" of named values over processes (identity with one process)."""
        if self.acc.num_processes == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.acc.device)
        return dict(zip(keys, self.acc.reduce(t, op).tolist()))


def _check_finite(metrics: dict[str, float], skip: bool) -> bool:
    """A step whose loss or gradient norm is NaN or infinite stops the run (`NonFiniteError`); with `skip`,
    a step whose gradient norm is (no update was taken) is skipped instead: True. The metrics are the
    same on every process (reduced over them), so every process decides alike."""
    bad = [key for key in ("loss", "grad_norm") if key in metrics and not math.isfinite(float(metrics[key]))]
    if skip and "grad_norm" in bad:
        return True
    if bad:
        raise NonFiniteError(f"{bad[0]} {metrics[bad[0]]}")
    return False
