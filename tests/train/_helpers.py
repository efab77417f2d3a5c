"""Tiny models shared by the training tests (pure jax.numpy, no Flax, to stay fast)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

NUM_DATA, DIM = 64, 3


def regression_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed linear-regression data set: X (64, 3) standard normal, y = X w + b + noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((NUM_DATA, DIM)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.standard_normal(NUM_DATA)).astype(
        np.float32
    )
    return x, y


def least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Closed-form least squares with an intercept, in float64."""
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1).astype(np.float64)
    coef = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    return coef[:-1], float(coef[-1])


def linear_params() -> dict:
    return {"w": jnp.zeros(DIM), "b": jnp.zeros(())}


def linear_loss(params, key, batch):
    """Mean squared error of a linear model; ``key`` is unused."""
    del key
    x, y = batch
    residual = x @ params["w"] + params["b"] - y
    return jnp.mean(residual**2), {"mean_residual": jnp.mean(residual)}


def mlp_params(seed: int = 7, sizes=(3, 16, 1)) -> list[dict]:
    """Small tanh MLP parameters (NumPy init: no per-shape compilation in tests)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "w": jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in), jnp.float32),
            "b": jnp.zeros(n_out),
        }
        for n_in, n_out in itertools.pairwise(sizes)
    ]


def mlp_apply(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"][None, :])
    return (x @ params[-1]["w"] + params[-1]["b"][None, :])[:, 0]


def noisy_mlp_loss(params, key, batch):
    """MLP regression with Gaussian input noise drawn from ``key`` (so keys matter)."""
    x, y = batch
    x = x + 0.01 * jax.random.normal(key, x.shape)
    return jnp.mean((mlp_apply(params, x) - y) ** 2), {}


def minibatch_fn(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0):
    """``batch_fn(step)``: a minibatch that depends only on the global step."""

    def batch_fn(step: int):
        idx = np.random.default_rng([seed, step]).choice(x.shape[0], batch_size, replace=False)
        return x[idx], y[idx]

    return batch_fn
