"""Tests for the time-series metrics (tiny GRUs, few steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.metrics import discriminative_score, frechet_ts_distance, predictive_score


def _waves(key, num, time=12, freq=1.0):
    phase = jax.random.uniform(key, (num, 1, 1), maxval=6.28)
    t = jnp.linspace(0.0, 6.0, time)[None, :, None]
    return jnp.sin(freq * t + phase)


def test_discriminative_score_separates_and_not(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    real = _waves(k1, 128)
    easy = discriminative_score(k3, real, real + 2.0, num_steps=60)
    assert float(easy) > 0.4
    # Same distribution: held-out accuracy of 51 test sequences is binomial around 0.5 with
    # sd 0.07, so |acc - 0.5| < 0.25 fails with probability < 1e-3.
    same = discriminative_score(k4, real, _waves(k2, 128), num_steps=60)
    assert float(same) < 0.25


def test_predictive_score_orders_good_and_bad_synthetic(key):
    k1, k2, k3 = jax.random.split(key, 3)
    real = _waves(k1, 64)
    good = predictive_score(k3, real, _waves(k2, 64), num_steps=120)
    bad = predictive_score(k3, real, _waves(k2, 64, freq=3.0), num_steps=120)
    assert float(good) < float(bad)


def test_frechet_ts_zero_for_identical_and_grows(key):
    k1, k2 = jax.random.split(key)
    real = _waves(k1, 64)
    same = frechet_ts_distance(k2, real, real, num_steps=30)
    np.testing.assert_allclose(same, 0.0, atol=1e-3)
    shifted = frechet_ts_distance(k2, real, real + 1.0, num_steps=30)
    assert float(shifted) > 10 * abs(float(same)) + 1e-3


@pytest.mark.parametrize("fn", [discriminative_score, predictive_score, frechet_ts_distance])
def test_rejects_mismatched_shapes(fn):
    with pytest.raises(ValueError, match=r"\(4, 5, 2\) and \(4, 5, 3\)"):
        fn(jax.random.key(0), jnp.zeros((4, 5, 2)), jnp.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="dimensions"):
        fn(jax.random.key(0), jnp.zeros((4, 5)), jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="num_steps"):
        fn(jax.random.key(0), jnp.zeros((4, 5, 1)), jnp.zeros((4, 5, 1)), num_steps=0)
