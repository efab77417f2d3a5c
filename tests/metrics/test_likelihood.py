"""Tests for the likelihood tools."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.metrics import (
    bits_per_dim_to_nats,
    iwae_log_likelihood,
    logmeanexp,
    nats_to_bits_per_dim,
    uniform_dequantize,
    variational_dequantization_elbo,
)


def test_bits_nats_round_trip():
    nll = jnp.array([100.0, 2000.0])
    for scale in (1.0, 1 / 256):
        bpd = nats_to_bits_per_dim(nll, 784, data_scale=scale)
        np.testing.assert_allclose(bits_per_dim_to_nats(bpd, 784, data_scale=scale), nll, rtol=1e-6)
    # A uniform density on [0,1)^D has nll 0; on the 256-level grid that is 8 bits/dim.
    np.testing.assert_allclose(nats_to_bits_per_dim(0.0, 3, data_scale=1 / 256), 8.0, rtol=1e-6)


def test_uniform_dequantize_range_and_mean(key):
    x = jnp.tile(jnp.arange(256, dtype=jnp.uint8), 200)
    y = uniform_dequantize(key, x)
    assert y.dtype == jnp.float32
    assert bool(jnp.all(jnp.floor(y * 256) == x))
    # E[y] = (x + 1/2)/256; mean over 51,200 values has sd (1/256)/sqrt(12 * 51200) ~ 5e-6.
    np.testing.assert_allclose(jnp.mean(y - (x + 0.5) / 256), 0.0, atol=3e-5)


def test_variational_dequantization_with_exact_posterior_is_tight(key):
    # Discrete P(x) with x ∈ {0, 1}; model density p_y piecewise constant: p_y = 2 P(x) on
    # [x/2, (x+1)/2). With q uniform (the exact posterior here) the bound equals log P(x).
    probs = jnp.array([0.3, 0.7])

    def log_density(y):
        return jnp.sum(jnp.log(2.0 * probs[jnp.floor(y * 2).astype(jnp.int32)]))

    def uniform_q(k, x):
        return jax.random.uniform(k, x.shape), jnp.zeros(())

    x = jnp.array([0, 1, 1])
    elbo = variational_dequantization_elbo(key, x, uniform_q, log_density, num_bins=2)
    np.testing.assert_allclose(elbo, jnp.sum(jnp.log(probs[x])), rtol=1e-6)
    with pytest.raises(ValueError, match="sample_q_fn"):
        variational_dequantization_elbo(
            key, x, lambda k, x: (jnp.zeros(2), jnp.zeros(())), log_density, num_bins=2
        )


def test_logmeanexp_stable():
    a = jnp.array([[1000.0, 1000.0 + math.log(3.0)], [-1000.0, -1000.0]])
    np.testing.assert_allclose(logmeanexp(a, axis=1), [1000.0 + math.log(2.0), -1000.0], rtol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        logmeanexp(jnp.zeros((0,)))


def test_iwae_converges_to_log_evidence(key):
    # Model z ~ N(0,1), x | z ~ N(z, 1); evidence p(x) = N(x; 0, 2). Proposal q = N(0, 1.5²)
    # (not the posterior). The bound rises with k towards log p(x); at k = 4096 the
    # estimate is within a few (delta-method) standard errors of the truth.
    x = 1.0
    truth = -0.5 * math.log(2 * math.pi * 2.0) - x**2 / 4.0

    def log_w(z):
        log_joint = -0.5 * z**2 - 0.5 * (x - z) ** 2 - math.log(2 * math.pi)
        log_q = -0.5 * (z / 1.5) ** 2 - math.log(1.5) - 0.5 * math.log(2 * math.pi)
        return log_joint - log_q

    z = 1.5 * jax.random.normal(key, (4096,))
    est = iwae_log_likelihood(log_w(z))
    assert abs(float(est.log_likelihood) - truth) < 5 * float(est.stderr)
    # Batched: the k = 1 estimates (ELBO samples) average below the k = 64 ones.
    lw = log_w(1.5 * jax.random.normal(jax.random.key(1), (200, 64)))
    assert float(jnp.mean(iwae_log_likelihood(lw[:, :1]).log_likelihood)) < float(
        jnp.mean(iwae_log_likelihood(lw).log_likelihood)
    )


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="num_dims"):
        nats_to_bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="data_scale"):
        nats_to_bits_per_dim(1.0, 3, data_scale=-1.0)
    with pytest.raises(ValueError, match="log_weights"):
        iwae_log_likelihood(jnp.zeros(()))
    with pytest.raises(TypeError, match="key"):
        uniform_dequantize(0, jnp.zeros(3))
