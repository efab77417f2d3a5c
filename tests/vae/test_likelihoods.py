"""Decoder likelihoods: closed forms, normalisation over 256 levels, support checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgm_jax.vae import (
    bernoulli_likelihood,
    bernoulli_log_prob,
    discretized_logistic_likelihood,
    discretized_logistic_log_prob,
    gaussian_likelihood,
    gaussian_log_prob,
)

LEVELS = jnp.arange(256, dtype=jnp.float32) / 255.0


@pytest.mark.parametrize(
    "mean, scale",
    [(0.5, 0.1), (0.0, 0.02), (1.0, 0.02), (0.3, 1e-4), (-0.4, 0.05), (1.3, 0.05), (0.5, 20.0)],
)
def test_discretized_logistic_sums_to_one_over_256_levels(mean, scale):
    logp = discretized_logistic_log_prob(mean, jnp.log(scale), LEVELS)
    assert np.all(np.isfinite(logp))
    total = float(jax.scipy.special.logsumexp(logp))
    assert abs(total) < 1e-5, total


def test_discretized_logistic_matches_cdf_differences_and_edges():
    mean, scale = 0.37, 0.08
    x = np.arange(256) / 255.0
    cdf = stats.logistic(loc=mean, scale=scale).cdf
    h = 0.5 / 255
    expected = cdf(x + h) - cdf(x - h)
    expected[0] = cdf(h)  # the lowest bin extends to -inf (Salimans et al. 2017)
    expected[-1] = 1.0 - cdf(1.0 - h)  # the highest to +inf
    got = np.exp(np.asarray(discretized_logistic_log_prob(mean, np.log(scale), x), np.float64))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-12)
    # Far in the tail the probability is tiny but its log is exact, not -inf.
    tail = float(discretized_logistic_log_prob(0.0, np.log(0.01), 0.8))
    width = 1.0 / 255 / 0.01
    exact = -(0.8 - h) / 0.01 + np.log1p(-np.exp(-width))  # log σ(-b)+log(1-e^{-w}) for b≫0
    assert tail == pytest.approx(exact, rel=1e-4)


def test_other_bin_counts_normalise():
    levels = jnp.arange(16, dtype=jnp.float32) / 15.0
    logp = discretized_logistic_log_prob(0.2, jnp.log(0.3), levels, num_bins=16)
    assert abs(float(jax.scipy.special.logsumexp(logp))) < 1e-5


def test_bernoulli_and_gaussian_closed_forms(key):
    logits = jax.random.normal(key, (20,)) * 3
    x = (jnp.arange(20) % 2).astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(
        bernoulli_log_prob(logits, x), np.log(np.where(x == 1, p, 1 - p)), rtol=1e-4, atol=1e-6
    )
    mean, log_scale, y = 0.3, np.log(1.7), np.linspace(-3, 3, 7)
    np.testing.assert_allclose(
        gaussian_log_prob(mean, log_scale, y), stats.norm(0.3, 1.7).logpdf(y), rtol=1e-5
    )


def test_likelihood_values_sample_and_mean(key):
    lik = bernoulli_likelihood()
    logits = jnp.full((20_000,), 0.8)
    draws = lik.sample(key, logits)
    p = float(jax.nn.sigmoid(0.8))
    assert abs(float(draws.mean()) - p) < 5 * np.sqrt(p * (1 - p) / 20_000)
    learned = gaussian_likelihood()
    out = (jnp.full((20_000,), 2.0), jnp.full((20_000,), np.log(0.5)))
    y = learned.sample(key, out)
    assert abs(float(y.mean()) - 2.0) < 5 * 0.5 / np.sqrt(20_000)
    assert abs(float(y.std()) - 0.5) < 5 * 0.5 / np.sqrt(2 * 20_000)
    fixed = gaussian_likelihood(scale=2.0)
    np.testing.assert_allclose(
        fixed.log_prob(jnp.zeros(1), jnp.ones(1)), stats.norm(0, 2).logpdf(1)
    )
    dl = discretized_logistic_likelihood()
    z = dl.sample(key, (jnp.full((1000,), 0.5), jnp.full((1000,), np.log(0.05))))
    k = np.asarray(z) * 255
    np.testing.assert_allclose(k, np.rint(k), atol=1e-3)  # on the 8-bit grid
    assert dl.num_outputs == 2 and lik.num_outputs == 1 and fixed.num_outputs == 1


def test_support_errors():
    with pytest.raises(ValueError, match=r"Bernoulli.*\[0, 1\]"):
        bernoulli_likelihood().check_data(jnp.array([[0.0, 2.0]]))
    with pytest.raises(ValueError, match="Bernoulli"):
        bernoulli_likelihood().check_data(jnp.array([[jnp.nan]]))
    bernoulli_likelihood().check_data(jnp.array([[0.0, 0.3, 1.0]]))  # [0, 1] is fine
    with pytest.raises(TypeError, match="floating"):
        bernoulli_likelihood().check_data(jnp.array([[0, 1]], jnp.uint8))
    with pytest.raises(ValueError, match="k/255"):
        discretized_logistic_likelihood().check_data(jnp.array([[0.5 / 255]]))
    with pytest.raises(ValueError, match="k/255"):
        discretized_logistic_likelihood().check_data(jnp.array([[1.5]]))
    discretized_logistic_likelihood().check_data(LEVELS[None])
    with pytest.raises(ValueError, match="finite"):
        gaussian_likelihood().check_data(jnp.array([[jnp.inf]]))
    with pytest.raises(ValueError, match="scale"):
        gaussian_likelihood(scale=0.0)
    with pytest.raises(TypeError, match="pair"):
        gaussian_likelihood().log_prob(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="num_bins"):
        discretized_logistic_likelihood(num_bins=1)
