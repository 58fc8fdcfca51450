"""Configuration machinery: typed dataclass schemas, YAML presets, dotted command-line overrides.

Owns: loading a schema from a preset (a name shipped in `harken/presets/` or a path), merging
`key=value` overrides, rejecting unknown keys with the list of valid ones, and saving the
resolved config beside a run. Parsing and merging are OmegaConf's; this module only adds the
preset lookup, preset inheritance (`inherit: NAME` at the top of a YAML file) and the
user-facing error messages. The schemas themselves live next to what they configure
(`harken.schema`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from harken.io import write_text_atomic

PRESET_DIR = Path(__file__).parent / "presets"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem the user can fix (unknown key, bad value, missing preset)."""


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (`tiny`, `r1aqa`) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    shipped = PRESET_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"unknown preset {name_or_path!r}; shipped presets: {', '.join(list_presets())}")
    return shipped


def _load_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[Any]:
    """Load a preset and the presets it inherits from, base first."""
    if path in seen:
        raise ConfigError(f"preset inheritance loop: {' -> '.join(map(str, seen + (path,)))}")
    node = OmegaConf.load(path)
    parent = node.pop("inherit", None)
    chain = _load_yaml_chain(resolve_preset(str(parent)), seen + (path,)) if parent else []
    return chain + [node]


def _valid_keys(schema: Any, dotted: str) -> list[str]:
    """The valid keys at the level of `dotted` (the part before its last dot) in a dataclass schema."""
    obj = schema
    parts = dotted.split(".")[:-1]
    for part in parts:
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            break
        obj = fields[part].type if dataclasses.is_dataclass(fields[part].type) else getattr(obj(), part).__class__
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def load_config(schema: type[T], preset: str | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a `schema` instance: defaults, then the preset (and what it inherits), then overrides.

    Args:
        schema: a dataclass type whose fields (possibly nested dataclasses) have defaults.
        preset: a shipped preset name or a YAML path, or None for the schema's defaults.
        overrides: dotted `key=value` strings, e.g. `["optim.lr=1e-5", "rollout.group_size=4"]`.

    Raises:
        ConfigError: unknown key (with the valid keys at that level), bad value type, bad preset.
    """
    layers = [OmegaConf.structured(schema)]
    sources = ["defaults"]
    if preset:
        for node in _load_yaml_chain(resolve_preset(preset)):
            layers.append(node)
            sources.append(str(preset))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must be key=value, got: {', '.join(bad)}")
    if overrides:
        # `key=` means the empty string (OmegaConf would read None, which a str field rejects).
        layers.append(OmegaConf.from_dotlist([o + "''" if o.endswith("=") else o for o in overrides]))
        sources.append("command line")
    merged = layers[0]
    for layer, source in zip(layers[1:], sources[1:]):
        try:
            merged = OmegaConf.merge(merged, layer)
        except (ConfigKeyError, ConfigAttributeError) as e:
            key = str(getattr(e, "full_key", "") or "")
            valid = _valid_keys(schema, key) if key else []
            hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
            raise ConfigError(f"unknown config key {key!r} (from {source}){hint}") from None
        except ValidationError as e:
            raise ConfigError(f"bad value for {getattr(e, 'full_key', '?')!r} (from {source}): {e.msg}") from None
        except OmegaConfBaseException as e:
            raise ConfigError(f"config error (from {source}): {e}") from None
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config error: {e}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the fully resolved config (every field, defaults included) as YAML."""
    write_text_atomic(path, to_yaml(cfg))


def config_from_dict(schema: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config saved by `save_config` (used by resume and by reports)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data)))  # type: ignore[return-value]
