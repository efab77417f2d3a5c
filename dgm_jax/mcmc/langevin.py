"""Langevin kernels: the unadjusted Langevin algorithm (ULA) and MALA.

Both propose ``x' = x + h grad log pi(x) + sqrt(2h) z``, ``z ~ N(0, I)``, the
Euler–Maruyama step of the Langevin diffusion ``dX = grad log pi(X) dt + sqrt(2) dW``.
ULA always moves (its stationary law is biased by O(h); on ``N(0, s^2)`` it is
``N(0, s^2 / (1 - h / (2 s^2)))``); MALA adds a Metropolis–Hastings correction
(Roberts & Tweedie, "Exponential convergence of Langevin distributions and their
discrete approximations", Bernoulli 2, 1996) and targets ``pi`` exactly.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> kernel = mala(lambda x: -0.5 * jnp.sum(x**2), step_size=0.5)
    >>> state = kernel.init(jnp.zeros(2))
    >>> state, info = kernel.step(jax.random.key(0), state)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dgm_jax.mcmc.base import (
    FusionSpec,
    SamplingAlgorithm,
    check_logdensity_fn,
    check_step_size,
    init_value_and_grad,
    metropolis_accept,
    normal_like,
    tree_where,
)

__all__ = [
    "LangevinInfo",
    "LangevinState",
    "build_mala_kernel",
    "build_ula_kernel",
    "init",
    "mala",
    "mala_log_acceptance_ratio",
    "ula",
]


class LangevinState(NamedTuple):
    """State of ULA and MALA."""

    position: Any  # pytree x
    logdensity: Any  # scalar log pi(x)
    logdensity_grad: Any  # pytree grad log pi(x)


class LangevinInfo(NamedTuple):
    """Diagnostics of one ULA or MALA step."""

    acceptance_rate: Any  # MH acceptance probability (1.0 for ULA)
    is_accepted: Any  # bool, the proposal was accepted (always True for ULA)
    is_divergent: Any  # bool, the proposal's log density is not finite
    energy_error: Any  # -log MH ratio for MALA (0 for ULA)
    num_integration_steps: Any  # int32, gradient evaluations: 1


def init(position: Any, logdensity_fn: Callable) -> LangevinState:
    """Validate ``position`` and cache its log density and gradient."""
    return LangevinState(position, *init_value_and_grad(logdensity_fn, position))


def _propose(key, state: LangevinState, logdensity_fn: Callable, step_size: Any):
    noise = normal_like(key, state.position)
    scale = jnp.sqrt(2.0 * step_size)
    position = jax.tree_util.tree_map(
        lambda x, g, z: x + step_size * g + scale * z,
        state.position,
        state.logdensity_grad,
        noise,
    )
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return LangevinState(position, logdensity, grad)


def _log_transition(to: LangevinState, frm: LangevinState, step_size: Any):
    """log q(to | frm) up to a constant: -|to - frm - h grad(frm)|^2 / (4h)."""
    diff = jax.tree_util.tree_map(
        lambda y, x, g: y - x - step_size * g, to.position, frm.position, frm.logdensity_grad
    )
    flat, _ = ravel_pytree(diff)
    return -jnp.sum(flat**2) / (4.0 * step_size)


def mala_log_acceptance_ratio(state: LangevinState, proposal: LangevinState, step_size: Any) -> Any:
    """MALA's log Metropolis–Hastings ratio for moving from ``state`` to ``proposal``.

    ``log pi(x') - log pi(x) + log q(x | x') - log q(x' | x)`` with
    ``q(y | x) = N(y; x + h grad log pi(x), 2h I)``.
    """
    return (
        proposal.logdensity
        - state.logdensity
        + _log_transition(state, proposal, step_size)
        - _log_transition(proposal, state, step_size)
    )


def build_ula_kernel() -> Callable:
    """Return ``kernel(key, state, logdensity_fn, step_size) -> (state, info)`` for ULA."""

    def kernel(key, state: LangevinState, logdensity_fn: Callable, step_size: Any):
        check_step_size(step_size)
        new_state = _propose(key, state, logdensity_fn, step_size)
        dtype = jnp.result_type(new_state.logdensity)
        info = LangevinInfo(
            acceptance_rate=jnp.ones((), dtype),
            is_accepted=jnp.ones((), bool),
            is_divergent=~jnp.isfinite(new_state.logdensity),
            energy_error=jnp.zeros((), dtype),
            num_integration_steps=jnp.ones((), jnp.int32),
        )
        return new_state, info

    return kernel


def build_mala_kernel() -> Callable:
    """Return ``kernel(key, state, logdensity_fn, step_size) -> (state, info)`` for MALA."""

    def kernel(key, state: LangevinState, logdensity_fn: Callable, step_size: Any):
        check_step_size(step_size)
        key_proposal, key_accept = jax.random.split(key)
        proposal = _propose(key_proposal, state, logdensity_fn, step_size)
        log_ratio = mala_log_acceptance_ratio(state, proposal, step_size)
        acceptance, accepted = metropolis_accept(key_accept, log_ratio)
        info = LangevinInfo(
            acceptance_rate=acceptance,
            is_accepted=accepted,
            is_divergent=~jnp.isfinite(proposal.logdensity),
            energy_error=-log_ratio,
            num_integration_steps=jnp.ones((), jnp.int32),
        )
        return tree_where(accepted, proposal, state), info

    return kernel


def _algorithm(
    name: str, kernel: Callable, logdensity_fn: Callable, step_size: Any
) -> SamplingAlgorithm:
    """Validate the settings and close ``kernel`` over them as ``(init, step)``."""
    check_logdensity_fn(logdensity_fn)
    check_step_size(step_size)
    return SamplingAlgorithm(
        lambda position: init(position, logdensity_fn),
        lambda key, state: kernel(key, state, logdensity_fn, step_size),
        FusionSpec(name, logdensity_fn, {"step_size": step_size}, LangevinState, LangevinInfo),
    )


def ula(logdensity_fn: Callable[[Any], Any], step_size: Any) -> SamplingAlgorithm:
    """Unadjusted Langevin algorithm (no Metropolis correction; O(step_size) bias).

    Args:
        logdensity_fn: pytree position -> scalar log density.
        step_size: positive time step ``h`` of the Euler–Maruyama discretisation.

    Returns:
        ``SamplingAlgorithm(init, step)`` with ``LangevinState`` and ``LangevinInfo``.
        Not jit-compiled.

    Raises:
        ValueError: non-positive step size, non-scalar log density, NaN position.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> kernel = ula(lambda x: -0.5 * jnp.sum(x**2), step_size=0.05)
        >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros(2)))
    """
    return _algorithm("ula", build_ula_kernel(), logdensity_fn, step_size)


def mala(logdensity_fn: Callable[[Any], Any], step_size: Any) -> SamplingAlgorithm:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996).

    Args:
        logdensity_fn: pytree position -> scalar log density.
        step_size: positive time step ``h``; the proposal is
            ``N(x + h grad log pi(x), 2h I)``.

    Returns:
        ``SamplingAlgorithm(init, step)`` with ``LangevinState`` and ``LangevinInfo``.
        Not jit-compiled.

    Raises:
        ValueError: non-positive step size, non-scalar log density, NaN position.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> kernel = mala(lambda x: -0.5 * jnp.sum(x**2), step_size=0.5)
        >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros(2)))
    """
    return _algorithm("mala", build_mala_kernel(), logdensity_fn, step_size)
