"""The No-U-Turn Sampler with multinomial sampling and an iterative tree builder.

Each transition draws a momentum and doubles a trajectory of integrator steps, each
time in a random direction, until the trajectory makes a U-turn, diverges or reaches
``2^max_tree_depth - 1`` steps (Hoffman & Gelman, "The No-U-Turn Sampler", JMLR 15,
2014). The sample is drawn from the trajectory with probability proportional to
``exp(-H)``: uniformly-progressive within each new subtree and biased-progressive
when the subtree is appended (Betancourt, "A Conceptual Introduction to Hamiltonian
Monte Carlo", 2017, appendix A). The U-turn criterion is the generalised one on
momentum sums (Betancourt, "Generalizing the No-U-Turn Sampler to Riemannian
manifolds", 2013): a (sub)trajectory from leaf ``-`` to leaf ``+`` goes on while
``v_- . rho > 0`` and ``v_+ . rho > 0``, ``v = M^{-1} p``, with
``rho = sum(p) - (p_- + p_+) / 2`` the trapezoidal estimate of the integral of the
momentum (so ``v . rho`` tracks Hoffman & Gelman's ``v . (q_+ - q_-)``); the plain
sum gives noticeably longer trajectories on correlated targets.

The recursion of the original algorithm is replaced by loops so the kernel compiles
under ``jax.jit`` and batches under ``jax.vmap``: a subtree of ``2^k`` leaves is built
leaf by leaf, and the U-turn checks of all its balanced sub-subtrees use at most ``k``
stored checkpoints (momentum sum and velocity at the first leaf of every pending
sub-subtree): the sub-subtrees that end at leaf ``n`` are those of sizes ``2^1 ... 2^t``
with ``t`` the number of trailing one bits of ``n``; the checkpoint of a sub-subtree
starting at an even leaf ``m`` is kept in slot ``popcount(m)``.

The random numbers of the tree (the direction and merge draw of every doubling and
one uniform per leaf) are the outputs of the counter-based Threefry-2x32 generator
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) under a key
drawn once per transition, with the (doubling, leaf) indices as counters: the same
numbers as ``jax.random.fold_in``, computed as one fused elementwise expression
instead of ``jax.random``'s rolled loop (which on CPU cost more than the rest of a
leaf). For targets of a few dimensions the U-turn dot products are written out
coordinate by coordinate for the same reason.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> kernel = nuts(lambda x: -0.5 * jnp.sum(x**2), step_size=0.5,
    ...               inverse_mass_matrix=jnp.ones(2))
    >>> state = kernel.init(jnp.zeros(2))
    >>> state, info = kernel.step(jax.random.key(0), state)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dgm_jax._validate import check_int
from dgm_jax.mcmc.base import (
    SamplingAlgorithm,
    check_logdensity_fn,
    check_step_size,
    init_value_and_grad,
    tree_where,
)
from dgm_jax.mcmc.counter_rng import threefry2x32, uniform_from_words
from dgm_jax.mcmc.hmc import _check_settings, _num_dims
from dgm_jax.mcmc.integrators import Integrator, IntegratorState, velocity_verlet
from dgm_jax.mcmc.mass_matrix import Metric, build_metric, check_inverse_mass_matrix

__all__ = ["NUTSInfo", "NUTSState", "build_kernel", "init", "nuts"]


class NUTSState(NamedTuple):
    """State of NUTS: the position with its log density and gradient cached."""

    position: Any  # pytree q
    logdensity: Any  # scalar log pi(q)
    logdensity_grad: Any  # pytree grad log pi(q)


class NUTSInfo(NamedTuple):
    """Diagnostics of one NUTS step."""

    acceptance_rate: Any  # mean of min(1, exp(H0 - H)) over the new leaves (Stan's statistic)
    is_accepted: Any  # bool, the sample differs from the starting point
    is_divergent: Any  # bool, some leaf had H - H0 > divergence_threshold (or NaN)
    energy_error: Any  # H(sample) - H(start)
    num_integration_steps: Any  # int32, gradient evaluations (leaves x integrator stages)
    tree_depth: Any  # int32, number of trajectory doublings


class _Proposal(NamedTuple):
    position: Any  # pytree
    logdensity: Any  # scalar
    logdensity_grad: Any  # pytree
    energy: Any  # scalar Hamiltonian at the leaf


class _Subtree(NamedTuple):
    edge: IntegratorState  # the last leaf built
    proposal: _Proposal  # the candidate sampled within the subtree
    log_weight: Any  # log sum exp(H0 - H) over the subtree's leaves
    momentum_sum: Any  # (d,) sum of the leaves' momenta so far
    checkpoint_velocity: Any  # (max_depth, d) velocity at the first leaf of pending sub-subtrees
    checkpoint_momentum_sum: Any  # (max_depth, d) momentum sum up to that leaf, minus half of it
    num_leaves: Any  # int32, leaves built so far
    is_turning: Any  # bool, a sub-subtree made a U-turn
    is_divergent: Any  # bool, a leaf diverged
    sum_acceptance: Any  # sum of min(1, exp(H0 - H)) over the leaves
    uniform: Any  # U[0, 1) draw for the next leaf's progressive sampling


class _Trajectory(NamedTuple):
    left: IntegratorState  # leftmost (earliest) leaf
    right: IntegratorState  # rightmost (latest) leaf
    proposal: _Proposal  # current sample
    log_weight: Any  # log sum exp(H0 - H) over the trajectory
    momentum_sum: Any  # (d,) sum of momenta over the trajectory
    depth: Any  # int32, doublings done
    is_turning: Any  # bool
    is_divergent: Any  # bool
    sum_acceptance: Any  # over all new leaves
    num_leaves: Any  # int32, new leaves integrated
    is_accepted: Any  # bool, the sample moved away from the start


def init(position: Any, logdensity_fn: Callable) -> NUTSState:
    """Validate ``position`` and cache its log density and gradient."""
    return NUTSState(position, *init_value_and_grad(logdensity_fn, position))


def _is_turning(velocity_a: Any, velocity_b: Any, momentum_sum: Any) -> Any:
    return (jnp.dot(velocity_a, momentum_sum) <= 0) | (jnp.dot(velocity_b, momentum_sum) <= 0)


# Below this many dimensions the U-turn dot products against the (max_depth, d)
# checkpoints are unrolled over coordinates: XLA then fuses them into one elementwise
# kernel, where a reduction over a minor axis of size 2 was the most expensive
# operation of a leaf on CPU.
_UNROLL_MAX_DIMS = 8


def nuts_transition(
    key: Any,
    state: NUTSState,
    logdensity_fn: Callable,
    metric: Metric,
    step_size: Any,
    *,
    max_tree_depth: int = 10,
    integrator: Integrator = velocity_verlet,
    divergence_threshold: float = 1000.0,
) -> tuple[NUTSState, NUTSInfo]:
    """One NUTS transition for an already built :class:`Metric` (no checks)."""
    one_step = integrator(logdensity_fn, metric.velocity)
    key_momentum, key_tree = jax.random.split(key)
    momentum = metric.sample_momentum(key_momentum, state.position)
    flat_momentum = ravel_pytree(momentum)[0]
    dtype = flat_momentum.dtype
    num_dims = flat_momentum.shape[0]
    energy0 = -state.logdensity + metric.kinetic_energy(momentum)
    start = IntegratorState(state.position, momentum, state.logdensity, state.logdensity_grad)
    slots = jnp.arange(max_tree_depth, dtype=jnp.int32)
    # One key for all the tree's random numbers; counters (doubling, leaf) for the
    # leaves and (2^31 + doubling, 0 or 1) for the doublings never collide (depth < 31).
    # XLA recomputes an elementwise producer inside every fusion that consumes it, so
    # the draws are materialised where they are cheap to read: all the doublings' draws
    # before the loop, and each leaf's uniform one iteration ahead, in the loop state.
    key_words = jax.random.bits(key_tree, (2,), jnp.uint32)
    doubling_counter = jnp.uint32(2**31) + jnp.arange(max_tree_depth, dtype=jnp.uint32)
    merge_uniforms = uniform_from_words(
        threefry2x32(key_words, doubling_counter, jnp.uint32(0)), dtype
    )
    direction_words = threefry2x32(key_words, doubling_counter, jnp.uint32(1))[0]
    directions = jnp.where(direction_words >= jnp.uint32(2**31), 1, -1)

    def leafuniform_from_words(depth, leaf_index):
        counter = (depth.astype(jnp.uint32), leaf_index.astype(jnp.uint32))
        return uniform_from_words(threefry2x32(key_words, *counter), dtype)

    def dot_rows(rows, vector):
        """``rows @ vector`` for ``(max_depth, d)`` rows."""
        if num_dims <= _UNROLL_MAX_DIMS:
            return sum(rows[:, j] * vector[..., j] for j in range(num_dims))
        if vector.ndim == 1:
            return rows @ vector
        return jnp.sum(rows * vector, axis=1)

    def build_subtree(edge, direction, depth):
        size = jnp.left_shift(jnp.int32(1), depth)
        signed_step = jnp.where(direction > 0, step_size, -step_size)

        def cond(s: _Subtree):
            return (s.num_leaves < size) & ~s.is_turning & ~s.is_divergent

        def body(s: _Subtree):
            leaf = one_step(s.edge, signed_step)
            p = ravel_pytree(leaf.momentum)[0]
            v = metric.flat_velocity(leaf.momentum)
            energy = -leaf.logdensity + 0.5 * jnp.dot(p, v)  # K = p^T M^-1 p / 2
            n = s.num_leaves
            delta = energy - energy0
            delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)
            is_divergent = delta > divergence_threshold
            log_w = -delta
            log_weight = jnp.logaddexp(s.log_weight, log_w)
            # uniform progressive sampling: one counter-based draw per leaf
            take = s.uniform < jnp.exp(log_w - log_weight).astype(s.uniform.dtype)
            candidate = _Proposal(leaf.position, leaf.logdensity, leaf.logdensity_grad, energy)
            proposal = tree_where(take, candidate, s.proposal)

            momentum_sum = s.momentum_sum + p
            is_even = (n % 2) == 0
            slot_max = jax.lax.population_count(jnp.right_shift(n, 1))
            num_ending = jax.lax.population_count(jnp.bitwise_xor(n, n + 1)) - 1
            slot_min = slot_max - num_ending + 1
            store = (is_even & (slots == slot_max))[:, None]
            ckpt_v = jnp.where(store, v[None, :], s.checkpoint_velocity)
            # trapezoidal sums: rho over leaves m..n is sum_{m..n} p - (p_m + p_n) / 2
            ckpt_r = jnp.where(store, (momentum_sum - 0.5 * p)[None, :], s.checkpoint_momentum_sum)
            # checks happen at odd leaves only, where nothing is stored: use the old slots
            rho = (momentum_sum - 0.5 * p)[None, :] - s.checkpoint_momentum_sum
            turning = (dot_rows(s.checkpoint_velocity, rho) <= 0) | (dot_rows(rho, v) <= 0)
            check = ~is_even & (slots >= slot_min) & (slots <= slot_max)
            is_turning = jnp.any(turning & check)
            return _Subtree(
                edge=leaf,
                proposal=proposal,
                log_weight=log_weight,
                momentum_sum=momentum_sum,
                checkpoint_velocity=ckpt_v,
                checkpoint_momentum_sum=ckpt_r,
                num_leaves=n + 1,
                is_turning=is_turning,
                is_divergent=is_divergent,
                sum_acceptance=s.sum_acceptance + jnp.minimum(1.0, jnp.exp(log_w)),
                uniform=leafuniform_from_words(depth, n + 1),
            )

        empty = _Subtree(
            edge=edge,
            proposal=_Proposal(edge.position, edge.logdensity, edge.logdensity_grad, energy0),
            log_weight=jnp.array(-jnp.inf, dtype),
            momentum_sum=jnp.zeros(num_dims, dtype),
            checkpoint_velocity=jnp.zeros((max_tree_depth, num_dims), dtype),
            checkpoint_momentum_sum=jnp.zeros((max_tree_depth, num_dims), dtype),
            num_leaves=jnp.int32(0),
            is_turning=jnp.zeros((), bool),
            is_divergent=jnp.zeros((), bool),
            sum_acceptance=jnp.zeros((), dtype),
            uniform=leafuniform_from_words(depth, jnp.int32(0)),
        )
        return jax.lax.while_loop(cond, body, empty)

    def traj_cond(t: _Trajectory):
        return ~t.is_turning & ~t.is_divergent & (t.depth < max_tree_depth)

    def traj_body(t: _Trajectory):
        direction = directions[t.depth]
        edge = tree_where(direction > 0, t.right, t.left)
        sub = build_subtree(edge, direction, t.depth)
        valid = ~sub.is_turning & ~sub.is_divergent
        # biased progressive sampling: move to the subtree's candidate w.p. W_new / W_old
        u = merge_uniforms[t.depth]
        take = valid & (u < jnp.exp(sub.log_weight - t.log_weight).astype(u.dtype))
        proposal = tree_where(take, sub.proposal, t.proposal)
        left = tree_where(direction > 0, t.left, sub.edge)
        right = tree_where(direction > 0, sub.edge, t.right)
        momentum_sum = t.momentum_sum + sub.momentum_sum
        p_left, p_right = ravel_pytree(left.momentum)[0], ravel_pytree(right.momentum)[0]
        turning = _is_turning(
            metric.flat_velocity(left.momentum),
            metric.flat_velocity(right.momentum),
            momentum_sum - 0.5 * (p_left + p_right),
        )
        return _Trajectory(
            left=left,
            right=right,
            proposal=proposal,
            log_weight=jnp.logaddexp(t.log_weight, sub.log_weight),
            momentum_sum=momentum_sum,
            depth=t.depth + 1,
            is_turning=sub.is_turning | (valid & turning),
            is_divergent=sub.is_divergent,
            sum_acceptance=t.sum_acceptance + sub.sum_acceptance,
            num_leaves=t.num_leaves + sub.num_leaves,
            is_accepted=t.is_accepted | take,
        )

    trajectory = _Trajectory(
        left=start,
        right=start,
        proposal=_Proposal(state.position, state.logdensity, state.logdensity_grad, energy0),
        log_weight=jnp.zeros((), dtype),
        momentum_sum=flat_momentum,
        depth=jnp.int32(0),
        is_turning=jnp.zeros((), bool),
        is_divergent=jnp.zeros((), bool),
        sum_acceptance=jnp.zeros((), dtype),
        num_leaves=jnp.int32(0),
        is_accepted=jnp.zeros((), bool),
    )
    t = jax.lax.while_loop(traj_cond, traj_body, trajectory)
    p = t.proposal
    info = NUTSInfo(
        acceptance_rate=t.sum_acceptance / jnp.maximum(t.num_leaves, 1).astype(dtype),
        is_accepted=t.is_accepted,
        is_divergent=t.is_divergent,
        energy_error=p.energy - energy0,
        num_integration_steps=t.num_leaves * integrator.num_grad_evals,
        tree_depth=t.depth,
    )
    return NUTSState(p.position, p.logdensity, p.logdensity_grad), info


def _check_max_tree_depth(max_tree_depth: Any) -> None:
    check_int("max_tree_depth", max_tree_depth, minimum=1)
    if max_tree_depth > 30:
        raise ValueError(f"max_tree_depth must be <= 30, got {max_tree_depth}")


def build_kernel(
    integrator: Integrator = velocity_verlet,
    divergence_threshold: float = 1000.0,
    max_tree_depth: int = 10,
) -> Callable:
    """Return ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix)``.

    The static choices are fixed here, the parameters passed at each call (so
    adaptation can change them). See :func:`nuts`.
    """
    _check_settings(integrator, divergence_threshold)
    _check_max_tree_depth(max_tree_depth)

    def kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix):
        check_step_size(step_size)
        check_inverse_mass_matrix(inverse_mass_matrix, _num_dims(state.position))
        return nuts_transition(
            key,
            state,
            logdensity_fn,
            build_metric(inverse_mass_matrix),
            step_size,
            max_tree_depth=max_tree_depth,
            integrator=integrator,
            divergence_threshold=divergence_threshold,
        )

    return kernel


def nuts(
    logdensity_fn: Callable[[Any], Any],
    step_size: Any,
    inverse_mass_matrix: Any,
    *,
    max_tree_depth: int = 10,
    integrator: Integrator = velocity_verlet,
    divergence_threshold: float = 1000.0,
) -> SamplingAlgorithm:
    """The No-U-Turn Sampler (Hoffman & Gelman 2014) with multinomial sampling.

    Args:
        logdensity_fn: pytree position -> scalar log density.
        step_size: positive integration step size.
        inverse_mass_matrix: ``(d,)`` diagonal or ``(d, d)`` dense ``M^{-1}`` over the
            flattened position.
        max_tree_depth: at most this many doublings, i.e. ``2^max_tree_depth - 1``
            integration steps per transition.
        integrator: the :class:`~dgm_jax.mcmc.integrators.Integrator` to use.
        divergence_threshold: a leaf with ``H - H0`` above this ends the trajectory
            and marks the transition divergent.

    Returns:
        ``SamplingAlgorithm(init, step)``: ``init(position) -> NUTSState``,
        ``step(key, state) -> (NUTSState, NUTSInfo)``. Not jit-compiled; the loops
        are ``lax.while_loop`` so it compiles and batches.

    Raises:
        ValueError: non-positive step size, mass matrix of the wrong shape, bad
            ``max_tree_depth``, non-scalar log density, NaN position.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> kernel = nuts(lambda x: -0.5 * jnp.sum(x**2), 0.5, jnp.ones(3), max_tree_depth=6)
        >>> state, info = jax.jit(kernel.step)(jax.random.key(0), kernel.init(jnp.ones(3)))
    """
    check_logdensity_fn(logdensity_fn)
    check_step_size(step_size)
    check_inverse_mass_matrix(inverse_mass_matrix)
    _check_settings(integrator, divergence_threshold)
    _check_max_tree_depth(max_tree_depth)
    metric = build_metric(inverse_mass_matrix)

    def init_fn(position):
        state = init(position, logdensity_fn)
        check_inverse_mass_matrix(inverse_mass_matrix, _num_dims(position))
        return state

    def step_fn(key, state):
        check_inverse_mass_matrix(inverse_mass_matrix, _num_dims(state.position))
        return nuts_transition(
            key,
            state,
            logdensity_fn,
            metric,
            step_size,
            max_tree_depth=max_tree_depth,
            integrator=integrator,
            divergence_threshold=divergence_threshold,
        )

    return SamplingAlgorithm(init_fn, step_fn)
