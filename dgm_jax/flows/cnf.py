"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019).

A vector field ``v(x, t)`` carries data at ``t0`` to a Gaussian latent at ``t1``. Along a
solution, the instantaneous change of variables gives ``d log p_t(x_t)/dt = -∇·v``, so

    log p_{t0}(x) = log N(x_{t1}; 0, I) + ∫_{t0}^{t1} ∇·v(x_t, t) dt,

integrated jointly with ``x_t`` by dgm_jax's Runge–Kutta solvers
(:mod:`dgm_jax.sde.solvers`). The divergence is the exact trace (``D`` Jacobian-vector
products; low dimension) or Hutchinson's unbiased estimate ``zᵀ (∂v/∂x) z`` with probes
fixed along the path (FFJORD), built by :func:`dgm_jax.sde.build_divergence_fn`.
Sampling integrates the ODE backwards from ``x_{t1} ~ N(0, I)``.

Conventions as in :mod:`dgm_jax.sde`: batch-first ``field_fn(x, t)`` with ``x`` of shape
``(batch, *event)`` and ``t`` of shape ``(batch,)``, treating examples independently.
A fixed-step tableau is reverse-mode differentiable (training by maximum likelihood); an
:class:`~dgm_jax.sde.solvers.AdaptiveSolver` is forward-mode only (evaluation). Nothing is
jitted here.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> field_fn = lambda x, t: -0.5 * x  # shrinks data: N(0, e²I) at t0 -> N(0, I) at t1=2
    >>> lp, info = cnf_log_prob(jax.random.key(0), field_fn, jnp.zeros((1, 2)), t1=2.0)
    >>> round(float(lp[0]), 4)  # log N(0; 0, e² I) = -log 2π - 2
    -3.8379
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_floating, check_in, check_int, check_key, check_number
from dgm_jax.flows.models import standard_normal_logpdf
from dgm_jax.sde.likelihood import PROBES, TRACES, build_divergence_fn, hutchinson_probes
from dgm_jax.sde.solvers import AdaptiveSolver, ButcherTableau, ODEInfo, integrate, rk4
from dgm_jax.types import Array, Float, PRNGKeyArray

__all__ = [
    "CNFInfo",
    "build_cnf_nll_loss",
    "cnf_log_prob",
    "cnf_regularizers",
    "cnf_sample",
]

FieldFn = Callable[[Array, Array], Array]


class CNFInfo(NamedTuple):
    """What :func:`cnf_log_prob` computed besides the log-density."""

    latent: Array  # x at t1, shape (batch, *event)
    base_logp: Array  # log N(latent; 0, I), shape (batch,)
    delta_logp: Array  # ∫ div v dt from t0 to t1, shape (batch,)
    ode: ODEInfo  # solver diagnostics


def _check_solver(solver) -> None:
    if not isinstance(solver, (ButcherTableau, AdaptiveSolver)):
        raise TypeError(
            f"solver must be a ButcherTableau (e.g. rk4) or an AdaptiveSolver, "
            f"got {type(solver).__name__}"
        )


def _grid(solver, t0, t1, num_steps) -> Array:
    check_number("t0", t0)
    check_number("t1", t1)
    if isinstance(solver, AdaptiveSolver):
        return jnp.asarray([t0, t1], jnp.float32)
    check_int("num_steps", num_steps, minimum=1)
    return jnp.linspace(jnp.float32(t0), jnp.float32(t1), num_steps + 1)


def _batched_field(field_fn: FieldFn):
    def v(x, t):
        return field_fn(x, jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1]))

    return v


def _check_field(field_fn, x) -> None:
    if not callable(field_fn):
        raise TypeError(f"field_fn must be callable as field_fn(x, t), got {type(field_fn)}")
    t = jax.ShapeDtypeStruct(x.shape[:1], x.dtype)
    out = jax.eval_shape(field_fn, jax.ShapeDtypeStruct(x.shape, x.dtype), t)
    if getattr(out, "shape", None) != x.shape:
        raise ValueError(
            f"field_fn(x, t) must return an array of x's shape {x.shape}, "
            f"got {getattr(out, 'shape', type(out))}"
        )


def _check_inputs(key, field_fn, x, solver, t0, t1, num_steps) -> tuple[Array, Array]:
    """Validate the arguments shared by the log-density functions; ``(x, time grid)``."""
    check_key("key", key)
    _check_solver(solver)
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, *event), got shape {x.shape}")
    check_floating("x", x)
    _check_field(field_fn, x)
    return x, _grid(solver, t0, t1, num_steps)


def cnf_log_prob(
    key: PRNGKeyArray,
    field_fn: FieldFn,
    x: Float[Array, " batch *event"],
    *,
    trace: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    solver: ButcherTableau | AdaptiveSolver = rk4,
    num_steps: int = 20,
    t0: float = 0.0,
    t1: float = 1.0,
) -> tuple[Float[Array, " batch"], CNFInfo]:
    """``log p_{t0}(x)`` in nats per example under the CNF ``dx/dt = field_fn(x, t)``.

    Args:
        key: PRNG key (draws Hutchinson probes; unused for the exact trace).
        field_fn: ``field_fn(x, t)`` on a batch, ``t`` of shape ``(batch,)``.
        x: data, shape ``(batch, *event)``.
        trace: ``"exact"`` or ``"hutchinson"``.
        num_probes: Hutchinson probes per example (averaged), ``>= 1``.
        probe: ``"rademacher"`` or ``"gaussian"``.
        solver: fixed-step tableau (reverse-mode differentiable) or ``AdaptiveSolver``.
        num_steps: steps of a fixed solver from ``t0`` to ``t1``.
        t0: data time.
        t1: latent time (``N(0, I)`` there).

    Returns:
        ``(log_prob, info)``: shape ``(batch,)`` and a :class:`CNFInfo`.

    Examples:
        >>> A = jnp.array([[0.1, 0.3], [-0.2, 0.4]])
        >>> lp, _ = cnf_log_prob(jax.random.key(0), lambda x, t: x @ A.T, jnp.ones((3, 2)),
        ...                      trace="hutchinson", num_probes=4)
        >>> lp.shape
        (3,)
    """
    check_in("trace", trace, TRACES)
    check_in("probe", probe, PROBES)
    check_int("num_probes", num_probes, minimum=1)
    x, grid = _check_inputs(key, field_fn, x, solver, t0, t1, num_steps)
    probes = None
    if trace == "hutchinson":
        probes = hutchinson_probes(key, (num_probes, *x.shape), probe, x.dtype)
    field_and_div = build_divergence_fn(_batched_field(field_fn), x.shape, trace, probes)

    def f(t, state):
        y, _ = state
        return field_and_div(y, t)

    init = (x, jnp.zeros(x.shape[:1], x.dtype))
    (latent, delta), info = integrate(solver, f, init, grid)
    base = standard_normal_logpdf(latent)
    return base + delta, CNFInfo(latent, base, delta, info)


def cnf_sample(
    key: PRNGKeyArray,
    field_fn: FieldFn,
    shape: tuple[int, ...],
    *,
    solver: ButcherTableau | AdaptiveSolver = rk4,
    num_steps: int = 20,
    t0: float = 0.0,
    t1: float = 1.0,
    temperature: float = 1.0,
) -> tuple[Float[Array, " batch *event"], ODEInfo]:
    """Samples: ``x_{t1} ~ N(0, temperature² I)`` of ``shape``, integrated back to ``t0``.

    Examples:
        >>> x, info = cnf_sample(jax.random.key(0), lambda x, t: 0 * x, (4, 2))
        >>> x.shape, int(info.num_fn_evals)
        ((4, 2), 80)
    """
    check_key("key", key)
    _check_solver(solver)
    shape = tuple(shape)
    if len(shape) < 2 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be (batch, *event) of positive ints, got {shape}")
    z = temperature * jax.random.normal(key, shape)
    _check_field(field_fn, z)
    grid = _grid(solver, t1, t0, num_steps)
    v = _batched_field(field_fn)
    return integrate(solver, lambda t, y: v(y, t), z, grid)


def cnf_regularizers(
    key: PRNGKeyArray,
    field_fn: FieldFn,
    x: Float[Array, " batch *event"],
    *,
    solver: ButcherTableau = rk4,
    num_steps: int = 20,
    t0: float = 0.0,
    t1: float = 1.0,
) -> tuple[Float[Array, " batch"], Float[Array, " batch"], Float[Array, " batch"]]:
    """``log p_{t0}(x)`` (exact trace) with RNODE's two path integrals (Finlay et al. 2020).

    Integrated jointly with the flow from ``t0`` to ``t1``: the kinetic energy
    ``∫ ‖v(x_t, t)‖² dt`` and the Jacobian's squared Frobenius norm ``∫ ‖∂v/∂x‖_F² dt``,
    the latter as Hutchinson's ``‖(∂v/∂x) ε‖²`` with one Rademacher probe fixed along the
    path (exact when ``∂v/∂x`` is a multiple of the identity). Penalising them keeps the
    learned dynamics smooth, so that a few fixed solver steps stay accurate: without them,
    maximum likelihood through a coarse fixed-step solver can drive the field to regions
    where the discrete trajectory's log-determinant no longer matches the flow's, and the
    training NLL falls without bound while the density collapses.

    Returns:
        ``(log_prob, kinetic, jacobian_frobenius)``, each of shape ``(batch,)``.

    Examples:
        >>> lp, kin, frob = cnf_regularizers(jax.random.key(0), lambda x, t: 2.0 * x,
        ...                                  jnp.zeros((3, 2)))
        >>> float(kin[0]), round(float(frob[0]), 4)  # v = 0 on the path; ‖2I‖_F² = 8
        (0.0, 8.0)
    """
    x, grid = _check_inputs(key, field_fn, x, solver, t0, t1, num_steps)
    v = _batched_field(field_fn)
    field_and_div = build_divergence_fn(v, x.shape, "exact")
    probe = hutchinson_probes(key, (1, *x.shape), "rademacher", x.dtype)[0]
    axes = tuple(range(1, x.ndim))

    def f(t, state):
        y = state[0]
        velocity, div = field_and_div(y, t)
        _, jac_probe = jax.jvp(lambda z: v(z, t), (y,), (probe,))
        kinetic = jnp.sum(velocity**2, axis=axes)
        frobenius = jnp.sum(jac_probe**2, axis=axes)
        return velocity, div, kinetic, frobenius

    zeros = jnp.zeros(x.shape[:1], x.dtype)
    (latent, delta, kinetic, frobenius), _ = integrate(solver, f, (x, zeros, zeros, zeros), grid)
    return standard_normal_logpdf(latent) + delta, kinetic, frobenius


def build_cnf_nll_loss(
    apply_fn: Callable[[object, Array, Array], Array],
    *,
    trace: str = "exact",
    num_probes: int = 1,
    solver: ButcherTableau = rk4,
    num_steps: int = 10,
    t1: float = 1.0,
    kinetic_weight: float = 0.0,
    jacobian_weight: float = 0.0,
) -> Callable:
    """Maximum-likelihood loss ``loss_fn(params, key, batch)`` for a CNF on continuous data.

    ``apply_fn(params, x, t)`` is the network (e.g. ``TimeConditionedMLP(...).apply``).
    The loss is the mean negative log-likelihood in nats, differentiated through the
    fixed-step solver (discretise-then-optimise); metrics hold ``"nll"``. With a positive
    ``kinetic_weight`` or ``jacobian_weight`` the RNODE penalties of
    :func:`cnf_regularizers` are added (exact trace; metrics also hold ``"kinetic"`` and
    ``"jacobian_frobenius"``): use them whenever ``num_steps`` is small.

    Examples:
        >>> loss_fn = build_cnf_nll_loss(lambda p, x, t: p * x)
        >>> loss, m = loss_fn(jnp.float32(0.0), jax.random.key(0), jnp.zeros((2, 2)))
        >>> round(float(loss), 4)
        1.8379
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    if not isinstance(solver, ButcherTableau):
        raise TypeError("solver must be a fixed-step ButcherTableau for reverse-mode training")
    check_in("trace", trace, TRACES)
    for name, weight in (("kinetic_weight", kinetic_weight), ("jacobian_weight", jacobian_weight)):
        check_number(name, weight)
        if not weight >= 0:
            raise ValueError(f"{name} must be >= 0, got {weight}")
    regularized = kinetic_weight > 0 or jacobian_weight > 0
    if regularized and trace != "exact":
        raise ValueError("kinetic_weight/jacobian_weight need trace='exact'")

    def regularized_loss_fn(params, key, batch):
        lp, kinetic, frobenius = cnf_regularizers(
            key,
            lambda x, t: apply_fn(params, x, t),
            batch,
            solver=solver,
            num_steps=num_steps,
            t1=t1,
        )
        nll = -jnp.mean(lp)
        kinetic, frobenius = jnp.mean(kinetic), jnp.mean(frobenius)
        loss = nll + kinetic_weight * kinetic + jacobian_weight * frobenius
        return loss, {"nll": nll, "kinetic": kinetic, "jacobian_frobenius": frobenius}

    def loss_fn(params, key, batch):
        lp, _ = cnf_log_prob(
            key,
            lambda x, t: apply_fn(params, x, t),
            batch,
            trace=trace,
            num_probes=num_probes,
            solver=solver,
            num_steps=num_steps,
            t1=t1,
        )
        nll = -jnp.mean(lp)
        return nll, {"nll": nll}

    return regularized_loss_fn if regularized else loss_fn
