"""Denoising score matching: oracle networks, stationarity at the exact score, errors.

Stationarity test: for Gaussian data N(0, σ0² I) under the VP SDE the exact score is
s*(x, t) = −x / (m(t)² σ0² + s(t)²). Scaling it by α, the expected loss is minimised at
α = 1, so d loss / dα there has mean 0; it is estimated over 32 independent keys and
must lie within 5 standard errors of 0, while at α = 0.5 it must be negative by more
than 5 standard errors (the loss still falls toward α = 1).
"""

import jax
import jax.numpy as jnp
import pytest

from dgm_jax import sde

SIGMA0 = 0.7


def exact_score(vp):
    def score_fn(x, t):
        m, s = vp.marginal_fn(t)
        return -x / (m**2 * SIGMA0**2 + s**2)[:, None]

    return score_fn


@pytest.mark.parametrize("prediction", ["epsilon", "score"])
@pytest.mark.parametrize("weighting", ["noise", "likelihood"])
def test_point_mass_oracle_has_zero_loss(prediction, weighting):
    """Data at a single point c: the kernel's score is the exact score, the loss is 0."""
    vp = sde.vp_sde()
    c = jnp.array([0.5, -1.5])
    x0 = jnp.tile(c, (512, 1))

    def model_fn(x, t):
        m, s = vp.marginal_fn(t)
        noise = (x - m[:, None] * c[None, :]) / s[:, None]
        return noise if prediction == "epsilon" else -noise / s[:, None]

    loss, metrics = sde.dsm_loss(
        model_fn, vp, jax.random.key(0), x0, prediction=prediction, weighting=weighting
    )
    assert float(loss) < 1e-6
    assert float(metrics["noise_mse"]) < 1e-6


def test_zero_noise_prediction_has_unit_loss():
    """ε̂ = 0: the loss is the mean of ε², 1 with SE sqrt(2 / n) for n = 2^14 terms."""
    loss, _ = sde.dsm_loss(
        lambda x, t: jnp.zeros_like(x), sde.vp_sde(), jax.random.key(1), jnp.ones((8192, 2))
    )
    assert abs(float(loss) - 1.0) < 5 * (2 / 16384) ** 0.5


@pytest.mark.parametrize(("prediction", "weighting"), [("score", "noise"), ("epsilon", "noise")])
def test_loss_is_stationary_at_the_exact_score(prediction, weighting):
    vp = sde.vp_sde()
    score = exact_score(vp)

    def model(alpha):
        def fn(x, t):
            scaled = alpha * score(x, t)
            if prediction == "score":
                return scaled
            _, s = vp.marginal_fn(t)
            return -s[:, None] * scaled

        return fn

    def grad_alpha(key, alpha):
        k_data, k_loss = jax.random.split(key)
        x0 = SIGMA0 * jax.random.normal(k_data, (4096, 2))

        def loss(a):
            return sde.dsm_loss(
                model(a), vp, k_loss, x0, prediction=prediction, weighting=weighting
            )[0]

        return jax.grad(loss)(alpha)

    keys = jax.random.split(jax.random.key(2), 32)
    for alpha, expect_zero in [(1.0, True), (0.5, False)]:
        grads = jax.vmap(lambda k, a=alpha: grad_alpha(k, a))(keys)
        mean, se = float(jnp.mean(grads)), float(jnp.std(grads) / jnp.sqrt(32.0))
        if expect_zero:
            assert abs(mean) < 5 * se, (mean, se)
        else:
            assert mean < -5 * se, (mean, se)


def test_score_from_noise_prediction_is_the_kernel_score():
    vp = sde.vp_sde()
    c = jnp.array([[1.0, 2.0]])
    t = jnp.array([0.3])
    x = jnp.array([[0.2, -0.4]])

    def noise_fn(x, t):
        m, s = vp.marginal_fn(t)
        return (x - m[:, None] * c) / s[:, None]

    m, s = vp.marginal_fn(t)
    expected = -(x - m[:, None] * c) / s[:, None] ** 2
    got = sde.score_from_noise_prediction(noise_fn, vp)(x, t)
    assert jnp.allclose(got, expected, rtol=1e-5)


def test_bad_input():
    vp = sde.vp_sde()
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="prediction"):
        sde.dsm_loss(zero, vp, key, jnp.ones((4, 2)), prediction="x0")
    with pytest.raises(ValueError, match="weighting"):
        sde.dsm_loss(zero, vp, key, jnp.ones((4, 2)), weighting="uniform")
    with pytest.raises(ValueError, match="x0"):
        sde.dsm_loss(zero, vp, key, jnp.ones(4))
    with pytest.raises(ValueError, match="output shape"):
        sde.dsm_loss(lambda x, t: x[:, :1], vp, key, jnp.ones((4, 2)))
    with pytest.raises(TypeError, match="noise_fn"):
        sde.score_from_noise_prediction(3, vp)
