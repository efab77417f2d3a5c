import numpy as np
import pytest

from dgm_jax import viz


def test_figures_are_written(tmp_path):
    pts = np.random.default_rng(0).normal(size=(50, 2))
    viz.save_figure(viz.plot_scatter_panels({"a": pts, "b": pts + 1}), tmp_path / "s.png")
    snaps = np.stack([pts * s for s in (3.0, 1.0, 0.5)])
    fig = viz.plot_trajectory_snapshots({"r": (snaps, ["t=2", "t=1", "t=0"])})
    viz.save_figure(fig, tmp_path / "t.png")
    viz.save_figure(viz.plot_history([{"step": 1, "loss": 1.0}], ["loss"]), tmp_path / "h.png")
    for name in ("s.png", "t.png", "h.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_bad_figure_input():
    with pytest.raises(ValueError, match=r"shape \(num, 2\)"):
        viz.plot_scatter_panels({"a": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="same number of snapshots"):
        viz.plot_trajectory_snapshots(
            {"a": (np.zeros((2, 3, 2)), ["x", "y"]), "b": (np.zeros((3, 3, 2)), ["x", "y", "z"])}
        )
    with pytest.raises(ValueError, match="titles"):
        viz.plot_trajectory_snapshots({"a": (np.zeros((2, 3, 2)), ["x"])})
