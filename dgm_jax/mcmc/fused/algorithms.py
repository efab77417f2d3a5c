"""HMC, MALA, ULA and random-walk Metropolis written on lanes: one ``(B,)`` vector per coordinate.

Inside a fused kernel a block of ``B`` chains is held as ``d`` vectors of shape
``(B,)`` (one per coordinate of the flattened position) plus the log density and,
for gradient-based kernels, ``d`` gradient vectors. The functions here advance such
a block by one MCMC transition with only elementwise operations, in the same order
of operations as the ordinary kernels of :mod:`dgm_jax.mcmc` (so that, fed the same
random numbers, both agree to float rounding). Settings become Python floats:
a Pallas kernel may not capture array constants.

The random numbers of one transition are ``num_normals`` standard normals and, for
kernels with a Metropolis test, one uniform. :attr:`FusedAlgorithm.draw_noise`
draws them from a transition key exactly as the ordinary kernel's ``step`` does
(``split`` into a proposal and an accept key), which is how the ``"predrawn"``
random numbers of the fused backend reproduce the ordinary driver's chains.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax.mcmc import mala
    >>> kernel = mala(lambda x: -0.5 * jnp.sum(x**2), step_size=0.1)
    >>> alg = build_algorithm(kernel.fusion, jnp.zeros(2))
    >>> xs = [jnp.zeros(4), jnp.ones(4)]
    >>> lp, gs = alg.value_and_grad(xs)
    >>> state, info = alg.step(LaneState(xs, lp, gs), [jnp.zeros(4)] * 2, jnp.full(4, 0.5))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dgm_jax.mcmc.base import FusionSpec, metropolis_test
from dgm_jax.mcmc.fused.lanes import FusionError, lane_value, lane_value_and_grad

__all__ = ["FusedAlgorithm", "LaneInfo", "LaneState", "build_algorithm"]

Lanes = Sequence[Any]  # d arrays of shape (B,)

ACCEPTED = 1  # bit of LaneInfo.flags
DIVERGENT = 2  # bit of LaneInfo.flags


class LaneState(NamedTuple):
    """A block of chains: coordinates, log densities and (gradient kernels) gradients."""

    position: tuple  # d lanes
    logdensity: Any  # one lane
    logdensity_grad: tuple | None  # d lanes, or None for random-walk Metropolis


class LaneInfo(NamedTuple):
    """Diagnostics of one transition of a block (kept compact for the kernel's stores)."""

    acceptance_rate: Any  # lane, float
    energy_error: Any  # lane, float (see the ordinary kernel's Info)
    flags: Any  # lane, int32: ACCEPTED | DIVERGENT bits


class FusedAlgorithm(NamedTuple):
    """A kernel in lane form, with what a fused driver needs to know about it."""

    name: str
    num_dims: int
    num_normals: int  # standard normals per transition
    uses_uniform: bool  # one uniform per transition for the Metropolis test
    uses_grad: bool  # the state carries the gradient
    num_grad_evals: int  # per transition (the Info's num_integration_steps)
    lane_ops_per_step: int  # lane operations of the log density per transition (FLOP estimate)
    value_and_grad: Callable[[Lanes], tuple[Any, tuple]]  # or value only when not uses_grad
    step: Callable[..., tuple[LaneState, LaneInfo]]  # (state, normals, uniform) -> (state, info)
    draw_noise: Callable[[Any], tuple[Any, Any]]  # key -> ((num_normals,), () or None)


def _concrete_float(name: str, value: Any) -> float:
    """A Python float equal to the (concrete) value, computed in its own precision."""
    if isinstance(value, jax.core.Tracer):
        raise FusionError(
            f"{name} must be a concrete number for the fused backend (it is baked into the "
            "compiled kernel), got a traced value"
        )
    return float(np.asarray(value))


def _concrete_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, jax.core.Tracer):
        raise FusionError(f"{name} must be concrete for the fused backend, got a traced value")
    return np.asarray(value)


def _times(value: Any, lanes: Any) -> Any:
    """``value * lane`` with exact 0 and 1 folded away (no op emitted)."""
    if value == 1.0:
        return lanes
    return value * lanes


def _linear(matrix: np.ndarray, lanes: Lanes) -> tuple:
    """``matrix @ lanes`` row by row, skipping zero coefficients."""
    rows = []
    for row in matrix:
        acc = None
        for coef, lane in zip(row, lanes, strict=True):
            if coef == 0.0:
                continue
            term = _times(float(coef), lane)
            acc = term if acc is None else acc + term
        rows.append(acc if acc is not None else jnp.zeros_like(lanes[0]))
    return tuple(rows)


def _sum(lanes: Sequence[Any]) -> Any:
    acc = lanes[0]
    for lane in lanes[1:]:
        acc = acc + lane
    return acc


def _select(accepted: Any, new: LaneState, old: LaneState) -> LaneState:
    pick = lambda a, b: jnp.where(accepted, a, b)  # noqa: E731
    grad = None
    if new.logdensity_grad is not None:
        grad = tuple(map(pick, new.logdensity_grad, old.logdensity_grad))
    return LaneState(
        tuple(map(pick, new.position, old.position)), pick(new.logdensity, old.logdensity), grad
    )


def _flags(accepted: Any, divergent: Any) -> Any:
    return accepted.astype(jnp.int32) * ACCEPTED + divergent.astype(jnp.int32) * DIVERGENT


def _split_noise(num_dims: int, dtype: Any) -> Callable:
    """``split(key) -> normal(proposal key, (d,)), uniform(accept key)``, as the kernels do."""

    def draw(key):
        key_proposal, key_accept = jax.random.split(key)
        normals = jax.random.normal(key_proposal, (num_dims,), dtype)
        return normals, jax.random.uniform(key_accept, (), dtype)

    return draw


# -- HMC -------------------------------------------------------------------------


def _hmc(spec: FusionSpec, num_dims: int, dtype: Any, max_ops: int) -> FusedAlgorithm:
    params = spec.params
    inv = _concrete_array("inverse_mass_matrix", params["inverse_mass_matrix"])
    if inv.shape not in ((num_dims,), (num_dims, num_dims)):
        raise ValueError(
            f"inverse_mass_matrix must have shape ({num_dims},) or ({num_dims}, {num_dims}) "
            f"to match the flattened position of size {num_dims}, got {inv.shape}"
        )
    step_size = params["step_size"]
    _concrete_float("step_size", step_size)
    num_steps = int(params["num_integration_steps"])
    coefficients = tuple(params["coefficients"])
    threshold = _concrete_float("divergence_threshold", params["divergence_threshold"])
    value_and_grad, num_ops = lane_value_and_grad(
        spec.logdensity_fn, num_dims, dtype, max_ops=max_ops
    )

    with jax.ensure_compile_time_eval():
        # The same constants, computed by the same expressions, as mass_matrix.build_metric.
        inv_j = jnp.asarray(inv)
        if inv.ndim == 1:
            momentum_scale = np.asarray(jax.lax.rsqrt(inv_j), np.float64)
        else:
            import jax.scipy.linalg as jsl

            cholesky = jnp.linalg.cholesky(inv_j)
            eye = jnp.eye(num_dims, dtype=inv_j.dtype)
            momentum_factor = np.asarray(
                jsl.solve_triangular(cholesky, eye, lower=True).T, np.float64
            )
        # Step fractions as integrators.Integrator.trajectory computes them.
        b1 = coefficients[0]
        h_first = _concrete_float("step_size", b1 * step_size)
        h_join = _concrete_float("step_size", 2 * b1 * step_size)
        h_inner = [_concrete_float("step_size", c * step_size) for c in coefficients[1:-1]]
    inv64 = np.asarray(inv, np.float64)

    def momentum_from_normals(normals):
        if inv.ndim == 1:
            return tuple(_times(float(s), z) for s, z in zip(momentum_scale, normals, strict=True))
        return _linear(momentum_factor, normals)

    def velocity(momentum):
        if inv.ndim == 1:
            return tuple(_times(float(m), p) for m, p in zip(inv64, momentum, strict=True))
        return _linear(inv64, momentum)

    def kinetic_energy(momentum):
        if inv.ndim == 1:
            return 0.5 * _sum([_times(float(m), p * p) for m, p in zip(inv64, momentum)])
        return 0.5 * _sum([p * v for p, v in zip(momentum, velocity(momentum), strict=True)])

    def kick(momentum, grad, h):
        return tuple(p + h * g for p, g in zip(momentum, grad, strict=True))

    def inner(carry):
        position, momentum, logdensity, grad = carry
        for i, h in enumerate(h_inner):
            if i % 2 == 0:  # drift, then one gradient evaluation
                position = tuple(
                    q + h * v for q, v in zip(position, velocity(momentum), strict=True)
                )
                logdensity, grad = value_and_grad(position)
            else:
                momentum = kick(momentum, grad, h)
        return position, momentum, logdensity, tuple(grad)

    def trajectory(position, momentum, logdensity, grad):
        momentum = kick(momentum, grad, h_first)

        def body(_, carry):
            position, momentum, logdensity, grad = inner(carry)
            return position, kick(momentum, grad, h_join), logdensity, grad

        carry = (tuple(position), momentum, logdensity, tuple(grad))
        if num_steps > 1:
            carry = jax.lax.fori_loop(0, num_steps - 1, body, carry)
        position, momentum, logdensity, grad = inner(carry)
        return position, kick(momentum, grad, h_first), logdensity, grad

    def step(state: LaneState, normals, uniform):
        momentum = momentum_from_normals(normals)
        energy0 = -state.logdensity + kinetic_energy(momentum)
        position, momentum, logdensity, grad = trajectory(
            state.position, momentum, state.logdensity, state.logdensity_grad
        )
        energy1 = -logdensity + kinetic_energy(momentum)
        energy_error = energy1 - energy0
        acceptance, accepted = metropolis_test(-energy_error, uniform)
        divergent = ~(jnp.abs(energy_error) <= threshold)
        new = _select(accepted, LaneState(position, logdensity, grad), state)
        return new, LaneInfo(acceptance, energy_error, _flags(accepted, divergent))

    num_grad = len(coefficients) // 2
    return FusedAlgorithm(
        "hmc",
        num_dims,
        num_dims,
        True,
        True,
        num_steps * num_grad,
        num_ops * num_steps * num_grad,
        value_and_grad,
        step,
        _split_noise(num_dims, dtype),
    )


# -- Langevin --------------------------------------------------------------------


def _langevin(spec: FusionSpec, num_dims: int, dtype: Any, max_ops: int) -> FusedAlgorithm:
    step_size = spec.params["step_size"]
    h = _concrete_float("step_size", step_size)
    with jax.ensure_compile_time_eval():
        scale = float(np.asarray(jnp.sqrt(2.0 * step_size)))  # as langevin._propose
        four_h = float(np.asarray(4.0 * jnp.asarray(step_size)))
    value_and_grad, num_ops = lane_value_and_grad(
        spec.logdensity_fn, num_dims, dtype, max_ops=max_ops
    )
    adjusted = spec.algorithm == "mala"

    def propose(state: LaneState, normals) -> LaneState:
        position = tuple(
            x + h * g + scale * z
            for x, g, z in zip(state.position, state.logdensity_grad, normals, strict=True)
        )
        logdensity, grad = value_and_grad(position)
        return LaneState(position, logdensity, tuple(grad))

    def log_transition(to: LaneState, frm: LaneState):
        diffs = [
            y - x - h * g
            for y, x, g in zip(to.position, frm.position, frm.logdensity_grad, strict=True)
        ]
        return -_sum([r * r for r in diffs]) / four_h

    def step(state: LaneState, normals, uniform):
        proposal = propose(state, normals)
        divergent = ~jnp.isfinite(proposal.logdensity)
        if not adjusted:
            ones = jnp.ones_like(proposal.logdensity)
            zeros = jnp.zeros_like(proposal.logdensity)
            info = LaneInfo(ones, zeros, _flags(jnp.ones_like(divergent), divergent))
            return proposal, info
        log_ratio = (
            proposal.logdensity
            - state.logdensity
            + log_transition(state, proposal)
            - log_transition(proposal, state)
        )
        acceptance, accepted = metropolis_test(log_ratio, uniform)
        new = _select(accepted, proposal, state)
        return new, LaneInfo(acceptance, -log_ratio, _flags(accepted, divergent))

    if adjusted:
        draw_noise = _split_noise(num_dims, dtype)
    else:

        def draw_noise(key):
            return jax.random.normal(key, (num_dims,), dtype), None

    return FusedAlgorithm(
        spec.algorithm,
        num_dims,
        num_dims,
        adjusted,
        True,
        1,
        num_ops,
        value_and_grad,
        step,
        draw_noise,
    )


# -- random-walk Metropolis ------------------------------------------------------


def _rwm(spec: FusionSpec, num_dims: int, dtype: Any, max_ops: int) -> FusedAlgorithm:
    scale = _concrete_array("scale", spec.params["scale"]).astype(np.float64)
    scales = np.broadcast_to(scale, (num_dims,))
    value, num_ops = lane_value(spec.logdensity_fn, num_dims, dtype, max_ops=max_ops)

    def step(state: LaneState, normals, uniform):
        position = tuple(
            x + _times(float(s), z) for x, s, z in zip(state.position, scales, normals, strict=True)
        )
        logdensity = value(position)
        log_ratio = logdensity - state.logdensity
        acceptance, accepted = metropolis_test(log_ratio, uniform)
        new = _select(accepted, LaneState(position, logdensity, None), state)
        divergent = jnp.zeros_like(accepted)
        return new, LaneInfo(acceptance, -log_ratio, _flags(accepted, divergent))

    return FusedAlgorithm(
        "rwm",
        num_dims,
        num_dims,
        True,
        False,
        0,
        num_ops,
        value,
        step,
        _split_noise(num_dims, dtype),
    )


_BUILDERS = {"hmc": _hmc, "mala": _langevin, "ula": _langevin, "rwm": _rwm}


def build_algorithm(
    spec: FusionSpec | None, position: Any, *, max_ops: int = 50_000
) -> FusedAlgorithm:
    """The lane form of the kernel described by ``spec`` (``SamplingAlgorithm.fusion``).

    Args:
        spec: the kernel's :class:`~dgm_jax.mcmc.base.FusionSpec`.
        position: one chain's position pytree (arrays or ``jax.ShapeDtypeStruct``):
            the lanes are the entries of its flattened form (``ravel_pytree`` order).
        max_ops: limit on the unrolled log density's lane operations.

    Returns:
        A :class:`FusedAlgorithm`.

    Raises:
        FusionError: no spec (a kernel the backend does not know, such as NUTS), a
            setting it cannot fuse, or a log density it cannot compile.
    """
    if spec is None:
        raise FusionError(
            "this kernel cannot be fused: the fused backend supports the kernels built by "
            "dgm_jax.mcmc.hmc, mala, ula and rwm (NUTS and user-written kernels run with "
            "backend=None)"
        )
    if spec.unsupported is not None:
        raise FusionError(f"{spec.unsupported} cannot be fused; use backend=None")
    if spec.algorithm not in _BUILDERS:
        raise FusionError(f"unknown algorithm {spec.algorithm!r} for the fused backend")
    leaves = jax.tree_util.tree_leaves(position)
    dtypes = {jnp.dtype(leaf.dtype) for leaf in leaves}
    if dtypes != {jnp.dtype(jnp.float32)}:
        raise FusionError(
            f"the fused backend samples float32 positions, got {sorted(map(str, dtypes))}"
        )
    shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), position)
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    return _build_cached(spec, treedef, tuple(leaves), max_ops)


@functools.lru_cache(maxsize=64)
def _build_cached(spec: FusionSpec, treedef: Any, leaves: tuple, max_ops: int) -> FusedAlgorithm:
    """The lane form, built once per kernel spec, position shapes and ``max_ops``."""
    zeros = jax.tree_util.tree_unflatten(treedef, [np.zeros(x.shape, x.dtype) for x in leaves])
    flat, unravel = ravel_pytree(zeros)
    logdensity_fn = spec.logdensity_fn
    flat_spec = FusionSpec(
        spec.algorithm,
        lambda x: logdensity_fn(unravel(x)),
        spec.params,
        spec.state_type,
        spec.info_type,
    )
    return _BUILDERS[spec.algorithm](flat_spec, int(flat.shape[0]), jnp.float32, max_ops)


def noise_slots(alg: FusedAlgorithm) -> int:
    """Rows of pre-drawn noise per transition: the normals, then the uniform."""
    return alg.num_normals + int(alg.uses_uniform)


def counter_calls(alg: FusedAlgorithm) -> int:
    """Threefry calls per transition in counter mode: one per pair of normals, one uniform."""
    return math.ceil(alg.num_normals / 2) + int(alg.uses_uniform)
