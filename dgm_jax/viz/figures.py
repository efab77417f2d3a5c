"""Figure builders: scatter panels, trajectory snapshots, training curves."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_history", "plot_scatter_panels", "plot_trajectory_snapshots", "save_figure"]


def _limits(points: Sequence[np.ndarray], margin: float = 0.05) -> tuple[tuple, tuple]:
    stacked = np.concatenate([np.asarray(p).reshape(-1, 2) for p in points])
    stacked = stacked[np.all(np.isfinite(stacked), axis=1)]
    lo, hi = np.quantile(stacked, 0.001, axis=0), np.quantile(stacked, 0.999, axis=0)
    pad = margin * (hi - lo + 1e-6)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def plot_scatter_panels(
    panels: Mapping[str, Any],
    *,
    share_limits: bool = True,
    point_size: float = 2.0,
    panel_size: float = 3.2,
) -> plt.Figure:
    """One scatter plot per named ``(num, 2)`` point set, side by side.

    Args:
        panels: title -> points of shape ``(num, 2)``.
        share_limits: use the same axis limits in every panel.
        point_size: marker size.
        panel_size: width and height of each panel in inches.

    Examples:
        >>> fig = plot_scatter_panels({"a": np.zeros((3, 2)), "b": np.ones((3, 2))})
        >>> len(fig.axes)
        2
    """
    if not panels:
        raise ValueError("panels must name at least one point set")
    for title, pts in panels.items():
        if np.ndim(pts) != 2 or np.shape(pts)[1] != 2:
            raise ValueError(f"panel {title!r} must have shape (num, 2), got {np.shape(pts)}")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(panel_size * len(panels), panel_size), squeeze=False
    )
    xlim, ylim = _limits(list(panels.values())) if share_limits else (None, None)
    for ax, (title, pts) in zip(axes[0], panels.items()):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=point_size, alpha=0.6, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal", adjustable="box")
        if xlim is not None:
            ax.set_xlim(xlim)
            ax.set_ylim(ylim)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_trajectory_snapshots(
    rows: Mapping[str, tuple[Any, Sequence[str]]],
    *,
    point_size: float = 1.5,
    panel_size: float = 2.2,
) -> plt.Figure:
    """A grid of snapshots of samples moving from noise to data.

    Args:
        rows: row label -> ``(snapshots, titles)`` where ``snapshots`` has shape
            ``(num_snapshots, num, 2)`` and ``titles`` one label per snapshot. All
            rows must have the same number of snapshots.
        point_size: marker size.
        panel_size: size of each panel in inches.

    Examples:
        >>> snaps = np.zeros((3, 10, 2))
        >>> fig = plot_trajectory_snapshots({"ddim": (snaps, ["t=2", "t=1", "t=0"])})
        >>> len(fig.axes)
        3
    """
    if not rows:
        raise ValueError("rows must name at least one trajectory")
    counts = {label: len(np.asarray(s)) for label, (s, _) in rows.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every row needs the same number of snapshots, got {counts}")
    num_cols = next(iter(counts.values()))
    fig, axes = plt.subplots(
        len(rows),
        num_cols,
        figsize=(panel_size * num_cols, panel_size * len(rows)),
        squeeze=False,
    )
    # Limits from the final (data-like) snapshots and the unit-noise box.
    finals = [np.asarray(s)[-1] for s, _ in rows.values()]
    xlim, ylim = _limits([*finals, np.array([[-3.0, -3.0], [3.0, 3.0]])])
    for r, (label, (snapshots, titles)) in enumerate(rows.items()):
        snapshots = np.asarray(snapshots)
        if len(titles) != len(snapshots):
            raise ValueError(f"row {label!r}: {len(titles)} titles for {len(snapshots)} snapshots")
        for c in range(num_cols):
            ax = axes[r, c]
            ax.scatter(snapshots[c, :, 0], snapshots[c, :, 1], s=point_size, alpha=0.5, lw=0)
            ax.set_xlim(xlim)
            ax.set_ylim(ylim)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=10)
    fig.tight_layout()
    return fig


def plot_history(
    history: Sequence[Mapping[str, Any]], keys: Sequence[str], *, log_scale: bool = True
) -> plt.Figure:
    """Training curves of the given metric names against ``record["step"]``.

    Examples:
        >>> fig = plot_history([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], ["loss"])
        >>> len(fig.axes)
        1
    """
    if not keys:
        raise ValueError("keys must name at least one metric")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.0), squeeze=False)
    for ax, name in zip(axes[0], keys):
        points = [(r["step"], r[name]) for r in history if name in r and "step" in r]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values)
        ax.set_xlabel("step")
        ax.set_title(name)
        if log_scale and points and min(v for _, v in points) > 0:
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG by extension) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
