"""MCMC: kernels, integrators, warmup, diagnostics and a many-chain driver.

Kernels are factories returning ``SamplingAlgorithm(init, step)`` with
``step(key, state) -> (state, info)``; positions are any pytree of floating arrays.

* :func:`rwm` random-walk Metropolis, :func:`ula` / :func:`mala` Langevin,
  :func:`hmc` Hamiltonian Monte Carlo, :func:`nuts` the No-U-Turn Sampler.
* Integrators (:mod:`dgm_jax.mcmc.integrators`): ``velocity_verlet``, ``mclachlan``,
  ``yoshida``, or your own table with ``generate_integrator``.
* Warmup (:mod:`dgm_jax.mcmc.adaptation`): ``dual_averaging``, ``welford_covariance``,
  ``window_adaptation``.
* Many chains (:mod:`dgm_jax.mcmc.driver`): ``sample``, with the ordinary ``lax.scan``
  loop or, for many chains on a GPU, ``backend=FusedBackend()``
  (:mod:`dgm_jax.mcmc.fused`); convergence diagnostics
  (:mod:`dgm_jax.mcmc.diagnostics`): ``summary``, ``ess``, ``split_rhat``, ...; test
  targets with known moments (:mod:`dgm_jax.mcmc.targets`). Their public names (each
  module's ``__all__``) are re-exported here.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax import mcmc
    >>> kernel = mcmc.hmc(lambda x: -0.5 * jnp.sum(x**2), step_size=0.2,
    ...                   inverse_mass_matrix=jnp.ones(2), num_integration_steps=10)
    >>> state = kernel.init(jnp.zeros(2))
    >>> state, info = jax.jit(kernel.step)(jax.random.key(0), state)
"""

from dgm_jax.mcmc import diagnostics, driver, fused, targets
from dgm_jax.mcmc.adaptation import (
    AdaptationAlgorithm,
    DualAveraging,
    DualAveragingState,
    WelfordCovariance,
    WelfordState,
    build_schedule,
    dual_averaging,
    welford_covariance,
    window_adaptation,
)
from dgm_jax.mcmc.base import SamplingAlgorithm
from dgm_jax.mcmc.diagnostics import *  # noqa: F403  (its __all__)
from dgm_jax.mcmc.driver import *  # noqa: F403
from dgm_jax.mcmc.fused import FusedBackend, FusionError
from dgm_jax.mcmc.hmc import HMCInfo, HMCState, hmc
from dgm_jax.mcmc.integrators import (
    Integrator,
    IntegratorState,
    generate_integrator,
    mclachlan,
    velocity_verlet,
    yoshida,
)
from dgm_jax.mcmc.langevin import LangevinInfo, LangevinState, mala, ula
from dgm_jax.mcmc.mass_matrix import Metric, build_metric
from dgm_jax.mcmc.nuts import NUTSInfo, NUTSState, nuts
from dgm_jax.mcmc.rwm import RWMInfo, RWMState, rwm
from dgm_jax.mcmc.targets import *  # noqa: F403

__all__ = [
    "AdaptationAlgorithm",
    "DualAveraging",
    "DualAveragingState",
    "FusedBackend",
    "FusionError",
    "HMCInfo",
    "HMCState",
    "Integrator",
    "IntegratorState",
    "LangevinInfo",
    "LangevinState",
    "Metric",
    "NUTSInfo",
    "NUTSState",
    "RWMInfo",
    "RWMState",
    "SamplingAlgorithm",
    "WelfordCovariance",
    "WelfordState",
    "build_metric",
    "build_schedule",
    "dual_averaging",
    "generate_integrator",
    "hmc",
    "mala",
    "mclachlan",
    "nuts",
    "rwm",
    "ula",
    "velocity_verlet",
    "welford_covariance",
    "window_adaptation",
    "yoshida",
    "diagnostics",
    "driver",
    "fused",
    "targets",
    *diagnostics.__all__,
    *driver.__all__,
    *targets.__all__,
]
