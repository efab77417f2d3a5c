"""Matplotlib figures used by the experiments.

Functions build and return figures; :func:`save_figure` writes one to disk and
closes it. The Agg backend is selected on import so figures work without a
display.
"""

from dgm_jax.viz.figures import (
    plot_history,
    plot_scatter_panels,
    plot_trajectory_snapshots,
    save_figure,
)

__all__ = ["plot_history", "plot_scatter_panels", "plot_trajectory_snapshots", "save_figure"]
