"""A fused many-chain backend for the MCMC kernels, written with Pallas.

``dgm_jax.mcmc.sample(key, kernel, positions, n, backend=FusedBackend())`` runs the
kernels built by :func:`~dgm_jax.mcmc.hmc`, :func:`~dgm_jax.mcmc.mala`,
:func:`~dgm_jax.mcmc.ula` and :func:`~dgm_jax.mcmc.rwm` as one Pallas kernel per
block of chains, with every chain's state in registers for the whole run
(:mod:`dgm_jax.mcmc.fused.backend`). The user's one-chain ``logdensity_fn`` and its
``jax.grad`` are unrolled over the coordinates into elementwise code
(:mod:`dgm_jax.mcmc.fused.lanes`); what cannot be unrolled raises :class:`FusionError`
naming the operation. On a CPU the same kernels run in Pallas interpret mode.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax import mcmc
    >>> kernel = mcmc.mala(lambda x: -0.5 * jnp.sum(x**2), step_size=0.5)
    >>> result = mcmc.sample(jax.random.key(0), kernel, jnp.zeros((256, 2)), 100,
    ...                      backend=mcmc.FusedBackend())
    >>> result.samples.shape
    (256, 100, 2)
"""

from dgm_jax.mcmc.fused.algorithms import FusedAlgorithm, build_algorithm
from dgm_jax.mcmc.fused.backend import FusedBackend, build_fused_runner
from dgm_jax.mcmc.fused.lanes import FusionError, lane_value, lane_value_and_grad

__all__ = [
    "FusedAlgorithm",
    "FusedBackend",
    "FusionError",
    "build_algorithm",
    "build_fused_runner",
    "lane_value",
    "lane_value_and_grad",
]
