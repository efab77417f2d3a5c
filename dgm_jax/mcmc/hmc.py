"""Hamiltonian Monte Carlo with a fixed number of integration steps.

Each step draws a momentum ``p ~ N(0, M)``, integrates Hamiltonian dynamics for
``H(q, p) = -log pi(q) + p^T M^{-1} p / 2`` with a symplectic integrator, and accepts
the end point with probability ``min(1, exp(H_0 - H_1))`` (Duane et al., "Hybrid
Monte Carlo", Phys. Lett. B 195, 1987; Neal, "MCMC using Hamiltonian dynamics", 2011).
Optional jitter draws the step size uniformly in ``[(1 - j) h, (1 + j) h]`` and the
number of steps uniformly in ``{1, ..., L}`` at every transition (Neal 2011, 5.4.2.2).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> kernel = hmc(lambda x: -0.5 * jnp.sum(x**2), step_size=0.3,
    ...              inverse_mass_matrix=jnp.ones(2), num_integration_steps=10)
    >>> state = kernel.init(jnp.zeros(2))
    >>> state, info = kernel.step(jax.random.key(0), state)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dgm_jax._validate import check_int, check_number, check_positive
from dgm_jax.mcmc.base import (
    FusionSpec,
    SamplingAlgorithm,
    check_logdensity_fn,
    check_step_size,
    init_value_and_grad,
    metropolis_accept,
    tree_where,
)
from dgm_jax.mcmc.integrators import Integrator, IntegratorState, velocity_verlet
from dgm_jax.mcmc.mass_matrix import Metric, build_metric, check_inverse_mass_matrix

__all__ = ["HMCInfo", "HMCState", "build_kernel", "hmc", "init"]


class HMCState(NamedTuple):
    """State of HMC: the position with its log density and gradient cached."""

    position: Any  # pytree q
    logdensity: Any  # scalar log pi(q)
    logdensity_grad: Any  # pytree grad log pi(q)


class HMCInfo(NamedTuple):
    """Diagnostics of one HMC step."""

    acceptance_rate: Any  # min(1, exp(-energy_error))
    is_accepted: Any  # bool, the end point was accepted
    is_divergent: Any  # bool, |energy_error| > divergence_threshold or NaN
    energy_error: Any  # H(end) - H(start)
    num_integration_steps: Any  # int32, gradient evaluations (steps x integrator stages)


def init(position: Any, logdensity_fn: Callable) -> HMCState:
    """Validate ``position`` and cache its log density and gradient."""
    return HMCState(position, *init_value_and_grad(logdensity_fn, position))


def _check_settings(integrator: Any, divergence_threshold: Any) -> None:
    if not isinstance(integrator, Integrator):
        raise TypeError(
            "integrator must be an Integrator (e.g. velocity_verlet, mclachlan, yoshida), "
            f"got {type(integrator).__name__}"
        )
    check_positive("divergence_threshold", divergence_threshold)


def _num_dims(position: Any) -> int:
    return ravel_pytree(position)[0].shape[0]


def hmc_transition(
    key: Any,
    state: HMCState,
    logdensity_fn: Callable,
    metric: Metric,
    step_size: Any,
    num_integration_steps: Any,
    *,
    integrator: Integrator = velocity_verlet,
    divergence_threshold: float = 1000.0,
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition for an already built :class:`Metric` (no checks)."""
    key_momentum, key_accept = jax.random.split(key)
    trajectory = integrator.trajectory(logdensity_fn, metric.velocity)
    momentum = metric.sample_momentum(key_momentum, state.position)
    start = IntegratorState(state.position, momentum, state.logdensity, state.logdensity_grad)
    energy0 = -state.logdensity + metric.kinetic_energy(momentum)
    end = trajectory(start, step_size, num_integration_steps)
    energy1 = -end.logdensity + metric.kinetic_energy(end.momentum)
    energy_error = energy1 - energy0
    acceptance, accepted = metropolis_accept(key_accept, -energy_error)
    is_divergent = ~(jnp.abs(energy_error) <= divergence_threshold)
    proposal = HMCState(end.position, end.logdensity, end.logdensity_grad)
    info = HMCInfo(
        acceptance_rate=acceptance,
        is_accepted=accepted,
        is_divergent=is_divergent,
        energy_error=energy_error,
        num_integration_steps=(
            jnp.asarray(num_integration_steps, jnp.int32) * integrator.num_grad_evals
        ),
    )
    return tree_where(accepted, proposal, state), info


def build_kernel(
    integrator: Integrator = velocity_verlet,
    divergence_threshold: float = 1000.0,
    jitter_step_size: float = 0.0,
    jitter_num_steps: bool = False,
) -> Callable:
    """Return ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix,
    num_integration_steps) -> (state, info)``.

    The static choices (integrator, divergence threshold, jitter) are fixed here; the
    parameters are passed at each call, so adaptation can change them. See :func:`hmc`.
    """
    _check_settings(integrator, divergence_threshold)
    check_number("jitter_step_size", jitter_step_size)
    if not 0.0 <= float(jitter_step_size) < 1.0:
        raise ValueError(f"jitter_step_size must lie in [0, 1), got {jitter_step_size!r}")
    if not isinstance(jitter_num_steps, bool):
        raise TypeError(f"jitter_num_steps must be a bool, got {jitter_num_steps!r}")

    def kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps):
        check_step_size(step_size)
        check_int("num_integration_steps", num_integration_steps, minimum=1)
        check_inverse_mass_matrix(inverse_mass_matrix, _num_dims(state.position))
        key_step = key
        if jitter_step_size > 0.0 or jitter_num_steps:
            key_step, key_jitter = jax.random.split(key)
            key_jitter_h, key_jitter_n = jax.random.split(key_jitter)
        h = step_size
        if jitter_step_size > 0.0:
            u = jax.random.uniform(key_jitter_h, (), jnp.result_type(state.logdensity))
            h = step_size * (1.0 + jitter_step_size * (2.0 * u - 1.0))
        n = num_integration_steps
        if jitter_num_steps:
            n = jax.random.randint(key_jitter_n, (), 1, num_integration_steps + 1)
        return hmc_transition(
            key_step,
            state,
            logdensity_fn,
            build_metric(inverse_mass_matrix),
            h,
            n,
            integrator=integrator,
            divergence_threshold=divergence_threshold,
        )

    return kernel


def hmc(
    logdensity_fn: Callable[[Any], Any],
    step_size: Any,
    inverse_mass_matrix: Any,
    num_integration_steps: int,
    *,
    integrator: Integrator = velocity_verlet,
    divergence_threshold: float = 1000.0,
    jitter_step_size: float = 0.0,
    jitter_num_steps: bool = False,
) -> SamplingAlgorithm:
    """Hamiltonian Monte Carlo.

    Args:
        logdensity_fn: pytree position -> scalar log density.
        step_size: positive integration step size ``h``.
        inverse_mass_matrix: ``(d,)`` diagonal or ``(d, d)`` dense ``M^{-1}`` over the
            flattened position (``ravel_pytree`` order), ``d`` its size.
        num_integration_steps: number of integrator steps ``L >= 1`` (a Python int).
        integrator: an :class:`~dgm_jax.mcmc.integrators.Integrator`
            (``velocity_verlet``, ``mclachlan``, ``yoshida`` or your own table).
        divergence_threshold: an energy error above this marks the step divergent.
        jitter_step_size: fraction ``j`` in ``[0, 1)``; each step uses a step size
            drawn uniformly in ``[(1 - j) h, (1 + j) h]``.
        jitter_num_steps: if True each step integrates a number of steps drawn
            uniformly in ``{1, ..., L}``.

    Returns:
        ``SamplingAlgorithm(init, step)``: ``init(position) -> HMCState``,
        ``step(key, state) -> (HMCState, HMCInfo)``. Not jit-compiled. The mass-matrix
        factorisation is computed once here.

    Raises:
        ValueError: non-positive step size, mass matrix of the wrong shape,
            ``num_integration_steps < 1``, non-scalar log density, NaN position.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from dgm_jax.mcmc.integrators import mclachlan
        >>> kernel = hmc(lambda x: -0.5 * jnp.sum(x**2), 0.5, jnp.ones(3), 5,
        ...              integrator=mclachlan)
        >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.ones(3)))
    """
    check_logdensity_fn(logdensity_fn)
    check_step_size(step_size)
    check_int("num_integration_steps", num_integration_steps, minimum=1)
    check_inverse_mass_matrix(inverse_mass_matrix)
    kernel = build_kernel(integrator, divergence_threshold, jitter_step_size, jitter_num_steps)
    metric = build_metric(inverse_mass_matrix)

    def init_fn(position):
        state = init(position, logdensity_fn)
        check_inverse_mass_matrix(inverse_mass_matrix, _num_dims(position))
        return state

    if jitter_step_size == 0.0 and not jitter_num_steps:

        def step_fn(key, state):
            check_inverse_mass_matrix(inverse_mass_matrix, _num_dims(state.position))
            return hmc_transition(
                key,
                state,
                logdensity_fn,
                metric,
                step_size,
                num_integration_steps,
                integrator=integrator,
                divergence_threshold=divergence_threshold,
            )

    else:

        def step_fn(key, state):
            return kernel(
                key, state, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps
            )

    unsupported = None
    if jitter_step_size > 0.0 or jitter_num_steps:
        unsupported = "HMC with jitter_step_size or jitter_num_steps"
    fusion = FusionSpec(
        "hmc",
        logdensity_fn,
        {
            "step_size": step_size,
            "inverse_mass_matrix": inverse_mass_matrix,
            "num_integration_steps": num_integration_steps,
            "coefficients": integrator.coefficients,
            "divergence_threshold": divergence_threshold,
        },
        HMCState,
        HMCInfo,
        unsupported,
    )
    return SamplingAlgorithm(init_fn, step_fn, fusion)
