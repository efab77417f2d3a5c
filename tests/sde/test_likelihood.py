"""Probability-flow log-likelihoods against the exact Gaussian log-density, and bits/dim.

With the prior replaced by the exact marginal at T (``_gaussian.with_exact_prior``), the
probability-flow ODE with the exact score transports ``p_T`` onto ``p_eps`` exactly, so
``ode_log_likelihood`` must equal ``log N(x; m(eps) MU, Σ_eps)`` up to solver error.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import sde as sdelib

from ._gaussian import COV, MU, exact_score, logpdf, marginal_cov, sample, with_exact_prior

SDES = {
    "vp": sdelib.vp_sde(),
    "subvp": sdelib.subvp_sde(),
    "ve": sdelib.ve_sde(),
    "edm": sdelib.edm_sde(),
}


def _data(key, sde, n=16):
    mean = sde.marginal_fn(jnp.float32(sde.eps))[0] * MU
    cov = marginal_cov(sde, sde.eps)
    x = sample(key, mean, cov, n)
    return x, logpdf(x, mean, cov)


@pytest.mark.parametrize("name", list(SDES))
def test_exact_trace_matches_the_gaussian_log_density(name, key):
    sde = with_exact_prior(SDES[name])
    x, expected = _data(key, sde)
    ll, info = sdelib.ode_log_likelihood(
        key, sde, exact_score(sde), x, trace="exact", solver=sdelib.rk4, num_steps=100
    )
    assert ll.shape == (16,)
    # RK4 with 100 steps; float32 sums of O(10) terms: 2e-3 nats is about 100 ulps.
    np.testing.assert_allclose(ll, expected, atol=2e-3)
    np.testing.assert_allclose(ll, info.prior_logp + info.delta_logp, rtol=1e-6)
    assert int(info.ode.num_fn_evals) == 400


def test_adaptive_solver_and_default_prior(key):
    sde = with_exact_prior(SDES["ve"])
    x, expected = _data(key, sde)
    solver = sdelib.adaptive_solver(rtol=1e-5, atol=1e-5)
    ll, info = sdelib.ode_log_likelihood(key, sde, exact_score(sde), x, solver=solver)
    np.testing.assert_allclose(ll, expected, atol=2e-3)
    assert not bool(info.ode.max_steps_reached) and int(info.ode.num_fn_evals) > 0
    # With VP's own prior N(0, I) instead of the exact marginal at T (off by m(T) ≈ 0.007)
    # the answer moves by well under 0.05 nats.
    vp = SDES["vp"]
    x, expected = _data(key, with_exact_prior(vp))
    ll, _ = sdelib.ode_log_likelihood(key, vp, exact_score(vp), x, num_steps=50)
    np.testing.assert_allclose(ll, expected, atol=0.05)


def test_hutchinson_is_unbiased(key):
    # Independent probe draws give independent unbiased estimates of the exact value; their
    # mean over K = 64 draws lies within 4 standard errors (the sample std / sqrt(K)). The
    # covariance is not diagonal, so the estimator's variance is not zero.
    sde = with_exact_prior(SDES["vp"])
    score_fn = exact_score(sde)
    x, _ = _data(jax.random.key(3), sde, n=4)
    exact, _ = sdelib.ode_log_likelihood(key, sde, score_fn, x, num_steps=40)

    def estimate(k):
        ll, _ = sdelib.ode_log_likelihood(
            k, sde, score_fn, x, trace="hutchinson", probe="gaussian", num_steps=40
        )
        return ll

    estimates = jax.jit(jax.vmap(estimate))(jax.random.split(key, 64))  # (64, 4)
    assert float(jnp.min(jnp.std(estimates, axis=0))) > 1e-3
    se = jnp.std(estimates, axis=0, ddof=1) / math.sqrt(64)
    assert bool(jnp.all(jnp.abs(jnp.mean(estimates, axis=0) - exact) < 4 * se))
    # More Rademacher probes per call average down the same estimator.
    ll, _ = sdelib.ode_log_likelihood(
        key, sde, score_fn, x, trace="hutchinson", num_probes=64, num_steps=40
    )
    assert bool(jnp.all(jnp.abs(ll - exact) < 0.5))


def test_gradient_through_the_fixed_step_solver(key):
    # d/dμ log N(x; m μ, Σ_eps) = m Σ_eps^{-1} (x - m μ); the ODE likelihood with the exact
    # score and exact prior (both functions of μ) must reproduce it.
    base = SDES["vp"]
    x, _ = _data(key, with_exact_prior(base), n=8)

    def mean_ll(mu):
        sde = with_exact_prior(base, mu=mu)
        ll, _ = sdelib.ode_log_likelihood(key, sde, exact_score(sde, mu=mu), x, num_steps=40)
        return jnp.mean(ll)

    grad = jax.jit(jax.grad(mean_ll))(MU)
    m = float(base.marginal_fn(jnp.float32(base.eps))[0])
    cov = marginal_cov(base, base.eps)
    expected = m * jnp.linalg.solve(cov, jnp.mean(x - m * MU[None], axis=0))
    np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-3)
    h = 1e-2
    fd = (mean_ll(MU + jnp.array([h, 0.0])) - mean_ll(MU - jnp.array([h, 0.0]))) / (2 * h)
    np.testing.assert_allclose(grad[0], fd, rtol=2e-2, atol=2e-2)


def test_bits_per_dim():
    # -log p = D log 2 nats is 1 bit per dimension; data in [0, 1] from 8-bit integers add
    # log 256 nats (8 bits) per dimension, data in [-1, 1] add log 128 (7 bits).
    np.testing.assert_allclose(sdelib.bits_per_dim(jnp.array(-3 * math.log(2.0)), 3), 1.0)
    off01 = sdelib.uniform_dequantization_offset(256, 0.0, 1.0)
    off11 = sdelib.uniform_dequantization_offset(256, -1.0, 1.0)
    np.testing.assert_allclose(off01, math.log(256.0))
    np.testing.assert_allclose(sdelib.bits_per_dim(0.0, 10, dequantization_offset=off11), 7.0)
    # A uniform density on [0, 1]^D (log p = 0) scores 8-bit data at exactly 8 bits/dim.
    np.testing.assert_allclose(sdelib.bits_per_dim(0.0, 784, dequantization_offset=off01), 8.0)
    with pytest.raises(ValueError, match="num_dims"):
        sdelib.bits_per_dim(0.0, 0)
    with pytest.raises(TypeError, match="log_likelihood_nats"):
        sdelib.bits_per_dim(jnp.array([1, 2]), 2)
    with pytest.raises(ValueError, match="high > low"):
        sdelib.uniform_dequantization_offset(256, 1.0, 0.0)


def test_bad_inputs_are_rejected(key):
    sde = SDES["vp"]
    score_fn = exact_score(sde)
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="trace must be one of"):
        sdelib.ode_log_likelihood(key, sde, score_fn, x, trace="approx")
    with pytest.raises(ValueError, match="num_probes must be >= 1"):
        sdelib.ode_log_likelihood(key, sde, score_fn, x, trace="hutchinson", num_probes=0)
    with pytest.raises(ValueError, match="x must have shape"):
        sdelib.ode_log_likelihood(key, sde, score_fn, jnp.zeros(4))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        sdelib.ode_log_likelihood(key, sde, score_fn, jnp.zeros((4, 2), jnp.int32))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        sdelib.ode_log_likelihood(key, sde, score_fn, x, num_steps=0)
    with pytest.raises(ValueError, match="score_fn"):
        sdelib.ode_log_likelihood(key, sde, lambda x, t: x.sum(1), x)
    with pytest.raises(ValueError, match="time_grid must lie in"):
        sdelib.ode_log_likelihood(key, sde, score_fn, x, time_grid=[2.0, 1.0, 0.5])


def test_reference_covariance_is_full():
    assert float(COV[0, 1]) != 0.0
