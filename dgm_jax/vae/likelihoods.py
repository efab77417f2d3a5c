"""Decoder likelihoods ``p(x | z)`` as values: Bernoulli, Gaussian, discretized logistic.

A :class:`Likelihood` bundles pure functions of the decoder's output ``out``:

* ``log_prob(out, x)``: elementwise ``log p(x_i | z)`` (the VAE sums it over the event);
* ``mean(out)``: ``E[x | z]``, the image shown in figures;
* ``sample(key, out)``: a draw of ``x``;
* ``check_data(x)``: raises ``ValueError`` when a concrete ``x`` lies outside the support
  (traced values pass unchecked);
* ``num_outputs``: what the decoder returns per data dimension: 1 (one array) or 2 (a pair
  ``(loc, log_scale)``), see :mod:`dgm_jax.nn.vae_nets`.

Factories: :func:`bernoulli_likelihood` (logits; binarized images in ``{0, 1}``, or
``[0, 1]`` as a cross-entropy), :func:`gaussian_likelihood` (fixed or learned variance) and
:func:`discretized_logistic_likelihood` (8-bit pixels, Salimans et al. 2017, PixelCNN++).

Examples:
    >>> import jax.numpy as jnp
    >>> lik = bernoulli_likelihood()
    >>> lik.log_prob(jnp.zeros(3), jnp.array([0.0, 1.0, 1.0])).round(4)
    Array([-0.6931, -0.6931, -0.6931], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_int, check_key, check_positive, is_traced
from dgm_jax.types import Array, ArrayLike, Float, PRNGKeyArray, PyTree

__all__ = [
    "Likelihood",
    "bernoulli_likelihood",
    "bernoulli_log_prob",
    "discretized_logistic_likelihood",
    "discretized_logistic_log_prob",
    "gaussian_likelihood",
    "gaussian_log_prob",
]

_LOG_2PI = math.log(2.0 * math.pi)


class Likelihood(NamedTuple):
    """A decoder likelihood ``p(x | z)`` as pure functions of the decoder output ``out``."""

    name: str  # short description, e.g. "bernoulli"
    log_prob: Callable[[PyTree, Array], Array]  # (out, x) -> elementwise log p(x_i | z)
    mean: Callable[[PyTree], Array]  # out -> E[x | z] (clipped to the support)
    sample: Callable[[PRNGKeyArray, PyTree], Array]  # (key, out) -> x ~ p(x | z)
    check_data: Callable[[Any], None]  # raises ValueError if concrete x is outside the support
    num_outputs: int  # 1: the decoder returns one array; 2: a pair (loc, log_scale)


# --------------------------------------------------------------------------------------
# Elementwise log probabilities
# --------------------------------------------------------------------------------------


def bernoulli_log_prob(logits: ArrayLike, x: ArrayLike) -> Float[Array, "..."]:
    """``x log σ(l) + (1 − x) log σ(−l) = x l − softplus(l)``, elementwise.

    For ``x`` in ``[0, 1]`` this is minus the binary cross-entropy.

    Examples:
        >>> bernoulli_log_prob(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])).round(4)
        Array([-0.6931, -2.1269], dtype=float32)
    """
    logits, x = jnp.asarray(logits), jnp.asarray(x)
    return x * logits - jax.nn.softplus(logits)


def gaussian_log_prob(mean: ArrayLike, log_scale: ArrayLike, x: ArrayLike) -> Float[Array, "..."]:
    """``log N(x; mean, exp(log_scale)²)``, elementwise.

    Examples:
        >>> round(float(gaussian_log_prob(0.0, 0.0, 0.0)), 4)  # -½ log 2π
        -0.9189
    """
    mean, log_scale, x = jnp.asarray(mean), jnp.asarray(log_scale), jnp.asarray(x)
    z = (x - mean) * jnp.exp(-log_scale)
    return -0.5 * _LOG_2PI - log_scale - 0.5 * z**2


def discretized_logistic_log_prob(
    mean: ArrayLike, log_scale: ArrayLike, x: ArrayLike, *, num_bins: int = 256
) -> Float[Array, "..."]:
    """Log probability of the pixel value ``x`` under a discretized logistic, elementwise.

    Pixel ``k ∈ {0, …, B−1}`` is represented as ``x = k / (B − 1)`` in ``[0, 1]``; its bin is
    ``[x − h, x + h]`` with ``h = 1 / (2(B − 1))``, and ``P(k) = σ((x + h − μ)/s) −
    σ((x − h − μ)/s)``, except at the edges, where the bins extend to ``−∞`` (``k = 0``:
    ``σ((h − μ)/s)``) and ``+∞`` (``k = B−1``: ``1 − σ((1 − h − μ)/s)``), so the ``B``
    probabilities sum to 1 (Salimans et al., 2017, PixelCNN++, eq. 2). The interior
    difference is computed as ``log σ(a) + log σ(−b) + log(1 − e^{b−a})``, exact and stable
    even for bins far in the tails, so no density fallback is needed.

    Args:
        mean: ``μ`` in the ``[0, 1]`` pixel scale.
        log_scale: ``log s`` in the same scale.
        x: pixel values ``k / (B − 1)``.
        num_bins: ``B``.

    Returns:
        ``log P(x)``, the broadcast shape of the inputs.

    Examples:
        >>> x = jnp.arange(256) / 255.0
        >>> p = jnp.exp(discretized_logistic_log_prob(0.3, jnp.log(0.1), x))
        >>> round(float(p.sum()), 5)
        1.0
    """
    check_int("num_bins", num_bins, minimum=2)
    mean, log_scale, x = jnp.asarray(mean), jnp.asarray(log_scale), jnp.asarray(x)
    half = 0.5 / (num_bins - 1)
    inv_s = jnp.exp(-log_scale)
    upper = (x - mean + half) * inv_s  # a
    lower = (x - mean - half) * inv_s  # b
    interior = (
        jax.nn.log_sigmoid(upper)
        + jax.nn.log_sigmoid(-lower)
        + jnp.log(-jnp.expm1(-2 * half * inv_s))
    )
    return jnp.where(
        x < half,
        jax.nn.log_sigmoid(upper),
        jnp.where(x > 1.0 - half, jax.nn.log_sigmoid(-lower), interior),
    )


# --------------------------------------------------------------------------------------
# Support checks (host side, concrete values only)
# --------------------------------------------------------------------------------------


def _concrete(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` for traced values (checked later or never)."""
    if is_traced(x):
        return None
    return np.asarray(x)


def _check_floating(x: Any, what: str) -> None:
    dtype = getattr(x, "dtype", None) or np.result_type(x)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"x must have a floating dtype for the {what} likelihood, got {dtype}")


def _check_unit_interval(x: Any) -> None:
    _check_floating(x, "Bernoulli")
    a = _concrete(x)
    if a is None or a.size == 0:
        return
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
        raise ValueError(
            "x lies outside the Bernoulli decoder's support: values must be in {0, 1} "
            f"(binarized images) or [0, 1], got values in [{lo}, {hi}]"
        )


def _check_finite(x: Any) -> None:
    _check_floating(x, "Gaussian")
    a = _concrete(x)
    if a is not None and not np.all(np.isfinite(a)):
        raise ValueError("x must be finite for the Gaussian likelihood, got NaN or Inf")


def _check_grid(x: Any, num_bins: int) -> None:
    _check_floating(x, "discretized logistic")
    a = _concrete(x)
    if a is None or a.size == 0:
        return
    k = a.astype(np.float64) * (num_bins - 1)
    off_grid = np.abs(k - np.rint(k)) > 1e-3
    if np.min(a) < 0.0 or np.max(a) > 1.0 or np.any(off_grid) or not np.all(np.isfinite(a)):
        raise ValueError(
            "x lies outside the discretized logistic decoder's support: values must be "
            f"k/{num_bins - 1} for integers k in 0..{num_bins - 1} (use "
            f"dgm_jax.data.to_float on uint8 pixels), got values in [{np.min(a)}, {np.max(a)}]"
        )


# --------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------


def _pair(out: PyTree, what: str) -> tuple[Array, Array]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            f"the {what} likelihood needs the decoder to return a pair (loc, log_scale), got "
            f"{type(out).__name__}"
        )
    return out[0], out[1]


def bernoulli_likelihood() -> Likelihood:
    """Bernoulli pixels with logits from the decoder (binarized MNIST).

    The decoder returns logits ``l`` of ``x``'s shape; ``log p(x | z) = Σ_i x_i l_i −
    softplus(l_i)``.

    Examples:
        >>> lik = bernoulli_likelihood()
        >>> lik.mean(jnp.zeros(2))
        Array([0.5, 0.5], dtype=float32)
    """

    def sample(key, logits):
        check_key("key", key)
        return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.float32)

    return Likelihood(
        name="bernoulli",
        log_prob=bernoulli_log_prob,
        mean=jax.nn.sigmoid,
        sample=sample,
        check_data=_check_unit_interval,
        num_outputs=1,
    )


def gaussian_likelihood(scale: float | None = None) -> Likelihood:
    """Gaussian ``N(x; μ, σ²)`` with a fixed ``σ = scale`` or a learned one.

    With ``scale`` given, the decoder returns the mean ``μ``; with ``scale=None`` it returns
    ``(μ, log σ)`` (per dimension, or broadcastable).

    Args:
        scale: fixed standard deviation ``> 0``, or ``None`` for a learned variance.

    Examples:
        >>> lik = gaussian_likelihood(scale=1.0)
        >>> round(float(lik.log_prob(jnp.zeros(1), jnp.zeros(1))[0]), 4)
        -0.9189
    """
    if scale is not None:
        check_positive("scale", scale)
        log_scale = math.log(scale)

        def split(out):
            return out, jnp.full((), log_scale, jnp.result_type(out))

    else:

        def split(out):
            return _pair(out, "learned-variance Gaussian")

    def log_prob(out, x):
        mean, log_s = split(out)
        return gaussian_log_prob(mean, log_s, x)

    def sample(key, out):
        check_key("key", key)
        mean, log_s = split(out)
        return mean + jnp.exp(log_s) * jax.random.normal(key, jnp.shape(mean), mean.dtype)

    return Likelihood(
        name="gaussian" if scale is None else f"gaussian(scale={scale})",
        log_prob=log_prob,
        mean=lambda out: split(out)[0],
        sample=sample,
        check_data=_check_finite,
        num_outputs=1 if scale is not None else 2,
    )


def discretized_logistic_likelihood(num_bins: int = 256) -> Likelihood:
    """Discretized logistic over ``num_bins`` pixel levels (Salimans et al., 2017).

    Data are pixels ``k / (num_bins − 1)`` in ``[0, 1]`` (``dgm_jax.data.to_float`` of
    uint8 images); the decoder returns ``(μ, log s)`` in that scale. See
    :func:`discretized_logistic_log_prob` for the edge cases at 0 and 255.

    Examples:
        >>> lik = discretized_logistic_likelihood()
        >>> out = (jnp.full(3, 0.5), jnp.full(3, -3.0))
        >>> bool(lik.log_prob(out, jnp.array([0.0, 128 / 255, 1.0]))[1] > -4)
        True
    """
    check_int("num_bins", num_bins, minimum=2)

    def log_prob(out, x):
        mean, log_s = _pair(out, "discretized logistic")
        return discretized_logistic_log_prob(mean, log_s, x, num_bins=num_bins)

    def sample(key, out):
        check_key("key", key)
        mean, log_s = _pair(out, "discretized logistic")
        u = jax.random.uniform(key, jnp.shape(mean), mean.dtype, 1e-6, 1.0 - 1e-6)
        y = mean + jnp.exp(log_s) * (jnp.log(u) - jnp.log1p(-u))
        return jnp.clip(jnp.round(y * (num_bins - 1)), 0, num_bins - 1) / (num_bins - 1)

    return Likelihood(
        name=f"discretized_logistic({num_bins})",
        log_prob=log_prob,
        mean=lambda out: jnp.clip(_pair(out, "discretized logistic")[0], 0.0, 1.0),
        sample=sample,
        check_data=lambda x: _check_grid(x, num_bins),
        num_outputs=2,
    )
