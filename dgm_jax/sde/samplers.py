"""Sampling by the reverse SDE (predictor–corrector) and by the probability-flow ODE.

Song et al. (2021), §4.2 and Algorithms 2–5. A *predictor* moves a batch from time
``t`` to an earlier time ``t_next`` along the reverse SDE; a *corrector* runs a few
steps of score-based MCMC at a fixed time. Both are values passed to
:func:`sample_sde`:

* ``predictor(key, sde, score_fn, x, t, t_next) -> (x_next, x_mean)`` with ``x`` of
  shape ``(batch, *event)`` and scalar times; ``x_mean`` is the step without its
  noise (the last step returns it when ``denoise_final``).
* ``corrector(key, sde, score_fn, x, t) -> (x, x_mean)``.

Every SDE in :mod:`dgm_jax.sde.sdes` is linear with a Gaussian transition kernel
``x_t | x_s ~ N(a x_s, v I)``, ``a = m(t)/m(s)``, ``v = s(t)² - a² s(s)²``, which
gives :func:`reverse_diffusion` and :func:`ancestral` in closed form for all of them.

Nothing here is jitted; wrap the call in ``jax.jit`` (with ``score_fn``, the SDE and
the step counts static, e.g. closed over).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_int, check_key, check_positive, is_traced
from dgm_jax.sde.sdes import (
    SDE,
    ScoreFn,
    _per_example,
    check_batch_shape,
    check_score_fn,
    check_sde,
    check_times,
    probability_flow,
    reverse_sde,
)
from dgm_jax.sde.solvers import AdaptiveSolver, ButcherTableau, ODEInfo, integrate, rk4
from dgm_jax.types import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "CorrectorFn",
    "PredictorFn",
    "ancestral",
    "euler_maruyama",
    "langevin_corrector",
    "reverse_diffusion",
    "sample_ode",
    "sample_sde",
]

PredictorFn = Callable[..., tuple[Array, Array]]
CorrectorFn = Callable[..., tuple[Array, Array]]


def _batch_time(t: Array, x: Array) -> Array:
    return jnp.full(x.shape[:1], t, jnp.float32)


def _kernel(sde: SDE, t: Array, t_next: Array):
    """``(a, v, m_t, S_t, m_s, S_s)`` of the kernel ``x_t | x_s ~ N(a x_s, v)`` with s = t_next."""
    m_t, s_t = sde.marginal_fn(t)
    m_s, s_s = sde.marginal_fn(t_next)
    a = m_t / m_s
    v = jnp.maximum(s_t**2 - a**2 * s_s**2, 0.0)
    return a, v, m_t, s_t**2, m_s, s_s**2


def euler_maruyama(
    key: PRNGKeyArray, sde: SDE, score_fn: ScoreFn, x: Array, t: Array, t_next: Array
) -> tuple[Array, Array]:
    """Euler–Maruyama on the reverse SDE: ``x + [f - g² ∇log p] Δt + g sqrt(|Δt|) z``, Δt < 0.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> x, mean = euler_maruyama(jax.random.key(0), vp_sde(), lambda x, t: -x,
        ...                          jnp.zeros((4, 2)), 1.0, 0.9)
        >>> x.shape
        (4, 2)
    """
    t, t_next = jnp.float32(t), jnp.float32(t_next)
    tb = _batch_time(t, x)
    dt = t_next - t
    x_mean = x + reverse_sde(sde, score_fn).drift_fn(x, tb) * dt
    g = _per_example(sde.diffusion_fn(tb), x)
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + g * jnp.sqrt(jnp.abs(dt)) * noise, x_mean


def reverse_diffusion(
    key: PRNGKeyArray, sde: SDE, score_fn: ScoreFn, x: Array, t: Array, t_next: Array
) -> tuple[Array, Array]:
    """The reverse-diffusion predictor (Song et al. 2021, eq. 46).

    The forward step from ``s = t_next`` to ``t`` is ``x_t = x_s + (a - 1) x_s + sqrt(v) z``;
    the predictor reverses it as ``x_s = (2 - a) x_t + v ∇log p_t(x_t) + sqrt(v) z``
    (for VP, a and v are DDPM's ``sqrt(1 - β_i)`` and ``β_i``; for VE, ``a = 1`` and
    ``v = σ_t² - σ_s²``).

    Examples:
        >>> from dgm_jax.sde import ve_sde
        >>> x, _ = reverse_diffusion(jax.random.key(0), ve_sde(), lambda x, t: -x,
        ...                          jnp.zeros((4, 2)), 1.0, 0.9)
        >>> x.shape
        (4, 2)
    """
    t, t_next = jnp.float32(t), jnp.float32(t_next)
    a, v, *_ = _kernel(sde, t, t_next)
    score = score_fn(x, _batch_time(t, x))
    x_mean = (2.0 - a) * x + v * score
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + jnp.sqrt(v) * noise, x_mean


def ancestral(
    key: PRNGKeyArray, sde: SDE, score_fn: ScoreFn, x: Array, t: Array, t_next: Array
) -> tuple[Array, Array]:
    """Ancestral sampling: draw from ``q(x_s | x_t, x̂_0)`` with Tweedie's ``x̂_0``.

    ``x̂_0 = (x_t + s_t² ∇log p_t(x_t)) / m_t`` and the Gaussian posterior of the forward
    kernels has mean ``(m_s v x̂_0 + a s_s² x_t) / s_t²`` and variance ``s_s² v / s_t²``;
    DDPM's sampler (Ho et al. 2020) for VP and Song et al. (2021), eq. 47, for VE.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> x, _ = ancestral(jax.random.key(0), vp_sde(), lambda x, t: -x,
        ...                  jnp.zeros((4, 2)), 1.0, 0.9)
        >>> x.shape
        (4, 2)
    """
    t, t_next = jnp.float32(t), jnp.float32(t_next)
    a, v, m_t, var_t, m_s, var_s = _kernel(sde, t, t_next)
    score = score_fn(x, _batch_time(t, x))
    x0_hat = (x + var_t * score) / m_t
    x_mean = (m_s * v * x0_hat + a * var_s * x) / var_t
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + jnp.sqrt(var_s * v / var_t) * noise, x_mean


def langevin_corrector(snr: float = 0.16, num_steps: int = 1) -> CorrectorFn:
    """Langevin MCMC at fixed time with a signal-to-noise step size (Song et al. 2021, Alg. 4).

    Each step draws ``z ~ N(0, I)``, sets ``ε = 2 (snr ‖z‖ / ‖∇log p_t(x)‖)²`` with both
    norms averaged over the batch (as in the reference code: a per-example ratio explodes
    for an example near a mode), then ``x ← x + ε ∇log p_t(x) + sqrt(2ε) z``. The batch
    shares ``ε``, so the examples are coupled through the step size only; ``jax.vmap``
    over single-example batches for fully independent chains.

    Args:
        snr: signal-to-noise ratio ``r > 0``; smaller means smaller, more accurate steps.
        num_steps: Langevin steps per noise level, ``>= 1``.

    Returns:
        ``corrector(key, sde, score_fn, x, t) -> (x, x_mean)``.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> corrector = langevin_corrector(snr=0.1, num_steps=2)
        >>> x, _ = corrector(jax.random.key(0), vp_sde(), lambda x, t: -x, jnp.ones((4, 2)), 0.5)
        >>> x.shape
        (4, 2)
    """
    check_positive("snr", snr)
    check_int("num_steps", num_steps, minimum=1)

    def corrector(key, sde, score_fn, x, t):
        tb = _batch_time(jnp.float32(t), x)
        axes = tuple(range(1, x.ndim))

        def step(carry, step_key):
            x, _ = carry
            score = score_fn(x, tb)
            noise = jax.random.normal(step_key, x.shape, x.dtype)
            # Norms averaged over the batch, as in the reference: one example near the mode
            # (tiny score) must not get a huge step.
            score_norm = jnp.mean(jnp.sqrt(jnp.sum(score**2, axis=axes)))
            noise_norm = jnp.mean(jnp.sqrt(jnp.sum(noise**2, axis=axes)))
            eps = 2.0 * (snr * noise_norm / jnp.maximum(score_norm, 1e-12)) ** 2
            x_mean = x + eps * score
            return (x_mean + jnp.sqrt(2.0 * eps) * noise, x_mean), None

        (x, x_mean), _ = jax.lax.scan(step, (x, x), jax.random.split(key, num_steps))
        return x, x_mean

    return corrector


def _resolve_grid(sde: SDE, num_steps: int | None, time_grid: ArrayLike | None) -> Array:
    if time_grid is None:
        if num_steps is None:
            raise ValueError("num_steps is required (or pass time_grid)")
        check_int("num_steps", num_steps, minimum=1)
        return sde.time_grid_fn(num_steps)
    if is_traced(time_grid):  # values unknown before run time
        if time_grid.ndim != 1 or time_grid.shape[0] < 2:
            raise ValueError(f"time_grid must be 1-D with at least 2 times, got {time_grid.shape}")
        return time_grid.astype(jnp.float32)
    grid = np.asarray(time_grid, dtype=np.float64)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"time_grid must be 1-D with at least 2 times, got shape {grid.shape}")
    if num_steps is not None and num_steps != grid.shape[0] - 1:
        raise ValueError(
            f"num_steps ({num_steps}) must equal len(time_grid) - 1 = {grid.shape[0] - 1}"
        )
    check_times("time_grid", grid, sde)
    if not np.all(np.diff(grid) < 0):
        raise ValueError("time_grid must be strictly decreasing (from T towards 0)")
    if grid[-1] <= 0.0:
        raise ValueError("time_grid must end at a time > 0 (the score is singular at t = 0)")
    return jnp.asarray(grid, jnp.float32)


def _initial_state(key, sde, shape, x_T):
    if x_T is not None:
        x_T = jnp.asarray(x_T)
        if shape is not None and tuple(shape) != x_T.shape:
            raise ValueError(f"shape {tuple(shape)} does not match x_T's shape {x_T.shape}")
        check_batch_shape("x_T.shape", x_T.shape)
        return x_T
    if shape is None:
        raise ValueError("shape is required when x_T is not given")
    shape = check_batch_shape("shape", shape)
    return sde.prior_sample_fn(key, shape)


def sample_sde(
    key: PRNGKeyArray,
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    num_steps: int | None = None,
    predictor: PredictorFn = euler_maruyama,
    corrector: CorrectorFn | None = None,
    denoise_final: bool = True,
    time_grid: ArrayLike | None = None,
    x_T: Array | None = None,
) -> Float[Array, " batch *event"]:
    """Predictor–corrector sampling of the reverse SDE (Song et al. 2021, Alg. 1).

    Starting from ``x_T`` (a draw from the prior by default), each step ``t_i → t_{i+1}``
    of the decreasing grid runs the corrector at ``t_i`` (if any), then the predictor.
    The result approximates ``p_eps`` (``eps = sde.eps``), the data law convolved with
    ``N(0, s(eps)² I)``.

    Args:
        key: PRNG key.
        sde: the forward SDE the score belongs to.
        score_fn: ``score_fn(x, t) -> ∇_x log p_t(x)`` on a batch.
        shape: ``(batch, *event)``; may be None when ``x_T`` is given.
        num_steps: predictor steps (``>= 1``); the grid is ``sde.time_grid_fn(num_steps)``.
        predictor: :func:`euler_maruyama`, :func:`reverse_diffusion`, :func:`ancestral`
            or any function with their signature.
        corrector: None or e.g. :func:`langevin_corrector(snr, num_steps)`.
        denoise_final: return the last predictor step's mean, without its noise.
        time_grid: explicit decreasing times in ``(0, T]`` (replaces the default grid).
        x_T: starting state, shape ``(batch, *event)``.

    Returns:
        Samples of shape ``(batch, *event)``.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> score_fn = lambda x, t: -x  # the score of N(0, I), a fixed point of VP
        >>> x = sample_sde(jax.random.key(0), vp_sde(), score_fn, (8, 2), num_steps=20,
        ...                corrector=langevin_corrector(0.16, 1))
        >>> x.shape
        (8, 2)
    """
    check_key("key", key)
    check_sde(sde)
    if not callable(predictor):
        raise TypeError(f"predictor must be a function, got {type(predictor).__name__}")
    if corrector is not None and not callable(corrector):
        raise TypeError(f"corrector must be a function or None, got {type(corrector).__name__}")
    grid = _resolve_grid(sde, num_steps, time_grid)
    key_init, key_steps = jax.random.split(key)
    x = _initial_state(key_init, sde, shape, x_T)
    check_score_fn(score_fn, x.shape, x.dtype)

    def step(carry, inputs):
        x, _ = carry
        t, t_next, step_key = inputs
        key_c, key_p = jax.random.split(step_key)
        if corrector is not None:
            x, _ = corrector(key_c, sde, score_fn, x, t)
        return predictor(key_p, sde, score_fn, x, t, t_next), None

    keys = jax.random.split(key_steps, grid.shape[0] - 1)
    (x, x_mean), _ = jax.lax.scan(step, (x, x), (grid[:-1], grid[1:], keys))
    return x_mean if denoise_final else x


def sample_ode(
    key: PRNGKeyArray,
    sde: SDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...] | None,
    *,
    solver: ButcherTableau | AdaptiveSolver = rk4,
    num_steps: int | None = None,
    time_grid: ArrayLike | None = None,
    x_T: Array | None = None,
) -> tuple[Float[Array, " batch *event"], ODEInfo]:
    """Sample by solving the probability-flow ODE from ``T`` down to ``eps``.

    Deterministic given ``x_T``. With a :class:`ButcherTableau` (``euler``, ``heun``,
    ``rk4``, ``dopri5``) it takes one step per interval of the grid; with
    :func:`adaptive_solver` it controls the step size between ``T`` and ``eps`` (a
    single step size for the whole batch) and ``num_steps``/the grid's interior is
    unused. Reverse-mode differentiable with a fixed tableau only.

    Args:
        key: PRNG key (draws ``x_T`` from the prior if not given).
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)`` on a batch.
        shape: ``(batch, *event)``; may be None when ``x_T`` is given.
        solver: a tableau (fixed steps) or an :class:`AdaptiveSolver`.
        num_steps: steps of a fixed solver; the grid is ``sde.time_grid_fn(num_steps)``.
        time_grid: explicit decreasing times (replaces the default grid).
        x_T: starting state.

    Returns:
        ``(samples, info)``: samples of shape ``(batch, *event)`` and an :class:`ODEInfo`
        (check ``info.max_steps_reached`` with an adaptive solver).

    Examples:
        >>> from dgm_jax.sde import edm_sde, heun
        >>> score_fn = lambda x, t: -x / (1 + t[:, None] ** 2)  # data N(0, I)
        >>> x, info = sample_ode(jax.random.key(0), edm_sde(), score_fn, (8, 2),
        ...                      solver=heun, num_steps=18)
        >>> x.shape, int(info.num_fn_evals)
        ((8, 2), 36)
    """
    check_key("key", key)
    check_sde(sde)
    if isinstance(solver, AdaptiveSolver):
        if time_grid is None:
            time_grid = np.array([sde.T, sde.eps])
            num_steps = None
    elif not isinstance(solver, ButcherTableau):
        raise TypeError(
            f"solver must be a ButcherTableau (e.g. rk4) or an AdaptiveSolver, "
            f"got {type(solver).__name__}"
        )
    grid = _resolve_grid(sde, num_steps, time_grid)
    x = _initial_state(key, sde, shape, x_T)
    check_score_fn(score_fn, x.shape, x.dtype)
    ode = probability_flow(sde, score_fn)

    def f(t, y):
        return ode.drift_fn(y, _batch_time(t, y))

    return integrate(solver, f, x, grid)
