"""Random-walk Metropolis with a Gaussian proposal.

Proposal ``x' = x + scale * z``, ``z ~ N(0, I)``, accepted with probability
``min(1, pi(x') / pi(x))`` (Metropolis et al., 1953). ``scale`` is a scalar or a
per-dimension array over the flattened position.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> kernel = rwm(lambda x: -0.5 * jnp.sum(x**2), scale=0.5)
    >>> state = kernel.init(jnp.zeros(2))
    >>> state, info = kernel.step(jax.random.key(0), state)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dgm_jax._validate import check_positive, is_traced
from dgm_jax.mcmc.base import (
    FusionSpec,
    SamplingAlgorithm,
    check_logdensity_fn,
    init_value,
    metropolis_accept,
    tree_where,
)

__all__ = ["RWMInfo", "RWMState", "build_kernel", "init", "rwm"]


class RWMState(NamedTuple):
    """State of random-walk Metropolis."""

    position: Any  # pytree
    logdensity: Any  # scalar log pi(position)


class RWMInfo(NamedTuple):
    """Diagnostics of one random-walk Metropolis step."""

    acceptance_rate: Any  # min(1, pi(x') / pi(x))
    is_accepted: Any  # bool, the proposal was accepted
    is_divergent: Any  # bool, always False
    energy_error: Any  # -log(pi(x') / pi(x)), the analogue of HMC's energy error
    num_integration_steps: Any  # int32, gradient evaluations: always 0


def _check_scale(scale: Any, num_dims: int | None = None) -> None:
    if np.ndim(scale) == 0:
        check_positive("scale", scale)
        return
    if np.ndim(scale) != 1:
        raise ValueError(f"scale must be a scalar or a 1-D array, got shape {np.shape(scale)}")
    if num_dims is not None and np.shape(scale)[0] != num_dims:
        raise ValueError(
            f"scale must have shape ({num_dims},) to match the flattened position, "
            f"got {np.shape(scale)}"
        )
    if not is_traced(scale) and not np.all(np.asarray(scale) > 0):
        raise ValueError("scale must be > 0 in every dimension")


def init(position: Any, logdensity_fn: Callable) -> RWMState:
    """Validate ``position`` and cache its log density."""
    return RWMState(position, init_value(logdensity_fn, position))


def build_kernel() -> Callable:
    """Return ``kernel(key, state, logdensity_fn, scale) -> (state, info)``."""

    def kernel(key, state: RWMState, logdensity_fn: Callable, scale: Any):
        _check_scale(scale, ravel_pytree(state.position)[0].shape[0])
        key_proposal, key_accept = jax.random.split(key)
        flat, unravel = ravel_pytree(state.position)
        z = jax.random.normal(key_proposal, flat.shape, flat.dtype)
        proposal = unravel(flat + (scale * z).astype(flat.dtype))
        new_logdensity = logdensity_fn(proposal)
        log_ratio = new_logdensity - state.logdensity
        acceptance, accepted = metropolis_accept(key_accept, log_ratio)
        new_state = tree_where(accepted, RWMState(proposal, new_logdensity), state)
        info = RWMInfo(
            acceptance_rate=acceptance,
            is_accepted=accepted,
            is_divergent=jnp.zeros((), bool),
            energy_error=-log_ratio,
            num_integration_steps=jnp.zeros((), jnp.int32),
        )
        return new_state, info

    return kernel


def rwm(logdensity_fn: Callable[[Any], Any], scale: Any) -> SamplingAlgorithm:
    """Random-walk Metropolis with a Gaussian proposal.

    Args:
        logdensity_fn: pytree position -> scalar log density (unnormalised).
        scale: proposal standard deviation, a positive scalar or a ``(d,)`` array
            over the flattened position.

    Returns:
        ``SamplingAlgorithm(init, step)``: ``init(position) -> RWMState``,
        ``step(key, state) -> (RWMState, RWMInfo)``. Not jit-compiled; compose with
        ``jax.jit`` and ``jax.vmap`` as needed.

    Raises:
        ValueError: non-positive scale, a scale of the wrong shape, a non-scalar
            log density or a NaN initial position.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> kernel = rwm(lambda x: -0.5 * jnp.sum(x**2), scale=jnp.array([0.5, 1.0]))
        >>> state, info = kernel.step(jax.random.key(1), kernel.init(jnp.zeros(2)))
    """
    check_logdensity_fn(logdensity_fn)
    _check_scale(scale)
    kernel = build_kernel()

    def init_fn(position):
        state = init(position, logdensity_fn)
        _check_scale(scale, ravel_pytree(position)[0].shape[0])
        return state

    def step_fn(key, state):
        return kernel(key, state, logdensity_fn, scale)

    fusion = FusionSpec("rwm", logdensity_fn, {"scale": scale}, RWMState, RWMInfo)
    return SamplingAlgorithm(init_fn, step_fn, fusion)
