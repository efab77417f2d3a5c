"""Target distributions for MCMC tests, experiments and benchmarks, in one place.

Each factory returns a :class:`Target`: the log density of ONE position (a flat array
of shape ``(dim,)``; ``jax.vmap`` it for a batch), and what is known exactly about
it: an exact sampler, the mean and the covariance, or ``None`` with a note on how to
get reference draws (a long run of a well-tuned sampler).

============================  =====  =============  ===================================
target                        dim    exact sampler  what it tests
============================  =====  =============  ===================================
``correlated_gaussian``       any    yes            scaling with dimension, conditioning
``banana``                    2      yes            curved ridge (Haario et al. 1999)
``two_moons``                 2      yes            two thin, curved, separated modes
``bimodal_mixture``           any    yes            a missed mode (separation in σ)
``funnel``                    any    yes            Neal's funnel: varying scale
``logistic_regression_...``   31     no             a real posterior (breast cancer)
============================  =====  =============  ===================================

Examples:
    >>> import jax
    >>> t = funnel(dim=5)
    >>> x = t.sample(jax.random.key(0), 3)
    >>> x.shape, jax.vmap(t.logdensity_fn)(x).shape
    ((3, 5), (3,))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_int, check_key, check_number, check_positive
from dgm_jax.data import toy
from dgm_jax.types import Array, ArrayLike

__all__ = [
    "Target",
    "banana",
    "bimodal_centers",
    "bimodal_mixture",
    "correlated_gaussian",
    "funnel",
    "logistic_regression_breast_cancer",
    "two_moons",
]


class Target(NamedTuple):
    """A distribution to sample, with what is known about it."""

    name: str  # short identifier
    logdensity_fn: Callable[[Array], Array]  # (dim,) -> scalar, unnormalized log density
    dim: int  # length of a position
    sample: Callable[[Any, int], Array] | None  # exact sampler (key, num) -> (num, dim)
    mean: Array | None  # (dim,) exact mean, or None if unknown
    cov: Array | None  # (dim, dim) exact covariance, or None if unknown
    reference: str  # where reference draws come from


def _wrap_sampler(fn: Callable[[Any, int], Array]) -> Callable[[Any, int], Array]:
    def sample(key: Any, num: int) -> Array:
        check_key("key", key)
        check_int("num", num, minimum=1)
        return fn(key, num)

    sample.__doc__ = "Exact draws: ``(key, num) -> (num, dim)``."
    return sample


def _check_point(x: Any, dim: int) -> None:
    if np.shape(x) != (dim,):
        raise ValueError(
            f"position must have shape ({dim},), got {tuple(np.shape(x))}; "
            "use jax.vmap(logdensity_fn) for a batch"
        )


def correlated_gaussian(
    dim: int = 2, rho: float = 0.9, *, covariance: ArrayLike | None = None
) -> Target:
    """Zero-mean Gaussian with covariance ``Σ_ij = rho^|i-j|`` (AR(1)) or a given one.

    Args:
        dim: dimension, ``>= 1`` (ignored when ``covariance`` is given).
        rho: correlation of neighbours, in (-1, 1).
        covariance: optional ``(d, d)`` symmetric positive-definite covariance.

    Returns:
        A :class:`Target` with exact sampler, mean and covariance.

    Examples:
        >>> t = correlated_gaussian(50, rho=0.9)
        >>> t.dim, t.cov.shape
        (50, (50, 50))
    """
    if covariance is None:
        check_int("dim", dim, minimum=1)
        check_number("rho", rho)
        if not -1.0 < float(rho) < 1.0:
            raise ValueError(f"rho must lie in (-1, 1), got {rho!r}")
        idx = np.arange(dim)
        cov = float(rho) ** np.abs(idx[:, None] - idx[None, :])
    else:
        cov = np.asarray(covariance, dtype=np.float64)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
            raise ValueError(f"covariance must be a square (d, d) matrix, got shape {cov.shape}")
        if not np.allclose(cov, cov.T):
            raise ValueError("covariance must be symmetric")
        dim = cov.shape[0]
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as err:
        raise ValueError("covariance must be positive definite") from err
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    chol_j = jnp.asarray(chol, jnp.float32)

    def logdensity_fn(x: Array) -> Array:
        _check_point(x, dim)
        return -0.5 * x @ (precision @ x)

    def sample(key: Any, num: int) -> Array:
        return jax.random.normal(key, (num, dim)) @ chol_j.T

    return Target(
        "correlated_gaussian",
        logdensity_fn,
        int(dim),
        _wrap_sampler(sample),
        jnp.zeros(dim),
        jnp.asarray(cov, jnp.float32),
        "exact",
    )


def banana(sigma1: float = math.sqrt(10.0), sigma2: float = 1.0, twist: float = 0.1) -> Target:
    """The 2-D twisted Gaussian of Haario et al. (1999); see ``dgm_jax.data.toy.banana``.

    Mean 0, ``Var x1 = sigma1²``, ``Var x2 = sigma2² + 2 twist² sigma1⁴``, no correlation.

    Examples:
        >>> banana().cov.tolist()
        [[10.0, 0.0], [0.0, 3.0]]
    """
    data = toy.banana(sigma1=sigma1, sigma2=sigma2, twist=twist)
    s1, s2, b = float(sigma1), float(sigma2), float(twist)
    cov = jnp.diag(jnp.array([s1**2, s2**2 + 2 * b**2 * s1**4], jnp.float32))
    return Target("banana", data.logdensity, 2, data.sample, jnp.zeros(2), cov, "exact")


def two_moons(noise: float = 0.1) -> Target:
    """Two interleaving half circles blurred by ``N(0, noise² I)``; see ``dgm_jax.data.toy``.

    With the default noise the two moons are separated by low-density gaps several
    noise widths wide, so local samplers rarely cross between them.

    Examples:
        >>> two_moons().dim
        2
    """
    data = toy.two_moons(noise=noise)
    return Target(
        "two_moons", data.logdensity, 2, data.sample, None, None, "exact sampler (no moments)"
    )


def bimodal_mixture(separation: float = 8.0, dim: int = 2, weight: float = 0.5) -> Target:
    """``weight · N(−s/2 e₁, I) + (1 − weight) · N(+s/2 e₁, I)`` in ``dim`` dimensions.

    With the default separation of 8 standard deviations the density between the modes
    is ``e^{-8}`` of the peak, so a chain started in one mode stays there.

    Args:
        separation: distance ``s`` between the two means, in standard deviations, > 0.
        dim: dimension, ``>= 1``.
        weight: probability of the left mode, in (0, 1).

    Returns:
        A :class:`Target` with exact sampler, mean and covariance. ``centers`` of the
        modes are ``±s/2 e₁``.

    Examples:
        >>> t = bimodal_mixture(8.0)
        >>> t.mean.tolist(), t.cov[0, 0].item()
        ([0.0, 0.0], 17.0)
    """
    check_positive("separation", separation)
    check_int("dim", dim, minimum=1)
    check_number("weight", weight)
    if not 0.0 < float(weight) < 1.0:
        raise ValueError(f"weight must lie in (0, 1), got {weight!r}")
    s, w = float(separation), float(weight)
    centers = bimodal_centers(s, dim)
    log_w = jnp.log(jnp.array([w, 1.0 - w], jnp.float32))

    def logdensity_fn(x: Array) -> Array:
        _check_point(x, dim)
        sq = jnp.sum((x[None, :] - centers) ** 2, axis=-1)
        return jax.nn.logsumexp(log_w - 0.5 * sq)

    def sample(key: Any, num: int) -> Array:
        k1, k2 = jax.random.split(key)
        right = jax.random.bernoulli(k1, 1.0 - w, (num,))
        return centers[right.astype(jnp.int32)] + jax.random.normal(k2, (num, dim))

    mean = (1.0 - 2.0 * w) * s / 2
    var0 = 1.0 + w * (1.0 - w) * s**2
    cov = jnp.eye(dim).at[0, 0].set(var0)
    return Target(
        "bimodal_mixture",
        logdensity_fn,
        int(dim),
        _wrap_sampler(sample),
        jnp.zeros(dim).at[0].set(mean),
        cov,
        "exact",
    )


def bimodal_centers(separation: float = 8.0, dim: int = 2) -> Array:
    """The two mode centres ``∓ separation/2 · e₁`` of :func:`bimodal_mixture`, ``(2, dim)``."""
    check_positive("separation", separation)
    check_int("dim", dim, minimum=1)
    half = float(separation) / 2
    return jnp.zeros((2, dim)).at[0, 0].set(-half).at[1, 0].set(half)


def funnel(dim: int = 10, scale: float = 3.0) -> Target:
    """Neal's funnel (Neal 2003, "Slice sampling", §8): ``v ~ N(0, scale²)``,
    ``x_i | v ~ N(0, e^v)`` for ``i = 1..dim−1``; the position is ``(v, x_1, ...)``.

    The neck (``v`` very negative) has scales of ``e^{v/2}``: a sampler with one step
    size either diverges there or never enters it.

    Args:
        dim: total dimension, ``>= 2``.
        scale: standard deviation of ``v``, > 0.

    Returns:
        A :class:`Target` with exact sampler, mean 0 and covariance
        ``diag(scale², e^{scale²/2}, ...)``.

    Examples:
        >>> t = funnel(dim=3)
        >>> round(float(t.cov[1, 1]), 1)  # e^{4.5}
        90.0
    """
    check_int("dim", dim, minimum=2)
    check_positive("scale", scale)
    sv = float(scale)

    def logdensity_fn(x: Array) -> Array:
        _check_point(x, dim)
        v, rest = x[0], x[1:]
        return -0.5 * (v / sv) ** 2 - 0.5 * (dim - 1) * v - 0.5 * jnp.sum(rest**2) * jnp.exp(-v)

    def sample(key: Any, num: int) -> Array:
        k1, k2 = jax.random.split(key)
        v = sv * jax.random.normal(k1, (num, 1))
        rest = jnp.exp(v / 2) * jax.random.normal(k2, (num, dim - 1))
        return jnp.concatenate([v, rest], axis=1)

    cov = jnp.diag(jnp.concatenate([jnp.array([sv**2]), jnp.full(dim - 1, math.exp(sv**2 / 2))]))
    return Target(
        "funnel", logdensity_fn, int(dim), _wrap_sampler(sample), jnp.zeros(dim), cov, "exact"
    )


def logistic_regression_breast_cancer(prior_scale: float = 1.0) -> Target:
    """Bayesian logistic regression on scikit-learn's breast-cancer data (569 × 30).

    Features are standardised; an intercept is prepended; the weights ``β ∈ R^31`` have
    the prior ``N(0, prior_scale² I)``; the likelihood is Bernoulli with logit ``X β``.
    Needs scikit-learn (the ``test`` extra), which ships the data set.

    Args:
        prior_scale: prior standard deviation of every weight, > 0.

    Returns:
        A :class:`Target` of dimension 31 without exact sampler or moments; reference
        draws come from a long, well-tuned NUTS run.

    Raises:
        ImportError: scikit-learn is not installed.

    Examples:
        >>> t = logistic_regression_breast_cancer()  # doctest: +SKIP
        >>> t.dim  # doctest: +SKIP
        31
    """
    check_positive("prior_scale", prior_scale)
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "logistic_regression_breast_cancer needs scikit-learn, which ships the data set; "
            "install it with `pip install scikit-learn` (or the package's `test` extra)"
        ) from err
    features, labels = load_breast_cancer(return_X_y=True)
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    design = jnp.asarray(np.concatenate([np.ones((len(features), 1)), features], 1), jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    dim = design.shape[1]
    inv_var = 1.0 / float(prior_scale) ** 2

    def logdensity_fn(beta: Array) -> Array:
        _check_point(beta, dim)
        logits = design @ beta
        # log σ(z) y + log(1 − σ(z)) (1 − y) = y z − softplus(z)
        loglik = jnp.sum(y * logits - jax.nn.softplus(logits))
        return loglik - 0.5 * inv_var * jnp.sum(beta**2)

    return Target(
        "logistic_regression_breast_cancer",
        logdensity_fn,
        int(dim),
        None,
        None,
        None,
        "no exact sampler; use a long NUTS run after window adaptation",
    )
