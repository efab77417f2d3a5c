"""EDM's Heun sampler against Gaussian data, whose exact denoiser is known.

For data ``x_0 ~ N(μ, diag(σ_d²))`` and ``x = x_0 + σ n`` the exact denoiser is
``D(x, σ) = μ + σ_d² / (σ_d² + σ²) (x - μ)`` and the probability-flow ODE maps the
σ-marginal ``N(μ, σ_d² + σ²)`` onto the σ'-marginal by
``x ↦ μ + sqrt(σ_d² + σ'²) / sqrt(σ_d² + σ²) (x - μ)``. The deterministic sampler runs
Heun from σ_max to σ_min and then one Euler step to 0, which returns ``D(x, σ_min)``;
starting from ``x = σ_max z`` it is the affine map ``z ↦ A z + b`` with exact value
``A = σ_max c k``, ``b = μ (1 - c k)``, ``c = sqrt(σ_d² + σ_min²) / sqrt(σ_d² + σ_max²)``,
``k = σ_d² / (σ_d² + σ_min²)``; the output law is ``N(b, A²)`` exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import diffusion

MU = jnp.array([1.0, -2.0])
SIGMA_DATA = jnp.array([0.5, 2.0])
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def exact_denoiser(x, sigma):
    s2 = sigma[:, None] ** 2
    var = SIGMA_DATA[None] ** 2
    return MU[None] + var / (var + s2) * (x - MU[None])


def exact_affine_map():
    c = jnp.sqrt(SIGMA_DATA**2 + SIGMA_MIN**2) / jnp.sqrt(SIGMA_DATA**2 + SIGMA_MAX**2)
    k = SIGMA_DATA**2 / (SIGMA_DATA**2 + SIGMA_MIN**2)
    return SIGMA_MAX * c * k, MU * (1.0 - c * k)


def test_deterministic_heun_is_second_order():
    a_exact, b_exact = exact_affine_map()

    def errors(num_steps):
        sigmas = diffusion.edm_sigmas(num_steps, SIGMA_MIN, SIGMA_MAX)
        run = jax.jit(
            lambda z: diffusion.edm_heun_sample(
                jax.random.key(0), exact_denoiser, sigmas, None, x_init=SIGMA_MAX * z
            )
        )
        b = run(jnp.zeros((1, 2)))[0]
        a = run(jnp.ones((1, 2)))[0] - b
        return float(jnp.max(jnp.abs(a / a_exact - 1.0))), float(jnp.max(jnp.abs(b - b_exact)))

    (e16, _), (e32, _), (e64, b64) = errors(16), errors(32), errors(64)
    # Second order in the step: about 4x less error per doubling (measured 4.6 and 4.3);
    # the band 3.5-5.5 excludes first (2) and third (8) order.
    assert 3.5 < e16 / e32 < 5.5
    assert 3.5 < e32 / e64 < 5.5
    # The output law is N(b, A²): standard deviations within 0.5 % and means within 2e-4
    # at 64 steps (measured 0.37 % and 1.2e-4).
    assert e64 < 5e-3
    assert b64 < 2e-4


def test_churn_sampler_recovers_mean_and_variance():
    # Algorithm 2 with S_churn > 0 is stochastic; with the exact denoiser its law tends to
    # the data law as the steps refine. Start from the exact σ_max marginal
    # N(μ, σ_d² + σ_max²) so that no prior mismatch remains. n samples: the mean has
    # standard error σ_d/√n and the variance σ_d² sqrt(2/(n-1)); allow 4 of each, plus a
    # discretisation bias of the variance of 3 % (measured 1.6-2.3 % over three seeds of
    # 10^5 samples at 64 steps with S_churn = 10, i.e. γ = 0.16 per step).
    n = 20_000
    sigmas = diffusion.edm_sigmas(64, SIGMA_MIN, SIGMA_MAX)

    @jax.jit
    def sample(key):
        key_init, key_run = jax.random.split(key)
        scale = jnp.sqrt(SIGMA_DATA**2 + SIGMA_MAX**2)[None]
        x_init = MU[None] + scale * jax.random.normal(key_init, (n, 2))
        return diffusion.edm_heun_sample(
            key_run, exact_denoiser, sigmas, None, x_init=x_init,
            s_churn=10.0, s_tmin=0.05, s_tmax=50.0,
        )  # fmt: skip

    x = sample(jax.random.key(3))
    se_mean = SIGMA_DATA / np.sqrt(n)
    se_var = SIGMA_DATA**2 * np.sqrt(2 / (n - 1))
    np.testing.assert_array_less(jnp.abs(x.mean(0) - MU), 4 * se_mean)
    np.testing.assert_array_less(
        jnp.abs(x.var(0) - SIGMA_DATA**2), 4 * se_var + 0.03 * SIGMA_DATA**2
    )


def test_churn_changes_samples_and_same_key_same_samples():
    sigmas = diffusion.edm_sigmas(8)
    sample = jax.jit(
        lambda k, churn: diffusion.edm_heun_sample(
            k, exact_denoiser, sigmas, (16, 2), s_churn=churn
        )
    )
    a = sample(jax.random.key(7), 0.0)
    np.testing.assert_array_equal(a, sample(jax.random.key(7), 0.0))
    assert not np.allclose(a, sample(jax.random.key(7), 10.0))


def test_edm_sigmas():
    s = diffusion.edm_sigmas(18)
    assert s.shape == (19,)
    np.testing.assert_allclose([s[0], s[-2], s[-1]], [80.0, 0.002, 0.0], rtol=1e-5)
    assert bool(jnp.all(jnp.diff(s) < 0))
    np.testing.assert_allclose(diffusion.edm_sigmas(1), [80.0, 0.0])


def test_adapter_turns_the_exact_ddpm_model_into_the_exact_denoiser():
    # A DDPM network for the same Gaussian data, queried through the adapter at the
    # schedule's own levels (nearest mode) or anywhere (interpolated ᾱ = 1/(1+σ²)), is
    # the exact EDM denoiser: x_t = x/sqrt(1+σ²) and x̂_0 is unchanged.
    schedule = diffusion.linear_schedule(1000)

    def ddpm_exact(x_t, t):  # ε-prediction, exact for continuous t via ᾱ(t) interpolated
        ab = jnp.interp(t, jnp.arange(1000.0), schedule.alpha_bars)[:, None]
        var = SIGMA_DATA[None] ** 2
        x0 = MU[None] + jnp.sqrt(ab) * var * (x_t - jnp.sqrt(ab) * MU[None]) / (ab * var + 1 - ab)
        return (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)

    x = jax.random.normal(jax.random.key(1), (6, 2)) * 3.0
    sigma_grid = diffusion.round_sigmas(jnp.array([0.05, 0.3, 1.0, 5.0, 20.0, 100.0]), schedule)
    assert bool(jnp.all(jnp.isin(sigma_grid, diffusion.schedule_sigmas(schedule))))
    nearest = diffusion.denoiser_from_model(ddpm_exact, schedule, interpolate=False)
    np.testing.assert_allclose(
        jax.jit(nearest)(x, sigma_grid), exact_denoiser(x, sigma_grid), rtol=1e-4, atol=1e-4
    )
    # Interpolated mode off the grid: ᾱ(t) interpolated in t is not exactly 1/(1+σ²), so
    # allow the interpolation error between neighbouring steps (relative ~1e-3).
    interp = diffusion.denoiser_from_model(ddpm_exact, schedule, interpolate=True)
    sigma = jnp.array([0.05, 0.3, 1.0, 5.0, 20.0, 70.0])
    np.testing.assert_allclose(
        jax.jit(interp)(x, sigma), exact_denoiser(x, sigma), rtol=5e-3, atol=5e-3
    )
    # And through the sampler: sampling the DDPM model with EDM's Heun on the rounded grid
    # gives the data moments (as an affine map, exactly N(b, A²) again).
    sigmas = diffusion.round_sigmas(diffusion.edm_sigmas(32, 0.02, 80.0), schedule)
    run = jax.jit(
        lambda z: diffusion.edm_heun_sample(jax.random.key(0), nearest, sigmas, None, x_init=z)
    )
    b = run(jnp.zeros((1, 2)))[0]
    a = run(jnp.full((1, 2), sigmas[0]))[0] - b
    s0 = sigmas[0]
    expected_a = s0 * SIGMA_DATA / jnp.sqrt(SIGMA_DATA**2 + s0**2)
    np.testing.assert_allclose(a, expected_a, rtol=0.02)
    np.testing.assert_allclose(
        b, MU * (1.0 - SIGMA_DATA / jnp.sqrt(SIGMA_DATA**2 + s0**2)), atol=0.02
    )


def test_bad_input_is_rejected():
    key = jax.random.key(0)
    sigmas = diffusion.edm_sigmas(4)
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.edm_sigmas(0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        diffusion.edm_sigmas(5, 1.0, 0.5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        diffusion.edm_heun_sample(key, exact_denoiser, jnp.array([1.0, 2.0, 0.0]), (4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        diffusion.edm_heun_sample(key, exact_denoiser, jnp.array([1.0]), (4, 2))
    with pytest.raises(ValueError, match="s_churn"):
        diffusion.edm_heun_sample(key, exact_denoiser, sigmas, (4, 2), s_churn=-1.0)
    with pytest.raises(ValueError, match="does not match"):
        diffusion.edm_heun_sample(key, exact_denoiser, sigmas, (4, 2), x_init=jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="shape must be"):
        diffusion.edm_heun_sample(key, exact_denoiser, sigmas, (4,))
    with pytest.raises(TypeError, match="key"):
        diffusion.edm_heun_sample(0, exact_denoiser, sigmas, (4, 2))
    schedule = diffusion.linear_schedule(10)
    with pytest.raises(ValueError, match="prediction"):
        diffusion.denoiser_from_model(lambda x, t: x, schedule, prediction="score")
    d = diffusion.denoiser_from_model(lambda x, t: x, schedule)
    with pytest.raises(ValueError, match="sigma must have shape"):
        d(jnp.ones((4, 2)), jnp.ones(3))
