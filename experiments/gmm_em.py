"""Gaussian mixture by EM on a 2-D mixture, for full, diagonal and spherical covariances.

Draws points from a known well-separated 2-D mixture with correlated components, fits a
mixture of each covariance type by EM from k-means++ (:func:`dgm_jax.vae.fit_gmm`, one
``lax.while_loop`` under ``jax.jit``), and reports the mean log-likelihood on the training
points and on fresh test points next to the true mixture's, the iteration count and
whether each EM history is monotone.

Outputs in the run folder: ``config.json``, ``metrics.json``, ``loglik.png`` (mean
log-likelihood against EM iteration, one curve per covariance type) and ``ellipses.png``
(data with the 1- and 2-σ ellipses of the true and fitted components).

Example:
    python -m experiments run gmm_em
    python -m experiments run gmm_em --set num_components=4
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

from dgm_jax import train, viz
from dgm_jax.vae import COVARIANCE_TYPES, GMMParams, fit_gmm, full_covariances, gmm_logdensity
from dgm_jax.vae import gmm_sample as _gmm_sample

NAME = "gmm_em"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the 2-D EM run (the defaults take seconds on a CPU)."""

    seed: int = 0
    num_train: int = 3000
    num_test: int = 3000
    num_components: int = 4  # components fitted (the true mixture has 4)
    covariance_types: tuple[str, ...] = COVARIANCE_TYPES
    max_iter: int = 200
    tol: float = 1e-6  # stop when the mean log-likelihood rises by less than this
    reg_covar: float = 1e-6


SMOKE = Config(num_train=300, num_test=300, max_iter=20)

# The true mixture: four components, correlated and of different sizes.
TRUE_WEIGHTS = (0.35, 0.25, 0.25, 0.15)
TRUE_MEANS = ((-4.0, -2.0), (3.0, -3.0), (0.5, 4.0), (5.0, 3.5))
TRUE_COVARIANCES = (
    ((1.5, 0.9), (0.9, 1.0)),
    ((0.6, -0.3), (-0.3, 1.2)),
    ((2.0, 0.0), (0.0, 0.3)),
    ((0.4, 0.0), (0.0, 0.4)),
)


def true_mixture() -> GMMParams:
    """The data-generating mixture (full covariances)."""
    return GMMParams(
        jnp.asarray(TRUE_WEIGHTS, jnp.float32),
        jnp.asarray(TRUE_MEANS, jnp.float32),
        jnp.asarray(TRUE_COVARIANCES, jnp.float32),
    )


def _validate(config: Config) -> None:
    for name in ("num_train", "num_test", "num_components"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.num_components > config.num_train:
        raise ValueError("num_components must not exceed num_train")
    bad = [c for c in config.covariance_types if c not in COVARIANCE_TYPES]
    if bad or not config.covariance_types:
        raise ValueError(
            f"covariance_types must be a non-empty subset of {COVARIANCE_TYPES}, got "
            f"{config.covariance_types}"
        )


def _ellipse(ax, mean, cov, n_std, **kwargs) -> None:
    vals, vecs = np.linalg.eigh(np.asarray(cov, np.float64))
    angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
    width, height = 2 * n_std * np.sqrt(np.maximum(vals[::-1], 0.0))
    ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False, **kwargs))


def plot_ellipses(x: np.ndarray, truth: GMMParams, fits: dict[str, GMMParams]) -> plt.Figure:
    """Data with true (dashed) and fitted (solid) 1- and 2-σ ellipses, one panel per fit."""
    fig, axes = plt.subplots(1, len(fits), figsize=(4.2 * len(fits), 4.2), squeeze=False)
    true_cov = np.asarray(full_covariances(truth))
    for ax, (name, params) in zip(axes[0], fits.items()):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color="gray", linewidths=0)
        covs = np.asarray(full_covariances(params))
        for k in range(truth.means.shape[0]):
            for n_std in (1, 2):
                _ellipse(ax, truth.means[k], true_cov[k], n_std, ls="--", color="k", lw=0.8)
        for k in range(params.means.shape[0]):
            for n_std in (1, 2):
                _ellipse(ax, params.means[k], covs[k], n_std, color=f"C{k}", lw=1.5)
            ax.plot(*np.asarray(params.means[k]), "x", color=f"C{k}")
        ax.set_title(f"{name} (dashed: truth)", fontsize=10)
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def plot_loglik(histories: dict[str, np.ndarray], truth_ll: float) -> plt.Figure:
    """Mean training log-likelihood against EM iteration, one curve per covariance type."""
    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    for name, hist in histories.items():
        ax.plot(np.arange(len(hist)), hist, label=name)
    ax.axhline(truth_ll, color="k", ls="--", lw=0.8, label="true mixture")
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood")
    ax.legend()
    fig.tight_layout()
    return fig


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Fit the mixtures, write figures and metrics; return the metrics."""
    _validate(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()
    key_train, key_test, key_fit = jax.random.split(jax.random.key(config.seed), 3)
    truth = true_mixture()
    sample = jax.jit(_gmm_sample, static_argnums=2)
    x, _ = sample(key_train, truth, config.num_train)
    x_test, _ = sample(key_test, truth, config.num_test)
    fit = jax.jit(fit_gmm, static_argnums=2, static_argnames=("covariance_type", "max_iter"))
    loglik = jax.jit(lambda p, data: jnp.mean(gmm_logdensity(p, data)))

    results: dict[str, Any] = {
        "true/train_loglik": float(loglik(truth, x)),
        "true/test_loglik": float(loglik(truth, x_test)),
    }
    fits, histories = {}, {}
    for kind in config.covariance_types:
        t0 = time.perf_counter()
        res = fit(
            key_fit,
            x,
            config.num_components,
            covariance_type=kind,
            max_iter=config.max_iter,
            tol=config.tol,
            reg_covar=config.reg_covar,
        )
        hist = np.asarray(res.log_likelihood)[: int(res.num_iterations) + 1]
        fits[kind], histories[kind] = res.params, hist
        results[f"{kind}/train_loglik"] = float(hist[-1])
        results[f"{kind}/test_loglik"] = float(loglik(res.params, x_test))
        results[f"{kind}/num_iterations"] = int(res.num_iterations)
        results[f"{kind}/converged"] = bool(res.converged)
        results[f"{kind}/min_loglik_change"] = (
            float(np.min(np.diff(hist))) if len(hist) > 1 else 0.0
        )
        results[f"{kind}/fit_seconds"] = time.perf_counter() - t0

    viz.save_figure(plot_loglik(histories, results["true/train_loglik"]), run_dir / "loglik.png")
    viz.save_figure(plot_ellipses(np.asarray(x), truth, fits), run_dir / "ellipses.png")
    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
