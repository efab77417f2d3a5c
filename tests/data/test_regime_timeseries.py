"""Tests for dgm_jax.data.timeseries against the generating process's known statistics."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.data import timeseries as ts

NUM_SERIES, LENGTH = 1200, 400


@functools.cache
def _jitted():
    # One compilation for both fixtures: switch_rate is traced.
    return jax.jit(
        lambda key, rate: ts.regime_dataset(
            key, NUM_SERIES, LENGTH, num_regimes=6, switch_rate=rate
        )
    )


@pytest.fixture(scope="module")
def switching():
    """Series that switch regime (rate 0.05), six regimes: kinds 0,1,2,0,1,2."""
    data = _jitted()(jax.random.key(1), 0.05)
    return np.asarray(data.values, np.float64), np.asarray(data.regimes)


@pytest.fixture(scope="module")
def frozen():
    """Series that never switch (rate 0), six regimes."""
    data = _jitted()(jax.random.key(2), 0.0)
    return np.asarray(data.values, np.float64), np.asarray(data.regimes)


def test_shapes_dtypes_and_determinism(key):
    series = ts.regime_series(key, 50, num_regimes=4, switch_rate=0.1)
    assert isinstance(series, ts.RegimeSeries)
    assert series.values.shape == (50,) and series.values.dtype == jnp.float32
    assert series.regimes.shape == (50,) and series.regimes.dtype == jnp.int32
    again = ts.regime_series(key, 50, num_regimes=4, switch_rate=0.1)
    np.testing.assert_array_equal(series.values, again.values)
    np.testing.assert_array_equal(series.regimes, again.regimes)
    other = ts.regime_series(jax.random.fold_in(key, 1), 50, num_regimes=4, switch_rate=0.1)
    assert not np.array_equal(series.values, other.values)
    jitted = jax.jit(ts.regime_series, static_argnums=1, static_argnames="num_regimes")(
        key, 50, num_regimes=4, switch_rate=0.1
    )
    np.testing.assert_allclose(jitted.values, series.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jitted.regimes, series.regimes)


def test_dataset_is_vmapped_series(key):
    data = ts.regime_dataset(key, 3, 50, num_regimes=4, switch_rate=0.1)
    assert data.values.shape == (3, 50) and data.regimes.shape == (3, 50)
    assert data.values.dtype == jnp.float32 and data.regimes.dtype == jnp.int32
    first = ts.regime_series(jax.random.split(key, 3)[0], 50, num_regimes=4, switch_rate=0.1)
    np.testing.assert_allclose(data.values[0], first.values, rtol=1e-5, atol=1e-5)


def test_labels_in_range_and_all_used(switching):
    _, regimes = switching
    assert regimes.min() == 0 and regimes.max() == 5
    assert set(np.unique(regimes)) == set(range(6))


def test_switch_frequency_matches_rate(switching):
    _, regimes = switching
    switched = regimes[:, 1:] != regimes[:, :-1]
    # Each step switches independently with probability 0.05 (always to another regime), so
    # the frequency has standard error sqrt(p (1 - p) / n); 5 se.
    n = switched.size
    assert abs(switched.mean() - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n)


def test_single_regime_and_zero_rate_never_switch(key, frozen):
    one = ts.regime_series(key, 50, num_regimes=1, switch_rate=0.5)
    assert np.all(np.asarray(one.regimes) == 0)
    _, regimes = frozen
    assert np.all(regimes == regimes[:, :1])


def test_trending_increments_have_the_drift(switching):
    values, regimes = switching
    params = ts.default_regime_params(6)
    dx = np.diff(values, axis=1)
    r = regimes[:, 1:]  # regime that produced dx
    for k in (0, 3):  # trending regimes, drift +0.05 and -0.05
        steps = dx[r == k]
        drift, vol = float(params.drift[k]), float(params.vol[k])
        assert abs(steps.mean() - drift) < 5 * vol / math.sqrt(steps.size)  # 5 se
        # The sample variance of n Gaussians has se ≈ vol² sqrt(2 / n).
        assert abs(steps.var() - vol**2) < 5 * vol**2 * math.sqrt(2 / steps.size)


def test_mean_reverting_residuals(switching):
    values, regimes = switching
    params = ts.default_regime_params(6)
    for k in (1, 4):  # levels 0 and 1
        theta, level, vol = (float(params.reversion[k]), float(params.level[k]), params.vol[k])
        mask = regimes[:, 1:] == k
        resid = (np.diff(values, axis=1) + theta * (values[:, :-1] - level))[mask]
        # resid = vol · ε exactly: mean 0 (se vol/sqrt(n)), variance vol² (se vol² sqrt(2/n)).
        assert abs(resid.mean()) < 5 * float(vol) / math.sqrt(resid.size)
        assert abs(resid.var() - float(vol) ** 2) < 5 * float(vol) ** 2 * math.sqrt(2 / resid.size)


def test_mean_reverting_stationary_variance(frozen):
    values, regimes = frozen
    theta, vol = 0.1, 0.1
    # Regimes 1 and 4 mean-revert to levels 0 and 1 from x = 0; after 200 steps the initial
    # offset has decayed by (1-θ)^200 ≈ 7e-10. Values 40 steps apart have correlation
    # 0.9^40 ≈ 0.015: treat them as independent.
    x = np.concatenate(
        [values[regimes[:, 0] == k][:, 200::40].ravel() - level for k, level in ((1, 0), (4, 1))]
    )
    stationary = vol**2 / (theta * (2 - theta))
    # Var of a sample variance of n Gaussians: se = σ² sqrt(2 / n); 5 se.
    assert abs(x.var() - stationary) < 5 * stationary * math.sqrt(2 / x.size)
    assert abs(x.mean()) < 5 * math.sqrt(stationary / x.size)


def test_spiking_increments(switching):
    values, regimes = switching
    params = ts.default_regime_params(6)
    dx = np.diff(values, axis=1)
    for k in (2, 5):
        steps = dx[regimes[:, 1:] == k]
        vol, p, scale = (float(params.vol[k]), float(params.jump_prob[k]), params.jump_scale[k])
        expected_var = vol**2 + p * float(scale) ** 2
        # Plug-in standard error of the mean of dx² (heavy-tailed but finite 4th moment).
        se = (steps**2).std() / math.sqrt(steps.size)
        assert abs((steps**2).mean() - expected_var) < 5 * se
        # Jumps make the increments heavy-tailed: excess kurtosis well above 0.
        kurtosis = np.mean(steps**4) / np.mean(steps**2) ** 2
        assert kurtosis > 6.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"length": 0}, ValueError, "length must be >= 1"),
        ({"length": 10.0}, TypeError, "length must be an int"),
        ({"num_regimes": 0}, ValueError, "num_regimes must be >= 1"),
        ({"switch_rate": 1.5}, ValueError, r"switch_rate must lie in \[0, 1\]"),
        ({"switch_rate": -0.1}, ValueError, r"switch_rate must lie in \[0, 1\]"),
        ({"params": "default"}, TypeError, "params must be a RegimeParams"),
        (
            {"num_regimes": 4, "params": ts.default_regime_params(3)},
            ValueError,
            r"params.kind must have shape \(4,\)",
        ),
        (
            {"params": ts.default_regime_params(3)._replace(kind=jnp.array([0, 1, 3]))},
            ValueError,
            "params.kind must hold TREND",
        ),
        (
            {"params": ts.default_regime_params(3)._replace(kind=jnp.zeros(3))},
            TypeError,
            "params.kind must be an integer array",
        ),
        (
            {"params": ts.default_regime_params(3)._replace(vol=jnp.zeros(3, jnp.int32))},
            TypeError,
            "params.vol must be a floating array",
        ),
    ],
)
def test_rejects_bad_arguments(key, kwargs, error, match):
    kwargs = {"length": 10, **kwargs}
    length = kwargs.pop("length")
    with pytest.raises(error, match=match):
        ts.regime_series(key, length, **kwargs)


def test_dataset_and_params_reject_bad_arguments(key):
    with pytest.raises(ValueError, match="num_series must be >= 1"):
        ts.regime_dataset(key, 0, 10)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        ts.regime_dataset(1, 2, 10)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        ts.regime_series(jnp.zeros(3), 10)
    with pytest.raises(ValueError, match="num_regimes must be >= 1"):
        ts.default_regime_params(0)


def test_default_params_cycle_kinds():
    params = ts.default_regime_params(7)
    np.testing.assert_array_equal(params.kind, [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_allclose(params.drift[np.array([0, 3, 6])], [0.05, -0.05, 0.05])
    assert all(np.shape(v) == (7,) for v in params)
