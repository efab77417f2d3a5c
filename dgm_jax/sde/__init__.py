"""Score-based generative modelling with SDEs (Song et al. 2021; Karras et al. 2022).

* SDEs as values: :func:`vp_sde`, :func:`subvp_sde`, :func:`ve_sde`, :func:`edm_sde`
  (drift, diffusion, Gaussian kernel ``N(m(t) x_0, s(t)²)``, prior, time grid), and from a
  score :func:`reverse_sde` and :func:`probability_flow`.
* Runge–Kutta solvers from Butcher tables (:data:`euler`, :data:`heun`, :data:`rk4`,
  :data:`dopri5`): :func:`odeint_fixed` (``lax.scan``) and :func:`odeint_adaptive`
  (``lax.while_loop``, error control).
* Samplers: :func:`sample_sde` with predictors :func:`euler_maruyama`,
  :func:`reverse_diffusion`, :func:`ancestral` and :func:`langevin_corrector`;
  :func:`sample_ode` on the probability-flow ODE.
* Training: :func:`dsm_loss` (denoising score matching, noise or likelihood
  weighting) and :func:`score_from_noise_prediction`.
* Likelihood: :func:`ode_log_likelihood` (exact trace or Hutchinson) and
  :func:`bits_per_dim`.

Arrays are batch-first: ``x`` of shape ``(batch, *event)``, ``t`` of shape ``(batch,)``,
``score_fn(x, t) -> (batch, *event)``. Nothing is jitted for you.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax import sde
    >>> vp = sde.vp_sde()
    >>> score_fn = lambda x, t: -x  # the exact score when the data are N(0, I)
    >>> x = sde.sample_sde(jax.random.key(0), vp, score_fn, (16, 2), num_steps=50,
    ...                    predictor=sde.reverse_diffusion)
    >>> y, info = sde.sample_ode(jax.random.key(1), vp, score_fn, (16, 2), solver=sde.rk4,
    ...                          num_steps=20)
    >>> ll, _ = sde.ode_log_likelihood(jax.random.key(2), vp, score_fn, y, num_steps=20)
    >>> ll.shape
    (16,)
"""

from dgm_jax.sde.likelihood import (
    LikelihoodInfo,
    bits_per_dim,
    build_divergence_fn,
    hutchinson_probes,
    ode_log_likelihood,
    uniform_dequantization_offset,
)
from dgm_jax.sde.losses import dsm_loss, score_from_noise_prediction
from dgm_jax.sde.samplers import (
    CorrectorFn,
    PredictorFn,
    ancestral,
    euler_maruyama,
    langevin_corrector,
    reverse_diffusion,
    sample_ode,
    sample_sde,
)
from dgm_jax.sde.sdes import (
    SDE,
    ReverseSDE,
    ScoreFn,
    check_times,
    edm_sde,
    edm_time_grid,
    marginal_sample,
    probability_flow,
    reverse_sde,
    subvp_sde,
    uniform_time_grid,
    ve_sde,
    vp_sde,
)
from dgm_jax.sde.solvers import (
    AdaptiveSolver,
    ButcherTableau,
    ODEInfo,
    adaptive_solver,
    dopri5,
    euler,
    heun,
    midpoint,
    odeint_adaptive,
    odeint_fixed,
    odeint_grid,
    rk4,
    rk_step,
)

__all__ = [
    "SDE",
    "AdaptiveSolver",
    "ButcherTableau",
    "CorrectorFn",
    "LikelihoodInfo",
    "ODEInfo",
    "PredictorFn",
    "ReverseSDE",
    "ScoreFn",
    "adaptive_solver",
    "ancestral",
    "bits_per_dim",
    "build_divergence_fn",
    "check_times",
    "dopri5",
    "dsm_loss",
    "edm_sde",
    "edm_time_grid",
    "euler",
    "euler_maruyama",
    "heun",
    "hutchinson_probes",
    "langevin_corrector",
    "marginal_sample",
    "midpoint",
    "ode_log_likelihood",
    "odeint_adaptive",
    "odeint_fixed",
    "odeint_grid",
    "probability_flow",
    "reverse_diffusion",
    "reverse_sde",
    "rk4",
    "rk_step",
    "sample_ode",
    "sample_sde",
    "score_from_noise_prediction",
    "subvp_sde",
    "uniform_dequantization_offset",
    "uniform_time_grid",
    "ve_sde",
    "vp_sde",
]
