"""Targets: the log density agrees with the exact sampler and the stated moments."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import targets

NUM = 20_000

EXACT = [
    targets.correlated_gaussian(4, rho=0.8),
    targets.banana(),
    targets.two_moons(),
    targets.bimodal_mixture(6.0, dim=3, weight=0.3),
    targets.funnel(dim=4, scale=1.5),
]


@pytest.mark.parametrize("target", EXACT, ids=lambda t: t.name)
def test_stein_identity_links_logdensity_and_sampler(key, target):
    # For exact draws x ~ p: E[∇ log p(x)] = 0 and E[x ∇ log p(x)ᵀ] = −I (integration by
    # parts). Each entry is a mean of NUM iid terms: tolerance 5 standard errors of it.
    x = target.sample(key, NUM)
    assert x.shape == (NUM, target.dim)
    score = jax.vmap(jax.grad(target.logdensity_fn))(x)
    terms = np.asarray(x[:, :, None] * score[:, None, :]) + np.eye(target.dim)
    se = terms.std(axis=0) / math.sqrt(NUM)
    assert np.all(np.abs(terms.mean(axis=0)) < 5 * se + 1e-3)
    s = np.asarray(score)
    assert np.all(np.abs(s.mean(axis=0)) < 5 * s.std(axis=0) / math.sqrt(NUM) + 1e-3)


@pytest.mark.parametrize("target", [t for t in EXACT if t.cov is not None], ids=lambda t: t.name)
def test_sample_moments_match_stated_ones(key, target):
    x = np.asarray(target.sample(key, NUM), np.float64)
    sd = np.sqrt(np.diag(np.asarray(target.cov)))
    # Mean: standard error sd/sqrt(N); 5 standard errors.
    assert np.all(np.abs(x.mean(0) - np.asarray(target.mean)) < 5 * sd / math.sqrt(NUM))
    # Variance of the first coordinate: its standard error is sqrt(Var((x-μ)²)/N).
    dev2 = (x[:, 0] - np.asarray(target.mean)[0]) ** 2
    assert abs(dev2.mean() - float(target.cov[0, 0])) < 5 * dev2.std() / math.sqrt(NUM)


def test_funnel_density_normalised_in_v():
    # Integrating out x leaves v ~ N(0, scale²): log p(v, 0) + (d−1) v/2 is that Gaussian.
    t = targets.funnel(dim=5, scale=3.0)
    v = jnp.linspace(-6.0, 6.0, 7)
    lp = jax.vmap(lambda vi: t.logdensity_fn(jnp.zeros(5).at[0].set(vi)))(v)
    np.testing.assert_allclose(lp + 2.0 * v, -0.5 * (v / 3.0) ** 2, atol=1e-5)


def test_bimodal_modes_and_centres():
    t = targets.bimodal_mixture(8.0)
    c = targets.bimodal_centers(8.0)
    np.testing.assert_allclose(c, [[-4.0, 0.0], [4.0, 0.0]])
    lp = jax.vmap(t.logdensity_fn)(jnp.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(lp[0], lp[1], rtol=1e-6)
    # Midpoint: both modes give e^{-8}; a mode centre: one gives 1 -> ratio 2 e^{-8}.
    np.testing.assert_allclose(lp[2] - lp[0], -8.0 + math.log(2.0), atol=1e-3)


def test_logistic_regression_breast_cancer():
    t = targets.logistic_regression_breast_cancer()
    assert t.dim == 31 and t.sample is None
    # At β = 0 every observation has likelihood 1/2.
    np.testing.assert_allclose(t.logdensity_fn(jnp.zeros(31)), -569 * math.log(2), rtol=1e-5)
    g = jax.grad(t.logdensity_fn)(jnp.zeros(31))
    assert g.shape == (31,) and bool(jnp.all(jnp.isfinite(g)))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="rho must lie in"):
        targets.correlated_gaussian(3, rho=1.0)
    with pytest.raises(ValueError, match="positive definite"):
        targets.correlated_gaussian(covariance=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="dim must be >= 2"):
        targets.funnel(dim=1)
    with pytest.raises(ValueError, match="separation"):
        targets.bimodal_mixture(-1.0)
    with pytest.raises(ValueError, match="weight must lie"):
        targets.bimodal_mixture(4.0, weight=1.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        targets.funnel(dim=3).logdensity_fn(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="num must be >= 1"):
        targets.funnel(dim=3).sample(jax.random.key(0), 0)
