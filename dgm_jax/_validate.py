"""Checks for static arguments at the API boundary.

Every public function validates what it can *before* tracing and raises a
``ValueError`` or ``TypeError`` that names the argument and what was expected.
These helpers keep those messages uniform. They only look at static
information (Python numbers, shapes, dtypes) so they are safe to call inside
functions that are later jit-compiled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_floating",
    "check_in",
    "check_int",
    "check_key",
    "check_ndim",
    "check_number",
    "check_positive",
    "check_probability",
    "check_shape",
    "is_traced",
]


def is_traced(x: Any) -> bool:
    """True for abstract values inside jit/vmap/grad, whose value is unknown."""
    if isinstance(x, (int, float, np.ndarray, np.generic)):
        return False
    try:
        np.asarray(x)  # concrete jax arrays convert; tracers refuse
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return True
    return False


def check_number(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a real scalar (Python or 0-d array)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got bool {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if value.shape != () or not (
            jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
        ):
            raise TypeError(
                f"{name} must be a real scalar, got array of shape {value.shape} "
                f"and dtype {value.dtype}"
            )
        return
    raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``).

    Traced values pass through unchecked: their value is unknown before run time.
    """
    check_number(name, value)
    if is_traced(value):
        return
    v = float(value)
    ok = (v >= 0.0 if allow_zero else v > 0.0) and math.isfinite(v)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def check_probability(name: str, value: Any, *, open_left: bool = False) -> None:
    """Raise unless ``value`` lies in [0, 1] (or (0, 1] with ``open_left``)."""
    check_number(name, value)
    if is_traced(value):
        return
    v = float(value)
    lo_ok = v > 0.0 if open_left else v >= 0.0
    if not (lo_ok and v <= 1.0):
        interval = "(0, 1]" if open_left else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def check_int(name: str, value: Any, *, minimum: int | None = None) -> None:
    """Raise unless ``value`` is a Python/NumPy integer, optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_in(name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_ndim(name: str, x: Any, ndim: int | Sequence[int]) -> None:
    """Raise ``ValueError`` unless array ``x`` has ``ndim`` dimensions."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    shape = np.shape(x)
    if len(shape) not in allowed:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
            f"got shape {tuple(shape)}"
        )


def check_shape(name: str, x: Any, shape: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` = any size)."""
    actual = tuple(np.shape(x))
    if len(actual) != len(shape) or any(
        s is not None and a != s for a, s in zip(actual, shape, strict=True)
    ):
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {actual}")


def check_floating(name: str, x: Any) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating dtype."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {dtype}")


def check_key(name: str, key: Any) -> None:
    """Raise ``TypeError`` unless ``key`` looks like a JAX PRNG key.

    Accepts new-style typed keys (``jax.random.key``) and legacy ``uint32[2]`` keys
    (``jax.random.PRNGKey``), including batches of either when traced under vmap.
    """
    if not hasattr(key, "dtype"):
        raise TypeError(f"{name} must be a JAX PRNG key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return
    raise TypeError(
        f"{name} must be a JAX PRNG key (jax.random.key or jax.random.PRNGKey), "
        f"got array of shape {key.shape} and dtype {key.dtype}"
    )
