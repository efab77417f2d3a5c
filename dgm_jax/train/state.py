"""The training state: step counter, parameters and optimizer state in one pytree."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax.types import Params

__all__ = ["TrainState", "init_train_state"]


class TrainState(NamedTuple):
    """Everything a training step needs and updates; a pytree, so it jits and checkpoints.

    Families with several networks or optimizers (GANs, EBMs with replay buffers) define
    their own NamedTuple; ``fit`` only needs a ``step`` field on it.
    """

    step: jax.Array  # int32 scalar: number of completed optimizer updates
    params: Params  # model parameters (any pytree of arrays)
    opt_state: Any  # optax optimizer state for ``params``


def _check_optimizer(optimizer: Any) -> None:
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (with init and update), "
            f"got {type(optimizer).__name__}"
        )


def init_train_state(params: Params, optimizer: Any) -> TrainState:
    """Start a training run: step 0, the given ``params`` and a fresh optimizer state.

    Args:
        params: model parameters, a pytree of floating arrays.
        optimizer: an ``optax.GradientTransformation``.

    Returns:
        ``TrainState(step=int32 0, params, optimizer.init(params))``.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> state = init_train_state({"w": jnp.zeros(3)}, optax.sgd(0.1))
        >>> int(state.step)
        0
    """
    _check_optimizer(optimizer)
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must contain at least one array, got an empty pytree")
    for leaf in leaves:
        if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(
                "params must be a pytree of floating arrays, got a leaf of type "
                f"{type(leaf).__name__} with dtype {getattr(leaf, 'dtype', None)}"
            )
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
    )
