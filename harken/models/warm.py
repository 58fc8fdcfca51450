"""The warmed-up toy (`tiny-warm:FAMILY`): a toy model that already answers, built once and cached.

A randomly initialised toy (`tiny:FAMILY`) never writes "<answer>X</answer>", so a GRPO run from it
gets reward 0 and gradient 0 on every step. The warmed-up toy is the same toy (same architecture,
tokenizer and seed as `tiny:FAMILY`) given a short supervised warm-up on the synthetic warm-up
split with the GRPO prompt (`WARM_UP`: about 10 s of CPU). It answers in the format, mostly with
one of the choices and sometimes the right one, so GRPO from it sees rewards that differ within a
group and moves.

Owns: the warm-up recipe, the cache folder (`$HARKEN_CACHE`, default `~/.cache/harken`, then
`warm-toy/FAMILY-seedN-HASH`: the hash covers the recipe, so a changed recipe builds anew), building
it atomically (a temporary folder renamed into place: a killed build leaves no half model), and
building it in one process per machine under torchrun while the others wait.
Does not own: the toy architectures (`harken.models.toy`), loading a model folder
(`harken.models.loading`, which resolves `tiny-warm:` paths with `ensure_warm_toy`), the SFT batch and
loss (`harken.train.sft`), the synthetic data (`harken.data.synth`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from harken.models.audio_lm import AudioLM
from harken.models.loading import WARM_PREFIX, save_audio_lm

log = logging.getLogger(__name__)

CACHE_ENV = "HARKEN_CACHE"
# The warm-up: `steps` optimizer steps of `batch_size` questions of the synthetic warm-up split (all
# six skills, data seed 0), prompt2 -> "<answer>{answer}</answer>" and the end-of-turn token, AdamW at
# a constant `lr` (a randomly initialised hidden-64 model needs a large one), gradients clipped at 1.
# Change `version` when the build changes in a way these settings do not show.
# Measured (qwen2-audio, seed 0): greedy accuracy 0.37 on 180 held-out questions (chance 0.42;
# count 0.40 and timbre 0.33 of 4 choices, loudness 0); the tiny preset's rollouts (T=1) score
# format ~0.95 and accuracy ~0.2, and every step has a non-zero gradient.
WARM_UP = {"version": 1, "size": "toy", "template": "prompt2", "data_seed": 0, "questions": 300, "steps": 100,
           "batch_size": 8, "lr": 3e-3, "max_grad_norm": 1.0}
_STALE_BUILD_S = 3600  # a temporary build folder this old belongs to a killed build


def cache_root() -> Path:
    """Where harken caches what it builds: `$HARKEN_CACHE`, else ~/.cache/harken."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/harken").expanduser()


def _recipe(family: str, seed: int) -> dict:
    from harken.data.synth import GENERATOR_VERSION

    return {**WARM_UP, "family": family, "seed": seed, "synthetic_generator": GENERATOR_VERSION}


def ensure_warm_toy(family: str, seed: int = 0) -> Path:
    """The cache folder of the warmed-up toy of `family` built from `seed` (built first if missing).

    Under torchrun (a process group started) the first process of each machine builds it and
    every process waits for it at a barrier.
    """
    from harken.models.families import get_family

    get_family(family)  # an unknown family is an error before anything is built
    recipe = _recipe(family, seed)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_root() / "warm-toy" / f"{family}-seed{seed}-{digest}"
    if not _several_processes():
        _build_once(final, recipe)
        return final
    import torch.distributed as dist

    error = None
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        try:
            _build_once(final, recipe)
        except Exception as e:  # the others must not wait forever: they pass the barrier and stop too
            error = e
    dist.barrier()
    if error is not None:
        raise error
    if not final.is_dir():
        raise RuntimeError(f"the warmed-up toy {final} was not built (see the first process's error)")
    return final


def _several_processes() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _build_once(final: Path, recipe: dict) -> None:
    """Build the warmed-up toy into a temporary folder beside `final`, then rename it into place."""
    from harken.io import PathError, describe_os_error, replace_folder, write_json_atomic

    if final.is_dir():
        return
    log.info("building the warmed-up toy %s%s (once, cached in %s)", WARM_PREFIX, recipe["family"], final)
    t0 = time.perf_counter()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(final)
        with tempfile.TemporaryDirectory(prefix=f".build-{final.name}-", dir=final.parent) as tmp:
            lm, loss = build_warm_toy(recipe, Path(tmp) / "data")
            model_dir = Path(tmp) / "model"
            save_audio_lm(lm, model_dir)
            write_json_atomic(model_dir / "warm-up.json",
                              {**recipe, "final_loss": round(loss, 4), "seconds": round(time.perf_counter() - t0, 1)})
            if not final.is_dir():  # another machine sharing the cache may have finished first
                replace_folder(model_dir, final)
    except OSError as e:
        raise PathError(f"cannot build the warmed-up toy in {final.parent}: {describe_os_error(e)} "
                        f"(set {CACHE_ENV} to a writable folder)") from None


def _remove_stale_builds(final: Path) -> None:
    """Temporary folders left by a killed build of the same toy."""
    for old in final.parent.glob(f".build-{final.name}-*"):
        with contextlib.suppress(OSError):  # another process may be removing it too
            if time.time() - old.stat().st_mtime > _STALE_BUILD_S:
                shutil.rmtree(old)


def build_warm_toy(recipe: dict, data_dir: Path) -> tuple[AudioLM, float]:
    """The toy of `recipe` warmed up on a synthetic warm-up split written to `data_dir`.

    Runs under its own random state: the caller's is the same whether the toy was built or read
    from the cache. Returns the model (in eval mode) and the last step's loss.
    """
    from harken.data.synth import load_split, make_synthetic
    from harken.models.toy import build_tiny

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hidden-64 matrices gain nothing from more; on busy cores, more threads were 6x slower
    try:
        with torch.random.fork_rng(devices=[]):
            lm = build_tiny(recipe["family"], size=recipe["size"], seed=recipe["seed"])
            paths = make_synthetic(data_dir, seed=recipe["data_seed"], n_train=0, n_test=0,
                                   n_warmup=recipe["questions"])
            loss = _warm_up(lm, load_split(paths["warmup"]), recipe)
    finally:
        torch.set_num_threads(threads)
    lm.model.eval()
    return lm, loss


def _warm_up(lm: AudioLM, examples: list, recipe: dict) -> float:
    """Supervised steps on `examples` (shuffled epochs) with the SFT batch and token-mean loss."""
    from harken.data.audio import AudioLoader
    from harken.data.prompts import get_template
    from harken.rl.rollout import token_logprobs
    from harken.train.optim import NonFiniteError, all_finite
    from harken.train.sft import build_sft_batch, sft_loss, target_logits

    template = get_template(recipe["template"])
    loader = AudioLoader(lm.sampling_rate, lm.window_seconds, "truncate")
    waves = [loader.load(ex.audio) for ex in examples]
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe["lr"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    order: list[int] = []
    lm.model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(recipe["steps"]):
        if len(order) < recipe["batch_size"]:
            order += torch.randperm(len(examples), generator=generator).tolist()
        rows, order = order[: recipe["batch_size"]], order[recipe["batch_size"]:]
        batch = build_sft_batch(lm, template, [examples[i] for i in rows], [waves[i] for i in rows])
        logprobs = token_logprobs(lm.call(target_logits, lm, batch), batch.target_ids)
        loss = sft_loss(logprobs, batch.target_mask, float(batch.num_target_tokens))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if not all_finite(params):
        raise NonFiniteError("the warm-up of the toy left non-finite weights")
    return float(loss.detach())
