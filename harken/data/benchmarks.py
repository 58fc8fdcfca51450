"""The shipped benchmark files, and the checksums that say which file was read.

Owns: the MMAU test-mini metadata shipped in `harken/resources/mmau/` (pinned by version:
`MMAU_VERSIONS`, `mmau_metadata_path`), turning a dataset argument that names a shipped benchmark
into its file (`resolve_dataset_path`), and file checksums recorded as provenance (`file_sha256`).

Does not own: reading the files (`harken.data.readers`), the MMAU audio (distributed separately),
scoring (`harken.eval`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from harken.config import ConfigError

MMAU_DIR = Path(__file__).parent.parent / "resources" / "mmau"

# Benchmark name -> version of the test-mini file. The two are NOT comparable: about a quarter of
# the questions, choices or answers changed between them. R1-AQA's paper used v2503.
MMAU_VERSIONS = {"mmau-test-mini": "v05.15.25", "mmau-test-mini-v2503": "v2503"}


def mmau_metadata_path(benchmark_or_version: str) -> Path:
    """The shipped MMAU test-mini JSON for a benchmark name or a version.

    Args:
        benchmark_or_version: "mmau-test-mini" (current, v05.15.25), "mmau-test-mini-v2503"
            (the paper's), or a bare version "v05.15.25" / "v2503".
    """
    version = MMAU_VERSIONS.get(benchmark_or_version, benchmark_or_version)
    if version not in MMAU_VERSIONS.values():
        valid = sorted(MMAU_VERSIONS) + sorted(MMAU_VERSIONS.values())
        raise ConfigError(f"unknown MMAU benchmark or version {benchmark_or_version!r}; valid: {', '.join(valid)}")
    return MMAU_DIR / f"test-mini-{version}.json"


def is_shipped_benchmark(name: str | os.PathLike) -> bool:
    """Whether `name` names a shipped benchmark (and no file of that name exists)."""
    name = os.fspath(name)
    return name in MMAU_VERSIONS and not os.path.exists(name)


def resolve_dataset_path(path: str | os.PathLike, fmt: str) -> tuple[Path, str, str | None]:
    """A dataset file, or a shipped benchmark name (which implies the MMAU format).

    Returns:
        (file, format, benchmark name or None).
    """
    name = os.fspath(path)
    if is_shipped_benchmark(name):
        if fmt not in ("mmau", "canonical"):  # "canonical" is the default, i.e. not chosen
            raise ConfigError(f"{name} is a shipped MMAU benchmark; read it with format 'mmau', not {fmt!r}")
        return mmau_metadata_path(name), "mmau", name
    return Path(name), fmt, None


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
