"""Tests for k-NN precision/recall/density/coverage against brute force and known cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.metrics import knn_radii, prdc


def _brute(real, fake, k):
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def d2(a, b):
        return ((a[:, None] - b[None]) ** 2).sum(-1)

    rr = np.sort(d2(real, real), axis=1)[:, k]  # column 0 is the point itself
    rf = np.sort(d2(fake, fake), axis=1)[:, k]
    dfr = d2(fake, real)
    inside = dfr <= rr[None, :]
    precision = inside.any(1).mean()
    recall = (d2(real, fake) <= rf[None, :]).any(1).mean()
    density = inside.sum() / (k * len(fake))
    coverage = (dfr.min(0) <= rr).mean()
    return precision, recall, density, coverage


@pytest.mark.parametrize("block_size", [7, 1024])
def test_matches_brute_force(key, block_size):
    kr, kf = jax.random.split(key)
    real = jax.random.normal(kr, (41, 3))
    fake = jax.random.normal(kf, (29, 3)) * 1.3 + 0.4
    got = prdc(real, fake, k=3, block_size=block_size)
    np.testing.assert_allclose(np.array(got), _brute(real, fake, 3), rtol=1e-5)


def test_knn_radii_blocked(key):
    x = jax.random.normal(key, (30, 2))
    d2 = np.asarray(((x[:, None] - x[None]) ** 2).sum(-1))
    want = np.sort(d2, axis=1)[:, 4]
    np.testing.assert_allclose(knn_radii(x, k=4, block_size=8), want, rtol=1e-5, atol=1e-6)


def test_identical_sets(key):
    x = jax.random.normal(key, (300, 4))
    r = jax.jit(prdc)(x, x)
    assert float(r.precision) == 1.0 and float(r.recall) == 1.0 and float(r.coverage) == 1.0
    # Each point lies in its own ball and in about k others; density ≈ 1 (+1/k for itself).
    assert 0.9 < float(r.density) < 1.5


def test_missing_mode_lowers_recall_not_precision(key):
    # Real: two well-separated modes. Fake: only the first mode.
    kr, kf = jax.random.split(key)
    centres = jnp.array([[0.0, 0.0], [20.0, 0.0]])
    real = centres[jnp.arange(400) % 2] + jax.random.normal(kr, (400, 2))
    fake = jax.random.normal(kf, (400, 2))
    r = prdc(real, fake, k=5)
    assert float(r.precision) > 0.9
    assert float(r.recall) < 0.55  # the second mode's 200 real points are all missed
    assert float(r.coverage) < 0.55


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(10, 2\) and \(10, 3\)"):
        prdc(jnp.zeros((10, 2)), jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(jnp.zeros((5, 2)), jnp.zeros((10, 2)))
    with pytest.raises(ValueError, match="k must be >= 1"):
        prdc(jnp.zeros((10, 2)), jnp.zeros((10, 2)), k=0)
