"""Exact log-likelihood through the probability-flow ODE, and bits per dimension.

Along a solution of ``dx/dt = v(x, t)`` the instantaneous change of variables
(Chen et al. 2018) gives ``d log p_t(x_t)/dt = -∇·v(x_t, t)``, so

    log p_eps(x) = log p_T(x_T) + ∫_eps^T ∇·v(x_t, t) dt,

with ``x_T`` the ODE solution started at ``x_eps = x`` (Song et al. 2021, eq. 39 and
App. D.2). The divergence is the exact trace of the Jacobian (``D`` Jacobian-vector
products, for low dimensions) or Hutchinson's estimator ``E_z[zᵀ (∂v/∂x) z]`` with
probes ``z`` fixed along the path (Grathwohl et al. 2019, FFJORD).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_floating, check_in, check_int, check_key, check_number
from dgm_jax.metrics.likelihood import nats_to_bits_per_dim
from dgm_jax.sde.samplers import _batch_time, _resolve_grid
from dgm_jax.sde.sdes import SDE, ScoreFn, check_score_fn, check_sde, probability_flow
from dgm_jax.sde.solvers import AdaptiveSolver, ButcherTableau, ODEInfo, integrate, rk4
from dgm_jax.types import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "LikelihoodInfo",
    "bits_per_dim",
    "build_divergence_fn",
    "hutchinson_probes",
    "ode_log_likelihood",
    "uniform_dequantization_offset",
]

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


class LikelihoodInfo(NamedTuple):
    """What the likelihood computation produced besides the log-likelihood."""

    latent: Array  # x_T, the ODE solution at T, shape (batch, *event)
    prior_logp: Array  # log p_T(x_T), shape (batch,)
    delta_logp: Array  # ∫_eps^T div v dt, shape (batch,)
    ode: ODEInfo  # solver diagnostics (function evaluations, max_steps flag)


def _divergence_fn(v, x_shape, trace, probes):
    """Return ``div(x, t) -> (v(x, t), ∇·v per example)`` for a batched field ``v``."""
    batch = x_shape[0]
    dim = math.prod(x_shape[1:])

    if trace == "exact":
        basis = jnp.eye(dim, dtype=jnp.float32).reshape((dim, *x_shape[1:]))
        tangents = jnp.broadcast_to(basis[:, None], (dim, *x_shape))  # (D, batch, *event)
    else:
        tangents = probes  # (num_probes, batch, *event)

    def field_and_div(x, t):
        dx, jvp_fn = jax.linearize(lambda y: v(y, t), x)
        products = jax.vmap(jvp_fn)(tangents)  # J u for each tangent u
        per_tangent = jnp.sum((products * tangents).reshape(tangents.shape[0], batch, -1), axis=2)
        div = per_tangent.sum(0) if trace == "exact" else per_tangent.mean(0)
        return dx, div

    return field_and_div


def hutchinson_probes(
    key: PRNGKeyArray, shape: tuple[int, ...], probe: str = "rademacher", dtype=jnp.float32
) -> Array:
    """Random probes ``z`` with ``E[z zᵀ] = I`` for Hutchinson's trace estimator.

    Args:
        key: PRNG key.
        shape: ``(num_probes, batch, *event)``.
        probe: ``"rademacher"`` (±1, lower variance) or ``"gaussian"``.
        dtype: floating dtype of the probes.

    Returns:
        Array of ``shape``.

    Examples:
        >>> hutchinson_probes(jax.random.key(0), (1, 3, 2)).shape
        (1, 3, 2)
    """
    check_key("key", key)
    check_in("probe", probe, PROBES)
    if probe == "rademacher":
        return jax.random.rademacher(key, shape, dtype)
    return jax.random.normal(key, shape, dtype)


def build_divergence_fn(v, x_shape: tuple[int, ...], trace: str, probes: Array | None = None):
    """Return ``field_and_div(x, t) -> (v(x, t), ∇·v per example)`` for a batched field.

    The exact trace takes ``D`` Jacobian-vector products (one per basis vector); the
    Hutchinson estimate averages ``zᵀ (∂v/∂x) z`` over the given probes (unbiased, FFJORD).
    One ``jax.linearize`` per call shares the forward pass between the products.

    Args:
        v: ``v(x, t)`` on a batch ``x`` of shape ``x_shape``, treating examples
            independently; ``t`` is passed through unchanged.
        x_shape: ``(batch, *event)``.
        trace: ``"exact"`` or ``"hutchinson"``.
        probes: ``(num_probes, batch, *event)`` for ``"hutchinson"`` (see
            :func:`hutchinson_probes`); ignored for ``"exact"``.

    Returns:
        The function ``field_and_div``; its divergence has shape ``(batch,)``.

    Examples:
        >>> fd = build_divergence_fn(lambda x, t: 3.0 * x, (4, 2), "exact")
        >>> [float(d) for d in fd(jnp.ones((4, 2)), 0.0)[1]]
        [6.0, 6.0, 6.0, 6.0]
    """
    check_in("trace", trace, TRACES)
    if len(x_shape) < 2:
        raise ValueError(f"x_shape must be (batch, *event), got {x_shape}")
    if trace == "hutchinson" and (probes is None or tuple(probes.shape[1:]) != tuple(x_shape)):
        got = None if probes is None else probes.shape
        raise ValueError(f"probes must have shape (num_probes, *{tuple(x_shape)}), got {got}")
    return _divergence_fn(v, x_shape, trace, probes)


def ode_log_likelihood(
    key: PRNGKeyArray,
    sde: SDE,
    score_fn: ScoreFn,
    x: Float[Array, " batch *event"],
    *,
    trace: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    solver: ButcherTableau | AdaptiveSolver = rk4,
    num_steps: int | None = None,
    time_grid: ArrayLike | None = None,
) -> tuple[Float[Array, " batch"], LikelihoodInfo]:
    """``log p_eps(x)`` in nats per example, by the probability-flow ODE.

    Integrates ``[x, Δ]`` from ``eps`` to ``T`` with ``dΔ/dt = ∇·v`` and adds the prior's
    ``log p_T(x_T)``. For discrete data, dequantize ``x`` first (add uniform noise) and
    convert with :func:`bits_per_dim`. ``score_fn`` must treat the examples of a batch
    independently (the divergence is taken per example).

    Args:
        key: PRNG key (draws the Hutchinson probes; unused for the exact trace).
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)`` on a batch.
        x: data, shape ``(batch, *event)``.
        trace: ``"exact"`` (``D`` Jacobian-vector products per evaluation) or
            ``"hutchinson"`` (``num_probes`` of them, unbiased).
        num_probes: Hutchinson probes per example, ``>= 1``.
        probe: ``"rademacher"`` (lower variance) or ``"gaussian"``.
        solver: a tableau (fixed steps, reverse-mode differentiable) or an
            :class:`AdaptiveSolver` (forward-mode only).
        num_steps: steps of a fixed solver on ``sde.time_grid_fn(num_steps)`` reversed
            (100 when neither it nor ``time_grid`` is given).
        time_grid: explicit decreasing times (reversed to run from eps to T).

    Returns:
        ``(log_likelihood, info)``: nats per example, shape ``(batch,)``, and a
        :class:`LikelihoodInfo`.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> score_fn = lambda x, t: -x  # N(0, I) data is stationary under VP
        >>> ll, info = ode_log_likelihood(jax.random.key(0), vp_sde(), score_fn,
        ...                               jnp.zeros((3, 2)), num_steps=20)
        >>> [round(float(v), 3) for v in ll]  # log N(0; 0, I_2) = -log 2π
        [-1.838, -1.838, -1.838]
    """
    check_key("key", key)
    check_sde(sde)
    check_in("trace", trace, TRACES)
    check_in("probe", probe, PROBES)
    check_int("num_probes", num_probes, minimum=1)
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, *event), got shape {x.shape}")
    check_floating("x", x)
    if num_steps is None and time_grid is None:
        num_steps = 100
    if isinstance(solver, AdaptiveSolver):
        if time_grid is None:
            time_grid, num_steps = np.array([sde.T, sde.eps]), None
    elif not isinstance(solver, ButcherTableau):
        raise TypeError(
            f"solver must be a ButcherTableau (e.g. rk4) or an AdaptiveSolver, "
            f"got {type(solver).__name__}"
        )
    grid = _resolve_grid(sde, num_steps, time_grid)[::-1]  # increasing: eps -> T
    check_score_fn(score_fn, x.shape, x.dtype)

    probes = None
    if trace == "hutchinson":
        probe_shape = (num_probes, *x.shape)
        if probe == "rademacher":
            probes = jax.random.rademacher(key, probe_shape, x.dtype)
        else:
            probes = jax.random.normal(key, probe_shape, x.dtype)

    ode = probability_flow(sde, score_fn)

    def v(y, t):
        return ode.drift_fn(y, _batch_time(t, y))

    field_and_div = _divergence_fn(v, x.shape, trace, probes)

    def f(t, state):
        y, _ = state
        return field_and_div(y, t)

    init = (x, jnp.zeros(x.shape[:1], x.dtype))
    (latent, delta), info = integrate(solver, f, init, grid)
    prior_logp = sde.prior_logp_fn(latent)
    return prior_logp + delta, LikelihoodInfo(latent, prior_logp, delta, info)


def uniform_dequantization_offset(
    num_bins: int = 256, low: float = 0.0, high: float = 1.0
) -> float:
    """Nats per dimension to add when a density over scaled data scores discrete data.

    Integers ``k ∈ {0, …, K-1}`` mapped to ``y = low + (k + u)(high - low)/K`` with
    ``u ~ U[0, 1)`` have ``p(k + u) = p_y(y) ((high - low)/K)^D``, and by Jensen
    (Theis et al. 2016) ``-log P(k) <= E_u[-log p(k + u)]``, so

        -log P(k) <= -log p_y(y) + D log(K / (high - low)).

    The offset is ``log(K / (high - low))``: ``log 256`` (8 bits) for data in [0, 1]
    and ``log 128`` (7 bits) for data in [-1, 1].

    Examples:
        >>> round(uniform_dequantization_offset() / math.log(2.0), 6)
        8.0
        >>> round(uniform_dequantization_offset(256, -1.0, 1.0) / math.log(2.0), 6)
        7.0
    """
    check_int("num_bins", num_bins, minimum=2)
    if not high > low:
        raise ValueError(f"need high > low, got low={low}, high={high}")
    return math.log(num_bins / (high - low))


def bits_per_dim(
    log_likelihood_nats: ArrayLike, num_dims: int, *, dequantization_offset: float = 0.0
) -> Float[Array, "..."]:
    """Log-likelihood in nats per example -> negative log-likelihood in bits per dimension.

    ``bpd = (-log p / D + offset) / log 2`` with ``offset`` in nats per dimension, e.g.
    :func:`uniform_dequantization_offset` for 8-bit data (0 for continuous data).
    A thin wrapper of :func:`dgm_jax.metrics.nats_to_bits_per_dim` with
    ``data_scale = exp(-offset)``.

    Examples:
        >>> float(bits_per_dim(-2.0 * math.log(2.0), 2))
        1.0
        >>> off = uniform_dequantization_offset()
        >>> round(float(bits_per_dim(0.0, 784, dequantization_offset=off)), 5)
        8.0
    """
    check_number("dequantization_offset", dequantization_offset)
    ll = jnp.asarray(log_likelihood_nats)
    check_floating("log_likelihood_nats", ll)
    # An offset of c nats per dimension is the change of variables y = e^{-c} x.
    return nats_to_bits_per_dim(-ll, num_dims, data_scale=math.exp(-float(dequantization_offset)))
