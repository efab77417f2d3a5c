"""Gaussian data ``N(MU, COV)`` in 2-D, whose score is known in closed form at every t.

Under a linear SDE with kernel ``N(m(t) x_0, s(t)² I)`` the marginal is
``p_t = N(m(t) MU, Σ_t)`` with ``Σ_t = m(t)² COV + s(t)² I``, so
``∇ log p_t(x) = -Σ_t^{-1} (x - m(t) MU)``. The covariance is full (not diagonal) so
that Hutchinson's estimator has non-zero variance and the samplers' cross terms matter.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

MU = jnp.array([1.0, -1.0])
COV = jnp.array([[0.5, 0.3], [0.3, 1.0]])


def marginal_cov(sde, t, cov=COV):
    """``Σ_t`` for a scalar ``t``."""
    m, s = sde.marginal_fn(jnp.asarray(t, jnp.float32))
    return m**2 * cov + s**2 * jnp.eye(2)


def _inverse_2x2(c):
    """Inverse of a batch of 2x2 matrices ``(..., 2, 2)``, written out."""
    a, b, cc, d = c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1]
    det = a * d - b * cc
    row0 = jnp.stack([d, -b], axis=-1)
    row1 = jnp.stack([-cc, a], axis=-1)
    return jnp.stack([row0, row1], axis=-2) / det[..., None, None]


def exact_score(sde, mu=MU, cov=COV):
    """The exact ``score_fn(x, t)`` of the Gaussian data under ``sde``, on a batch."""

    def score_fn(x, t):
        m, s = sde.marginal_fn(t)  # (batch,)
        covs = m[:, None, None] ** 2 * cov[None] + s[:, None, None] ** 2 * jnp.eye(2)[None]
        diff = x - m[:, None] * mu[None]
        return -jnp.einsum("bij,bj->bi", _inverse_2x2(covs), diff)

    return score_fn


def logpdf(x, mean, cov):
    """``log N(x; mean, cov)`` for x of shape (batch, 2)."""
    diff = x - mean[None]
    quad = jnp.einsum("bi,ij,bj->b", diff, _inverse_2x2(cov), diff)
    logdet = jnp.log(jnp.linalg.det(cov))
    return -0.5 * (quad + logdet + 2 * math.log(2 * math.pi))


def sample(key, mean, cov, n):
    """``n`` draws from ``N(mean, cov)``."""
    chol = jnp.linalg.cholesky(cov)
    return mean[None] + jax.random.normal(key, (n, 2)) @ chol.T


def with_exact_prior(sde, mu=MU, cov=COV):
    """``sde`` whose prior is the exact marginal at T (removes the prior mismatch)."""
    mean_T = sde.marginal_fn(jnp.float32(sde.T))[0] * mu
    cov_T = marginal_cov(sde, sde.T, cov)

    def prior_sample_fn(key, shape):
        return sample(key, mean_T, cov_T, shape[0])

    def prior_logp_fn(z):
        return logpdf(z, mean_T, cov_T)

    return sde._replace(prior_sample_fn=prior_sample_fn, prior_logp_fn=prior_logp_fn)


def assert_moments(samples, mean, cov, num_se=4.0, extra=0.0):
    """Sample mean and covariance within ``num_se`` standard errors (+ ``extra``) of the truth.

    Standard errors for n i.i.d. Gaussian draws: ``Var(mean_i) = Σ_ii / n`` and
    ``Var(cov_ij) ≈ (Σ_ii Σ_jj + Σ_ij²) / n``.
    """
    n = samples.shape[0]
    est_mean = jnp.mean(samples, axis=0)
    est_cov = jnp.cov(samples.T)
    se_mean = jnp.sqrt(jnp.diag(cov) / n)
    diag = jnp.diag(cov)
    se_cov = jnp.sqrt((diag[:, None] * diag[None, :] + cov**2) / n)
    mean_err = jnp.abs(est_mean - mean) / se_mean
    cov_err = (jnp.abs(est_cov - cov) - extra * jnp.abs(cov)) / se_cov
    assert float(jnp.max(mean_err)) < num_se, (est_mean, mean, mean_err)
    assert float(jnp.max(cov_err)) < num_se, (est_cov, cov, cov_err)


def exact_flow_map(sde, x_T, mu=MU, cov=COV):
    """The probability-flow ODE's exact map from time T to eps for Gaussian data.

    ``Σ_t = m(t)² COV + s(t)² I`` all share COV's eigenvectors, and ``y_t = x_t - m(t) MU``
    solves ``dy/dt = (f + ½ g² Σ_t^{-1}) y``, which ``Σ_t^{1/2} Σ_T^{-1/2} y_T`` satisfies
    because ``dΣ_t/dt = 2 f Σ_t + g² I``. Computed in float64 from COV's eigenvalues.
    """
    lam, vecs = np.linalg.eigh(np.asarray(cov, np.float64))
    (m_T, s_T), (m_e, s_e) = (
        [float(v) for v in sde.marginal_fn(jnp.float32(t))] for t in (sde.T, sde.eps)
    )
    scale = np.sqrt((m_e**2 * lam + s_e**2) / (m_T**2 * lam + s_T**2))
    A = vecs @ np.diag(scale) @ vecs.T
    mu = np.asarray(mu, np.float64)
    return m_e * mu[None] + (np.asarray(x_T, np.float64) - m_T * mu[None]) @ A.T
