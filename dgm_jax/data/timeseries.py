"""Synthetic regime-switching time series: trending, mean-reverting and spiking segments.

A hidden regime ``r_t ∈ {0, ..., num_regimes - 1}`` follows a Markov chain: ``r_0`` is uniform
and at every later step, with probability ``switch_rate``, the chain jumps to one of the other
regimes chosen uniformly (so segment lengths are geometric with mean ``1 / switch_rate``).
The value starts from ``x_{-1} = 0`` and moves by an increment set by the current regime's kind:

* ``TREND`` (kind 0): random walk with drift, ``Δx_t = drift + vol · ε_t``;
* ``MEAN_REVERT`` (kind 1): discretized Ornstein–Uhlenbeck (an AR(1)),
  ``Δx_t = −reversion · (x_{t−1} − level) + vol · ε_t``, stationary variance
  ``vol² / (reversion · (2 − reversion))`` about ``level``;
* ``SPIKE`` (kind 2): jump diffusion (Merton, 1976, in discrete time),
  ``Δx_t = vol · ε_t + B_t · J_t`` with ``B_t ~ Bernoulli(jump_prob)`` and
  ``J_t ~ N(0, jump_scale²)``.

with ``ε_t ~ N(0, 1)``. ``regimes[t]`` is the regime that produced ``values[t] − values[t−1]``.
The parameters of each regime live in a :class:`RegimeParams` of per-regime arrays;
:func:`default_regime_params` cycles the three kinds (regime ``k`` has kind ``k % 3``).

Everything is a pure JAX function, jit- and vmap-compatible with a static ``length``. Note:
:func:`regime_series` runs its simulation through an internal ``jax.jit`` (static ``length``
and ``num_regimes``), so eager calls compile once per shape instead of on every call; under an
outer ``jit``/``vmap`` it is simply inlined.

Examples:
    >>> import jax
    >>> from dgm_jax.data.timeseries import regime_series
    >>> series = regime_series(jax.random.key(0), 500)
    >>> series.values.shape, series.regimes.shape
    ((500,), (500,))
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_int, check_key, check_probability
from dgm_jax.types import Array, Float, Int, PRNGKeyArray

__all__ = [
    "MEAN_REVERT",
    "SPIKE",
    "TREND",
    "RegimeParams",
    "RegimeSeries",
    "default_regime_params",
    "regime_dataset",
    "regime_series",
]

TREND, MEAN_REVERT, SPIKE = 0, 1, 2


class RegimeParams(NamedTuple):
    """Per-regime parameters; every field has shape ``(num_regimes,)``."""

    kind: Int[Array, " num_regimes"]  # TREND (0), MEAN_REVERT (1) or SPIKE (2)
    drift: Float[Array, " num_regimes"]  # per-step drift (TREND only)
    vol: Float[Array, " num_regimes"]  # standard deviation of the Gaussian increment, >= 0
    reversion: Float[Array, " num_regimes"]  # pull toward level per step in (0, 1] (MEAN_REVERT)
    level: Float[Array, " num_regimes"]  # long-run mean (MEAN_REVERT only)
    jump_prob: Float[Array, " num_regimes"]  # probability of a jump per step (SPIKE only)
    jump_scale: Float[Array, " num_regimes"]  # standard deviation of a jump (SPIKE only)


class RegimeSeries(NamedTuple):
    """A series and its hidden regimes (leading batch axis from :func:`regime_dataset`)."""

    values: Float[Array, "... length"]  # float32 observed values
    regimes: Int[Array, "... length"]  # int32 regime index that produced each step


def default_regime_params(num_regimes: int = 3) -> RegimeParams:
    """Default parameters: regime ``k`` has kind ``k % 3``; repeats vary the parameters.

    * trending: ``drift = ±0.05`` (sign alternates with ``k // 3``), ``vol = 0.05``;
    * mean-reverting: ``reversion = 0.1``, ``level = 0``, ``vol = 0.1`` (stationary standard
      deviation ≈ 0.23), the level moved by ``+1`` for each repeat;
    * spiking: ``vol = 0.02``, ``jump_prob = 0.1``, ``jump_scale = 1.0 · (1 + k // 3)``.

    Args:
        num_regimes: number of regimes, an int >= 1.

    Returns:
        :class:`RegimeParams` with float32/int32 arrays of shape ``(num_regimes,)``.

    Examples:
        >>> default_regime_params(3).kind
        Array([0, 1, 2], dtype=int32)
    """
    check_int("num_regimes", num_regimes, minimum=1)
    k = np.arange(num_regimes)
    kind = k % 3
    rep = k // 3
    f32 = np.float32
    return RegimeParams(
        kind=jnp.asarray(kind, jnp.int32),
        drift=jnp.asarray(np.where(kind == TREND, 0.05 * (-1.0) ** rep, 0.0), f32),
        vol=jnp.asarray(np.select([kind == TREND, kind == MEAN_REVERT], [0.05, 0.1], 0.02), f32),
        reversion=jnp.asarray(np.where(kind == MEAN_REVERT, 0.1, 0.0), f32),
        level=jnp.asarray(np.where(kind == MEAN_REVERT, 1.0 * rep, 0.0), f32),
        jump_prob=jnp.asarray(np.where(kind == SPIKE, 0.1, 0.0), f32),
        jump_scale=jnp.asarray(np.where(kind == SPIKE, 1.0 + rep, 0.0), f32),
    )


def _check_params(params: RegimeParams, num_regimes: int) -> RegimeParams:
    if not isinstance(params, RegimeParams):
        raise TypeError(f"params must be a RegimeParams, got {type(params).__name__}")
    for name, value in params._asdict().items():
        if np.shape(value) != (num_regimes,):
            raise ValueError(
                f"params.{name} must have shape ({num_regimes},) to match num_regimes, "
                f"got {tuple(np.shape(value))}"
            )
    if not jnp.issubdtype(jnp.result_type(params.kind), jnp.integer):
        raise TypeError(f"params.kind must be an integer array, got {jnp.result_type(params.kind)}")
    try:
        kinds = np.asarray(params.kind)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        kinds = None  # traced (e.g. vmapped parameters): values unknown before run time
    if kinds is not None and np.any((kinds < 0) | (kinds > 2)):
        raise ValueError(
            f"params.kind must hold TREND (0), MEAN_REVERT (1) or SPIKE (2), got {kinds}"
        )
    for name in ("drift", "vol", "reversion", "level", "jump_prob", "jump_scale"):
        if not jnp.issubdtype(jnp.result_type(getattr(params, name)), jnp.floating):
            raise TypeError(f"params.{name} must be a floating array")
    return RegimeParams(
        kind=jnp.asarray(params.kind, jnp.int32),
        **{
            name: jnp.asarray(getattr(params, name), jnp.float32)
            for name in RegimeParams._fields[1:]
        },
    )


def regime_series(
    key: PRNGKeyArray,
    length: int,
    *,
    num_regimes: int = 3,
    switch_rate: float = 0.02,
    params: RegimeParams | None = None,
) -> RegimeSeries:
    """One regime-switching series of ``length`` steps (see the module docstring).

    Args:
        key: PRNG key.
        length: number of steps, a static int >= 1.
        num_regimes: number of regimes, an int >= 1.
        switch_rate: probability per step of switching to another regime, in ``[0, 1]``
            (no effect with one regime).
        params: per-regime parameters with arrays of shape ``(num_regimes,)``; defaults to
            :func:`default_regime_params` ``(num_regimes)``.

    Returns:
        :class:`RegimeSeries` with ``values`` float32 ``(length,)`` and ``regimes`` int32
        ``(length,)`` in ``[0, num_regimes)``.

    Examples:
        >>> s = regime_series(jax.random.key(1), 100, num_regimes=4, switch_rate=0.05)
        >>> int(s.regimes.max()) < 4
        True
    """
    check_key("key", key)
    check_int("length", length, minimum=1)
    check_int("num_regimes", num_regimes, minimum=1)
    check_probability("switch_rate", switch_rate)
    params = default_regime_params(num_regimes) if params is None else params
    params = _check_params(params, num_regimes)

    return _simulate(key, params, jnp.asarray(switch_rate, jnp.float32), length, num_regimes)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _simulate(key, params, switch_rate, length, num_regimes):
    # Compiled once per (length, num_regimes) so that eager callers do not compile every op
    # on each call. Inlined under an outer jit.
    key_u, key_n = jax.random.split(key)
    # Rows: initial regime, switch test, choice of the new regime, jump test.
    u = jax.random.uniform(key_u, (4, length))
    eps, jump_size = jax.random.normal(key_n, (2, length))
    r0 = jnp.minimum(jnp.floor(u[0, 0] * num_regimes), num_regimes - 1).astype(jnp.int32)
    switch = (u[1] < switch_rate) & (num_regimes > 1)
    # Offset in 1..num_regimes-1 added mod num_regimes: a uniform choice among the others.
    others = max(num_regimes - 1, 1)
    offset = 1 + jnp.minimum(jnp.floor(u[2] * others), others - 1).astype(jnp.int32)
    jump_u = u[3]

    # r_t = r_{t-1} + offset_t · [switch_t] (mod num_regimes) in closed form: no loop needed.
    shift = jnp.where((jnp.arange(length) > 0) & switch, offset, 0)
    regimes = (r0 + jnp.cumsum(shift)) % num_regimes
    p = jax.tree.map(lambda a: a[regimes], params)  # per-step parameters, each (length,)
    is_trend, is_revert = p.kind == TREND, p.kind == MEAN_REVERT
    jumps = jnp.where(jump_u < p.jump_prob, p.jump_scale * jump_size, 0.0)
    # Every regime is affine in the previous value, x_t = a_t x_{t-1} + b_t:
    #   trend a = 1, b = drift + vol ε;  mean-revert a = 1 - θ, b = θ level + vol ε;
    #   spike a = 1, b = vol ε + jump.
    a = jnp.where(is_revert, 1.0 - p.reversion, 1.0)
    b = p.vol * eps + jnp.select([is_trend, is_revert], [p.drift, p.reversion * p.level], jumps)

    def compose(first, second):  # apply `first` then `second`
        a1, b1 = first
        a2, b2 = second
        return a2 * a1, a2 * b1 + b2

    # With x_{-1} = 0 the composed offsets are the values (a parallel scan, log-depth).
    _, values = jax.lax.associative_scan(compose, (a, b))
    return RegimeSeries(values.astype(jnp.float32), regimes.astype(jnp.int32))


def regime_dataset(
    key: PRNGKeyArray,
    num_series: int,
    length: int,
    *,
    num_regimes: int = 3,
    switch_rate: float = 0.02,
    params: RegimeParams | None = None,
) -> RegimeSeries:
    """``num_series`` independent series from :func:`regime_series` (vmapped over keys).

    Args:
        key: PRNG key, split into one key per series.
        num_series: number of series, an int >= 1.
        length: steps per series, a static int >= 1.
        num_regimes: number of regimes, an int >= 1.
        switch_rate: switch probability per step, in ``[0, 1]``.
        params: shared per-regime parameters (see :func:`regime_series`).

    Returns:
        :class:`RegimeSeries` with ``values`` float32 and ``regimes`` int32, both
        ``(num_series, length)``.

    Examples:
        >>> data = regime_dataset(jax.random.key(0), 8, 64)
        >>> data.values.shape
        (8, 64)
    """
    check_key("key", key)
    check_int("num_series", num_series, minimum=1)
    check_int("length", length, minimum=1)
    check_int("num_regimes", num_regimes, minimum=1)
    check_probability("switch_rate", switch_rate)
    params = default_regime_params(num_regimes) if params is None else params
    params = _check_params(params, num_regimes)
    keys = jax.random.split(key, num_series)
    return jax.vmap(
        lambda k: regime_series(
            k, length, num_regimes=num_regimes, switch_rate=switch_rate, params=params
        )
    )(keys)
