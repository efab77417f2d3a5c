"""Runge–Kutta ODE solvers written once, from Butcher tables.

An explicit Runge–Kutta method is data: a :class:`ButcherTableau` of stage
coefficients ``a``, weights ``b``, nodes ``c`` and, for embedded pairs, the weights
``b_error`` of a lower-order solution used to estimate the local error. One step of
size ``h`` from ``(t, y)`` is

    k_i = f(t + c_i h, y + h Σ_{j<i} a_ij k_j),     y_next = y + h Σ_i b_i k_i.

:func:`odeint_fixed` and :func:`odeint_grid` take fixed steps inside ``lax.scan``
(differentiable in reverse mode). :func:`odeint_adaptive` controls the step size
inside ``lax.while_loop`` (Dormand & Prince 1980 with the usual error-per-step
controller, Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4); it supports
forward-mode differentiation (``jax.jvp``) but **not reverse mode** (``jax.grad``),
because ``lax.while_loop`` has no transpose; use a fixed-step solver for gradients.

The state ``y`` may be any pytree of float arrays and ``f(t, y)`` returns the same
structure; ``t`` is a scalar. None of these functions jits itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_number, check_positive
from dgm_jax.types import Array, ArrayLike, PyTree

__all__ = [
    "AdaptiveSolver",
    "ButcherTableau",
    "ODEInfo",
    "adaptive_solver",
    "dopri5",
    "euler",
    "heun",
    "midpoint",
    "odeint_adaptive",
    "odeint_fixed",
    "odeint_grid",
    "rk4",
    "rk_step",
]


class ButcherTableau(NamedTuple):
    """Coefficients of an explicit Runge–Kutta method (static Python floats)."""

    a: tuple[tuple[float, ...], ...]  # row i holds a_ij for j < i; row 0 is empty
    b: tuple[float, ...]  # weights of the solution of order `order`
    c: tuple[float, ...]  # nodes: stage i is evaluated at t + c_i h
    order: int  # order of the solution built from b
    b_error: tuple[float, ...] | None = None  # weights of the embedded solution, or None
    error_order: int | None = None  # order of the embedded solution

    @property
    def num_stages(self) -> int:
        """Function evaluations per step (one fewer after the first with FSAL)."""
        return len(self.b)

    @property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage is f at the step's end point."""
        return self.c[-1] == 1.0 and tuple(self.a[-1]) == tuple(self.b[:-1]) and self.b[-1] == 0


euler = ButcherTableau(a=((),), b=(1.0,), c=(0.0,), order=1)
"""Forward Euler, order 1."""

midpoint = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)
"""The explicit midpoint method, order 2."""

heun = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
"""Heun's method (explicit trapezoid), order 2; EDM's deterministic sampler uses it."""

rk4 = ButcherTableau(
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
    order=4,
)
"""The classical fourth-order Runge–Kutta method."""

dopri5 = ButcherTableau(
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    order=5,
    b_error=(
        5179 / 57600,
        0.0,
        7571 / 16695,
        393 / 640,
        -92097 / 339200,
        187 / 2100,
        1 / 40,
    ),
    error_order=4,
)
"""Dormand & Prince (1980) RK5(4)7FSAL: fifth-order solution, fourth-order error estimate."""


class ODEInfo(NamedTuple):
    """Diagnostics of one ODE solve."""

    num_fn_evals: Array  # int32: evaluations of f (the network, in a sampler)
    num_steps: Array  # int32: accepted steps
    num_rejected: Array  # int32: rejected steps (0 for fixed steps)
    max_steps_reached: Array  # bool: the adaptive solver stopped before t1 (result incomplete)


class AdaptiveSolver(NamedTuple):
    """Settings of :func:`odeint_adaptive`, passed as a value to samplers and likelihoods."""

    tableau: ButcherTableau  # an embedded pair, e.g. dopri5
    rtol: float  # relative tolerance of the local error
    atol: float  # absolute tolerance of the local error
    max_steps: int  # cap on attempted steps; hitting it sets ODEInfo.max_steps_reached
    dt0: float | None  # first step size, or None to choose it automatically


def check_tableau(tableau: ButcherTableau, *, embedded: bool = False) -> None:
    """Raise unless ``tableau`` is a consistent :class:`ButcherTableau`."""
    if not isinstance(tableau, ButcherTableau):
        raise TypeError(
            f"solver must be a ButcherTableau (e.g. rk4) or AdaptiveSolver, "
            f"got {type(tableau).__name__}"
        )
    s = len(tableau.b)
    if s < 1 or len(tableau.c) != s or len(tableau.a) != s:
        raise ValueError(f"tableau needs len(a) == len(b) == len(c) >= 1, got {tableau}")
    if any(len(row) != i for i, row in enumerate(tableau.a)):
        raise ValueError("tableau.a must be strictly lower triangular: row i has i entries")
    if tableau.b_error is not None and len(tableau.b_error) != s:
        raise ValueError(f"tableau.b_error must have {s} entries, got {len(tableau.b_error)}")
    if embedded and (tableau.b_error is None or tableau.error_order is None):
        raise ValueError("adaptive stepping needs a tableau with b_error and error_order")


def _combine(y: PyTree, h: Array, coeffs, ks: list[PyTree]) -> PyTree:
    """``y + h Σ_j coeffs_j k_j`` leaf by leaf, skipping zero coefficients."""

    def leaf(y_leaf, *k_leaves):
        acc = y_leaf
        for coeff, k in zip(coeffs, k_leaves):
            if coeff != 0.0:
                acc = acc + (h * coeff).astype(y_leaf.dtype) * k
        return acc

    return jax.tree_util.tree_map(leaf, y, *ks)


def rk_step(
    tableau: ButcherTableau,
    f: Callable,
    t: ArrayLike,
    y: PyTree,
    h: ArrayLike,
    k1: PyTree | None = None,
) -> tuple[PyTree, PyTree | None, list[PyTree]]:
    """One explicit Runge–Kutta step of size ``h`` (negative to go backwards in time).

    Args:
        tableau: the method.
        f: vector field ``f(t, y)``, with ``t`` a scalar.
        t: current time.
        y: current state (a pytree).
        h: step size.
        k1: ``f(t, y)`` if already known (first-same-as-last reuse).

    Returns:
        ``(y_next, error, stages)``: the step's result, the difference between the two
        embedded solutions (``None`` without ``b_error``) and the list of stage slopes.

    Examples:
        >>> import math
        >>> y, _, _ = rk_step(rk4, lambda t, y: -y, 0.0, jnp.ones(2), 0.1)
        >>> abs(float(y[0]) - math.exp(-0.1)) < 1e-6
        True
    """
    t = jnp.asarray(t, float)
    h = jnp.asarray(h, float)
    ks = [f(t, y) if k1 is None else k1]
    for i in range(1, tableau.num_stages):
        y_stage = _combine(y, h, tableau.a[i], ks)
        ks.append(f(t + tableau.c[i] * h, y_stage))
    y_next = _combine(y, h, tableau.b, ks)
    if tableau.b_error is None:
        return y_next, None, ks
    diff = tuple(b - be for b, be in zip(tableau.b, tableau.b_error))
    error = _combine(jax.tree_util.tree_map(jnp.zeros_like, y), h, diff, ks)
    return y_next, error, ks


def _check_vector_field(f: Callable, y0: PyTree) -> None:
    if not callable(f):
        raise TypeError(f"f must be callable as f(t, y), got {type(f).__name__}")
    t = jax.ShapeDtypeStruct((), jnp.result_type(float))
    out = jax.eval_shape(f, t, y0)
    want = jax.tree_util.tree_structure(y0)
    got = jax.tree_util.tree_structure(out)
    if want != got:
        raise ValueError(f"f(t, y) must return the structure of y0 {want}, got {got}")
    for a, b in zip(jax.tree_util.tree_leaves(y0), jax.tree_util.tree_leaves(out)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"f(t, y) must return arrays shaped like y0: got {jnp.shape(b)} for a "
                f"state of shape {jnp.shape(a)}"
            )


def odeint_grid(tableau: ButcherTableau, f: Callable, y0: PyTree, ts: ArrayLike) -> PyTree:
    """Integrate ``dy/dt = f(t, y)`` with one fixed Runge–Kutta step between consecutive ``ts``.

    ``ts`` may decrease (integrating backwards). Runs in ``lax.scan``, so the result is
    differentiable in reverse mode with respect to ``y0`` and anything ``f`` closes over.

    Args:
        tableau: the method, e.g. :data:`rk4`.
        f: vector field ``f(t, y)``.
        y0: state at ``ts[0]`` (a pytree of float arrays).
        ts: times, shape ``(num_steps + 1,)``, monotone.

    Returns:
        The state at ``ts[-1]``.

    Examples:
        >>> import math
        >>> y = odeint_grid(heun, lambda t, y: -y, jnp.ones(()), jnp.linspace(0.0, 1.0, 101))
        >>> abs(float(y) - math.exp(-1.0)) < 1e-4
        True
    """
    check_tableau(tableau)
    ts = jnp.asarray(ts, float)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 times, got shape {ts.shape}")
    _check_vector_field(f, y0)

    def step(y, t_pair):
        t, t_next = t_pair
        y_next, _, _ = rk_step(tableau, f, t, y, t_next - t)
        return y_next, None

    y1, _ = jax.lax.scan(step, y0, (ts[:-1], ts[1:]))
    return y1


def odeint_fixed(
    tableau: ButcherTableau,
    f: Callable,
    y0: PyTree,
    t0: ArrayLike,
    t1: ArrayLike,
    num_steps: int,
) -> PyTree:
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` in ``num_steps`` equal steps.

    Global error ``O(h^order)`` with ``h = (t1 - t0) / num_steps``; ``f`` is evaluated
    ``tableau.num_stages * num_steps`` times. ``t1 < t0`` integrates backwards.

    Args:
        tableau: the method (:data:`euler`, :data:`heun`, :data:`rk4`, :data:`dopri5`, ...).
        f: vector field ``f(t, y)``, ``t`` a scalar.
        y0: state at ``t0``.
        t0: start time.
        t1: end time.
        num_steps: number of steps, ``>= 1``.

    Returns:
        The state at ``t1``.

    Examples:
        >>> import math
        >>> y = odeint_fixed(rk4, lambda t, y: -y, jnp.ones(()), 0.0, 1.0, 10)
        >>> abs(float(y) - math.exp(-1.0)) < 1e-5
        True
    """
    check_int("num_steps", num_steps, minimum=1)
    check_number("t0", t0)
    check_number("t1", t1)
    ts = jnp.linspace(jnp.asarray(t0, float), jnp.asarray(t1, float), num_steps + 1)
    return odeint_grid(tableau, f, y0, ts)


def _rms_norm(tree: PyTree) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    total = sum(jnp.sum(leaf**2) for leaf in leaves)
    count = sum(leaf.size for leaf in leaves)
    return jnp.sqrt(total / count)


def _scaled(tree: PyTree, y_a: PyTree, y_b: PyTree, rtol: float, atol: float) -> PyTree:
    return jax.tree_util.tree_map(
        lambda e, a, b: e / (atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))),
        tree,
        y_a,
        y_b,
    )


def _initial_step(f, t0, y0, f0, direction, order, rtol, atol):
    """Starting step size of Hairer, Nørsett & Wanner (1993), §II.4; one evaluation of f."""
    d0 = _rms_norm(_scaled(y0, y0, y0, rtol, atol))
    d1 = _rms_norm(_scaled(f0, y0, y0, rtol, atol))
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-30))
    y1 = _combine(y0, direction * h0, (1.0,), [f0])
    f1 = f(t0 + direction * h0, y1)
    diff = jax.tree_util.tree_map(jnp.subtract, f1, f0)
    d2 = _rms_norm(_scaled(diff, y0, y0, rtol, atol)) / h0
    dmax = jnp.maximum(d1, d2)
    h1 = jnp.where(
        dmax <= 1e-15,
        jnp.maximum(1e-6, 1e-3 * h0),
        (0.01 / jnp.maximum(dmax, 1e-30)) ** (1.0 / (order + 1)),
    )
    return jnp.minimum(100.0 * h0, h1)


class _AdaptiveCarry(NamedTuple):
    """Loop state of :func:`odeint_adaptive`."""

    t: Array  # current time
    y: PyTree  # current state
    h: Array  # magnitude of the next step to try
    k1: PyTree  # f(t, y)
    nfe: Array  # function evaluations so far
    accepted: Array  # accepted steps
    rejected: Array  # rejected steps


def odeint_adaptive(
    f: Callable,
    y0: PyTree,
    t0: ArrayLike,
    t1: ArrayLike,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 1000,
    tableau: ButcherTableau = dopri5,
    dt0: float | None = None,
    safety: float = 0.9,
    min_factor: float = 0.2,
    max_factor: float = 10.0,
) -> tuple[PyTree, ODEInfo]:
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` with step-size control.

    An embedded pair (default Dormand–Prince 5(4), advancing with the fifth-order
    solution and reusing the last stage, FSAL) estimates the local error
    ``e``; a step is accepted when ``‖e / (atol + rtol max(|y|, |y_new|))‖_RMS <= 1``,
    and the next step is ``h · clip(safety · err^{-1/(q+1)}, min_factor, max_factor)``
    with ``q`` the embedded order (no growth after a rejection). The RMS norm runs over
    every element of ``y``, so a batch shares one step size; ``jax.vmap`` this function
    for per-example steps.

    Runs in ``lax.while_loop``: usable under ``jax.jit``, ``jax.vmap`` and ``jax.jvp``,
    but **not** ``jax.grad`` (use :func:`odeint_fixed` for reverse-mode gradients). If
    ``max_steps`` attempts do not reach ``t1`` the state where it stopped is returned
    and ``info.max_steps_reached`` is True: check it.

    Args:
        f: vector field ``f(t, y)``.
        y0: state at ``t0`` (a pytree of float arrays).
        t0: start time.
        t1: end time (may be smaller than ``t0``).
        rtol: relative tolerance, ``> 0``.
        atol: absolute tolerance, ``> 0``.
        max_steps: cap on attempted steps, ``>= 1``.
        tableau: an embedded pair with ``b_error`` (default :data:`dopri5`).
        dt0: first step size; chosen automatically (one extra evaluation) if None.
        safety: safety factor of the controller, in (0, 1].
        min_factor: smallest step-size ratio, in (0, 1).
        max_factor: largest step-size ratio, > 1.

    Returns:
        ``(y1, info)``: the state at ``t1`` and an :class:`ODEInfo` with the number of
        function evaluations, accepted and rejected steps and the ``max_steps`` flag.

    Examples:
        >>> import math
        >>> y, info = odeint_adaptive(lambda t, y: -y, jnp.ones(()), 0.0, 1.0, rtol=1e-6)
        >>> abs(float(y) - math.exp(-1.0)) < 1e-5, bool(info.max_steps_reached)
        (True, False)
    """
    check_tableau(tableau, embedded=True)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_int("max_steps", max_steps, minimum=1)
    check_number("t0", t0)
    check_number("t1", t1)
    if dt0 is not None:
        check_positive("dt0", dt0)
    check_positive("safety", safety)
    if not 0.0 < min_factor < 1.0 < max_factor:
        raise ValueError(
            f"need 0 < min_factor < 1 < max_factor, got min_factor={min_factor}, "
            f"max_factor={max_factor}"
        )
    _check_vector_field(f, y0)

    t0 = jnp.asarray(t0, float)
    t1 = jnp.asarray(t1, float)
    direction = jnp.sign(t1 - t0)
    exponent = -1.0 / (min(tableau.order, tableau.error_order) + 1)
    f0 = f(t0, y0)
    if dt0 is None:
        h_init = _initial_step(f, t0, y0, f0, direction, tableau.order, rtol, atol)
        nfe0 = 2
    else:
        h_init = jnp.asarray(dt0, float)
        nfe0 = 1
    fsal = tableau.fsal

    def not_done(carry):
        return (direction * (t1 - carry.t) > 0) & (carry.accepted + carry.rejected < max_steps)

    def body(carry):
        remaining = jnp.abs(t1 - carry.t)
        last = carry.h >= remaining
        h_signed = direction * jnp.minimum(carry.h, remaining)
        y_new, error, ks = rk_step(tableau, f, carry.t, carry.y, h_signed, carry.k1)
        err = _rms_norm(_scaled(error, carry.y, y_new, rtol, atol))
        accept = err <= 1.0
        factor = jnp.clip(
            safety * jnp.where(err > 0, err, 1e-10) ** exponent, min_factor, max_factor
        )
        factor = jnp.where(accept, factor, jnp.minimum(factor, 1.0))
        t_new = jnp.where(last, t1, carry.t + h_signed)
        if fsal:
            k_new, extra = ks[-1], 0
        else:
            k_new, extra = f(t_new, y_new), 1

        def pick(new, old):
            return jnp.where(accept, new, old)

        return _AdaptiveCarry(
            t=pick(t_new, carry.t),
            y=jax.tree_util.tree_map(pick, y_new, carry.y),
            h=jnp.abs(h_signed) * factor,
            k1=jax.tree_util.tree_map(pick, k_new, carry.k1),
            nfe=carry.nfe + tableau.num_stages - 1 + extra,
            accepted=carry.accepted + accept.astype(jnp.int32),
            rejected=carry.rejected + (~accept).astype(jnp.int32),
        )

    init = _AdaptiveCarry(
        t=t0,
        y=y0,
        h=jnp.minimum(h_init, jnp.abs(t1 - t0)),
        k1=f0,
        nfe=jnp.int32(nfe0),
        accepted=jnp.int32(0),
        rejected=jnp.int32(0),
    )
    final = jax.lax.while_loop(not_done, body, init)
    info = ODEInfo(
        num_fn_evals=final.nfe,
        num_steps=final.accepted,
        num_rejected=final.rejected,
        max_steps_reached=direction * (t1 - final.t) > 0,
    )
    return final.y, info


def adaptive_solver(
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 1000,
    *,
    tableau: ButcherTableau = dopri5,
    dt0: float | None = None,
) -> AdaptiveSolver:
    """Settings for :func:`odeint_adaptive`, to pass as ``solver=`` to samplers and likelihoods.

    Examples:
        >>> adaptive_solver(rtol=1e-4).tableau.order
        5
    """
    check_tableau(tableau, embedded=True)
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_int("max_steps", max_steps, minimum=1)
    if dt0 is not None:
        check_positive("dt0", dt0)
    return AdaptiveSolver(tableau, rtol, atol, max_steps, dt0)


def integrate(
    solver: ButcherTableau | AdaptiveSolver, f: Callable, y0: PyTree, ts: Array
) -> tuple[PyTree, ODEInfo]:
    """Solve on the grid ``ts`` with a fixed tableau, or from ``ts[0]`` to ``ts[-1]`` adaptively.

    Used by the samplers and the likelihood; returns ``(y1, info)`` in both cases.
    """
    if isinstance(solver, AdaptiveSolver):
        return odeint_adaptive(
            f,
            y0,
            ts[0],
            ts[-1],
            rtol=solver.rtol,
            atol=solver.atol,
            max_steps=solver.max_steps,
            tableau=solver.tableau,
            dt0=solver.dt0,
        )
    check_tableau(solver)
    y1 = odeint_grid(solver, f, y0, ts)
    num_steps = ts.shape[0] - 1
    info = ODEInfo(
        num_fn_evals=jnp.int32(solver.num_stages * num_steps),
        num_steps=jnp.int32(num_steps),
        num_rejected=jnp.int32(0),
        max_steps_reached=jnp.bool_(False),
    )
    return y1, info
