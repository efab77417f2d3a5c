"""Likelihood tools: bits per dimension, dequantization, IWAE estimates, log-mean-exp.

* :func:`nats_to_bits_per_dim` / :func:`bits_per_dim_to_nats` — unit changes, with the
  change-of-variables term for models trained on rescaled data.
* :func:`uniform_dequantize` — ``(x + u) / num_bins`` with ``u ~ U[0, 1)^D``
  (Theis et al., 2016): a continuous density's log-likelihood on dequantized data
  lower-bounds the discrete log-likelihood.
* :func:`variational_dequantization_elbo` — the tighter bound with a learned
  ``q(u | x)`` (Ho et al., 2019, Flow++, eq. 12).
* :func:`logmeanexp` and :func:`iwae_log_likelihood` — the importance-weighted bound
  ``log (1/k) Σ w_i`` (Burda et al., 2016), with a delta-method standard error.

All functions are pure and jit-compatible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_floating, check_int, check_key, check_positive
from dgm_jax.types import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "IWAEEstimate",
    "bits_per_dim_to_nats",
    "iwae_log_likelihood",
    "logmeanexp",
    "nats_to_bits_per_dim",
    "uniform_dequantize",
    "variational_dequantization_elbo",
]


def nats_to_bits_per_dim(
    nll_nats: ArrayLike, num_dims: int, *, data_scale: float = 1.0
) -> Float[Array, "..."]:
    """Negative log-likelihood in nats per example -> bits per dimension.

    If the model's density is over ``y = s · x`` (e.g. ``s = 1/256`` for pixels mapped
    to [0, 1)), the density of ``x`` on the original grid is ``p_y(y) sᴰ``, so
    ``-log p_x = -log p_y - D log s``; pass ``data_scale=s`` to report bits/dim of
    ``x`` (the convention of image-model papers: ``s = 1/256``).

    Args:
        nll_nats: negative log-likelihood(s) in nats, any shape.
        num_dims: ``D``, dimensions per example (e.g. 784 for MNIST).
        data_scale: ``s`` above (1 = no change of variables).

    Returns:
        ``(nll_nats - D log s) / (D log 2)``, same shape as ``nll_nats``.

    Examples:
        >>> import math
        >>> float(nats_to_bits_per_dim(784 * math.log(2.0), 784))
        1.0
        >>> round(float(nats_to_bits_per_dim(0.0, 10, data_scale=1 / 256)), 6)
        8.0
    """
    check_int("num_dims", num_dims, minimum=1)
    check_positive("data_scale", data_scale)
    nll = jnp.asarray(nll_nats)
    check_floating("nll_nats", nll)
    return (nll - num_dims * math.log(data_scale)) / (num_dims * math.log(2.0))


def bits_per_dim_to_nats(
    bits_per_dim: ArrayLike, num_dims: int, *, data_scale: float = 1.0
) -> Float[Array, "..."]:
    """Inverse of :func:`nats_to_bits_per_dim`: NLL in nats per example of the scaled data.

    Examples:
        >>> round(float(bits_per_dim_to_nats(1.0, 784)), 2)
        543.43
    """
    check_int("num_dims", num_dims, minimum=1)
    check_positive("data_scale", data_scale)
    bpd = jnp.asarray(bits_per_dim)
    check_floating("bits_per_dim", bpd)
    return bpd * num_dims * math.log(2.0) + num_dims * math.log(data_scale)


def uniform_dequantize(
    key: PRNGKeyArray, x: ArrayLike, *, num_bins: int = 256
) -> Float[Array, "..."]:
    """Uniform dequantization ``(x + u) / num_bins``, ``u ~ U[0, 1)`` elementwise.

    Args:
        key: PRNG key.
        x: integer-valued data in ``{0, …, num_bins - 1}`` (any dtype, any shape).
        num_bins: number of discrete levels.

    Returns:
        float32 array in ``[0, 1)`` of the shape of ``x``. A model density ``p`` on it
        gives ``log P(x) >= E[log p(y)] - D log num_bins`` per example.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> y = uniform_dequantize(jax.random.key(0), jnp.array([0, 255], jnp.uint8))
        >>> bool((y[0] < 1 / 256) & (y[1] >= 255 / 256))
        True
    """
    check_key("key", key)
    check_int("num_bins", num_bins, minimum=2)
    x = jnp.asarray(x)
    u = jax.random.uniform(key, x.shape, jnp.float32)
    return (x.astype(jnp.float32) + u) / num_bins


def variational_dequantization_elbo(
    key: PRNGKeyArray,
    x: ArrayLike,
    sample_q_fn: Callable[[PRNGKeyArray, Array], tuple[Array, Array]],
    log_density_fn: Callable[[Array], Array],
    *,
    num_bins: int = 256,
) -> Float[Array, ""]:
    """Variational-dequantization lower bound on ``log P(x)`` for one example (Flow++).

    ``log P(x) >= E_{u ~ q(·|x)} [log p_y((x + u)/B) - D log B - log q(u | x)]``
    with ``B = num_bins``: one Monte Carlo sample. With ``q`` uniform the bound is the
    uniform-dequantization one; a flow-based ``q`` tightens it (Ho et al., 2019).
    Differentiable in the parameters closed over by both functions; ``vmap`` over
    examples and keys for a batch.

    Args:
        key: PRNG key for ``q``.
        x: one integer-valued example, shape ``(...)`` with ``D`` elements.
        sample_q_fn: ``(key, x) -> (u, log_q)`` with ``u`` of ``x``'s shape in ``[0, 1)``
            and ``log_q`` the scalar log-density of ``u`` under ``q(· | x)``.
        log_density_fn: ``y -> log p_y(y)`` scalar, the model's log density of the
            scaled continuous data ``y = (x + u) / B``.
        num_bins: ``B``.

    Returns:
        Scalar bound in nats (use :func:`nats_to_bits_per_dim` on its negative).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> def uniform_q(key, x):
        ...     return jax.random.uniform(key, x.shape), jnp.zeros(())
        >>> x = jnp.zeros((4,), jnp.int32)
        >>> float(variational_dequantization_elbo(jax.random.key(0), x, uniform_q,
        ...       lambda y: jnp.zeros(()), num_bins=2))  # uniform p on [0,1)^4: log 2^-4
        -2.7725887298583984
    """
    check_key("key", key)
    check_int("num_bins", num_bins, minimum=2)
    x = jnp.asarray(x)
    u, log_q = sample_q_fn(key, x)
    if jnp.shape(u) != x.shape or jnp.shape(log_q) != ():
        raise ValueError(
            f"sample_q_fn must return u of shape {x.shape} and a scalar log_q, "
            f"got shapes {jnp.shape(u)} and {jnp.shape(log_q)}"
        )
    y = (x.astype(u.dtype) + u) / num_bins
    return log_density_fn(y) - x.size * math.log(num_bins) - log_q


def logmeanexp(a: ArrayLike, axis: int | None = None) -> Float[Array, "..."]:
    """``log(mean(exp(a)))`` along ``axis``, stably (``logsumexp - log n``).

    Examples:
        >>> import jax.numpy as jnp
        >>> float(logmeanexp(jnp.array([1000.0, 1000.0])))
        1000.0
    """
    a = jnp.asarray(a)
    check_floating("a", a)
    n = a.size if axis is None else a.shape[axis]
    if n == 0:
        raise ValueError("logmeanexp needs at least one element")
    return jax.scipy.special.logsumexp(a, axis=axis) - math.log(n)


class IWAEEstimate(NamedTuple):
    """Importance-weighted log-likelihood estimate."""

    log_likelihood: Float[Array, "..."]  # log (1/k) Σ_i w_i, a lower bound in expectation
    stderr: Float[Array, "..."]  # delta-method standard error: std(w)/(sqrt(k) mean(w))


def iwae_log_likelihood(log_weights: Float[Array, "... k"]) -> IWAEEstimate:
    """IWAE estimator ``log (1/k) Σ_i w_i`` from ``log w_i = log p(x, z_i) - log q(z_i | x)``.

    Burda et al. (2016): ``E[log (1/k) Σ w_i] <= log p(x)``, increasing to it as
    ``k → ∞``; ``k = 1`` is the ELBO. The standard error of one estimate, by the delta
    method on ``log``, is ``std(w) / (sqrt(k) mean(w))``, computed from the normalised
    weights ``w_i / mean(w)`` so it never overflows.

    Args:
        log_weights: ``(..., k)`` log importance weights, the last axis the samples.

    Returns:
        :class:`IWAEEstimate` with fields of shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> est = iwae_log_likelihood(jnp.log(jnp.array([1.0, 3.0])))
        >>> round(float(est.log_likelihood), 4), round(float(est.stderr), 4)
        (0.6931, 0.3536)
    """
    lw = jnp.asarray(log_weights)
    check_floating("log_weights", lw)
    if lw.ndim < 1 or lw.shape[-1] < 1:
        raise ValueError(f"log_weights must have shape (..., k) with k >= 1, got {lw.shape}")
    k = lw.shape[-1]
    ll = logmeanexp(lw, axis=-1)
    normalised = jnp.exp(lw - ll[..., None])  # w_i / mean(w), mean 1
    std = jnp.sqrt(jnp.mean((normalised - 1.0) ** 2, axis=-1))
    return IWAEEstimate(ll, std / math.sqrt(k))
