"""Discrete-time diffusion: schedules, DDPM losses, ancestral and DDIM samplers.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax import diffusion
    >>> schedule = diffusion.linear_schedule(1000)
    >>> model_fn = lambda x, t: jnp.zeros_like(x)  # a trained network goes here
    >>> x0 = jnp.ones((16, 2))
    >>> loss, metrics = diffusion.ddpm_loss(model_fn, schedule, jax.random.key(0), x0)
    >>> key = jax.random.key(1)
    >>> samples = diffusion.ddim_sample(key, model_fn, schedule, (16, 2), num_steps=50)
"""

from dgm_jax.diffusion.ddpm import (
    PREDICTIONS,
    ancestral_sample,
    ddim_invert,
    ddim_sample,
    ddim_timesteps,
    ddpm_loss,
    predict_eps_and_x0,
    q_sample,
)
from dgm_jax.diffusion.dpm_solver import dpm_solver_pp_sample
from dgm_jax.diffusion.edm import (
    DenoiseFn,
    denoiser_from_model,
    edm_heun_sample,
    edm_sigmas,
    round_sigmas,
    schedule_sigmas,
)
from dgm_jax.diffusion.guidance import (
    CondModelFn,
    classifier_free_guidance,
    classifier_guidance,
    drop_labels,
)
from dgm_jax.diffusion.schedules import (
    DiscreteSchedule,
    cosine_schedule,
    linear_schedule,
    schedule_from_alpha_bars,
    schedule_from_betas,
    sigmoid_schedule,
)

__all__ = [
    "PREDICTIONS",
    "CondModelFn",
    "DenoiseFn",
    "DiscreteSchedule",
    "ancestral_sample",
    "classifier_free_guidance",
    "classifier_guidance",
    "cosine_schedule",
    "ddim_invert",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_loss",
    "denoiser_from_model",
    "dpm_solver_pp_sample",
    "drop_labels",
    "edm_heun_sample",
    "edm_sigmas",
    "linear_schedule",
    "predict_eps_and_x0",
    "q_sample",
    "round_sigmas",
    "schedule_from_alpha_bars",
    "schedule_from_betas",
    "schedule_sigmas",
    "sigmoid_schedule",
]
