"""Gaussian mixture models fitted by expectation–maximisation.

A mixture ``p(x) = Σ_k π_k N(x; μ_k, Σ_k)`` is a :class:`GMMParams` NamedTuple. Its
covariance type is read from the shape of ``covariances``:

* ``"full"``: ``(K, D, D)``, one full covariance per component;
* ``"diag"``: ``(K, D)``, the diagonals;
* ``"spherical"``: ``(K,)``, one variance per component (``Σ_k = σ_k² I``).

:func:`fit_gmm` runs EM (Dempster, Laird & Rubin, 1977; Bishop, 2006, §9.2) from a
k-means++ start (Arthur & Vassilvitskii, 2007) inside one ``lax.while_loop`` that stops at
``max_iter`` or when the mean log-likelihood rises by less than ``tol``, and returns the
per-iteration history. Each EM iteration never lowers the log-likelihood; ``reg_covar``
adds ``reg_covar · I`` to every covariance in the M-step (as scikit-learn does), which keeps
covariances positive definite and makes each M-step exact for the log-likelihood plus the
penalty ``-½ reg_covar Σ_k N_k tr(Σ_k⁻¹)``, so the plain log-likelihood is monotone up to
``O(reg_covar)``.

All functions are pure and jit-compatible with ``num_components``, ``covariance_type`` and
``max_iter`` static; the library does not jit for you.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> key_data, key_fit = jax.random.split(jax.random.key(0))
    >>> x = jnp.concatenate([jax.random.normal(key_data, (200, 2)) - 4,
    ...                      jax.random.normal(key_data, (200, 2)) + 4])
    >>> fit = jax.jit(fit_gmm, static_argnums=2)(key_fit, x, 2)
    >>> sorted(round(float(m), 1) for m in fit.params.means[:, 0])
    [-4.0, 4.0]
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from dgm_jax._validate import check_in, check_int, check_key, check_ndim, check_positive
from dgm_jax.types import Array, Bool, Float, Int, PRNGKeyArray

__all__ = [
    "COVARIANCE_TYPES",
    "GMMFit",
    "GMMParams",
    "covariance_type_of",
    "e_step",
    "fit_gmm",
    "full_covariances",
    "gmm_init",
    "gmm_logdensity",
    "gmm_predict",
    "gmm_responsibilities",
    "gmm_sample",
    "kmeans_plusplus",
    "m_step",
]

COVARIANCE_TYPES = ("full", "diag", "spherical")


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture with ``K`` components in ``D`` dimensions."""

    weights: Float[Array, " K"]  # mixing proportions π_k, positive, summing to 1
    means: Float[Array, "K D"]  # component means μ_k
    covariances: Array  # (K, D, D) full, (K, D) diagonal or (K,) spherical variances


class GMMFit(NamedTuple):
    """What :func:`fit_gmm` returns."""

    params: GMMParams  # the fitted mixture (its log-likelihood is the last finite history entry)
    log_likelihood: Float[Array, " max_iter_plus_1"]  # mean log p(x) after i EM steps; NaN after
    num_iterations: Int[Array, ""]  # EM iterations (M-steps) applied
    converged: Bool[Array, ""]  # the last improvement was below tol


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def covariance_type_of(params: GMMParams) -> str:
    """``"full"``, ``"diag"`` or ``"spherical"`` from the shape of ``params.covariances``.

    Examples:
        >>> p = GMMParams(jnp.ones(2) / 2, jnp.zeros((2, 3)), jnp.ones((2, 3)))
        >>> covariance_type_of(p)
        'diag'
    """
    if not isinstance(params, GMMParams):
        raise TypeError(f"params must be a GMMParams, got {type(params).__name__}")
    k_w, (k_m, d) = jnp.shape(params.weights), jnp.shape(params.means)
    shape = jnp.shape(params.covariances)
    if k_w != (k_m,):
        raise ValueError(
            f"params.weights must have shape ({k_m},) to match means {(k_m, d)}, got {k_w}"
        )
    by_shape = {(k_m, d, d): "full", (k_m, d): "diag", (k_m,): "spherical"}
    if shape not in by_shape:
        raise ValueError(
            f"params.covariances must have shape {(k_m, d, d)} (full), {(k_m, d)} (diag) or "
            f"{(k_m,)} (spherical) for means of shape {(k_m, d)}, got {shape}"
        )
    return by_shape[shape]


def _check_points(name: str, x: Any, dim: int | None = None) -> Array:
    x = jnp.asarray(x)
    check_ndim(name, x, 2)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns to match the mixture, got {x.shape}")
    return x


# --------------------------------------------------------------------------------------
# Densities
# --------------------------------------------------------------------------------------


def full_covariances(params: GMMParams) -> Float[Array, "K D D"]:
    """The ``(K, D, D)`` covariance matrices of any covariance type.

    Examples:
        >>> p = GMMParams(jnp.ones(2) / 2, jnp.zeros((2, 2)), jnp.array([1.0, 4.0]))
        >>> full_covariances(p)[1]
        Array([[4., 0.],
               [0., 4.]], dtype=float32)
    """
    kind = covariance_type_of(params)
    d = params.means.shape[1]
    cov = params.covariances
    if kind == "full":
        return cov
    if kind == "diag":
        return jax.vmap(jnp.diag)(cov)
    return cov[:, None, None] * jnp.eye(d, dtype=cov.dtype)[None]


def _component_logpdf(params: GMMParams, x: Float[Array, "N D"]) -> Float[Array, "N K"]:
    """``log N(x_n; μ_k, Σ_k)`` for every point and component."""
    kind = covariance_type_of(params)
    d = x.shape[1]
    diff = x[:, None, :] - params.means[None, :, :]  # (N, K, D)
    log_2pi = d * math.log(2.0 * math.pi)
    if kind == "full":
        chol = jnp.linalg.cholesky(params.covariances)  # (K, D, D)
        eye = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), chol.shape)
        inv_chol = solve_triangular(chol, eye, lower=True)  # L⁻¹, (K, D, D)
        white = jnp.einsum("kij,nkj->nki", inv_chol, diff)  # L⁻¹ (x − μ), (N, K, D)
        maha = jnp.sum(white**2, axis=-1)  # (N, K)
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    elif kind == "diag":
        var = params.covariances
        maha = jnp.sum(diff**2 / var[None], axis=-1)
        log_det = jnp.sum(jnp.log(var), axis=-1)
    else:
        var = params.covariances
        maha = jnp.sum(diff**2, axis=-1) / var[None]
        log_det = d * jnp.log(var)
    return -0.5 * (log_2pi + log_det[None] + maha)


def _joint_logpdf(params: GMMParams, x: Float[Array, "N D"]) -> Float[Array, "N K"]:
    return jnp.log(params.weights)[None] + _component_logpdf(params, x)


def gmm_logdensity(params: GMMParams, x: Float[Array, "N D"]) -> Float[Array, " N"]:
    """``log p(x_n) = log Σ_k π_k N(x_n; μ_k, Σ_k)`` for each row of ``x``.

    Args:
        params: the mixture.
        x: points, shape ``(N, D)``.

    Returns:
        log densities, shape ``(N,)``.

    Examples:
        >>> p = GMMParams(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones(1))
        >>> round(float(gmm_logdensity(p, jnp.zeros((1, 2)))[0]), 4)  # -log(2π)
        -1.8379
    """
    covariance_type_of(params)
    x = _check_points("x", x, params.means.shape[1])
    return logsumexp(_joint_logpdf(params, x), axis=1)


def gmm_responsibilities(params: GMMParams, x: Float[Array, "N D"]) -> Float[Array, "N K"]:
    """Posterior component probabilities ``p(k | x_n)``, rows summing to 1.

    Examples:
        >>> p = GMMParams(jnp.ones(2) / 2, jnp.array([[-5.0], [5.0]]), jnp.ones(2))
        >>> gmm_responsibilities(p, jnp.array([[-5.0]])).round(3)
        Array([[1., 0.]], dtype=float32)
    """
    covariance_type_of(params)
    x = _check_points("x", x, params.means.shape[1])
    log_resp, _ = e_step(params, x)
    return jnp.exp(log_resp)


def gmm_predict(params: GMMParams, x: Float[Array, "N D"]) -> Int[Array, " N"]:
    """The most probable component of each point, ``argmax_k p(k | x_n)``.

    Examples:
        >>> p = GMMParams(jnp.ones(2) / 2, jnp.array([[-5.0], [5.0]]), jnp.ones(2))
        >>> gmm_predict(p, jnp.array([[-4.0], [6.0]]))
        Array([0, 1], dtype=int32)
    """
    return jnp.argmax(gmm_responsibilities(params, x), axis=1).astype(jnp.int32)


def gmm_sample(
    key: PRNGKeyArray, params: GMMParams, num_samples: int
) -> tuple[Float[Array, "num D"], Int[Array, " num"]]:
    """Draw points and their component labels from the mixture.

    Args:
        key: PRNG key.
        params: the mixture.
        num_samples: number of points (static).

    Returns:
        ``(x, labels)`` of shapes ``(num_samples, D)`` and ``(num_samples,)``.

    Examples:
        >>> p = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0, 0.0], [5.0, 5.0]]),
        ...               jnp.ones(2))
        >>> x, labels = gmm_sample(jax.random.key(0), p, 10)
        >>> x.shape, labels.shape
        ((10, 2), (10,))
    """
    check_key("key", key)
    check_int("num_samples", num_samples, minimum=1)
    covariance_type_of(params)
    key_label, key_noise = jax.random.split(key)
    labels = jax.random.categorical(key_label, jnp.log(params.weights), shape=(num_samples,))
    chol = jnp.linalg.cholesky(full_covariances(params))  # (K, D, D)
    eps = jax.random.normal(key_noise, (num_samples, params.means.shape[1]), params.means.dtype)
    x = params.means[labels] + jnp.einsum("nij,nj->ni", chol[labels], eps)
    return x, labels.astype(jnp.int32)


# --------------------------------------------------------------------------------------
# EM
# --------------------------------------------------------------------------------------


def e_step(params: GMMParams, x: Float[Array, "N D"]) -> tuple[Float[Array, "N K"], Array]:
    """E-step: log responsibilities and the mean log-likelihood of ``params``.

    Returns:
        ``(log_resp, mean_log_likelihood)`` with ``log_resp`` of shape ``(N, K)``.

    Examples:
        >>> p = GMMParams(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones(1))
        >>> log_resp, ll = e_step(p, jnp.zeros((3, 2)))
        >>> log_resp.shape, round(float(ll), 4)
        ((3, 1), -1.8379)
    """
    joint = _joint_logpdf(params, x)
    log_norm = logsumexp(joint, axis=1)
    return joint - log_norm[:, None], jnp.mean(log_norm)


def m_step(
    x: Float[Array, "N D"],
    resp: Float[Array, "N K"],
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
) -> GMMParams:
    """M-step: the mixture maximising the expected complete-data log-likelihood.

    ``N_k = Σ_n r_nk``, ``π_k = N_k / N``, ``μ_k = Σ_n r_nk x_n / N_k`` and
    ``Σ_k = Σ_n r_nk (x_n − μ_k)(x_n − μ_k)ᵀ / N_k + reg_covar · I`` (diagonal: the
    diagonal of that; spherical: the mean of the diagonal). Empty components keep finite
    parameters through a ``10 eps`` floor on ``N_k``.

    Args:
        x: points, shape ``(N, D)``.
        resp: responsibilities ``r_nk``, shape ``(N, K)``, rows summing to 1.
        covariance_type: ``"full"``, ``"diag"`` or ``"spherical"``.
        reg_covar: added to the variances, ``>= 0``.

    Returns:
        the new :class:`GMMParams`.

    Examples:
        >>> x = jnp.array([[0.0], [2.0]])
        >>> m_step(x, jnp.ones((2, 1)), "diag", 0.0).covariances
        Array([[1.]], dtype=float32)
    """
    check_in("covariance_type", covariance_type, COVARIANCE_TYPES)
    check_positive("reg_covar", reg_covar, allow_zero=True)
    d = x.shape[1]
    nk = jnp.maximum(jnp.sum(resp, axis=0), 10.0 * jnp.finfo(x.dtype).eps)  # (K,)
    means = (resp.T @ x) / nk[:, None]
    weights = nk / jnp.sum(nk)
    if covariance_type == "full":
        diff = x[None, :, :] - means[:, None, :]  # (K, N, D)
        cov = jnp.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None]
        cov = cov + reg_covar * jnp.eye(d, dtype=x.dtype)[None]
    else:
        # E[x²] − μ² is fast but cancels badly; use the centred sum instead.
        diff2 = (x[None, :, :] - means[:, None, :]) ** 2  # (K, N, D)
        cov = jnp.einsum("nk,knd->kd", resp, diff2) / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            cov = jnp.mean(cov, axis=1)
    return GMMParams(weights, means, cov)


def kmeans_plusplus(
    key: PRNGKeyArray, x: Float[Array, "N D"], num_components: int
) -> tuple[Float[Array, "K D"], Int[Array, " K"]]:
    """k-means++ seeding: each new centre drawn with probability ∝ squared distance.

    The first centre is a uniformly random point; each next one is point ``n`` with
    probability ``D(x_n)² / Σ_m D(x_m)²``, where ``D`` is the distance to the nearest
    centre chosen so far (Arthur & Vassilvitskii, 2007). A chosen point has ``D = 0``, so
    the centres are distinct points unless the data hold fewer than ``K`` distinct ones.

    Args:
        key: PRNG key.
        x: points, shape ``(N, D)``, ``N >= K``.
        num_components: ``K`` (static).

    Returns:
        ``(centres, indices)``: shapes ``(K, D)`` and ``(K,)``, ``centres = x[indices]``.

    Examples:
        >>> x = jnp.array([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0]])
        >>> _, idx = kmeans_plusplus(jax.random.key(0), x, 2)
        >>> 2 in idx.tolist()
        True
    """
    check_key("key", key)
    x = _check_points("x", x)
    check_int("num_components", num_components, minimum=1)
    n = x.shape[0]
    if n < num_components:
        raise ValueError(f"need at least num_components={num_components} points, got {n}")
    keys = jax.random.split(key, num_components)
    first = jax.random.randint(keys[0], (), 0, n)
    indices = jnp.zeros(num_components, jnp.int32).at[0].set(first)
    d2 = jnp.sum((x - x[first][None]) ** 2, axis=1)

    def body(k, carry):
        indices, d2 = carry
        total = jnp.sum(d2)
        # All remaining points coincide with centres: fall back to uniform choice.
        logits = jnp.where(total > 0, jnp.log(d2), jnp.zeros_like(d2))
        new = jax.random.categorical(keys[k], logits)
        d2 = jnp.minimum(d2, jnp.sum((x - x[new][None]) ** 2, axis=1))
        return indices.at[k].set(new), d2

    indices, _ = jax.lax.fori_loop(1, num_components, body, (indices, d2))
    return x[indices], indices


def gmm_init(
    key: PRNGKeyArray,
    x: Float[Array, "N D"],
    num_components: int,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
) -> GMMParams:
    """Initial mixture: k-means++ centres, hard assignment to the nearest, one M-step.

    Examples:
        >>> x = jax.random.normal(jax.random.key(0), (50, 2))
        >>> gmm_init(jax.random.key(1), x, 3, "spherical").covariances.shape
        (3,)
    """
    centres, _ = kmeans_plusplus(key, x, num_components)
    d2 = jnp.sum((x[:, None, :] - centres[None]) ** 2, axis=-1)
    resp = jax.nn.one_hot(jnp.argmin(d2, axis=1), num_components, dtype=x.dtype)
    return m_step(x, resp, covariance_type, reg_covar)


class _EMState(NamedTuple):
    params: GMMParams  # current mixture
    iteration: Array  # number of E-steps done
    history: Array  # mean log-likelihood after i M-steps
    converged: Array  # stop flag
    num_m_steps: Array  # M-steps applied


def fit_gmm(
    key: PRNGKeyArray,
    x: Float[Array, "N D"],
    num_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init_params: GMMParams | None = None,
) -> GMMFit:
    """Fit a Gaussian mixture by EM, from k-means++ or from ``init_params``.

    Iteration ``i`` evaluates the mean log-likelihood ``ℓ_i`` of the current mixture
    (E-step); it stops when ``i = max_iter`` or ``ℓ_i − ℓ_{i−1} < tol``, otherwise applies
    an M-step. The loop is one ``lax.while_loop``; jit the call with ``num_components``,
    ``covariance_type`` and ``max_iter`` static.

    Args:
        key: PRNG key for the k-means++ start (unused with ``init_params``).
        x: points, shape ``(N, D)``.
        num_components: ``K``.
        covariance_type: ``"full"``, ``"diag"`` or ``"spherical"``.
        max_iter: maximum number of EM iterations (M-steps).
        tol: stop when the mean log-likelihood rises by less than this.
        reg_covar: added to the variances in every M-step (``>= 0``).
        init_params: a starting mixture of the same covariance type.

    Returns:
        :class:`GMMFit`; ``log_likelihood[i]`` is ``ℓ_i`` for ``i <= num_iterations`` and
        NaN after, and ``ℓ_{num_iterations}`` is the log-likelihood of ``params``.

    Examples:
        >>> x = jax.random.normal(jax.random.key(0), (500, 2)) * jnp.array([1.0, 3.0])
        >>> fit = fit_gmm(jax.random.key(1), x, 1, covariance_type="diag")
        >>> fit.params.covariances.round(0)
        Array([[1., 9.]], dtype=float32)
    """
    check_key("key", key)
    x = _check_points("x", x)
    check_int("num_components", num_components, minimum=1)
    check_in("covariance_type", covariance_type, COVARIANCE_TYPES)
    check_int("max_iter", max_iter, minimum=0)
    check_positive("tol", tol, allow_zero=True)
    check_positive("reg_covar", reg_covar, allow_zero=True)
    if init_params is None:
        params = gmm_init(key, x, num_components, covariance_type, reg_covar)
    else:
        kind = covariance_type_of(init_params)
        if kind != covariance_type or init_params.means.shape != (num_components, x.shape[1]):
            raise ValueError(
                f"init_params must be a {covariance_type!r} mixture with means of shape "
                f"{(num_components, x.shape[1])}, got {kind!r} with {init_params.means.shape}"
            )
        params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), init_params)

    def cond(s: _EMState):
        return (~s.converged) & (s.iteration <= max_iter)

    def body(s: _EMState) -> _EMState:
        log_resp, ll = e_step(s.params, x)
        history = s.history.at[s.iteration].set(ll)
        prev = s.history[jnp.maximum(s.iteration - 1, 0)]
        converged = (s.iteration > 0) & (ll - prev < tol)
        stop = converged | (s.iteration == max_iter)
        new = m_step(x, jnp.exp(log_resp), covariance_type, reg_covar)
        params = jax.tree.map(lambda old, nw: jnp.where(stop, old, nw), s.params, new)
        return _EMState(params, s.iteration + 1, history, converged, s.num_m_steps + (~stop))

    history = jnp.full((max_iter + 1,), jnp.nan, x.dtype)
    zero = jnp.zeros((), jnp.int32)
    init = _EMState(params, zero, history, jnp.zeros((), bool), zero)
    final = jax.lax.while_loop(cond, body, init)
    return GMMFit(final.params, final.history, final.num_m_steps, final.converged)
