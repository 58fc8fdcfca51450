"""Configuration machinery: typed dataclass schemas, YAML presets, dotted command-line overrides.

Owns: loading a schema from a preset (a name shipped in `harken/presets/` or a path), merging
`key=value` overrides, rejecting unknown keys with the list of valid ones, and saving the
resolved config beside a run. Parsing and merging are OmegaConf's; this module only adds the
preset lookup, preset inheritance (`inherit: NAME` at the top of a YAML file) and the
user-facing error messages. The schemas themselves live next to what they configure
(`harken.schema`).

Presets are read as files too (`harken presets`, `--print-config`): a preset's purpose is its
first comment line (`preset_purpose`), its comments belong to the key on their line (or the key
below a comment line), and `commented_yaml` writes them beside the same keys of a resolved config.
The comment of a key that an inheriting preset sets again without a comment is dropped: it
described the parent's value.
"""

from __future__ import annotations

import dataclasses
import os
import re
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


def preset_label(path: Path) -> str:
    """A shipped preset's name, or the path of any other YAML file."""
    return path.stem if path.parent.resolve() == PRESET_DIR.resolve() else str(path)


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


def _load_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, Any]]:
    """Load a preset and the presets it inherits from, base first: (file, its keys without `inherit`)."""
    if path in seen:
        raise ConfigError(f"preset inheritance loop: {' -> '.join(map(str, seen + (path,)))}")
    import yaml

    try:
        node = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not a YAML mapping ({str(e).splitlines()[0]})") from None
    if not OmegaConf.is_dict(node):
        raise ConfigError(f"{path}: a preset is a YAML mapping of sections (model:, data:, ...)")
    parent = node.pop("inherit", None)
    chain = _load_yaml_chain(resolve_preset(str(parent)), seen + (path,)) if parent else []
    return chain + [(path, node)]


def preset_chain(name_or_path: str) -> list[Path]:
    """The preset's file, then the files it inherits from (`inherit: NAME`), nearest first."""
    return [path for path, _ in reversed(_load_yaml_chain(resolve_preset(name_or_path)))]


def preset_sections(name_or_path: str) -> set[str]:
    """The top-level keys (sections) the preset and what it inherits set."""
    return {str(k) for _, node in _load_yaml_chain(resolve_preset(name_or_path)) for k in node}


def preset_trainers(name_or_path: str, schemas: dict[str, type]) -> list[str]:
    """The names in `schemas` (trainer -> config dataclass) whose fields include every section the
    preset sets: a preset with a `rollout:` section is a GRPO preset, one with `train:` an SFT one."""
    sections = preset_sections(name_or_path)
    return [name for name, schema in schemas.items() if sections <= {f.name for f in dataclasses.fields(schema)}]


def preset_purpose(path: Path) -> str:
    """A preset's first comment line (its one-line purpose), or "" when it opens without one."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip() if line.lstrip().startswith("#") else ""
    return ""


def preset_header(path: Path) -> list[str]:
    """The comment lines a preset opens with, as written."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.lstrip().startswith("#"):
            break
        lines.append(line.rstrip())
    return lines


# A mapping key at the start of a line (after its indentation), not a list item.
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(.*)$")


def _inline_comment(rest: str) -> str | None:
    """The comment after a value (`value  # comment`), outside quotes; None if there is none."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1:].strip()
    return None


def _dotted_keys(text: str):
    """(line, dotted key or None) for each line of a block-style YAML mapping."""
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = _KEY_LINE.match(line)
        if not m:
            yield line, None
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        yield line, ".".join(k for _, k in stack)


def _key_comments(path: Path) -> dict[str, list[str]]:
    """Dotted key -> the comment lines of that key in one preset file (empty: set without one):
    comment lines just above it (below the opening block), then the comment on its line."""
    out: dict[str, list[str]] = {}
    above: list[str] = []
    body = False
    for line, key in _dotted_keys(path.read_text(encoding="utf-8")):
        if key is None:
            stripped = line.strip()
            if body and stripped.startswith("#"):
                above.append(stripped.lstrip("#").strip())
            elif stripped and not stripped.startswith("#"):
                body, above = True, []
            continue
        body = True
        inline = _inline_comment(_KEY_LINE.match(line).group(3))
        out[key] = above + ([inline] if inline else [])
        above = []
    return out


def chain_comments(name_or_path: str) -> dict[str, list[str]]:
    """Dotted key -> its comment lines across the preset and what it inherits; the file that sets a
    key last decides (no comment there: none, as the parent's described another value)."""
    comments: dict[str, list[str]] = {}
    for path, _ in _load_yaml_chain(resolve_preset(name_or_path)):
        comments.update(_key_comments(path))
    comments.pop("inherit", None)
    return comments


def commented_yaml(text: str, comments: dict[str, list[str]], marks: dict[str, str] | None = None) -> str:
    """Block YAML `text` with `comments` (dotted key -> lines) beside their keys; a key in `marks`
    (dotted key -> a note, e.g. where an override came from) gets that note instead."""
    marks = marks or {}
    out = []
    for line, key in _dotted_keys(text):
        # A key set on the command line no longer has the preset's value its comment describes.
        notes = [marks[key]] if key in marks else [c for c in comments.get(key, []) if c] if key else []
        out.append(f"{line}  # {'; '.join(notes)}" if notes else line)
    return "\n".join(out) + "\n"


def preset_yaml(name_or_path: str) -> str:
    """What a preset and the presets it inherits set, merged, with each key's comment."""
    chain = _load_yaml_chain(resolve_preset(name_or_path))
    merged = OmegaConf.merge(*[node for _, node in chain])
    return commented_yaml(OmegaConf.to_yaml(merged), chain_comments(name_or_path))


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
        for _, node in _load_yaml_chain(resolve_preset(preset)):
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
