"""Warmup: dual-averaging step size and windowed (Stan-style) mass-matrix adaptation.

* :func:`dual_averaging` tunes ``log(step_size)`` so the mean acceptance statistic
  reaches a target, with Nesterov's primal-dual averaging (Nesterov, "Primal-dual
  subgradient methods for convex problems", Math. Program. 120, 2009) in the form and
  with the constants ``t0 = 10``, ``gamma = 0.05``, ``kappa = 0.75`` of Hoffman &
  Gelman ("The No-U-Turn Sampler", JMLR 15, 2014, section 3.2.1).
* :func:`welford_covariance` accumulates a running mean and (co)variance with
  Welford's update (Welford, Technometrics 4, 1962), merging batches with the
  parallel formula of Chan, Golub & LeVeque (1979), and returns Stan's regularised
  estimate ``n/(n+5) C + 1e-3 * 5/(n+5) I``.
* :func:`window_adaptation` runs Stan's warmup schedule (Stan Reference Manual,
  "HMC algorithm parameters"): an initial fast window (75 steps) adapting only the
  step size, slow windows of 25, 50, 100, ... steps estimating the mass matrix (the
  last one stretched to fill), and a final fast window (50 steps); after each slow
  window the inverse mass matrix is set to the estimated covariance and dual
  averaging restarts from the current step size. Shorter warmups scale the buffers
  to 15% / 75% / 10% of the steps.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax.mcmc import nuts
    >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> warmup = window_adaptation(nuts, logdensity_fn, pool_chains=True)
    >>> states, params, infos = warmup.run(jax.random.key(0), jnp.zeros((4, 2)), 100)
    >>> kernel = nuts(logdensity_fn, **params)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dgm_jax._validate import check_int, check_key, check_number, check_positive
from dgm_jax.mcmc.base import check_logdensity_output, check_position, flat_size

__all__ = [
    "AdaptationAlgorithm",
    "DualAveraging",
    "DualAveragingState",
    "WelfordCovariance",
    "WelfordState",
    "build_schedule",
    "dual_averaging",
    "welford_covariance",
    "window_adaptation",
]


# --------------------------------------------------------------------------- dual averaging


class DualAveragingState(NamedTuple):
    """State of dual averaging on ``log(step_size)``."""

    log_step_size: Any  # x_t, the step size to use next (log)
    log_step_size_avg: Any  # x_bar_t, the averaged iterate returned at the end (log)
    step: Any  # t, number of updates so far (float)
    avg_error: Any  # H_bar_t, running average of (target - acceptance)
    mu: Any  # log(10 * initial step size), the shrinkage point


class DualAveraging(NamedTuple):
    """Dual averaging as ``(init, update, final)`` pure functions."""

    init: Callable[[Any], DualAveragingState]  # initial_step_size -> state
    update: Callable[[DualAveragingState, Any], DualAveragingState]  # (state, acceptance)
    final: Callable[[DualAveragingState], Any]  # state -> tuned step size exp(x_bar)


def dual_averaging(
    target_acceptance: float = 0.8,
    *,
    t0: float = 10.0,
    gamma: float = 0.05,
    kappa: float = 0.75,
) -> DualAveraging:
    """Dual averaging of the step size toward a target acceptance (Hoffman & Gelman 2014).

    The update after the ``t``-th acceptance statistic ``a_t`` is
    ``H_t = (1 - 1/(t + t0)) H_{t-1} + (delta - a_t)/(t + t0)``,
    ``x_t = mu - sqrt(t)/gamma H_t``, ``x_bar_t = t^-kappa x_t + (1 - t^-kappa) x_bar_{t-1}``.

    Args:
        target_acceptance: ``delta`` in (0, 1).
        t0: stabilises the first iterations (>= 0).
        gamma: shrinkage toward ``mu`` (> 0).
        kappa: averaging decay in (0.5, 1].

    Returns:
        A :class:`DualAveraging` ``(init, update, final)``; ``update`` is jit/vmap safe.

    Examples:
        >>> da = dual_averaging(0.8)
        >>> state = da.init(1.0)
        >>> state = da.update(state, 0.5)
        >>> step_size = da.final(state)
    """
    check_number("target_acceptance", target_acceptance)
    if not 0.0 < float(target_acceptance) < 1.0:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance!r}")
    check_positive("t0", t0, allow_zero=True)
    check_positive("gamma", gamma)
    check_number("kappa", kappa)
    if not 0.5 < float(kappa) <= 1.0:
        raise ValueError(f"kappa must lie in (0.5, 1], got {kappa!r}")

    def init(initial_step_size: Any) -> DualAveragingState:
        log_h = jnp.log(jnp.asarray(initial_step_size, jnp.float32))
        zero = jnp.zeros_like(log_h)
        return DualAveragingState(log_h, zero, zero, zero, jnp.log(10.0) + log_h)

    def update(state: DualAveragingState, acceptance_rate: Any) -> DualAveragingState:
        acceptance_rate = jnp.nan_to_num(jnp.asarray(acceptance_rate, jnp.float32), nan=0.0)
        t = state.step + 1.0
        eta = 1.0 / (t + t0)
        avg_error = (1.0 - eta) * state.avg_error + eta * (target_acceptance - acceptance_rate)
        log_h = state.mu - jnp.sqrt(t) / gamma * avg_error
        weight = t ** (-kappa)
        log_h_avg = weight * log_h + (1.0 - weight) * state.log_step_size_avg
        return DualAveragingState(log_h, log_h_avg, t, avg_error, state.mu)

    def final(state: DualAveragingState) -> Any:
        return jnp.exp(jnp.where(state.step > 0, state.log_step_size_avg, state.log_step_size))

    return DualAveraging(init, update, final)


# --------------------------------------------------------------------------- Welford


class WelfordState(NamedTuple):
    """Running mean and sum of squared deviations."""

    mean: Any  # (d,) running mean
    m2: Any  # (d,) or (d, d) sum of squared deviations (outer products if dense)
    count: Any  # scalar float, number of samples seen


class WelfordCovariance(NamedTuple):
    """Welford's running (co)variance as ``(init, update, final)`` pure functions."""

    init: Callable[..., WelfordState]  # (num_dims, dtype=float32) -> state
    update: Callable[[WelfordState, Any], WelfordState]  # (state, x (d,) or (n, d)) -> state
    final: Callable[..., Any]  # (state, regularize=True) -> (d,) variance or (d, d) covariance


def welford_covariance(diagonal: bool = True) -> WelfordCovariance:
    """Running variance (``diagonal=True``) or covariance estimate.

    ``update`` takes one sample ``(d,)`` or a batch ``(n, d)`` (merged with Chan et
    al.'s parallel formula, used to pool chains). ``final(state, regularize=True)``
    returns the unbiased estimate shrunk as Stan does:
    ``n/(n+5) C + 1e-3 * 5/(n+5) I``.

    Examples:
        >>> import jax.numpy as jnp
        >>> w = welford_covariance(diagonal=False)
        >>> state = w.update(w.init(2), jnp.array([[0.0, 1.0], [2.0, 3.0]]))
        >>> cov = w.final(state, regularize=False)
    """
    if not isinstance(diagonal, bool):
        raise TypeError(f"diagonal must be a bool, got {diagonal!r}")

    def init(num_dims: int, dtype: Any = jnp.float32) -> WelfordState:
        check_int("num_dims", num_dims, minimum=1)
        m2_shape = (num_dims,) if diagonal else (num_dims, num_dims)
        return WelfordState(
            jnp.zeros(num_dims, dtype), jnp.zeros(m2_shape, dtype), jnp.zeros((), dtype)
        )

    def update(state: WelfordState, x: Any) -> WelfordState:
        x = jnp.asarray(x, state.mean.dtype)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != state.mean.shape[0]:
            raise ValueError(
                f"x must have shape ({state.mean.shape[0]},) or (n, {state.mean.shape[0]}), "
                f"got {x.shape}"
            )
        n_b = jnp.asarray(x.shape[0], state.count.dtype)
        mean_b = jnp.mean(x, axis=0)
        centred = x - mean_b[None, :]
        m2_b = jnp.sum(centred**2, axis=0) if diagonal else centred.T @ centred
        count = state.count + n_b
        delta = mean_b - state.mean
        mean = state.mean + delta * (n_b / count)
        factor = state.count * n_b / count
        cross = delta**2 if diagonal else jnp.outer(delta, delta)
        return WelfordState(mean, state.m2 + m2_b + factor * cross, count)

    def final(state: WelfordState, regularize: bool = True) -> Any:
        n = state.count
        cov = state.m2 / jnp.maximum(n - 1.0, 1.0)
        if not regularize:
            return cov
        shrink = 1e-3 * 5.0 / (n + 5.0)
        eye = jnp.ones_like(state.mean) if diagonal else jnp.eye(state.mean.shape[0])
        return (n / (n + 5.0)) * cov + shrink * eye.astype(cov.dtype)

    return WelfordCovariance(init, update, final)


# --------------------------------------------------------------------------- window adaptation


def build_schedule(
    num_steps: int,
    *,
    initial_buffer: int = 75,
    first_window: int = 25,
    final_buffer: int = 50,
) -> np.ndarray:
    """Stan's warmup windows as a ``(num_steps, 2)`` bool array.

    Column 0 marks steps inside a slow (mass-matrix) window, column 1 the last step
    of each slow window, where the mass matrix is updated. With fewer than 20 steps
    there is no slow window; when the three buffers do not fit they become 15%,
    75% and 10% of ``num_steps``.

    Examples:
        >>> schedule = build_schedule(1000)
        >>> [int(i) for i in np.flatnonzero(schedule[:, 1])]
        [99, 149, 249, 449, 949]
    """
    check_int("num_steps", num_steps, minimum=1)
    schedule = np.zeros((num_steps, 2), dtype=bool)
    if num_steps < 20:
        return schedule
    if initial_buffer + first_window + final_buffer > num_steps:
        initial_buffer = int(0.15 * num_steps)
        final_buffer = int(0.1 * num_steps)
        first_window = num_steps - initial_buffer - final_buffer
    adapt_end = num_steps - final_buffer
    start, size = initial_buffer, first_window
    while start < adapt_end:
        end = start + size
        if end + 2 * size > adapt_end:
            end = adapt_end
        schedule[start:end, 0] = True
        schedule[end - 1, 1] = True
        start, size = end, 2 * size
    return schedule


class AdaptationAlgorithm(NamedTuple):
    """A warmup procedure."""

    run: Callable[..., tuple[Any, dict, Any]]  # (key, initial_positions, num_steps) -> ...


def window_adaptation(
    algorithm_factory: Callable[..., Any],
    logdensity_fn: Callable[[Any], Any],
    *,
    is_mass_matrix_diagonal: bool = True,
    target_acceptance: float = 0.8,
    pool_chains: bool = False,
    initial_step_size: float = 1.0,
    **kernel_kwargs: Any,
) -> AdaptationAlgorithm:
    """Stan-style warmup of the step size and (inverse) mass matrix for many chains.

    Args:
        algorithm_factory: a kernel factory taking ``(logdensity_fn, step_size,
            [inverse_mass_matrix], **kernel_kwargs)``: ``hmc``, ``nuts`` or ``mala``
            (which has no mass matrix: only its step size is adapted).
        logdensity_fn: pytree position -> scalar log density.
        is_mass_matrix_diagonal: estimate a diagonal (True) or dense inverse mass matrix.
        target_acceptance: the acceptance statistic dual averaging aims for.
        pool_chains: if True, the Welford statistics use all chains' positions and
            dual averaging the chains' mean acceptance, so all chains share one step
            size and mass matrix; if False each chain adapts its own.
        initial_step_size: the first step size (> 0).
        **kernel_kwargs: passed to the factory (e.g. ``num_integration_steps=10``).

    Returns:
        ``AdaptationAlgorithm(run)`` with ``run(key, initial_positions, num_steps) ->
        (states, parameters, infos)``: ``initial_positions`` is a pytree whose leaves
        have a leading chains axis; ``states`` are the chains' final states (leading
        chains axis); ``parameters`` is a dict of the factory's keyword arguments,
        ``step_size`` and ``inverse_mass_matrix`` (shapes ``()`` and ``(d,)``/``(d, d)``
        pooled, with a leading ``(num_chains,)`` axis otherwise), so
        ``factory(logdensity_fn, **parameters, **kernel_kwargs)`` builds the tuned
        kernel; ``infos`` stacks every step's info, leading axes
        ``(num_steps, num_chains)``. ``run`` is not jit-compiled (``num_steps`` is static:
        wrap as ``jax.jit(run, static_argnums=2)``).

    Raises:
        TypeError: a factory without a ``step_size`` argument, bad keys.
        ValueError: bad settings, positions without a chains axis or with NaN.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from dgm_jax.mcmc import hmc
        >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2)
        >>> warmup = window_adaptation(hmc, logdensity_fn, num_integration_steps=5)
        >>> states, params, _ = warmup.run(jax.random.key(0), jnp.ones((2, 3)), 50)
        >>> params["step_size"].shape, params["inverse_mass_matrix"].shape
        ((2,), (2, 3))
    """
    if not callable(algorithm_factory):
        raise TypeError(f"algorithm_factory must be callable, got {algorithm_factory!r}")
    try:
        signature = inspect.signature(algorithm_factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        signature = {}
    if "step_size" not in signature:
        raise TypeError(
            "algorithm_factory must take a step_size argument (hmc, nuts or mala), "
            f"got {getattr(algorithm_factory, '__name__', algorithm_factory)!r}"
        )
    has_mass_matrix = "inverse_mass_matrix" in signature
    if not isinstance(is_mass_matrix_diagonal, bool):
        raise TypeError(f"is_mass_matrix_diagonal must be a bool, got {is_mass_matrix_diagonal!r}")
    if not isinstance(pool_chains, bool):
        raise TypeError(f"pool_chains must be a bool, got {pool_chains!r}")
    check_positive("initial_step_size", initial_step_size)
    da = dual_averaging(target_acceptance)
    welford = welford_covariance(diagonal=is_mass_matrix_diagonal)

    def make_step(step_size, inverse_mass_matrix):
        if has_mass_matrix:
            algorithm = algorithm_factory(
                logdensity_fn,
                step_size=step_size,
                inverse_mass_matrix=inverse_mass_matrix,
                **kernel_kwargs,
            )
        else:
            algorithm = algorithm_factory(logdensity_fn, step_size=step_size, **kernel_kwargs)
        return algorithm.step

    def run(key: Any, initial_positions: Any, num_steps: int):
        check_key("key", key)
        check_int("num_steps", num_steps, minimum=1)
        leaves = jax.tree_util.tree_leaves(initial_positions)
        if not leaves or any(np.ndim(x) < 1 for x in leaves):
            raise ValueError("initial_positions must be a pytree of arrays with a chains axis")
        num_chains = np.shape(leaves[0])[0]
        if any(np.shape(x)[0] != num_chains for x in leaves):
            raise ValueError("every leaf of initial_positions must have the same chains axis")
        check_position(initial_positions)
        example = jax.tree_util.tree_map(lambda x: x[0], initial_positions)
        check_logdensity_output(logdensity_fn, example)
        num_dims = flat_size(example)
        dtype = ravel_pytree(example)[0].dtype

        identity = jnp.ones(num_dims, dtype)
        if not is_mass_matrix_diagonal:
            identity = jnp.eye(num_dims, dtype=dtype)
        init_fn = (
            algorithm_factory(
                logdensity_fn,
                step_size=initial_step_size,
                inverse_mass_matrix=identity,
                **kernel_kwargs,
            )
            if has_mass_matrix
            else algorithm_factory(logdensity_fn, step_size=initial_step_size, **kernel_kwargs)
        ).init
        states = jax.vmap(init_fn)(initial_positions)

        def batched(tree):
            return jax.tree_util.tree_map(
                lambda x: jnp.broadcast_to(x, (num_chains, *jnp.shape(x))), tree
            )

        da_state = da.init(initial_step_size)
        welford_state = welford.init(num_dims, dtype)
        if not pool_chains:
            da_state, welford_state, identity = batched((da_state, welford_state, identity))
        schedule = jnp.asarray(build_schedule(num_steps))
        keys = jax.random.split(key, num_steps)

        def one_step(carry, xs):
            states, da_state, welford_state, inverse_mass_matrix = carry
            step_key, (is_slow, is_window_end) = xs
            chain_keys = jax.random.split(step_key, num_chains)
            step_size = jnp.exp(da_state.log_step_size).astype(dtype)
            if pool_chains:
                step = make_step(step_size, inverse_mass_matrix)
                states, infos = jax.vmap(step)(chain_keys, states)
                da_new = da.update(da_state, jnp.mean(infos.acceptance_rate))
            else:
                states, infos = jax.vmap(lambda k, s, h, m: make_step(h, m)(k, s))(
                    chain_keys, states, step_size, inverse_mass_matrix
                )
                da_new = jax.vmap(da.update)(da_state, infos.acceptance_rate)

            flat_positions = jax.vmap(lambda x: ravel_pytree(x)[0])(states.position)
            if pool_chains:
                welford_new = welford.update(welford_state, flat_positions)
                covariance = welford.final(welford_new)
                welford_reset = welford.init(num_dims, dtype)
                da_reset = da.init(jnp.exp(da_new.log_step_size))
            else:
                welford_new = jax.vmap(welford.update)(welford_state, flat_positions)
                covariance = jax.vmap(welford.final)(welford_new)
                welford_reset = batched(welford.init(num_dims, dtype))
                da_reset = jax.vmap(da.init)(jnp.exp(da_new.log_step_size))

            def select(pred, a, b):
                return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)

            welford_state = select(is_slow, welford_new, welford_state)
            if has_mass_matrix:
                inverse_mass_matrix = select(is_window_end, covariance, inverse_mass_matrix)
            welford_state = select(is_window_end, welford_reset, welford_state)
            da_state = select(is_window_end, da_reset, da_new)
            return (states, da_state, welford_state, inverse_mass_matrix), infos

        carry = (states, da_state, welford_state, identity)
        (states, da_state, _, inverse_mass_matrix), infos = jax.lax.scan(
            one_step, carry, (keys, schedule)
        )
        final_step_size = (da.final if pool_chains else jax.vmap(da.final))(da_state)
        parameters = {"step_size": final_step_size.astype(dtype)}
        if has_mass_matrix:
            parameters["inverse_mass_matrix"] = inverse_mass_matrix
        return states, parameters, infos

    return AdaptationAlgorithm(run)
