"""Diagnostics against closed forms: AR(1) chains have ESS = N (1 − ρ) / (1 + ρ)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import diagnostics


def ar1_chains(key, rho, num_chains, num_draws, num_components=1):
    """Stationary AR(1) chains x_t = ρ x_{t-1} + sqrt(1 − ρ²) ε_t, x_0 ~ N(0, 1)."""
    k0, k1 = jax.random.split(key)
    eps = jax.random.normal(k0, (num_draws, num_chains, num_components))
    x0 = jax.random.normal(k1, (num_chains, num_components))

    def body(x, e):
        x = rho * x + jnp.sqrt(1.0 - rho**2) * e
        return x, x

    _, xs = jax.lax.scan(body, x0, eps)
    return jnp.moveaxis(xs, 0, 1)  # (chains, draws, components)


# Replicates: each column is an independent AR(1) data set, so one call checks the
# estimator's average over 8 replicates. Measured over 20 seeds with 4 x 2000 draws, the
# relative sd of one ESS estimate is 3.5% (ρ=0), 5.6% (ρ=0.5), 11% (ρ=0.9); the mean of 8
# has sd 1.2%, 2.0%, 3.8%. Geyer's truncation biases ESS low by ~2.5% at ρ=0. Tolerance:
# bias + 4 sd of the mean of 8 -> 8%, 10%, 18%.
@pytest.mark.parametrize("rho, rtol", [(0.0, 0.08), (0.5, 0.10), (0.9, 0.18)])
def test_ess_matches_ar1_closed_form(key, rho, rtol):
    num_chains, num_draws = 4, 2000
    x = ar1_chains(key, rho, num_chains, num_draws, num_components=8)
    expected = num_chains * num_draws * (1 - rho) / (1 + rho)
    for fn in (diagnostics.ess, diagnostics.ess_bulk):
        values = np.asarray(fn(x))
        assert values.shape == (8,)
        np.testing.assert_allclose(values.mean(), expected, rtol=rtol)


def test_ess_antithetic_exceeds_num_draws(key):
    # ρ = −0.3: ESS = N · 1.3 / 0.7 ≈ 1.86 N; Geyer's sequence keeps the negative lag.
    x = ar1_chains(key, -0.3, 4, 2000, num_components=8)
    expected = 8000 * 1.3 / 0.7
    np.testing.assert_allclose(np.asarray(diagnostics.ess(x)).mean(), expected, rtol=0.1)


def test_ess_tail_and_mcse(key):
    x = ar1_chains(key, 0.5, 4, 2000, num_components=4)
    tail = np.asarray(diagnostics.ess_tail(x))
    # Tail ESS of an AR(1) is larger than the mean's (quantile indicators decorrelate
    # faster) but cannot exceed a few times the number of draws.
    assert np.all(tail > 1000) and np.all(tail < 8000)
    # MCSE of the mean = sd / sqrt(ESS) with sd ≈ 1 and ESS ≈ 8000/3.
    np.testing.assert_allclose(np.asarray(diagnostics.mcse_mean(x)), np.sqrt(3 / 8000), rtol=0.2)
    q = np.asarray(diagnostics.mcse_quantile(x, 0.5))
    # MCSE of the median of N(0,1): sqrt(p(1-p)/ESS_ind)/φ(0) ≈ 1.25 sqrt(1/ESS); ESS of
    # the median indicator is close to the mean's, so q ≈ 0.024; allow a factor 2.
    assert np.all(q > 0.012) and np.all(q < 0.05)


def test_rhat_well_mixed_near_one(key):
    # With 8 split chains of 1000 iid draws, R-hat − 1 is O(1/N): sd ≈ 5e-4.
    x = jax.random.normal(key, (4, 2000, 3))
    rhat = np.asarray(diagnostics.split_rhat(x))
    assert rhat.shape == (3,)
    assert np.all(rhat < 1.005)


def test_rhat_detects_different_means_and_scales(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (4, 500))
    shifted = x + jnp.array([0.0, 0.0, 0.0, 2.0])[:, None]
    assert float(diagnostics.split_rhat(shifted)) > 1.1
    # Same mean, different scale: only the folded (tail) R-hat sees it.
    scaled = jax.random.normal(k2, (4, 500)) * jnp.array([1.0, 1.0, 1.0, 4.0])[:, None]
    assert float(diagnostics.split_rhat(scaled)) > 1.1
    # A trend within each chain is caught by splitting the chains.
    trend = x + jnp.linspace(0.0, 3.0, 500)[None, :]
    assert float(diagnostics.split_rhat(trend)) > 1.1


def test_rank_normalize_ties_and_range():
    x = jnp.array([[0.0, 1.0, 1.0, 2.0], [3.0, 3.0, 3.0, 4.0]])
    z = np.asarray(diagnostics.rank_normalize(x))
    assert z.shape == x.shape
    assert z[0, 1] == z[0, 2] and z[1, 0] == z[1, 1] == z[1, 2]
    assert np.all(np.diff(np.sort(z.ravel())) >= 0) and abs(np.median(z)) < 0.2


def test_autocorrelation_lag_zero_and_ar1(key):
    x = ar1_chains(key, 0.7, 2, 4000)
    acf = np.asarray(diagnostics.autocorrelation(x))
    assert acf.shape == x.shape
    np.testing.assert_allclose(acf[:, 0, 0], 1.0, rtol=1e-5)
    # sd of lag-1 sample autocorrelation ≈ sqrt((1 − ρ²)/N) = 0.011
    np.testing.assert_allclose(acf[:, 1, 0], 0.7, atol=0.05)


def test_rwm_style_repeats_do_not_break_ranks(key):
    # Rejections repeat values: ranks must average over ties and stay finite.
    x = jnp.repeat(jax.random.normal(key, (4, 250)), 4, axis=1)
    assert np.isfinite(float(diagnostics.ess_bulk(x)))
    assert np.isfinite(float(diagnostics.split_rhat(x)))


def test_summary_and_format(key):
    x = ar1_chains(key, 0.5, 2, 200, num_components=2)
    infos = {
        "acceptance_rate": jnp.full((2, 200), 0.8),
        "is_divergent": jnp.zeros((2, 200), bool).at[0, 3].set(True),
    }
    s = diagnostics.summary({"theta": x}, infos)
    assert sorted(s["variables"]) == ["theta[0]", "theta[1]"]
    assert s["sampler"]["num_divergent"] == 1
    np.testing.assert_allclose(s["sampler"]["acceptance_rate"], 0.8, rtol=1e-6)
    assert 0.9 < s["max_rhat"] < 1.2 and s["min_ess_bulk"] > 10
    table = diagnostics.format_summary(s)
    assert "ess_bulk" in table and "theta[1]" in table and "divergences: 1" in table


def test_bad_input_raises():
    with pytest.raises(ValueError, match="num_chains, num_draws"):
        diagnostics.split_rhat(jnp.zeros(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        diagnostics.ess(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="prob"):
        diagnostics.mcse_quantile(jnp.zeros((2, 10)), 1.5)
    with pytest.raises(TypeError, match="summary_dict"):
        diagnostics.format_summary({"a": 1})
