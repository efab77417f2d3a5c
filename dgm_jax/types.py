"""Array type aliases with named dimensions, used in public signatures.

The aliases are documentation first: they tell a reader the expected shape of
every argument. They are plain ``jaxtyping`` annotations and are not checked at
run time unless a caller installs a runtime checker.

Examples:
    >>> from dgm_jax.types import Points2D
    >>> def centre(x: Points2D) -> Points2D:
    ...     return x - x.mean(axis=0)
"""

from __future__ import annotations

from typing import Any

import jax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree, Shaped

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Float",
    "Images",
    "Int",
    "Labels",
    "LogDensityFn",
    "Metrics",
    "PRNGKeyArray",
    "Params",
    "Points",
    "Points2D",
    "PyTree",
    "Scalar",
    "Shaped",
]

Scalar = Float[Array, ""]
Points = Float[Array, "num dim"]
Points2D = Float[Array, "num 2"]
Images = Float[Array, "num height width channels"]
Labels = Int[Array, " num"]
Params = PyTree
Metrics = dict[str, Any]
LogDensityFn = Any  # Callable[[PyTree], Scalar]; a pytree position to a scalar log density

# A typed key: either a new-style key array or a legacy uint32[2] key.
Key = jax.Array
