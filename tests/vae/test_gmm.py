"""Gaussian mixtures by EM: densities, k-means++, parameter recovery, monotone EM."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dgm_jax.vae import (
    GMMParams,
    covariance_type_of,
    fit_gmm,
    full_covariances,
    gmm_logdensity,
    gmm_predict,
    gmm_responsibilities,
    gmm_sample,
    kmeans_plusplus,
)

WEIGHTS = np.array([0.3, 0.5, 0.2], np.float32)
MEANS = np.array([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]], np.float32)
FULL = np.array([[[1.0, 0.6], [0.6, 2.0]], [[1.5, -0.4], [-0.4, 0.7]], [[0.5, 0.0], [0.0, 0.5]]])
COVARIANCES = {
    "full": FULL.astype(np.float32),
    "diag": np.array([[1.0, 2.0], [1.5, 0.7], [0.5, 0.5]], np.float32),
    "spherical": np.array([1.0, 1.5, 0.5], np.float32),
}
TYPES = tuple(COVARIANCES)

fit = jax.jit(fit_gmm, static_argnums=2, static_argnames=("covariance_type", "max_iter"))


def true_params(kind):
    return GMMParams(jnp.asarray(WEIGHTS), jnp.asarray(MEANS), jnp.asarray(COVARIANCES[kind]))


@pytest.mark.parametrize("kind", TYPES)
def test_logdensity_matches_scipy(kind, key):
    params = true_params(kind)
    x = jax.random.normal(key, (50, 2)) * 5.0
    covs = np.asarray(full_covariances(params), np.float64)
    dens = sum(
        w * stats.multivariate_normal(m, c).pdf(np.asarray(x, np.float64))
        for w, m, c in zip(WEIGHTS, MEANS, covs)
    )
    np.testing.assert_allclose(gmm_logdensity(params, x), np.log(dens), rtol=1e-5, atol=1e-4)
    resp = gmm_responsibilities(params, x)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-5)
    assert covariance_type_of(params) == kind


def test_sample_moments_and_labels(key):
    params = true_params("full")
    n = 10_000
    x, labels = jax.jit(gmm_sample, static_argnums=2)(key, params, n)
    # Label frequencies: binomial standard error sqrt(w(1-w)/n) <= 0.0036; 5 SE.
    freq = np.bincount(np.asarray(labels), minlength=3) / n
    np.testing.assert_allclose(freq, WEIGHTS, atol=5 * math.sqrt(0.25 / n))
    for k in range(3):
        xk = np.asarray(x)[np.asarray(labels) == k]
        se = np.sqrt(np.diag(FULL[k]) / len(xk))
        assert np.all(np.abs(xk.mean(0) - MEANS[k]) < 5 * se)
    # Well separated: the most probable component is the one that generated the point.
    assert float(jnp.mean(gmm_predict(params, x) == labels)) > 0.999


def test_kmeans_plusplus_picks_distinct_points_one_per_cluster(key):
    # Four tight clusters 100 apart: after the first centre, a point of an already chosen
    # cluster has probability about (spread/distance)^2 ~ 1e-4 per draw.
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    cluster = np.repeat(np.arange(4), 50)
    x = jnp.asarray(centres[cluster] + np.random.default_rng(0).normal(size=(200, 2)))
    pick = jax.jit(kmeans_plusplus, static_argnums=2)
    for i in range(10):
        chosen, idx = pick(jax.random.fold_in(key, i), x, 4)
        assert sorted(cluster[np.asarray(idx)]) == [0, 1, 2, 3]
        np.testing.assert_array_equal(chosen, x[idx])
    # Distinct even when K is close to N (a chosen point has weight 0).
    for i in range(10):
        _, idx = pick(jax.random.fold_in(key, 100 + i), x[:12], 12)
        assert len(set(np.asarray(idx).tolist())) == 12


@pytest.mark.parametrize("kind", TYPES)
def test_em_recovers_well_separated_mixture(kind, key):
    n = 4000
    key_data, key_fit = jax.random.split(key)
    x, labels = gmm_sample(key_data, true_params(kind), n)
    result = fit(key_fit, x, 3, covariance_type=kind, max_iter=200, tol=1e-6)
    assert bool(result.converged)
    p = result.params
    # Match fitted to true components by nearest mean.
    order = [int(np.argmin(np.sum((np.asarray(p.means) - m) ** 2, axis=1))) for m in MEANS]
    assert sorted(order) == [0, 1, 2]
    counts = np.bincount(np.asarray(labels), minlength=3)
    cov_true = np.asarray(full_covariances(true_params(kind)))
    cov_fit = np.asarray(full_covariances(p))
    for k, j in enumerate(order):
        nk = counts[k]
        # Weights: the fitted weight is ~ the empirical frequency, SE sqrt(w(1-w)/n).
        assert abs(float(p.weights[j]) - WEIGHTS[k]) < 5 * math.sqrt(WEIGHTS[k] / n)
        # Means: SE sqrt(Σ_ii / n_k) per coordinate.
        se_mean = np.sqrt(np.diag(cov_true[k]) / nk)
        assert np.all(np.abs(np.asarray(p.means[j]) - MEANS[k]) < 5 * se_mean)
        # Covariances: the sample covariance has Var(S_ij) = (Σ_ij² + Σ_ii Σ_jj) / n_k;
        # a diagonal (spherical) fit averages fewer (more) terms, this bound covers both.
        c = cov_true[k]
        se_cov = np.sqrt((c**2 + np.outer(np.diag(c), np.diag(c))) / nk)
        assert np.all(np.abs(cov_fit[j] - c) < 5 * se_cov), (kind, cov_fit[j], c)
    # The fitted mixture explains the data at least as well as the truth (it is the MLE).
    ll_true = float(jnp.mean(gmm_logdensity(true_params(kind), x)))
    last = int(result.num_iterations)
    assert float(result.log_likelihood[last]) >= ll_true - 1e-4
    np.testing.assert_allclose(
        result.log_likelihood[last], jnp.mean(gmm_logdensity(p, x)), rtol=1e-6
    )


@pytest.mark.parametrize("kind", TYPES)
def test_em_never_decreases_the_log_likelihood(kind, key):
    # Overlapping components and a poor start: many iterations with real progress.
    means = jnp.array([[0.0, 0.0], [1.5, 0.5], [0.5, 2.0], [-1.0, 1.5]])
    params = GMMParams(jnp.full(4, 0.25), means, jnp.ones(4))
    key_data, key_fit = jax.random.split(key)
    x, _ = gmm_sample(key_data, params, 1500)
    x = x * jnp.array([[1.0, 2.0]])  # anisotropic, so the types differ
    for reg_covar, slack in ((0.0, 0.0), (1e-6, 1e-5)):
        result = fit(key_fit, x, 4, covariance_type=kind, max_iter=60, tol=0.0, reg_covar=reg_covar)
        hist = np.asarray(result.log_likelihood)
        last = int(result.num_iterations)
        assert last >= 20  # it did iterate
        assert np.all(np.isfinite(hist[: last + 1]))
        assert np.all(np.isnan(hist[last + 1 :]))
        steps = np.diff(hist[: last + 1])
        # float32 round-off in a mean of 1500 log densities is ~1e-6 relative; with
        # reg_covar the plain log-likelihood may dip by O(reg_covar) (see fit_gmm).
        assert steps.min() >= -2e-6 * abs(hist[last]) - slack, steps.min()
        assert hist[last] - hist[0] > 0.01


def test_init_params_and_convergence_stop(key):
    start = true_params("diag")
    x, _ = gmm_sample(key, start, 4000)
    result = fit(key, x, 3, covariance_type="diag", max_iter=200, tol=1e-3, init_params=start)
    assert bool(result.converged) and int(result.num_iterations) < 20
    # A huge tolerance stops after the first M-step; history[0] is the start's likelihood.
    once = fit(key, x, 3, covariance_type="diag", max_iter=200, tol=1e6, init_params=start)
    assert int(once.num_iterations) == 1 and bool(once.converged)
    np.testing.assert_allclose(once.log_likelihood[0], jnp.mean(gmm_logdensity(start, x)), 1e-6)


def test_bad_input_errors(key):
    x = jnp.zeros((10, 2))
    with pytest.raises(ValueError, match="covariance_type"):
        fit_gmm(key, x, 2, covariance_type="tied")
    with pytest.raises(ValueError, match="num_components"):
        kmeans_plusplus(key, x[:1], 2)
    with pytest.raises(ValueError, match="num_components"):
        fit_gmm(key, x, 0)
    with pytest.raises(ValueError, match="covariances"):
        gmm_logdensity(GMMParams(jnp.ones(2) / 2, jnp.zeros((2, 2)), jnp.ones((3,))), x)
    with pytest.raises(ValueError, match="columns"):
        gmm_logdensity(true_params("full"), jnp.zeros((4, 3)))
    with pytest.raises(TypeError, match="floating"):
        fit_gmm(key, jnp.zeros((10, 2), jnp.int32), 2)
    with pytest.raises(ValueError, match="init_params"):
        fit_gmm(key, x, 3, covariance_type="diag", init_params=true_params("full"))
    with pytest.raises(ValueError, match="reg_covar"):
        fit_gmm(key, x, 2, reg_covar=-1.0)
