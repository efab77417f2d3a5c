"""Tests for dgm_jax.metrics.sample against brute force and closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from dgm_jax.metrics import (
    energy_distance,
    median_distance,
    mmd2,
    mode_coverage,
    sliced_wasserstein,
    wasserstein_1d,
    wasserstein_exact,
)


def _brute_mmd2(x, y, s):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * si**2)) for si in s)

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )


def _brute_energy(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    n, m = len(x), len(y)
    dxx = dist(x, x).sum() / (n * (n - 1))
    dyy = dist(y, y).sum() / (m * (m - 1))
    return 2 * dist(x, y).mean() - dxx - dyy


@pytest.mark.parametrize("block_size", [5, 7, 1024])
def test_blocked_matches_brute_force(key, block_size):
    # Uneven sizes and small blocks exercise padding and the diagonal mask across tiles.
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (23, 3))
    y = jax.random.normal(ky, (17, 3)) + 0.5
    s = (0.5, 1.0, 2.0)
    got = mmd2(x, y, bandwidths=s, block_size=block_size)
    np.testing.assert_allclose(got, _brute_mmd2(x, y, s), rtol=1e-4, atol=1e-5)
    got = energy_distance(x, y, block_size=block_size)
    np.testing.assert_allclose(got, _brute_energy(x, y), rtol=1e-4, atol=1e-5)


def test_default_bandwidths_use_median(key):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (40, 2))
    y = jax.random.normal(ky, (30, 2)) * 2.0
    med = float(median_distance(x, y))
    z = np.concatenate([np.asarray(x), np.asarray(y)])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(70, 1)]
    np.testing.assert_allclose(med, np.median(d), rtol=1e-4)
    s = [med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    np.testing.assert_allclose(mmd2(x, y), _brute_mmd2(x, y, s), rtol=1e-3, atol=1e-5)


def _repeat(metric, key, shift, num_repeats=200, n=60, d=2):
    def one(k):
        kx, ky = jax.random.split(k)
        x = jax.random.normal(kx, (n, d))
        y = jax.random.normal(ky, (n, d)) + shift[None, :]
        return metric(x, y)

    vals = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, num_repeats)), np.float64)
    return vals.mean(), vals.std(ddof=1) / math.sqrt(num_repeats)


@pytest.mark.parametrize("mu", [0.0, 0.7])
def test_mmd2_unbiased_against_closed_form(key, mu):
    # For N(0, I_d) vs N(mu e1, I_d) and k = exp(-|a-b|²/(2 s²)):
    #   E k(X, X') = c := (s²/(s²+2))^(d/2),  E k(X, Y) = c exp(-mu²/(2(s²+2))),
    # so MMD² = 2c (1 - exp(-mu²/(2(s²+2)))). The estimator is unbiased, so the mean over
    # 200 independent repeats lies within 4 standard errors (estimated from the repeats)
    # of the truth with probability > 0.9999.
    s, d = 1.0, 2
    c = (s**2 / (s**2 + 2)) ** (d / 2)
    truth = 2 * c * (1 - math.exp(-(mu**2) / (2 * (s**2 + 2))))
    shift = jnp.array([mu, 0.0])
    mean, se = _repeat(lambda x, y: mmd2(x, y, bandwidths=(s,)), key, shift)
    assert abs(mean - truth) < 4 * se, (mean, truth, se)


def test_mmd2_grows_with_shift(key):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (300, 2))
    y = jax.random.normal(ky, (300, 2))
    vals = [float(mmd2(x, y + jnp.array([[m, 0.0]]), bandwidths=(1.0,))) for m in (0.0, 0.5, 1, 2)]
    assert vals == sorted(vals) and vals[2] > 0.05  # truth at shift 1: 0.102


def test_energy_distance_unbiased_against_closed_form(key):
    # 1-D N(0,1) vs N(mu,1): X-Y ~ N(-mu, 2), X-X' ~ N(0, 2), and for Z ~ N(m, v)
    # E|Z| = sqrt(2v/pi) exp(-m²/(2v)) + m (1 - 2 Phi(-m/sqrt v)). The U-statistic is
    # unbiased; tolerance 4 standard errors of the mean over repeats, as above.
    mu = 1.0

    def abs_mean(m, v):
        return math.sqrt(2 * v / math.pi) * math.exp(-(m**2) / (2 * v)) + m * (
            1 - 2 * scipy.stats.norm.cdf(-m / math.sqrt(v))
        )

    truth = 2 * abs_mean(mu, 2.0) - 2 * abs_mean(0.0, 2.0)
    mean, se = _repeat(energy_distance, key, jnp.array([mu]), d=1)
    assert abs(mean - truth) < 4 * se, (mean, truth, se)
    mean0, se0 = _repeat(energy_distance, key, jnp.array([0.0]), d=1)
    assert abs(mean0) < 4 * se0


def test_jit_and_grad(key):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (20, 2))
    y = jax.random.normal(ky, (20, 2))
    np.testing.assert_allclose(jax.jit(mmd2)(x, y), mmd2(x, y), rtol=1e-5)
    g = jax.grad(lambda z: energy_distance(z, y))(x)
    assert bool(jnp.all(jnp.isfinite(g)))
    g = jax.grad(lambda z: energy_distance(z, z))(x)  # zero distances on the diagonal
    assert bool(jnp.all(jnp.isfinite(g)))


def test_sliced_wasserstein_1d_shift_is_exact(key):
    x = jax.random.normal(key, (100, 1))
    for p in (1.0, 2.0):
        sw = sliced_wasserstein(jax.random.key(1), x, x + 1.5, num_projections=8, p=p)
        np.testing.assert_allclose(sw, 1.5, rtol=1e-5)


def test_wasserstein_1d_unequal_sizes_matches_scipy(key):
    ku, kv = jax.random.split(key)
    u = jax.random.normal(ku, (37,))
    v = jax.random.normal(kv, (53,)) * 2.0 + 0.3
    want = scipy.stats.wasserstein_distance(np.asarray(u), np.asarray(v))
    np.testing.assert_allclose(wasserstein_1d(u, v, p=1.0), want, rtol=1e-5)


def test_wasserstein_exact_translation_and_1d(key):
    x = np.asarray(jax.random.normal(key, (50, 2)))
    shift = np.array([0.3, -0.4])  # a translation: identity plan is optimal, W1 = W2 = 0.5
    np.testing.assert_allclose(wasserstein_exact(x, x + shift, p=2), 0.5, rtol=1e-6)
    np.testing.assert_allclose(wasserstein_exact(x, x + shift, p=1), 0.5, rtol=1e-6)
    u, v = x[:, :1], x[::-1, 1:] * 3
    np.testing.assert_allclose(
        wasserstein_exact(u, v, p=2) ** 2, wasserstein_1d(u[:, 0], v[:, 0], p=2.0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="equal-size"):
        wasserstein_exact(x, x[:10])


def test_mode_coverage_missing_mode(key):
    centers = jnp.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    noise = 0.1 * jax.random.normal(key, (300, 2))
    samples = centers[jnp.arange(300) % 2] + noise  # third mode never visited
    mc = mode_coverage(samples, centers, radius=0.5, min_count=10)
    assert int(mc.num_covered) == 2
    assert float(mc.high_quality) > 0.99
    assert mc.counts.shape == (3,) and int(mc.counts[2]) == 0


@pytest.mark.parametrize(
    "fn",
    [
        mmd2,
        energy_distance,
        median_distance,
        lambda x, y: sliced_wasserstein(jax.random.key(0), x, y),
        wasserstein_exact,
        lambda x, y: mode_coverage(x, y, radius=1.0),
    ],
)
def test_rejects_mismatched_dims(fn):
    with pytest.raises(ValueError, match=r"\(4, 2\) and \(4, 3\)"):
        fn(jnp.zeros((4, 2)), jnp.zeros((4, 3)))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="dimensions"):
        mmd2(jnp.zeros((4,)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        energy_distance(jnp.zeros((1, 2)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd2(jnp.zeros((4, 2)), jnp.zeros((4, 2)), bandwidths=(1.0, -1.0))
    with pytest.raises(TypeError, match="floating"):
        mmd2(jnp.zeros((4, 2), jnp.int32), jnp.zeros((4, 2), jnp.int32))
    with pytest.raises(ValueError, match="block_size"):
        mmd2(jnp.zeros((4, 2)), jnp.zeros((4, 2)), block_size=0)
