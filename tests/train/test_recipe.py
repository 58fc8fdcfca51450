"""The `r1aqa` presets against the README's table "The paper's recipe", field by field.

Every key the presets set is in the table with the value the preset resolves to, except the few
that only say where files go or how often samples are logged (HOUSEKEEPING); every key the table
names resolves to the table's value; `r1aqa-think` differs from `r1aqa` only in its prompt and
run folder.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from harken.config import load_config
from harken.schema import GRPOConfig

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "harken" / "presets"
HOUSEKEEPING = {"run.out_dir", "data.path", "data.format", "run.keep_last", "run.sample_every"}


def _table() -> dict[str, str]:
    """{dotted key: value text} from the README's recipe table (its second column)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### The paper's recipe", 1)[1].split("\n### ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines() if line.startswith("| ") and "`" in line]
    pairs = [m.groups() for row in rows for m in re.finditer(r"`([a-z_]+\.[a-z_]+)` ([^,]+)", row)]
    table = {key: value.strip() for key, value in pairs}
    assert len(table) == len(pairs), "a key appears twice in the recipe table"
    return table


def _preset_keys(name: str) -> set[str]:
    data = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    return {f"{section}.{key}" for section, values in data.items() if section != "inherit" for key in values}


def _value(cfg, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _matches(text: str, value) -> bool:
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, (int, float)):
        return float(text) == float(value)
    if isinstance(value, list):  # reward.rewards: "accuracy 1.0 + format 1.0"
        return text == " + ".join(f"{r.name} {float(r.weight)}" for r in value)
    return text == str(value)


def test_every_preset_field_is_in_the_recipe_table():
    table = _table()
    keys = _preset_keys("r1aqa")
    assert keys - set(table) == HOUSEKEEPING
    assert set(table) <= keys  # the table names only what the preset sets


def test_the_recipe_table_values_are_the_presets():
    table = _table()
    cfg = load_config(GRPOConfig, "r1aqa")
    wrong = {k: (v, _value(cfg, k)) for k, v in table.items() if not _matches(v, _value(cfg, k))}
    assert not wrong, wrong
    # The checklist, named: precision, sampling, rewards, G, lr, beta, lengths, batch.
    for key in ("model.dtype", "model.master_weights", "model.sharding", "rollout.top_k", "reward.accuracy_rule",
                "reward.format_rule", "rollout.group_size", "optim.lr", "algo.kl_coef", "rollout.max_new_tokens",
                "run.max_steps", "rollout.prompts_per_step", "optim.grad_accum"):
        assert key in table, key


def test_r1aqa_think_changes_only_the_prompt():
    assert _preset_keys("r1aqa-think") == {"prompt.template", "run.out_dir"}
    base, think = load_config(GRPOConfig, "r1aqa"), load_config(GRPOConfig, "r1aqa-think")
    assert think.prompt.template == "prompt3"
    differ = {f"{s.name}.{f}" for s in dataclasses.fields(base)
              for f, v in dataclasses.asdict(getattr(base, s.name)).items()
              if v != dataclasses.asdict(getattr(think, s.name))[f]}
    assert differ == {"prompt.template", "run.out_dir"}
