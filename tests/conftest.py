"""Shared fixtures: small offline data and toy models (built once per test session)."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep each test process to its share and deterministic.
torch.set_num_threads(int(os.environ.get("HARKEN_TEST_THREADS", "2")))


@pytest.fixture(scope="session", autouse=True)
def harken_cache(tmp_path_factory):
    """What harken caches (the warmed-up toy of the `tiny` preset) goes to a folder of this test session,
    inherited by the commands tests start: built at most once per session, never in the user's cache."""
    from harken.models.warm import CACHE_ENV

    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("harken-cache"))
    yield os.environ[CACHE_ENV]
    if old is None:
        os.environ.pop(CACHE_ENV)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def warm_toy(harken_cache):
    """The warmed-up toy Qwen2-Audio's folder (`tiny-warm:qwen2-audio`, the `tiny` preset's model), built now:
    for tests whose commands must not build it themselves (e.g. under a file-size limit)."""
    from harken.models.warm import ensure_warm_toy

    return ensure_warm_toy("qwen2-audio")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic set (all skills): train 96, test 48, warmup 48."""
    from harken.data.synth import make_synthetic

    out = tmp_path_factory.mktemp("synth")
    make_synthetic(out, seed=0, n_train=96, n_test=48, n_warmup=48)
    return out


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Saved toy models of every registered family: {"qwen2-audio": path, "qwen2.5-omni": path, ...}."""
    from harken.models.families import FAMILIES
    from harken.models.toy import build_tiny

    out = {}
    for fam in FAMILIES:
        path = tmp_path_factory.mktemp(fam.replace(".", "_"))
        build_tiny(fam, path, seed=0)
        out[fam] = path
    return out
