"""The run folder: its config, log file and run.json at the start, the exported model at the end.

Owns: creating RUN/ (config.yaml with the resolved config, train.log, run.json: written by the
main process while the others wait) and closing its log handler, and the final export: RUN/final
as a `save_pretrained` folder (LoRA: a peft adapter, plus RUN/final-merged on request), written
to a temporary folder, synced and renamed into place (no library progress bar meanwhile).
Does not own: checkpoints (`harken.train.checkpoint`), metrics (`harken.train.metrics`).
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from harken.config import save_config
from harken.io import PathError, describe_error, describe_os_error, read_json, replace_folder, write_json_atomic
from harken.models.audio_lm import AudioLM
from harken.models.families import base_model
from harken.models.loading import save_audio_lm
from harken.models.trained_with import write_training_settings
from harken.progress import no_library_bars

log = logging.getLogger(__name__)


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
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            handler = logging.FileHandler(run_dir / "train.log")
        except OSError as e:
            raise PathError(f"cannot write the run folder {run_dir} (run.out_dir): {describe_os_error(e)}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("harken").addHandler(handler)
        _RUN_LOGS[run_dir.resolve()] = handler
        write_json_atomic(run_dir / "run.json", {"kind": kind, "processes": accelerator.num_processes,
                                                  "device": str(accelerator.device)})
    accelerator.wait_for_everyone()
    torch.manual_seed(cfg.run.seed + accelerator.process_index)
    return run_dir


def record_in_run_json(run_dir: Path, fields: dict) -> None:
    """Add fields to RUN/run.json (main process)."""
    path = run_dir / "run.json"
    write_json_atomic(path, {**read_json(path), **fields})


@no_library_bars()  # no "Writing model shards" bar among a run's lines
def export_final(lm: AudioLM, run_dir: Path, merged: bool, accelerator, sharded: bool = False,
                 settings: dict | None = None) -> Path:
    """save_pretrained of the final model (LoRA: the adapter, plus a merged model on request).

    A sharded model is gathered into one state dict first (every process takes part). Weights
    trained with fp32 masters are written in the compute dtype, the dtype the model runs in.
    `settings` (the training template etc., `harken.models.trained_with`) go beside the weights.
    """
    final = run_dir / "final"
    state = _export_state(lm, sharded)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return final
    tmp = run_dir / ".tmp-final"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if hasattr(lm.model, "peft_config"):
            lm.model.save_pretrained(tmp, state_dict=state)  # adapter_config.json + adapter_model.safetensors
            lm.tokenizer.save_pretrained(tmp)
            lm.feature_extractor.save_pretrained(tmp)
            if merged:
                merged_model = copy.deepcopy(lm.model).merge_and_unload()
                save_audio_lm(AudioLM(merged_model, lm.tokenizer, lm.feature_extractor, lm.family),
                              run_dir / "final-merged")
                if settings:
                    write_training_settings(run_dir / "final-merged", settings)
        else:
            save_audio_lm(lm, tmp, state_dict=state, dtype=lm.compute_dtype)
        if settings:
            write_training_settings(tmp, settings)
        replace_folder(tmp, final)  # files and folder synced, then renamed
    except (OSError, RuntimeError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PathError(f"could not write the final model {final}: {describe_error(e)}; free disk space or fix the folder's "
                        f"permissions, then run again with --resume (the last checkpoint holds the trained weights)"
                        ) from None
    accelerator.wait_for_everyone()
    return final


def _export_state(lm: AudioLM, sharded: bool) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict (gathered when sharded, cast to the compute dtype), or None as is."""
    if not sharded and lm.compute_dtype is None:
        return None
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        target = lm.model if hasattr(lm.model, "peft_config") else base_model(lm.model)
        state = get_model_state_dict(target, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = base_model(lm.model).state_dict()
    dtype = lm.compute_dtype
    return {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in state.items()}
