"""Euclidean metrics: Gaussian momentum with a diagonal or dense mass matrix.

The kinetic energy is ``K(p) = p^T M^{-1} p / 2`` with momentum ``p ~ N(0, M)``; the
user gives the *inverse* mass matrix ``M^{-1}`` (ideally the target's covariance),
as a 1-D array (diagonal) or a 2-D array (dense) over the flattened position
(:func:`jax.flatten_util.ravel_pytree` order). Factorisations are computed once,
when the metric is built.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> metric = build_metric(jnp.array([1.0, 4.0]))
    >>> p = metric.sample_momentum(jax.random.key(0), jnp.zeros(2))
    >>> k = metric.kinetic_energy(p)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jax.flatten_util import ravel_pytree

from dgm_jax._validate import check_floating

__all__ = ["Metric", "build_metric", "check_inverse_mass_matrix"]


class Metric(NamedTuple):
    """Functions of the momentum for one (inverse) mass matrix."""

    sample_momentum: Callable[[Any, Any], Any]  # (key, position) -> momentum ~ N(0, M)
    kinetic_energy: Callable[[Any], Any]  # momentum -> p^T M^{-1} p / 2
    velocity: Callable[[Any], Any]  # momentum -> M^{-1} p (same pytree structure)
    flat_velocity: Callable[[Any], Any]  # momentum -> flattened M^{-1} p, shape (d,)


def check_inverse_mass_matrix(inverse_mass_matrix: Any, num_dims: int | None = None) -> None:
    """Raise unless ``inverse_mass_matrix`` has shape ``(d,)`` or ``(d, d)``.

    Args:
        inverse_mass_matrix: the array to check.
        num_dims: the flattened position size ``d``, if known.
    """
    shape = tuple(np.shape(inverse_mass_matrix))
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != shape[1]):
        raise ValueError(
            f"inverse_mass_matrix must have shape (d,) (diagonal) or (d, d) (dense), got {shape}"
        )
    check_floating("inverse_mass_matrix", inverse_mass_matrix)
    if num_dims is not None and shape[0] != num_dims:
        expected = f"({num_dims},) or ({num_dims}, {num_dims})"
        raise ValueError(
            f"inverse_mass_matrix must have shape {expected} to match the flattened "
            f"position of size {num_dims}, got {shape}"
        )


def build_metric(inverse_mass_matrix: Any) -> Metric:
    """Build the momentum functions for a diagonal (1-D) or dense (2-D) ``M^{-1}``.

    Args:
        inverse_mass_matrix: ``(d,)`` diagonal or ``(d, d)`` symmetric positive
            definite inverse mass matrix over the flattened position.

    Returns:
        A :class:`Metric`.
    """
    check_inverse_mass_matrix(inverse_mass_matrix)
    inv = jnp.asarray(inverse_mass_matrix)

    if inv.ndim == 1:
        momentum_scale = jax.lax.rsqrt(inv)  # p = z / sqrt(M^{-1}) has covariance M

        def sample_momentum(key, position):
            flat, unravel = ravel_pytree(position)
            z = jax.random.normal(key, flat.shape, flat.dtype)
            return unravel((momentum_scale * z).astype(flat.dtype))

        def flat_velocity(momentum):
            flat, _ = ravel_pytree(momentum)
            return (inv * flat).astype(flat.dtype)

        def kinetic_energy(momentum):
            flat, _ = ravel_pytree(momentum)
            return 0.5 * jnp.sum(inv * flat**2)

    else:
        # M^{-1} = L L^T  =>  M = L^{-T} L^{-1}, so p = L^{-T} z has covariance M.
        cholesky = jnp.linalg.cholesky(inv)
        eye = jnp.eye(inv.shape[0], dtype=inv.dtype)
        momentum_factor = jsl.solve_triangular(cholesky, eye, lower=True).T

        def sample_momentum(key, position):
            flat, unravel = ravel_pytree(position)
            z = jax.random.normal(key, flat.shape, flat.dtype)
            return unravel((momentum_factor @ z).astype(flat.dtype))

        def flat_velocity(momentum):
            flat, _ = ravel_pytree(momentum)
            return (inv @ flat).astype(flat.dtype)

        def kinetic_energy(momentum):
            flat, _ = ravel_pytree(momentum)
            return 0.5 * jnp.dot(flat, inv @ flat)

    def velocity(momentum):
        _, unravel = ravel_pytree(momentum)
        return unravel(flat_velocity(momentum))

    return Metric(sample_momentum, kinetic_energy, velocity, flat_velocity)
