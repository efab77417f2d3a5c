"""DDPM/DDIM against a Gaussian data distribution, whose exact denoiser is known.

For data ``x_0 ~ N(μ, diag(σ²))`` the noisy marginal is
``x_t ~ N(sqrt(ᾱ) μ, ᾱσ² + 1 - ᾱ)`` and the posterior mean of x_0 is
``E[x_0|x_t] = μ + sqrt(ᾱ) σ² (x_t - sqrt(ᾱ) μ) / (ᾱσ² + 1 - ᾱ)``; the optimal
ε- and v-predictions follow from it. The conditional variances give the exact
minimum of each loss:
``Var(ε|x_t) = ᾱσ²/(ᾱσ² + 1 - ᾱ)``, ``Var(x_0|x_t) = σ²(1-ᾱ)/(ᾱσ² + 1 - ᾱ)``,
``Var(v|x_t) = σ²/(ᾱσ² + 1 - ᾱ)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import diffusion

MU = jnp.array([1.0, -2.0])
SIGMA = jnp.array([0.5, 2.0])


def exact_model(schedule, prediction):
    """The Bayes-optimal network for N(MU, diag(SIGMA²)) data."""

    def model_fn(x_t, t):
        ab = schedule.alpha_bars[t.astype(jnp.int32)][:, None]
        mu, var = MU[None], SIGMA[None] ** 2
        denom = ab * var + 1.0 - ab
        x0 = mu + jnp.sqrt(ab) * var * (x_t - jnp.sqrt(ab) * mu) / denom
        eps = (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)
        if prediction == "epsilon":
            return eps
        if prediction == "x0":
            return x0
        return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0

    return model_fn


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
def test_loss_of_exact_model_equals_conditional_variance(prediction):
    schedule = diffusion.linear_schedule(1000)
    model_fn = exact_model(schedule, prediction)
    ab = schedule.alpha_bars[:, None]
    var = SIGMA[None] ** 2
    denom = ab * var + 1.0 - ab
    conditional_var = {
        "epsilon": ab * var / denom,
        "x0": var * (1.0 - ab) / denom,
        "v": var / denom,
    }[prediction]
    expected = float(jnp.mean(conditional_var))  # uniform t, mean over the two dims

    loss_fn = jax.jit(
        lambda k: diffusion.ddpm_loss(
            model_fn,
            schedule,
            k,
            MU[None] + SIGMA[None] * jax.random.normal(k, (2000, 2)),
            prediction=prediction,
        )[0]
    )
    losses = np.array([loss_fn(k) for k in jax.random.split(jax.random.key(1), 40)])
    # Each loss is an independent batch mean; 4 standard errors of their mean.
    tolerance = 4 * losses.std(ddof=1) / np.sqrt(len(losses))
    assert abs(losses.mean() - expected) < tolerance


def test_ddim_eta0_maps_noise_onto_the_data_law_at_first_order():
    # With the exact (affine) denoiser, deterministic DDIM maps x_T to A x_T + b per
    # dimension, so the output law is N(b, A²) exactly: read b and A off the sampler.
    # The exact flow maps the step-T marginal N(m_T, s_T²), m_T = sqrt(ᾱ_T) μ,
    # s_T² = ᾱ_T σ² + 1 - ᾱ_T, onto the data by x ↦ μ + σ (x - m_T) / s_T; starting
    # from N(0, 1) instead (ᾱ_T ≈ 4e-5 is not 0) gives A = σ / s_T, b = μ - σ m_T / s_T.
    # What is left is the discretisation error, first order in 1 / num_steps.
    schedule = diffusion.linear_schedule(1000)
    model_fn = exact_model(schedule, "epsilon")
    ab_T = schedule.alpha_bars[-1]
    s_T = jnp.sqrt(ab_T * SIGMA**2 + 1.0 - ab_T)
    expected_a, expected_b = SIGMA / s_T, MU - SIGMA * jnp.sqrt(ab_T) * MU / s_T

    def affine_map(num_steps):
        sample = jax.jit(
            lambda x_T: diffusion.ddim_sample(
                jax.random.key(0), model_fn, schedule, None, num_steps=num_steps, x_T=x_T
            )
        )
        b = sample(jnp.zeros((1, 2)))[0]
        return sample(jnp.ones((1, 2)))[0] - b, b

    errors = []
    for num_steps in (100, 1000):
        a, b = affine_map(num_steps)
        errors.append(float(jnp.max(jnp.abs(jnp.abs(a) / expected_a - 1.0))))
        np.testing.assert_allclose(b, expected_b, atol=1e-3)
    assert errors[1] < 5e-3
    # Ten times the steps, about ten times less error (first order); 7-13 allows
    # for the higher-order terms still present at 100 steps.
    assert 7.0 < errors[0] / errors[1] < 13.0


def test_ancestral_sampler_recovers_mean_and_variance():
    schedule = diffusion.linear_schedule(1000)
    model_fn = exact_model(schedule, "epsilon")
    n = 20_000
    x = jax.jit(lambda k: diffusion.ancestral_sample(k, model_fn, schedule, (n, 2)))(
        jax.random.key(3)
    )
    # Standard errors: mean σ/√n, variance σ²·sqrt(2/(n-1)); 4 of each. The sampler's
    # own bias (posterior variance β̃ instead of the exact reverse variance) is
    # O(β) ≈ 1e-3 relative, well below these bounds.
    np.testing.assert_array_less(jnp.abs(x.mean(0) - MU), 4 * SIGMA / np.sqrt(n))
    np.testing.assert_array_less(jnp.abs(x.var(0) - SIGMA**2), 4 * SIGMA**2 * np.sqrt(2 / (n - 1)))


def test_ddim_with_eta_one_on_every_step_is_the_ancestral_sampler():
    # σ_t² of DDIM with η = 1 between consecutive steps equals the posterior β̃_t,
    # and both samplers split keys the same way, so the samples coincide.
    schedule = diffusion.linear_schedule(100, 1e-3, 0.1)
    model_fn = exact_model(schedule, "epsilon")
    key = jax.random.key(11)
    a = diffusion.ancestral_sample(key, model_fn, schedule, (32, 2))
    b = diffusion.ddim_sample(key, model_fn, schedule, (32, 2), num_steps=100, eta=1.0)
    # Equal formulas in a different order: float32 round-off over 100 steps only.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_parameterisations_give_the_same_ddim_samples():
    schedule = diffusion.cosine_schedule(200)
    x_T = jax.random.normal(jax.random.key(4), (64, 2))
    outs = [
        diffusion.ddim_sample(
            jax.random.key(0),
            exact_model(schedule, p),
            schedule,
            None,
            num_steps=50,
            x_T=x_T,
            prediction=p,
        )
        for p in diffusion.PREDICTIONS
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-3)
    np.testing.assert_allclose(outs[0], outs[2], atol=2e-3)


def test_ddim_inversion_recovers_the_noise_and_improves_with_steps():
    schedule = diffusion.linear_schedule(1000)
    model_fn = exact_model(schedule, "epsilon")
    x_T = jax.random.normal(jax.random.key(5), (256, 2))
    errors = []
    for num_steps in (100, 1000):
        x0 = diffusion.ddim_sample(
            jax.random.key(0), model_fn, schedule, None, num_steps=num_steps, x_T=x_T
        )
        recovered = diffusion.ddim_invert(model_fn, schedule, x0, num_steps=num_steps)
        errors.append(float(jnp.sqrt(jnp.mean((recovered - x_T) ** 2))))
    # Sampling and inversion are both first-order schemes of the same ODE:
    # the round trip error falls about tenfold with ten times the steps.
    assert errors[1] < 0.01
    assert 6.0 < errors[0] / errors[1] < 14.0


def test_trajectories_start_at_noise_and_end_at_samples():
    schedule = diffusion.linear_schedule(20, 1e-3, 0.3)
    model_fn = exact_model(schedule, "epsilon")
    x, path = diffusion.ancestral_sample(
        jax.random.key(0), model_fn, schedule, (8, 2), return_trajectory=True
    )
    assert path.shape == (21, 8, 2)
    np.testing.assert_array_equal(path[-1], x)
    x, path = diffusion.ddim_sample(
        jax.random.key(0), model_fn, schedule, (8, 2), num_steps=5, return_trajectory=True
    )
    assert path.shape == (6, 8, 2)
    np.testing.assert_array_equal(path[-1], x)


def test_same_key_same_samples():
    schedule = diffusion.linear_schedule(50, 2e-3, 0.4)
    model_fn = exact_model(schedule, "epsilon")
    a = diffusion.ancestral_sample(jax.random.key(7), model_fn, schedule, (16, 2))
    b = diffusion.ancestral_sample(jax.random.key(7), model_fn, schedule, (16, 2))
    c = diffusion.ancestral_sample(jax.random.key(8), model_fn, schedule, (16, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_bad_input_is_rejected():
    schedule = diffusion.linear_schedule(10)
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="prediction"):
        diffusion.ddpm_loss(zero, schedule, key, jnp.ones((4, 2)), prediction="score")
    with pytest.raises(ValueError, match="x0 must have shape"):
        diffusion.ddpm_loss(zero, schedule, key, jnp.ones(4))
    with pytest.raises(ValueError, match="output shape"):
        diffusion.ddpm_loss(lambda x, t: x[:, :1], schedule, key, jnp.ones((4, 2)))
    with pytest.raises(TypeError, match="key"):
        diffusion.ddpm_loss(zero, schedule, 0, jnp.ones((4, 2)))
    with pytest.raises(TypeError, match="schedule"):
        diffusion.ancestral_sample(key, zero, "linear", (4, 2))
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.ddim_sample(key, zero, schedule, (4, 2), num_steps=0)
    with pytest.raises(ValueError, match="must not exceed"):
        diffusion.ddim_sample(key, zero, schedule, (4, 2), num_steps=11)
    with pytest.raises(ValueError, match="eta"):
        diffusion.ddim_sample(key, zero, schedule, (4, 2), num_steps=5, eta=-1.0)
    with pytest.raises(ValueError, match="does not match"):
        diffusion.ddim_sample(key, zero, schedule, (4, 2), num_steps=5, x_T=jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="shape must be"):
        diffusion.ancestral_sample(key, zero, schedule, (4,))
