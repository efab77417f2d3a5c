"""EDM's Heun sampler in the σ-parameterisation (Karras et al. 2022).

The data are noised as ``x = x_0 + σ n`` with ``n ~ N(0, I)``, and the network is a
denoiser ``denoise_fn(x, sigma) -> x̂_0`` on a batch (``x`` of shape ``(batch, *event)``,
``sigma`` of shape ``(batch,)``). The probability-flow ODE is
``dx/dσ = (x - D(x, σ)) / σ`` (Karras et al. 2022, eq. 4 with ``σ(t) = t, s(t) = 1``).

* :func:`edm_sigmas`: the paper's ρ-spaced noise levels with a final 0 (eq. 5).
* :func:`edm_heun_sample`: Algorithm 1 (deterministic, ``s_churn = 0``) and Algorithm 2
  (stochastic "churn": noise is added to raise σ by a factor ``1 + γ`` before each step).
* :func:`denoiser_from_model`: wraps a DDPM-style ``model_fn(x_t, t)`` trained on a
  :class:`~dgm_jax.diffusion.DiscreteSchedule` as a denoiser ``D(x, σ)``, and
  :func:`round_sigmas` snaps a σ grid onto the schedule's own noise levels.

The ODE itself and its Runge–Kutta solvers live in :mod:`dgm_jax.sde`
(:func:`~dgm_jax.sde.edm_sde`, :data:`~dgm_jax.sde.heun`); this module adds the
paper's sampler around it: the last step to σ = 0, the churn, and the adapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_in, check_int, check_key, check_positive, is_traced
from dgm_jax.diffusion.ddpm import PREDICTIONS, ModelFn, _check_schedule, predict_eps_and_x0
from dgm_jax.diffusion.schedules import DiscreteSchedule
from dgm_jax.sde.sdes import edm_time_grid
from dgm_jax.types import Array, Float, PRNGKeyArray

__all__ = [
    "DenoiseFn",
    "denoiser_from_model",
    "edm_heun_sample",
    "edm_sigmas",
    "round_sigmas",
    "schedule_sigmas",
]

DenoiseFn = Callable[[Array, Array], Array]


def edm_sigmas(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Float[Array, " num_steps_plus_1"]:
    """EDM's noise levels ``σ_0 = σ_max > ... > σ_{N-1} = σ_min`` and ``σ_N = 0``.

    ``σ_i = (σ_max^{1/ρ} + i/(N-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ`` for ``i < N``
    (Karras et al. 2022, eq. 5); with ``num_steps = 1`` the grid is ``[σ_max, 0]``.

    Args:
        num_steps: number of steps N (Heun uses ``2N - 1`` denoiser evaluations).
        sigma_min: smallest non-zero noise level.
        sigma_max: largest noise level, where sampling starts.
        rho: the spacing exponent (7 in the paper; 1 is uniform).

    Returns:
        Decreasing noise levels of shape ``(num_steps + 1,)``, the last one 0.

    Examples:
        >>> s = edm_sigmas(18)
        >>> s.shape, round(float(s[0]), 3), round(float(s[-2]), 3), float(s[-1])
        ((19,), 80.0, 0.002, 0.0)
    """
    check_int("num_steps", num_steps, minimum=1)
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    check_positive("rho", rho)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if num_steps == 1:
        levels = jnp.full(1, sigma_max, jnp.float32)
    else:
        levels = edm_time_grid(sigma_min, sigma_max, num_steps - 1, rho)
    return jnp.concatenate([levels, jnp.zeros(1, levels.dtype)])


def _check_sigmas(sigmas) -> Array:
    sigmas = jnp.asarray(sigmas, jnp.float32)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D array of at least 2 levels, got {sigmas.shape}")
    if is_traced(sigmas):
        return sigmas  # values unknown before run time
    values = np.asarray(sigmas)
    if np.any(values < 0) or np.any(np.diff(values) >= 0) or values[0] <= 0:
        raise ValueError(f"sigmas must be >= 0 and strictly decreasing, got {values.tolist()}")
    return sigmas


def edm_heun_sample(
    key: PRNGKeyArray,
    denoise_fn: DenoiseFn,
    sigmas: Float[Array, " num_steps_plus_1"],
    shape: tuple[int, ...] | None,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    x_init: Array | None = None,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    """EDM's second-order Heun sampler (Karras et al. 2022, Alg. 1 and 2).

    Step ``i`` (of ``N = len(sigmas) - 1``): with ``γ_i = min(s_churn / N, √2 - 1)`` when
    ``s_tmin <= σ_i <= s_tmax`` (else 0), raise the noise level to ``σ̂ = (1 + γ_i) σ_i``
    by adding ``sqrt(σ̂² - σ_i²) s_noise n``; take an Euler step of
    ``dx/dσ = (x - D(x, σ)) / σ`` from ``σ̂`` to ``σ_{i+1}``, then correct it with the
    slope at the end point (Heun) unless ``σ_{i+1} = 0``. With ``s_churn = 0`` the
    sampler is deterministic given its starting point and second order in the step.

    Args:
        key: PRNG key (draws the starting noise and the churn noise).
        denoise_fn: ``D(x, sigma) -> x̂_0`` on a batch: ``x`` ``(batch, *event)``,
            ``sigma`` ``(batch,)``.
        sigmas: decreasing noise levels, e.g. :func:`edm_sigmas`; sampling starts at
            ``sigmas[0]`` and normally ends at 0.
        shape: ``(batch, *event)``; may be ``None`` when ``x_init`` is given.
        s_churn: total stochasticity (0 = deterministic, Alg. 1).
        s_tmin: churn only where ``σ_i >= s_tmin``.
        s_tmax: churn only where ``σ_i <= s_tmax``.
        s_noise: scale of the churn noise (slightly above 1 in the paper's best runs).
        x_init: optional starting state at ``sigmas[0]`` (already scaled, e.g.
            ``sigmas[0] * n``); drawn as ``sigmas[0] * N(0, I)`` if omitted.
        return_trajectory: also return the states, shape ``(N + 1, batch, *event)``.

    Returns:
        Samples of shape ``(batch, *event)``, and the trajectory if asked for.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> denoise_fn = lambda x, sigma: jnp.zeros_like(x)  # the exact D for data at 0
        >>> x = edm_heun_sample(jax.random.key(0), denoise_fn, edm_sigmas(10), (4, 2))
        >>> x.shape, bool(jnp.abs(x).max() < 1e-6)
        ((4, 2), True)
    """
    check_key("key", key)
    sigmas = _check_sigmas(sigmas)
    check_positive("s_churn", s_churn, allow_zero=True)
    check_positive("s_noise", s_noise, allow_zero=True)
    for name, value in (("s_tmin", s_tmin), ("s_tmax", s_tmax)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    key_init, key_steps = jax.random.split(key)
    if x_init is not None:
        if shape is not None and tuple(shape) != tuple(x_init.shape):
            raise ValueError(f"shape {tuple(shape)} does not match x_init's shape {x_init.shape}")
        x = x_init
    else:
        if shape is None or len(tuple(shape)) < 2:
            raise ValueError(f"shape must be (batch, *event) with at least 2 entries, got {shape}")
        x = sigmas[0] * jax.random.normal(key_init, tuple(shape))
    batch = x.shape[0]
    num_steps = sigmas.shape[0] - 1
    gamma_max = jnp.minimum(s_churn / num_steps, math.sqrt(2.0) - 1.0)
    in_range = (sigmas[:-1] >= s_tmin) & (sigmas[:-1] <= s_tmax)
    gammas = jnp.where(in_range, gamma_max, 0.0)

    def slope(x_, sigma):
        denoised = denoise_fn(x_, jnp.full((batch,), sigma, x_.dtype))
        return (x_ - denoised) / sigma

    def step(x_cur, inputs):
        sigma, sigma_next, gamma, step_key = inputs
        sigma_hat = sigma * (1.0 + gamma)
        noise = jax.random.normal(step_key, x_cur.shape, x_cur.dtype)
        # sqrt(σ̂² - σ²) written so that γ = 0 gives exactly 0 (no negative round-off).
        x_hat = x_cur + sigma * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * noise
        d = slope(x_hat, sigma_hat)
        x_euler = x_hat + (sigma_next - sigma_hat) * d

        def heun(_):
            d_next = slope(x_euler, sigma_next)
            return x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)

        x_next = jax.lax.cond(sigma_next > 0, heun, lambda _: x_euler, None)
        return x_next, (x_next if return_trajectory else None)

    keys = jax.random.split(key_steps, num_steps)
    out, path = jax.lax.scan(step, x, (sigmas[:-1], sigmas[1:], gammas, keys))
    if return_trajectory:
        return out, jnp.concatenate([x[None], path], axis=0)
    return out


def schedule_sigmas(schedule: DiscreteSchedule) -> Float[Array, " T"]:
    """The noise levels ``σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)`` of a discrete schedule, increasing.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> schedule_sigmas(linear_schedule(1000)).shape
        (1000,)
    """
    _check_schedule(schedule)
    ab = schedule.alpha_bars
    return jnp.sqrt((1.0 - ab) / ab)


def round_sigmas(sigmas: Array, schedule: DiscreteSchedule) -> Float[Array, " n"]:
    """Snap each non-zero σ to the nearest (in log σ) noise level of the schedule.

    Zeros stay zero. Use with ``denoiser_from_model(..., interpolate=False)`` so that a
    network trained on integer steps is only queried at those steps (Karras et al.
    2022, App. C.3.1, do the same for discrete-time models).

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = linear_schedule(1000)
        >>> r = round_sigmas(edm_sigmas(10, 0.01, 100.0), s)
        >>> bool(jnp.all(jnp.isin(r[:-1], schedule_sigmas(s))))
        True
    """
    levels = schedule_sigmas(schedule)
    sigmas = jnp.asarray(sigmas, jnp.float32)
    index = _nearest_step(jnp.where(sigmas > 0, sigmas, 1.0), levels)
    return jnp.where(sigmas > 0, levels[index], 0.0)


def _nearest_step(sigma: Array, levels: Array) -> Array:
    log_levels = jnp.log(levels)
    log_levels = log_levels.reshape((1,) * jnp.ndim(sigma) + log_levels.shape)
    diff = jnp.abs(jnp.log(sigma)[..., None] - log_levels)
    return jnp.argmin(diff, axis=-1)


def denoiser_from_model(
    model_fn: ModelFn,
    schedule: DiscreteSchedule,
    *,
    prediction: str = "epsilon",
    interpolate: bool = True,
) -> DenoiseFn:
    """Wrap a DDPM-style network as an EDM denoiser ``D(x, σ) -> x̂_0``.

    A DDPM state at step ``t`` is ``x_t = sqrt(ᾱ_t)(x_0 + σ_t n)`` with
    ``σ_t = sqrt((1 - ᾱ_t)/ᾱ_t)``, so the EDM state ``x = x_0 + σ n`` maps to
    ``x_t = x / sqrt(1 + σ²)`` (then ``ᾱ = 1/(1 + σ²)``). The step index fed to the
    network is

    * ``interpolate=True``: fractional, linear in ``log σ`` between neighbouring
      schedule levels (the network must accept fractional ``t``, as sinusoidal
      embeddings do), clipped to ``[0, T-1]``;
    * ``interpolate=False``: the nearest step in ``log σ``, and then ``ᾱ`` and the input
      scaling are that step's own, so the denoiser is exact only at the schedule's
      levels: use it with :func:`round_sigmas`.

    ``σ`` outside the schedule's range is clipped to its end steps in either mode.

    Args:
        model_fn: network ``(x_t, t) -> output`` on a batch.
        schedule: the discrete schedule the network was trained with.
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.
        interpolate: fractional (True) or nearest (False) step index.

    Returns:
        ``denoise_fn(x, sigma)`` with ``x`` ``(batch, *event)`` and ``sigma`` ``(batch,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from dgm_jax.diffusion import linear_schedule
        >>> d = denoiser_from_model(lambda x, t: jnp.zeros_like(x), linear_schedule(100))
        >>> d(jnp.ones((3, 2)), jnp.full(3, 0.5)).shape
        (3, 2)
    """
    _check_schedule(schedule)
    check_in("prediction", prediction, PREDICTIONS)
    if not isinstance(interpolate, bool):
        raise TypeError(f"interpolate must be a bool, got {type(interpolate).__name__}")
    levels = schedule_sigmas(schedule)
    log_levels = jnp.log(levels)
    steps = jnp.arange(schedule.num_steps, dtype=jnp.float32)

    def denoise_fn(x: Array, sigma: Array) -> Array:
        if jnp.shape(sigma) != (x.shape[0],):
            raise ValueError(f"sigma must have shape ({x.shape[0]},), got {jnp.shape(sigma)}")
        if interpolate:
            t = jnp.interp(jnp.log(sigma), log_levels, steps)
            alpha_bar = 1.0 / (1.0 + sigma**2)
        else:
            index = _nearest_step(sigma, levels)
            t = index.astype(jnp.float32)
            alpha_bar = schedule.alpha_bars[index]
        scale = jnp.sqrt(alpha_bar).reshape((-1,) + (1,) * (x.ndim - 1))
        x_t = scale * x
        output = model_fn(x_t, t)
        _, x0 = predict_eps_and_x0(output, x_t, alpha_bar, prediction)
        return x0

    return denoise_fn
