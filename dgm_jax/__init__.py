"""dgm_jax: deep generative models as pure JAX functions.

Subpackages are imported on first use, so ``import dgm_jax`` is cheap and
``dgm_jax.mcmc.hmc`` works without a separate import:

    >>> import dgm_jax
    >>> kernel = dgm_jax.mcmc.hmc  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBPACKAGES = (
    "autoregressive",
    "data",
    "diffusion",
    "ebm",
    "flows",
    "gan",
    "mcmc",
    "metrics",
    "nn",
    "rl",
    "sde",
    "ssm",
    "train",
    "types",
    "vae",
    "viz",
)

if TYPE_CHECKING:  # pragma: no cover
    from dgm_jax import data, diffusion, mcmc, metrics, nn, sde, train, types, viz  # noqa: F401


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"dgm_jax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'dgm_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBPACKAGES))
