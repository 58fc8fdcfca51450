"""The one matplotlib set-up every chart in harken uses.

Owns: making a figure (a bare `Figure` rendered through the Agg canvas: no pyplot, no GUI backend,
no global state, safe in threads and tests) and saving it as a PNG atomically.
Does not own: what any chart shows (run reports, evaluation charts, dataset histograms).
"""

from __future__ import annotations

import os

from harken.io import atomic_save


def figure(width: float, height: float, constrained: bool = False):
    """A new figure of `width` x `height` inches at 100 dpi.

    Args:
        constrained: use matplotlib's constrained layout (labels never clipped). It doubles the
            time of a chart, so the many small charts of a run report use fixed margins instead.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained" if constrained else None)


def save_png(fig, path: str | os.PathLike) -> None:
    """Render `fig` to `path` as a PNG, atomically (a reader never sees half an image)."""
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")
