"""VAE objectives against known truth: probabilistic PCA, closed-form KLs, IWAE in k."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from dgm_jax.nn import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from dgm_jax.vae import (
    bernoulli_likelihood,
    capacity_schedule,
    capacity_vae_loss,
    decode_mean,
    elbo_terms,
    gaussian_likelihood,
    interpolate_latents,
    iwae_log_likelihood,
    iwae_log_weights,
    iwae_loss,
    kl_diagonal_gaussians,
    kl_monte_carlo,
    reconstruct,
    reparameterize,
    sample_images,
    traverse_latents,
    vae_loss,
)

# --------------------------------------------------------------------------------------
# Probabilistic PCA (Tipping & Bishop 1999) as a linear-Gaussian VAE
# --------------------------------------------------------------------------------------

D, Q, N = 5, 2, 2000


@pytest.fixture(scope="module")
def ppca():
    """Data, the closed-form ML solution and exact log-likelihoods (float64)."""
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=(D, Q)) * np.array([3.0, 1.5])
    x = rng.normal(size=(N, Q)) @ w_true.T + 0.5 * rng.normal(size=(N, D)) + 1.0
    mu = x.mean(0)
    s = np.cov(x.T, bias=True)
    eigval, eigvec = np.linalg.eigh(s)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    sigma2 = eigval[Q:].mean()  # ML noise: mean of the discarded eigenvalues
    w = eigvec[:, :Q] * np.sqrt(eigval[:Q] - sigma2)  # ML loading, rotation R = I
    c = w @ w.T + sigma2 * np.eye(D)
    diff = x - mu
    logp = -0.5 * (
        D * math.log(2 * math.pi)
        + np.linalg.slogdet(c)[1]
        + np.einsum("ni,ij,nj->n", diff, np.linalg.inv(c), diff)
    )
    return {
        "x": jnp.asarray(x, jnp.float32),
        "mu": mu,
        "w": w,
        "sigma2": sigma2,
        "logp": logp,
    }


def ppca_model(p, *, mean_factor=1.0, log_scale_shift=0.0):
    """Encoder (exact posterior, optionally distorted) and decoder of the PPCA model."""
    w, mu, sigma2 = (jnp.asarray(p[k], jnp.float32) for k in ("w", "mu", "sigma2"))
    m_diag = jnp.diag(w.T @ w) + sigma2  # M = WᵀW + σ²I is diagonal for R = I
    post_log_scale = 0.5 * jnp.log(sigma2 / m_diag)  # posterior covariance σ² M⁻¹

    def encoder_fn(x):
        mean = ((x - mu[None]) @ w) / m_diag[None]
        log_scale = jnp.broadcast_to(post_log_scale[None], mean.shape)
        return mean_factor * mean, log_scale + log_scale_shift

    def decoder_fn(z):
        loc = z @ w.T + mu[None]
        return loc, jnp.full(loc.shape, 0.5 * jnp.log(sigma2))

    return encoder_fn, decoder_fn


def test_ppca_closed_form_is_the_maximum_likelihood(ppca):
    # Gradient of the exact mean log-likelihood in (W, μ, log σ²) vanishes at the solution.
    x = jnp.asarray(ppca["x"])

    def mean_logp(w, mu, log_s2):
        c = w @ w.T + jnp.exp(log_s2) * jnp.eye(D)
        diff = x - mu[None]
        sol = jnp.linalg.solve(c, diff.T).T
        return -0.5 * jnp.mean(jnp.sum(diff * sol, 1) + jnp.linalg.slogdet(c)[1])

    args = (jnp.asarray(ppca["w"], jnp.float32), jnp.asarray(ppca["mu"], jnp.float32))
    grads = jax.jit(jax.grad(mean_logp, argnums=(0, 1, 2)))(*args, jnp.log(ppca["sigma2"]))
    for g in grads:
        assert float(jnp.max(jnp.abs(g))) < 2e-3


def test_elbo_of_linear_vae_equals_ppca_marginal_likelihood(ppca, key):
    enc, dec = ppca_model(ppca)
    lik = gaussian_likelihood()
    x, logp = ppca["x"], ppca["logp"]
    # With the exact posterior, log p(x, z) − log q(z | x) = log p(x) for every z: the
    # Monte Carlo-KL ELBO equals the marginal likelihood sample by sample.
    terms = jax.jit(lambda k, analytic: elbo_terms(enc, dec, lik, k, x, analytic_kl=analytic),
                    static_argnums=1)  # fmt: skip
    mc = terms(key, False)
    np.testing.assert_allclose(mc.elbo, logp, rtol=2e-5, atol=2e-4)
    lw = iwae_log_weights(enc, dec, lik, key, x[:50], 8)
    np.testing.assert_allclose(lw, np.broadcast_to(logp[None, :50], (8, 50)), atol=2e-4)
    # With the analytic KL, the ELBO estimate is unbiased for log p(x): compare the mean
    # over N examples to the truth within 4 standard errors.
    an = terms(jax.random.fold_in(key, 1), True)
    err = np.asarray(an.elbo, np.float64) - logp
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(N) + 1e-5
    # The dataset ELBO is the PPCA maximum log-likelihood (Tipping & Bishop, eq. 7/15).
    sigma2 = ppca["sigma2"]
    eig = np.linalg.eigvalsh(np.cov(np.asarray(x, np.float64).T, bias=True))[::-1]
    closed = -0.5 * (
        D * math.log(2 * math.pi) + np.sum(np.log(eig[:Q])) + (D - Q) * math.log(sigma2) + D
    )
    assert float(jnp.mean(mc.elbo)) == pytest.approx(closed, abs=2e-4)


def test_iwae_bounds_increase_with_k_towards_the_marginal_likelihood(ppca, key):
    # A deliberately poor encoder: shrunken means and too-wide posteriors.
    enc, dec = ppca_model(ppca, mean_factor=0.6, log_scale_shift=0.7)
    lik = gaussian_likelihood()
    x, logp = ppca["x"][:1000], ppca["logp"][:1000]
    weights = jax.jit(lambda k: iwae_log_weights(enc, dec, lik, k, x, 256))
    lw = np.asarray(weights(key), np.float64)  # (256, n)
    ks = (1, 4, 16, 64, 256)
    # IWAE_k from disjoint groups of k weights; the per-example gaps are averaged over
    # 256/k groups, then over examples, and compared with paired standard errors.
    gaps = []
    for k in ks:
        groups = lw.reshape(256 // k, k, -1)
        bound = (logsumexp(groups, axis=1) - math.log(k)).mean(0)
        gaps.append(logp - bound)
    means = [g.mean() for g in gaps]
    for a, b in itertools.pairwise(gaps):
        diff = a - b
        assert diff.mean() > 3 * diff.std() / math.sqrt(len(diff)), means
    assert means[0] > 0.5  # the ELBO gap of this encoder is large ...
    assert means[-1] < 0.1 * means[0]  # ... and most of it closes by k = 256
    assert means[-1] > -3 * gaps[-1].std() / math.sqrt(len(gaps[-1]))  # still a bound
    # The chunked estimator (k = 2000, remainder chunk) agrees with log p(x).
    est = jax.jit(
        lambda k: iwae_log_likelihood(enc, dec, lik, k, x[:100], num_samples=2000, chunk_size=300)
    )(key)
    err = np.asarray(est.log_likelihood, np.float64) - logp[:100]
    assert abs(err.mean()) < 4 * err.std() / 10 + 0.01 * means[0]
    assert np.all(np.asarray(est.stderr) > 0)


# --------------------------------------------------------------------------------------
# KL divergences
# --------------------------------------------------------------------------------------


def test_analytic_kl_closed_forms():
    # KL(N(1, 2²) || N(0, 1)) = ½(1 + 4 − 1 − 2 log 2) = 2 − log 2.
    kl = kl_diagonal_gaussians(jnp.array([1.0]), jnp.log(jnp.array([2.0])))
    assert float(kl) == pytest.approx(2 - math.log(2), rel=1e-6)
    # Non-standard prior: KL(N(0, 1) || N(1, 3²)) = log 3 + (1 + 1)/18 − ½.
    kl = kl_diagonal_gaussians(jnp.zeros(1), jnp.zeros(1), 1.0, math.log(3.0))
    assert float(kl) == pytest.approx(math.log(3) + 2 / 18 - 0.5, rel=1e-6)


def test_monte_carlo_kl_matches_analytic_within_mc_error(key):
    k1, k2, k3 = jax.random.split(key, 3)
    mean = jax.random.normal(k1, (4, 3))
    log_scale = 0.5 * jax.random.normal(k2, (4, 3))
    for prior_mean, prior_log_scale in ((0.0, 0.0), (0.5, math.log(1.5))):
        exact = kl_diagonal_gaussians(mean, log_scale, prior_mean, prior_log_scale)
        n = 20_000
        draws = jax.jit(
            jax.vmap(
                lambda k, pm=prior_mean, pls=prior_log_scale: kl_monte_carlo(
                    k, mean, log_scale, prior_mean=pm, prior_log_scale=pls
                )
            )
        )(jax.random.split(k3, n))
        se = draws.std(0) / math.sqrt(n)
        assert np.all(np.abs(draws.mean(0) - exact) < 4 * se), (draws.mean(0), exact)
        # The averaged estimator is the mean of the single-sample ones.
        avg = kl_monte_carlo(k3, mean, log_scale, num_samples=n, prior_mean=prior_mean,
                             prior_log_scale=prior_log_scale)  # fmt: skip
        assert np.all(np.abs(avg - exact) < 5 * se)


def test_reparameterize_moments(key):
    z = reparameterize(key, jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.5, 3.0])), 50_000)
    se_mean = np.array([0.5, 3.0]) / math.sqrt(50_000)
    assert np.all(np.abs(np.asarray(z.mean(0)) - [1.0, -2.0]) < 5 * se_mean)
    assert np.all(np.abs(np.asarray(z.std(0)) - [0.5, 3.0]) < 5 * se_mean / math.sqrt(2) * 1.5)


# --------------------------------------------------------------------------------------
# β-VAE, capacity, IWAE loss
# --------------------------------------------------------------------------------------


def _toy(a):
    """Encoder q(z|x) = N(a x, 1) for 1-D x; decoder mean z with unit Gaussian noise."""
    return (lambda x: (a * x, jnp.zeros_like(x))), (lambda z: z)


def test_beta_vae_loss_weights_the_kl(key):
    x = jnp.linspace(-2, 2, 16)[:, None]
    enc, dec = _toy(0.7)
    lik = gaussian_likelihood(1.0)
    t = elbo_terms(enc, dec, lik, key, x)
    np.testing.assert_allclose(t.kl, 0.5 * (0.7 * x[:, 0]) ** 2, rtol=1e-6, atol=1e-7)
    for beta in (1.0, 4.0):
        loss, m = vae_loss(enc, dec, lik, key, x, beta=beta)
        assert float(loss) == pytest.approx(float(jnp.mean(beta * t.kl - t.reconstruction)))
        assert float(m["elbo"]) == pytest.approx(float(jnp.mean(t.elbo)))


def test_capacity_schedule_and_loss(key):
    sched = [
        float(capacity_schedule(t, max_capacity=25.0, num_steps=1000)) for t in (0, 250, 1000, 5000)
    ]
    assert sched == [0.0, 6.25, 25.0, 25.0]
    assert float(jax.jit(lambda t: capacity_schedule(t, max_capacity=4.0, num_steps=8))(2)) == 1.0
    x = jnp.full((8, 1), 2.0)
    lik = gaussian_likelihood(1.0)

    def loss_of(a, capacity):
        enc, dec = _toy(a)
        return capacity_vae_loss(enc, dec, lik, key, x, capacity, gamma=10.0)

    loss, m = loss_of(1.0, 5.0)  # KL = ½ (a x)² = 2
    assert float(m["kl"]) == pytest.approx(2.0)
    assert float(loss) == pytest.approx(-float(m["reconstruction"]) + 10.0 * 3.0, rel=1e-6)
    # Below the capacity the penalty pushes the KL up (d loss/da < 0 from the |KL − C|
    # term, which dominates); above it, down.
    grad = jax.grad(lambda a, c: loss_of(a, c)[0])
    assert float(grad(1.0, 5.0)) < 0 < float(grad(1.0, 0.5))


def test_iwae_loss_k1_is_the_mc_elbo_and_tightens_with_k(key):
    x = jnp.linspace(-2, 2, 64)[:, None]
    enc, dec = _toy(0.2)  # posterior is N(x/2, 1/2): this encoder is poor
    lik = gaussian_likelihood(1.0)
    bounds = {}
    for k in (1, 10, 100):
        vals = jax.jit(
            jax.vmap(
                lambda kk, k=k: iwae_loss(enc, dec, lik, kk, x, num_samples=k)[1]["iwae_bound"]
            )
        )(jax.random.split(key, 200))
        bounds[k] = (float(vals.mean()), float(vals.std() / math.sqrt(200)))
    logp = float(jnp.mean(-0.5 * jnp.log(2 * math.pi * 2.0) - x[:, 0] ** 2 / 4))
    # ELBO in closed form: E_q[log p(x|z)] − KL = −½ log 2π − ½((1 − a)² x² + 1) − ½ a² x².
    xs = x[:, 0]
    elbo = float(jnp.mean(-0.5 * math.log(2 * math.pi) - 0.5 * (0.64 * xs**2 + 1) - 0.02 * xs**2))
    assert abs(bounds[1][0] - elbo) < 4 * bounds[1][1]
    assert bounds[1][0] < bounds[10][0] < bounds[100][0] < logp + 3 * bounds[100][1]
    assert bounds[10][0] - bounds[1][0] > 3 * math.hypot(bounds[1][1], bounds[10][1])


# --------------------------------------------------------------------------------------
# Networks, helpers, errors
# --------------------------------------------------------------------------------------


def _pair_outputs(enc_net, dec_net, k, x):
    """Init, loss, reconstructions, samples and an IWAE estimate of one encoder/decoder pair."""
    lik = bernoulli_likelihood()
    pe = enc_net.init(k, x)
    pd = dec_net.init(k, jnp.zeros((1, 3)))

    def enc(v):
        return enc_net.apply(pe, v)

    def dec(z):
        return dec_net.apply(pd, z)

    loss, m = vae_loss(enc, dec, lik, k, x)
    recon = reconstruct(enc, dec, lik, x)
    samples = sample_images(dec, lik, k, 5, 3)
    est = iwae_log_likelihood(enc, dec, lik, k, x, num_samples=7, chunk_size=3)
    return loss, m, recon, samples, est


def test_networks_shapes_and_losses_end_to_end(key):
    x = jax.random.bernoulli(key, 0.3, (4, 28, 28, 1)).astype(jnp.float32)
    mlp = (MLPEncoder(3, (16,)), MLPDecoder((28, 28, 1), (16,)))
    loss, m, recon, samples, est = jax.jit(lambda k: _pair_outputs(*mlp, k, x))(key)
    assert np.isfinite(float(loss)) and float(m["kl"]) >= 0
    assert recon.shape == x.shape and samples.shape == (5, 28, 28, 1)
    assert est.log_likelihood.shape == (4,)
    # An untrained decoder with logits near 0 gives about 784 log 2 nats per image.
    assert abs(float(jnp.mean(est.log_likelihood)) + 784 * math.log(2)) < 0.2 * 784
    # The convolutional pair: shapes through the whole graph without an XLA compile
    # (conv compiles cost many seconds on 2 CPU cores).
    conv = (ConvEncoder(3, (4, 8), 16), ConvDecoder((28, 28, 1), (4, 8), 16))
    loss, m, recon, samples, est = jax.eval_shape(lambda k: _pair_outputs(*conv, k, x), key)
    assert loss.shape == () and recon.shape == x.shape and samples.shape == (5, 28, 28, 1)
    assert est.log_likelihood.shape == (4,)
    two = MLPDecoder((6,), (8,), num_outputs=2)
    loc, log_scale = two.apply(two.init(key, jnp.zeros((2, 3))), jnp.zeros((2, 3)))
    assert loc.shape == log_scale.shape == (2, 6)


def test_interpolation_and_traversal(key):
    z0, z1 = jax.random.normal(key, (2, 8))
    lin = interpolate_latents(z0, z1, 5)
    np.testing.assert_allclose(lin[0], z0)
    np.testing.assert_allclose(lin[-1], z1, rtol=1e-6)
    np.testing.assert_allclose(lin[2], (z0 + z1) / 2, rtol=1e-6)
    u = z1 / jnp.linalg.norm(z1) * jnp.linalg.norm(z0)  # equal norms: slerp keeps the norm
    sl = interpolate_latents(z0, u, 7, spherical=True)
    np.testing.assert_allclose(jnp.linalg.norm(sl, axis=1), jnp.linalg.norm(z0), rtol=1e-5)
    np.testing.assert_allclose(sl[-1], u, rtol=1e-5, atol=1e-6)
    grid = traverse_latents(z0, [1, 5], jnp.array([-3.0, 0.0, 3.0]))
    assert grid.shape == (2, 3, 8)
    np.testing.assert_allclose(grid[1, :, 5], [-3.0, 0.0, 3.0])
    np.testing.assert_allclose(
        grid[0, 2, jnp.array([0, 2, 3, 4, 5, 6, 7])], z0[jnp.array([0, 2, 3, 4, 5, 6, 7])]
    )
    dec = lambda z: z[:, :2]  # noqa: E731
    assert decode_mean(dec, gaussian_likelihood(1.0), grid).shape == (2, 3, 2)


def test_bad_input_errors(key):
    lik = bernoulli_likelihood()
    x = jnp.zeros((2, 4))
    dec = lambda z: jnp.zeros((z.shape[0], 4))  # noqa: E731
    with pytest.raises(ValueError, match="latent_dim"):
        MLPEncoder(latent_dim=0)
    with pytest.raises(ValueError, match="latent_dim"):
        ConvEncoder(latent_dim=-1)
    with pytest.raises(ValueError, match="latent_dim"):
        sample_images(dec, lik, key, 3, 0)
    empty = lambda v: (jnp.zeros((v.shape[0], 0)), jnp.zeros((v.shape[0], 0)))  # noqa: E731
    with pytest.raises(ValueError, match="latent dimension"):
        vae_loss(empty, dec, lik, key, x)
    good = lambda v: (jnp.zeros((v.shape[0], 2)), jnp.zeros((v.shape[0], 2)))  # noqa: E731
    with pytest.raises(ValueError, match="Bernoulli decoder's support"):
        vae_loss(good, dec, lik, key, x + 255.0)  # 8-bit pixels given to a Bernoulli decoder
    with pytest.raises(ValueError, match="num_samples"):
        iwae_loss(good, dec, lik, key, x, num_samples=0)
    with pytest.raises(ValueError, match="num_samples"):
        iwae_log_likelihood(good, dec, lik, key, x, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        iwae_log_likelihood(good, dec, lik, key, x, chunk_size=0)
    with pytest.raises(ValueError, match="batch"):
        vae_loss(good, dec, lik, key, jnp.zeros(4))
    with pytest.raises(ValueError, match="num_outputs"):
        MLPDecoder((4,), num_outputs=3)
    with pytest.raises(ValueError, match="max_capacity"):
        capacity_schedule(0, max_capacity=-1.0, num_steps=10)
    with pytest.raises(ValueError, match="dims"):
        traverse_latents(jnp.zeros(3), [3], jnp.zeros(2))
