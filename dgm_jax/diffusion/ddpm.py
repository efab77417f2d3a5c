"""DDPM training loss, ancestral sampling and DDIM sampling and inversion.

The network is passed as ``model_fn(x_t, t) -> output`` acting on a batch:
``x_t`` of shape ``(batch, *event)`` and ``t`` of shape ``(batch,)`` holding the
step index ``0 .. T-1`` as float32. What the output means is set by
``prediction``:

* ``"epsilon"``: the noise ε in ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`` (Ho et al. 2020);
* ``"x0"``: the clean data x_0;
* ``"v"``: the velocity ``v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0`` (Salimans & Ho 2022).

The samplers close over parameters through ``model_fn`` (for example
``lambda x, t: net.apply(params, x, t)``), are pure, and compose with
``jax.jit``; the library does not jit them for you.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_in, check_int, check_key, check_positive
from dgm_jax.diffusion.schedules import DiscreteSchedule
from dgm_jax.types import Array, Float, Metrics, PRNGKeyArray

__all__ = [
    "PREDICTIONS",
    "ModelFn",
    "ancestral_sample",
    "ddim_invert",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_loss",
    "predict_eps_and_x0",
    "q_sample",
]

ModelFn = Callable[[Array, Array], Array]
PREDICTIONS = ("epsilon", "x0", "v")


def _expand(values: Float[Array, " batch"], like: Array) -> Array:
    """Reshape per-example scalars to broadcast against ``like`` (batch, *event)."""
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def _check_schedule(schedule: DiscreteSchedule) -> None:
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")


def q_sample(
    schedule: DiscreteSchedule,
    x0: Float[Array, " batch *event"],
    t: Array,
    noise: Float[Array, " batch *event"],
) -> Float[Array, " batch *event"]:
    """Draw ``x_t ~ q(x_t | x_0)`` given the noise: ``sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε``.

    Args:
        schedule: the discrete schedule.
        x0: clean data, shape ``(batch, *event)``.
        t: integer steps in ``[0, T)``, shape ``(batch,)``.
        noise: standard normal noise shaped like ``x0``.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = linear_schedule(10)
        >>> q_sample(s, jnp.ones((2, 3)), jnp.array([0, 9]), jnp.zeros((2, 3))).shape
        (2, 3)
    """
    ab = _expand(schedule.alpha_bars[t], x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def predict_eps_and_x0(
    output: Array, x_t: Array, alpha_bar: Array, prediction: str
) -> tuple[Array, Array]:
    """Convert a network output into the implied ``(ε̂, x̂_0)`` pair.

    Args:
        output: the network's output, shape ``(batch, *event)``.
        x_t: the noisy input, same shape.
        alpha_bar: ``ᾱ_t`` per example, shape ``(batch,)``.
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.
    """
    ab = _expand(alpha_bar, x_t)
    sa, s1a = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    if prediction == "epsilon":
        eps = output
        x0 = (x_t - s1a * eps) / sa
    elif prediction == "x0":
        x0 = output
        eps = (x_t - sa * x0) / s1a
    elif prediction == "v":
        # x_t = sa x0 + s1a eps and v = sa eps - s1a x0, with sa² + s1a² = 1
        x0 = sa * x_t - s1a * output
        eps = s1a * x_t + sa * output
    else:
        raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")
    return eps, x0


def ddpm_loss(
    model_fn: ModelFn,
    schedule: DiscreteSchedule,
    key: PRNGKeyArray,
    x0: Float[Array, " batch *event"],
    *,
    prediction: str = "epsilon",
) -> tuple[Float[Array, ""], Metrics]:
    """The simple DDPM objective: mean squared error of the prediction target.

    A step ``t ~ U{0, T-1}`` and noise ``ε ~ N(0, I)`` are drawn per example; the
    loss is the mean over the batch and the event dimensions of
    ``(model_fn(x_t, t) - target)²`` with target ε, x_0 or v (Ho et al. 2020,
    eq. 14; Salimans & Ho 2022 for v).

    Args:
        model_fn: network ``(x_t, t) -> output`` on a batch.
        schedule: the discrete schedule.
        key: PRNG key.
        x0: a batch of clean data, shape ``(batch, *event)``.
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.

    Returns:
        ``(loss, metrics)`` where metrics holds ``"mse"``.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = linear_schedule(100)
        >>> zero_fn = lambda x, t: jnp.zeros_like(x)
        >>> loss, _ = ddpm_loss(zero_fn, s, jax.random.key(0), jnp.ones((8, 2)))
        >>> bool(loss > 0)
        True
    """
    _check_schedule(schedule)
    check_in("prediction", prediction, PREDICTIONS)
    check_key("key", key)
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must have shape (batch, *event), got shape {jnp.shape(x0)}")
    key_t, key_noise = jax.random.split(key)
    batch = x0.shape[0]
    t = jax.random.randint(key_t, (batch,), 0, schedule.num_steps)
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    output = model_fn(x_t, t.astype(jnp.float32))
    if output.shape != x0.shape:
        raise ValueError(f"model_fn output shape {output.shape} must equal x0's shape {x0.shape}")
    if prediction == "epsilon":
        target = noise
    elif prediction == "x0":
        target = x0
    else:
        ab = _expand(schedule.alpha_bars[t], x0)
        target = jnp.sqrt(ab) * noise - jnp.sqrt(1.0 - ab) * x0
    mse = jnp.mean((output - target) ** 2)
    return mse, {"mse": mse}


def _initial_noise(key, shape, x_T):
    if x_T is not None:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"shape {tuple(shape)} does not match x_T's shape {x_T.shape}")
        return x_T
    if shape is None or len(tuple(shape)) < 2:
        raise ValueError(f"shape must be (batch, *event) with at least 2 entries, got {shape}")
    return jax.random.normal(key, tuple(shape))


def ancestral_sample(
    key: PRNGKeyArray,
    model_fn: ModelFn,
    schedule: DiscreteSchedule,
    shape: tuple[int, ...] | None,
    *,
    prediction: str = "epsilon",
    variance: str = "posterior",
    clip_x0: float | None = None,
    x_T: Array | None = None,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    """Ancestral sampling from the learned reverse process (Ho et al. 2020, Alg. 2).

    Each step draws ``x_{t-1} ~ N(μ̃_t(x_t, x̂_0), σ_t² I)`` with the posterior mean
    ``μ̃_t = sqrt(ᾱ_{t-1}) β_t/(1-ᾱ_t) x̂_0 + sqrt(α_t)(1-ᾱ_{t-1})/(1-ᾱ_t) x_t``
    and ``σ_t² = β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t`` (``variance="posterior"``) or
    ``σ_t² = β_t`` (``variance="beta"``); the last step adds no noise.

    Args:
        key: PRNG key.
        model_fn: network ``(x_t, t) -> output`` on a batch.
        schedule: the discrete schedule the network was trained with.
        shape: ``(batch, *event)`` of the samples; may be ``None`` when ``x_T`` is given.
        prediction: what the network predicts, ``"epsilon"``, ``"x0"`` or ``"v"``.
        variance: ``"posterior"`` (β̃_t) or ``"beta"`` (β_t).
        clip_x0: if set, clip x̂_0 to ``[-clip_x0, clip_x0]`` (for data in a box).
        x_T: optional starting noise; drawn from ``N(0, I)`` if omitted.
        return_trajectory: also return every intermediate state, shape
            ``(T + 1, batch, *event)`` from ``x_T`` to ``x_0`` (memory grows with T).

    Returns:
        Samples of shape ``(batch, *event)``, and the trajectory if asked for.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = linear_schedule(50, 2e-3, 0.4)
        >>> x = ancestral_sample(jax.random.key(0), lambda x, t: jnp.zeros_like(x), s, (4, 2))
        >>> x.shape
        (4, 2)
    """
    _check_schedule(schedule)
    check_key("key", key)
    check_in("prediction", prediction, PREDICTIONS)
    check_in("variance", variance, ("posterior", "beta"))
    if clip_x0 is not None:
        check_positive("clip_x0", clip_x0)
    key_init, key_steps = jax.random.split(key)
    x = _initial_noise(key_init, shape, x_T)
    batch = x.shape[0]
    ab = schedule.alpha_bars
    ab_prev = jnp.concatenate([jnp.ones(1, ab.dtype), ab[:-1]])

    def step(x_t, inputs):
        t, step_key = inputs
        t_batch = jnp.full((batch,), t, jnp.float32)
        output = model_fn(x_t, t_batch)
        _, x0_hat = predict_eps_and_x0(output, x_t, jnp.full((batch,), ab[t]), prediction)
        if clip_x0 is not None:
            x0_hat = jnp.clip(x0_hat, -clip_x0, clip_x0)
        beta, alpha = schedule.betas[t], schedule.alphas[t]
        coef_x0 = jnp.sqrt(ab_prev[t]) * beta / (1.0 - ab[t])
        coef_xt = jnp.sqrt(alpha) * (1.0 - ab_prev[t]) / (1.0 - ab[t])
        mean = coef_x0 * x0_hat + coef_xt * x_t
        var = (1.0 - ab_prev[t]) / (1.0 - ab[t]) * beta if variance == "posterior" else beta
        noise = jax.random.normal(step_key, x_t.shape, x_t.dtype)
        x_prev = mean + jnp.where(t > 0, jnp.sqrt(var), 0.0) * noise
        return x_prev, (x_prev if return_trajectory else None)

    timesteps = jnp.arange(schedule.num_steps - 1, -1, -1)
    keys = jax.random.split(key_steps, schedule.num_steps)
    x0, path = jax.lax.scan(step, x, (timesteps, keys))
    if return_trajectory:
        return x0, jnp.concatenate([x[None], path], axis=0)
    return x0


def ddim_timesteps(num_train_steps: int, num_steps: int) -> Array:
    """The decreasing sub-sequence of training steps DDIM visits.

    Evenly spaced (rounded) from ``T-1`` down to ``0``; one step visits ``T-1`` only.

    Examples:
        >>> ddim_timesteps(1000, 4).tolist()
        [999, 666, 333, 0]
    """
    check_int("num_steps", num_steps, minimum=1)
    if num_steps > num_train_steps:
        raise ValueError(
            f"num_steps ({num_steps}) must not exceed the schedule's {num_train_steps} steps"
        )
    # Decreasing from T-1, so that a single step starts from pure noise.
    return jnp.round(jnp.linspace(num_train_steps - 1, 0.0, num_steps)).astype(jnp.int32)


def _ddim_step(model_fn, prediction, ab_all, x_t, t, ab_next, eta, key, clip_x0):
    """One DDIM update from step ``t`` to a step with signal fraction ``ab_next``."""
    batch = x_t.shape[0]
    ab_t = ab_all[t]
    output = model_fn(x_t, jnp.full((batch,), t, jnp.float32))
    eps, x0 = predict_eps_and_x0(output, x_t, jnp.full((batch,), ab_t), prediction)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x_t - jnp.sqrt(ab_t) * x0) / jnp.sqrt(1.0 - ab_t)
    # Song et al. (2021), eq. 16: σ = η sqrt((1-ᾱ_s)/(1-ᾱ_t)) sqrt(1 - ᾱ_t/ᾱ_s)
    sigma = eta * jnp.sqrt((1.0 - ab_next) / (1.0 - ab_t) * (1.0 - ab_t / ab_next))
    direction = jnp.sqrt(jnp.clip(1.0 - ab_next - sigma**2, 0.0)) * eps
    noise = jax.random.normal(key, x_t.shape, x_t.dtype)
    return jnp.sqrt(ab_next) * x0 + direction + sigma * noise


def ddim_sample(
    key: PRNGKeyArray,
    model_fn: ModelFn,
    schedule: DiscreteSchedule,
    shape: tuple[int, ...] | None,
    *,
    num_steps: int,
    eta: float = 0.0,
    prediction: str = "epsilon",
    clip_x0: float | None = None,
    x_T: Array | None = None,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    """DDIM sampling (Song, Meng & Ermon 2021) on a sub-sequence of the steps.

    With ``eta = 0`` the map from ``x_T`` to samples is deterministic (it
    discretises the probability-flow ODE); ``eta = 1`` matches DDPM's ancestral
    variance on the visited steps.

    Args:
        key: PRNG key (draws ``x_T`` if not given, and the noise when ``eta > 0``).
        model_fn: network ``(x_t, t) -> output`` on a batch.
        schedule: the discrete schedule the network was trained with.
        shape: ``(batch, *event)``; may be ``None`` when ``x_T`` is given.
        num_steps: number of network evaluations, ``1 <= num_steps <= T``.
        eta: stochasticity in ``[0, 1]``-ish (any value >= 0 is accepted).
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.
        clip_x0: optional clipping of x̂_0 to ``[-clip_x0, clip_x0]``.
        x_T: optional starting noise.
        return_trajectory: also return the states, shape ``(num_steps + 1, batch, *event)``.

    Returns:
        Samples of shape ``(batch, *event)``, and the trajectory if asked for.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = linear_schedule(100)
        >>> zero_fn = lambda x, t: jnp.zeros_like(x)
        >>> x = ddim_sample(jax.random.key(0), zero_fn, s, (4, 2), num_steps=10)
        >>> x.shape
        (4, 2)
    """
    _check_schedule(schedule)
    check_key("key", key)
    check_in("prediction", prediction, PREDICTIONS)
    check_positive("eta", eta, allow_zero=True)
    if clip_x0 is not None:
        check_positive("clip_x0", clip_x0)
    steps = ddim_timesteps(schedule.num_steps, num_steps)
    key_init, key_steps = jax.random.split(key)
    x = _initial_noise(key_init, shape, x_T)
    ab = schedule.alpha_bars
    ab_next = jnp.concatenate([ab[steps[1:]], jnp.ones(1, ab.dtype)])

    def step(x_t, inputs):
        t, a_next, step_key = inputs
        x_next = _ddim_step(model_fn, prediction, ab, x_t, t, a_next, eta, step_key, clip_x0)
        return x_next, (x_next if return_trajectory else None)

    keys = jax.random.split(key_steps, num_steps)
    x0, path = jax.lax.scan(step, x, (steps, ab_next, keys))
    if return_trajectory:
        return x0, jnp.concatenate([x[None], path], axis=0)
    return x0


def ddim_invert(
    model_fn: ModelFn,
    schedule: DiscreteSchedule,
    x0: Float[Array, " batch *event"],
    *,
    num_steps: int,
    prediction: str = "epsilon",
) -> Float[Array, " batch *event"]:
    """Map data to noise by running deterministic DDIM (η = 0) forwards in time.

    The inverse of ``ddim_sample(..., eta=0)`` up to the discretisation error of
    the probability-flow ODE, which shrinks as ``num_steps`` grows. Each update
    evaluates the network at the current, less noisy, step (Song et al. 2021, §4.3).

    Args:
        model_fn: network ``(x_t, t) -> output`` on a batch.
        schedule: the discrete schedule.
        x0: data, shape ``(batch, *event)``.
        num_steps: number of network evaluations.
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.

    Returns:
        The latent ``x_T`` of shape ``(batch, *event)``.
    """
    _check_schedule(schedule)
    check_in("prediction", prediction, PREDICTIONS)
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must have shape (batch, *event), got shape {jnp.shape(x0)}")
    steps = ddim_timesteps(schedule.num_steps, num_steps)[::-1]  # increasing
    ab = schedule.alpha_bars
    batch = x0.shape[0]

    def step(x, inputs):
        t_from, t_to, first = inputs
        # The first move goes from the clean data (ᾱ = 1) to the first visited step.
        ab_from = jnp.where(first, 1.0, ab[t_from])
        output = model_fn(x, jnp.full((batch,), t_from, jnp.float32))
        eps, x0_hat = predict_eps_and_x0(output, x, jnp.full((batch,), ab[t_from]), prediction)
        x0_hat = jnp.where(first, x, x0_hat)
        # Recompute ε from the (possibly clipped) pair; guarded where ᾱ = 1.
        safe = jnp.sqrt(jnp.where(first, 1.0, 1.0 - ab_from))
        eps = jnp.where(first, eps, (x - jnp.sqrt(ab_from) * x0_hat) / safe)
        ab_to = ab[t_to]
        return jnp.sqrt(ab_to) * x0_hat + jnp.sqrt(1.0 - ab_to) * eps, None

    t_from = jnp.concatenate([steps[:1], steps[:-1]])
    first = jnp.arange(num_steps) == 0
    x_T, _ = jax.lax.scan(step, x0, (t_from, steps, first))
    return x_T
