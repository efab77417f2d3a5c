"""Tests for Fréchet distance, KID and Inception Score against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from dgm_jax.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    kernel_inception_distance,
)


def _random_cov(key, d):
    a = jax.random.normal(key, (d, d))
    return a @ a.T / d + 0.1 * jnp.eye(d)


def _scipy_fd(m1, c1, m2, c2):
    m1, c1, m2, c2 = (np.asarray(a, np.float64) for a in (m1, c1, m2, c2))
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root)


def test_frechet_closed_form_gaussians(key):
    # Commuting (diagonal) covariances: FD = |m1-m2|² + Σ (sqrt(a_i) - sqrt(b_i))².
    a = jnp.array([1.0, 4.0, 9.0])
    b = jnp.array([4.0, 1.0, 9.0])
    m1, m2 = jnp.zeros(3), jnp.array([1.0, 2.0, 0.0])
    fd = frechet_distance(m1, jnp.diag(a), m2, jnp.diag(b))
    want = 5.0 + float(jnp.sum((jnp.sqrt(a) - jnp.sqrt(b)) ** 2))
    np.testing.assert_allclose(fd, want, rtol=1e-5)


def test_frechet_matches_scipy_general(key):
    # Non-commuting covariances against scipy.linalg.sqrtm in float64. Float32 tolerance:
    # relative 1e-5 of the total trace (see the module docstring).
    k1, k2, k3 = jax.random.split(key, 3)
    d = 16
    c1, c2 = _random_cov(k1, d), _random_cov(k2, d)
    m2 = jax.random.normal(k3, (d,))
    fd = float(frechet_distance(jnp.zeros(d), c1, m2, c2))
    want = _scipy_fd(np.zeros(d), c1, m2, c2)
    scale = float(jnp.trace(c1) + jnp.trace(c2))
    assert abs(fd - want) < 1e-5 * scale, (fd, want)


def test_frechet_identical_sets_is_zero(key):
    f = jax.random.normal(key, (500, 64)) * jnp.linspace(0.1, 3.0, 64)[None, :] + 2.0
    fd = float(frechet_distance_from_features(f, f))
    stats = feature_stats(f)
    assert abs(fd) < 1e-5 * float(2 * jnp.trace(stats.cov))


def test_frechet_from_samples_approaches_truth(key):
    # N(0, I) vs N(mu, 4I) in d=4: FD = |mu|² + d (2 - 1)² = |mu|² + 4. With n = 20,000 the
    # plug-in bias and noise are O(d²/n) ~ 1e-3 relative; tolerance 5%.
    k1, k2 = jax.random.split(key)
    d = 4
    mu = jnp.full((d,), 0.5)
    fa = jax.random.normal(k1, (20_000, d))
    fb = 2.0 * jax.random.normal(k2, (20_000, d)) + mu[None, :]
    np.testing.assert_allclose(frechet_distance_from_features(fa, fb), 1.0 + 4.0, rtol=0.05)


def test_frechet_jit(key):
    f = jax.random.normal(key, (50, 3))
    np.testing.assert_allclose(
        jax.jit(frechet_distance_from_features)(f, f + 1.0), 3.0, rtol=1e-4, atol=1e-4
    )


def test_kid_unbiased_and_grows(key):
    # Equal distributions: mean over repeats within 4 standard errors of 0 (unbiased).
    def one(k):
        ka, kb = jax.random.split(k)
        return kernel_inception_distance(
            jax.random.normal(ka, (50, 8)), jax.random.normal(kb, (50, 8))
        )

    vals = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(key, 100)), np.float64)
    assert abs(vals.mean()) < 4 * vals.std(ddof=1) / np.sqrt(len(vals))
    ka, kb = jax.random.split(key)
    fa = jax.random.normal(ka, (200, 8))
    fb = jax.random.normal(kb, (200, 8))
    shifted = [float(kernel_inception_distance(fa, fb + s)) for s in (0.5, 1.0, 2.0)]
    assert shifted == sorted(shifted) and shifted[0] > 0


def test_inception_score_bounds():
    k = 5
    confident = jnp.eye(k) * 50.0  # one-hot predictions spread over all classes: IS = k
    np.testing.assert_allclose(inception_score(confident).mean, k, rtol=1e-4)
    flat = jnp.zeros((10, k))  # uniform predictions: IS = 1
    np.testing.assert_allclose(inception_score(flat).mean, 1.0, rtol=1e-6)
    collapsed = jnp.tile(jnp.eye(k)[:1] * 50.0, (10, 1))  # one class always: IS = 1
    np.testing.assert_allclose(inception_score(collapsed).mean, 1.0, rtol=1e-4)
    split = inception_score(jnp.tile(confident, (4, 1)), num_splits=4)
    np.testing.assert_allclose(split.mean, k, rtol=1e-4)
    np.testing.assert_allclose(split.std, 0.0, atol=1e-4)


@pytest.mark.parametrize("fn", [frechet_distance_from_features, kernel_inception_distance])
def test_rejects_mismatched_dims(fn):
    with pytest.raises(ValueError, match=r"\(5, 2\) and \(5, 3\)"):
        fn(jnp.zeros((5, 2)), jnp.zeros((5, 3)))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="one d"):
        frechet_distance(jnp.zeros(2), jnp.eye(2), jnp.zeros(3), jnp.eye(3))
    with pytest.raises(ValueError, match="num_splits"):
        inception_score(jnp.zeros((3, 4)), num_splits=4)
    with pytest.raises(ValueError, match="dimensions"):
        inception_score(jnp.zeros((3,)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        feature_stats(jnp.zeros((1, 3)))


def test_frechet_identical_low_rank_features(key):
    # Features on a 2-D subspace of R^16 (singular covariance, as trained features often
    # are): square roots of roundoff-level eigenvalues must not leak into the result.
    z = jax.random.normal(key, (300, 2))
    f = z @ jax.random.normal(jax.random.key(1), (2, 16))
    scale = float(2 * jnp.trace(feature_stats(f).cov))
    assert abs(float(frechet_distance_from_features(f, f))) < 1e-5 * scale
