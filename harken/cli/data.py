"""`harken data ...` (being moved here from the data modules)."""

from harken.data import avqa, readers, realaudio, synth


def register(top, groups) -> None:
    for mod in (readers, synth, realaudio, avqa):
        mod.register(top, groups)
