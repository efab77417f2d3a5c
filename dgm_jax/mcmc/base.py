"""Shared pieces of the MCMC kernels: the ``SamplingAlgorithm`` shape and boundary checks.

Every kernel in :mod:`dgm_jax.mcmc` is a factory that closes over its settings and
returns a :class:`SamplingAlgorithm` ``(init, step)``:

* ``init(position) -> state``: the position is any pytree of floating arrays;
  every state has the fields ``position`` and ``logdensity`` (and ``logdensity_grad``
  for gradient-based kernels), so the log density and its gradient are computed once
  per point and cached.
* ``step(key, state) -> (state, info)``: one transition. Every info has at least the
  fields ``acceptance_rate``, ``is_accepted``, ``is_divergent``, ``energy_error`` and
  ``num_integration_steps`` (gradient evaluations spent), so a driver can summarise
  any kernel the same way.

Nothing here is jit-compiled: callers choose ``jax.jit`` and ``jax.vmap``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax.mcmc import mala
    >>> kernel = mala(lambda x: -0.5 * jnp.sum(x**2), step_size=0.1)
    >>> state = kernel.init(jnp.zeros(3))
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

__all__ = ["FusionSpec", "Kernel", "SamplingAlgorithm"]

Kernel = Callable[..., tuple[Any, Any]]


class FusionSpec:
    """What the fused GPU backend needs to rebuild a kernel: its algorithm and settings.

    Kernels built by :func:`~dgm_jax.mcmc.hmc`, :func:`~dgm_jax.mcmc.mala`,
    :func:`~dgm_jax.mcmc.ula` and :func:`~dgm_jax.mcmc.rwm` carry one in
    ``SamplingAlgorithm.fusion``; ``unsupported`` says why a setting cannot be fused
    (``None`` when it can). Compared and hashed by identity, so kernels stay usable as
    cache keys.
    """

    def __init__(
        self,
        algorithm: str,
        logdensity_fn: Callable,
        params: dict[str, Any],
        state_type: type,
        info_type: type,
        unsupported: str | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.logdensity_fn = logdensity_fn
        self.params = dict(params)
        self.state_type = state_type
        self.info_type = info_type
        self.unsupported = unsupported

    def __repr__(self) -> str:
        return f"FusionSpec({self.algorithm!r}, params={sorted(self.params)})"


class SamplingAlgorithm(NamedTuple):
    """An MCMC algorithm as a pair of pure functions (plus, optionally, a fusion spec)."""

    init: Callable[[Any], Any]  # position pytree -> State
    step: Callable[[Any, Any], tuple[Any, Any]]  # (key, State) -> (State, Info)
    fusion: FusionSpec | None = None  # for driver.sample(..., backend="fused")


def check_logdensity_fn(logdensity_fn: Any) -> None:
    """Raise ``TypeError`` unless ``logdensity_fn`` is callable."""
    if not callable(logdensity_fn):
        raise TypeError(
            f"logdensity_fn must be a callable position -> scalar, got "
            f"{type(logdensity_fn).__name__}"
        )


def check_step_size(step_size: Any, name: str = "step_size") -> None:
    """Raise unless ``step_size`` is a finite number > 0 (traced values pass)."""
    check_positive(name, step_size)


def check_position(position: Any) -> int:
    """Check an initial position pytree and return its flattened size.

    Raises ``TypeError`` for non-floating leaves and ``ValueError`` for an empty
    position or (when the values are concrete) a NaN or infinite entry.
    """
    leaves = jax.tree_util.tree_leaves(position)
    if not leaves:
        raise ValueError("position must be a non-empty pytree of floating arrays")
    size = 0
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"position leaves must have a floating dtype, got {dtype}")
        size += int(np.prod(np.shape(leaf)))
        if not is_traced(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError("position contains NaN or infinite values; start from a finite point")
    return size


def check_logdensity_output(logdensity_fn: Callable, position: Any) -> None:
    """Raise ``ValueError`` unless ``logdensity_fn(position)`` is a floating scalar."""
    out = jax.eval_shape(logdensity_fn, position)
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(
            f"logdensity_fn must return a scalar, got {type(out).__name__} "
            f"with shape {shape}; sum over the dimensions of the log density"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"logdensity_fn must return a floating scalar, got dtype {out.dtype}")


def check_finite_logdensity(logdensity: Any) -> None:
    """Raise ``ValueError`` when a concrete initial log density is NaN or infinite."""
    if not is_traced(logdensity) and not np.isfinite(np.asarray(logdensity)):
        raise ValueError(
            f"logdensity_fn(position) = {float(logdensity)} at the initial position; "
            "start from a point with finite log density"
        )


def init_value_and_grad(logdensity_fn: Callable, position: Any) -> tuple[Any, Any]:
    """Validate ``position`` and return ``(logdensity, logdensity_grad)`` at it."""
    check_position(position)
    check_logdensity_output(logdensity_fn, position)
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    check_finite_logdensity(logdensity)
    return logdensity, grad


def init_value(logdensity_fn: Callable, position: Any) -> Any:
    """Validate ``position`` and return ``logdensity_fn(position)``."""
    check_position(position)
    check_logdensity_output(logdensity_fn, position)
    logdensity = logdensity_fn(position)
    check_finite_logdensity(logdensity)
    return logdensity


def normal_like(key: Any, tree: Any) -> Any:
    """Standard normal draws with the structure, shapes and dtypes of ``tree``."""
    flat, unravel = ravel_pytree(tree)
    return unravel(jax.random.normal(key, flat.shape, flat.dtype))


def flat_size(tree: Any) -> int:
    """Number of scalars in a pytree (static)."""
    return sum(int(np.prod(np.shape(x))) for x in jax.tree_util.tree_leaves(tree))


def tree_axpy(a: Any, x: Any, y: Any) -> Any:
    """``a * x + y`` leaf by leaf, ``a`` a scalar."""
    return jax.tree_util.tree_map(lambda xi, yi: yi + a * xi, x, y)


def tree_where(pred: Any, x: Any, y: Any) -> Any:
    """``jnp.where(pred, x, y)`` leaf by leaf, ``pred`` a scalar bool."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), x, y)


def metropolis_accept(key: Any, log_ratio: Any) -> tuple[Any, Any]:
    """Metropolis–Hastings test: returns ``(acceptance_probability, is_accepted)``.

    A NaN log ratio (a proposal where the log density is NaN) is rejected.
    """
    u = jax.random.uniform(key, jnp.shape(log_ratio), dtype=jnp.result_type(log_ratio))
    return metropolis_test(log_ratio, u)


def metropolis_test(log_ratio: Any, uniform: Any) -> tuple[Any, Any]:
    """:func:`metropolis_accept` on a given ``U[0, 1)`` draw (elementwise; NaN rejected)."""
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    acceptance = jnp.minimum(1.0, jnp.exp(log_ratio))
    return acceptance, jnp.log(uniform) < log_ratio
