"""What a trained model folder says about how it was trained: the settings evaluation must match.

Owns: `harken.json` in a model folder written by a training run (RUN/final, RUN/final-merged):
the prompt template the model was trained on, the trainer and the clip length it saw, written
with the model and read back by `harken eval run`, which uses the training template unless told
otherwise (and says so when told otherwise).
Does not own: the model's weights and processor files (`harken.models.loading`), templates
(`harken.data.prompts`).
"""

from __future__ import annotations

from pathlib import Path

from harken.io import read_json, write_json_atomic

FILE = "harken.json"


def training_settings(cfg, kind: str) -> dict:
    """The settings of a training config that evaluation of its model should reuse."""
    return {
        "trainer": kind,
        "template": cfg.prompt.template,
        "max_audio_seconds": cfg.prompt.max_audio_seconds,
    }


def write_training_settings(folder: Path, settings: dict) -> None:
    write_json_atomic(Path(folder) / FILE, settings)


def read_training_settings(*folders: str | Path | None) -> dict:
    """The first `harken.json` found among `folders` (an adapter folder before its base), or {}.

    Model paths that are not local folders (hub ids, `tiny:` toys) have none.
    """
    for folder in folders:
        if folder is None:
            continue
        path = Path(folder) / FILE
        if path.is_file():
            return read_json(path)  # malformed: a one-line error naming the file
    return {}


def choose_template(explicit: str | None, trained: dict, default: str) -> tuple[str, str | None]:
    """(template, warning): the explicit one, else the training one, else `default`.

    The warning is set when an explicit template differs from the one the model was trained on.
    """
    trained_name = trained.get("template")
    if explicit is None:
        return (trained_name or default), None
    if trained_name and explicit != trained_name:
        return explicit, (f"--template {explicit} differs from the template the model was trained on "
                          f"({trained_name}); scores may be lower than the model's")
    return explicit, None
