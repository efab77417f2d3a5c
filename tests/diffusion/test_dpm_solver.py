"""DPM-Solver++(2M) against Gaussian data, whose exact denoiser is known.

For data ``x_0 ~ N(μ, diag(σ²))`` the noisy marginal at step t is ``N(m_t, s_t²)`` with
``m_t = sqrt(ᾱ_t) μ`` and ``s_t² = ᾱ_t σ² + 1 - ᾱ_t``, and the exact probability-flow
map between two steps is ``x ↦ m_b + (s_b / s_a)(x - m_a)``. The solver visits steps
``T-1, ..., 0`` and its last step returns the exact denoiser at step 0,
``x̂_0(y) = μ + sqrt(ᾱ_0) σ² (y - m_0) / s_0²``. So with the exact network the sampler is
an affine map ``x_T ↦ A x_T + b`` per dimension, with exact value
``A = sqrt(ᾱ_0) σ² / (s_0 s_{T-1})`` and ``b = μ - A m_{T-1}``; the output law
is ``N(b, A²)`` exactly, so A and b *are* the sample mean and standard deviation (no Monte
Carlo error), and the only error left is the discretisation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import diffusion

MU = jnp.array([1.0, -2.0])
SIGMA = jnp.array([0.5, 2.0])


def exact_model(schedule, prediction="epsilon"):
    """The Bayes-optimal network for N(MU, diag(SIGMA²)) data (as in test_ddpm.py)."""

    def model_fn(x_t, t):
        ab = schedule.alpha_bars[t.astype(jnp.int32)][:, None]
        mu, var = MU[None], SIGMA[None] ** 2
        x0 = mu + jnp.sqrt(ab) * var * (x_t - jnp.sqrt(ab) * mu) / (ab * var + 1.0 - ab)
        eps = (x_t - jnp.sqrt(ab) * x0) / jnp.sqrt(1.0 - ab)
        if prediction == "epsilon":
            return eps
        if prediction == "x0":
            return x0
        return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0

    return model_fn


def exact_affine_map(schedule):
    ab0, abT = schedule.alpha_bars[0], schedule.alpha_bars[-1]
    s0 = jnp.sqrt(ab0 * SIGMA**2 + 1.0 - ab0)
    sT = jnp.sqrt(abT * SIGMA**2 + 1.0 - abT)
    a = jnp.sqrt(ab0) * SIGMA**2 / (s0 * sT)
    return a, MU - a * jnp.sqrt(abT) * MU


def affine_map(sampler, **kwargs):
    run = jax.jit(lambda x_T: sampler(jax.random.key(0), x_T=x_T, shape=None, **kwargs))
    b = run(jnp.zeros((1, 2)))[0]
    return run(jnp.ones((1, 2)))[0] - b, b


def log_snr_linear_schedule(num_steps=1921):
    # λ = log(α/σ) linear in the step index, from 4 down to -5: evenly spaced steps are then
    # evenly spaced in λ, the setting of the solver's convergence theory (Lu et al. 2022).
    lam = np.linspace(4.0, -5.0, num_steps)
    return diffusion.schedule_from_alpha_bars(1.0 / (1.0 + np.exp(-2.0 * lam)))


def relative_error(sampler, **kwargs):
    a, b = affine_map(sampler, **kwargs)
    a_exact, b_exact = exact_affine_map(kwargs["schedule"])
    return float(jnp.max(jnp.abs(a / a_exact - 1.0))), float(jnp.max(jnp.abs(b - b_exact)))


def test_dpm_solver_pp_is_second_order_and_beats_ddim():
    schedule = log_snr_linear_schedule()
    model_fn = exact_model(schedule)
    errors = [
        relative_error(
            diffusion.dpm_solver_pp_sample,
            model_fn=model_fn,
            schedule=schedule,
            num_steps=n,
        )[0]
        for n in (16, 31, 61)
    ]
    # Steps of h, h/2, h/4 in λ: a second-order global error falls 4x per halving. The
    # first (first-order) step and higher-order terms make the first ratio a bit smaller
    # (measured 3.5 and 3.9); the band 3-5 excludes first order (2) and third order (8).
    assert 3.0 < errors[0] / errors[1] < 5.0
    assert 3.0 < errors[1] / errors[2] < 5.0
    assert errors[2] < 2e-3
    ddim_error = relative_error(
        diffusion.ddim_sample, model_fn=model_fn, schedule=schedule, num_steps=31
    )[0]
    assert errors[1] < ddim_error / 5  # measured 0.0054 against 0.072


def test_moments_on_the_linear_schedule_with_quadratic_steps():
    # The usual T = 1000 linear schedule; λ changes fastest near t = 0, so crowd the steps
    # there. The output law is N(b, A²): its mean and standard deviation are b and |A|.
    schedule = diffusion.linear_schedule(1000)
    steps = np.round(np.linspace(1.0, 0.0, 25) ** 2 * 999).astype(np.int32)
    rel_a, abs_b = relative_error(
        diffusion.dpm_solver_pp_sample,
        model_fn=exact_model(schedule),
        schedule=schedule,
        timesteps=steps,
    )
    assert rel_a < 0.02  # measured 0.013: standard deviations within 2 %
    assert abs_b < 5e-4  # measured 5e-5 (the data means are 1 and -2)


def test_parameterisations_agree_and_trajectory_ends_at_samples():
    schedule = diffusion.cosine_schedule(200)
    x_T = jax.random.normal(jax.random.key(4), (64, 2))

    @jax.jit
    def run_all(x_T):
        return [
            diffusion.dpm_solver_pp_sample(
                jax.random.key(0),
                exact_model(schedule, p),
                schedule,
                None,
                num_steps=20,
                x_T=x_T,
                prediction=p,
            )
            for p in diffusion.PREDICTIONS
        ]

    outs = run_all(x_T)
    # Same x̂_0 from each parameterisation up to float32 round-off.
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-3)
    np.testing.assert_allclose(outs[0], outs[2], atol=2e-3)
    x, path = jax.jit(
        lambda k: diffusion.dpm_solver_pp_sample(
            k, exact_model(schedule), schedule, (8, 2), num_steps=5, return_trajectory=True
        )
    )(jax.random.key(1))
    assert path.shape == (6, 8, 2)
    np.testing.assert_array_equal(path[-1], x)


def test_one_step_returns_the_denoised_noise():
    # One step visits only T-1 and returns x̂_0 there: the DDIM one-step sample.
    schedule = diffusion.linear_schedule(100, 1e-3, 0.1)
    model_fn = exact_model(schedule)

    @jax.jit
    def both(key):
        a = diffusion.dpm_solver_pp_sample(key, model_fn, schedule, (16, 2), num_steps=1)
        b = diffusion.ddim_sample(key, model_fn, schedule, (16, 2), num_steps=1)
        return a, b

    a, b = both(jax.random.key(2))
    assert a.shape == (16, 2)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bad_input_is_rejected():
    schedule = diffusion.linear_schedule(10)
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    key = jax.random.key(0)
    sample = diffusion.dpm_solver_pp_sample
    with pytest.raises(ValueError, match="num_steps"):
        sample(key, zero, schedule, (4, 2), num_steps=0)
    with pytest.raises(ValueError, match="must not exceed"):
        sample(key, zero, schedule, (4, 2), num_steps=11)
    with pytest.raises(ValueError, match="exactly one"):
        sample(key, zero, schedule, (4, 2))
    with pytest.raises(ValueError, match="strictly"):
        sample(key, zero, schedule, (4, 2), timesteps=np.array([3, 5, 0]))
    with pytest.raises(ValueError, match="integer"):
        sample(key, zero, schedule, (4, 2), timesteps=np.array([3.0, 0.0]))
    with pytest.raises(ValueError, match="prediction"):
        sample(key, zero, schedule, (4, 2), num_steps=3, prediction="score")
    with pytest.raises(ValueError, match="does not match"):
        sample(key, zero, schedule, (4, 2), num_steps=3, x_T=jnp.ones((3, 2)))
    with pytest.raises(TypeError, match="schedule"):
        sample(key, zero, "linear", (4, 2), num_steps=3)
    with pytest.raises(TypeError, match="key"):
        sample(0, zero, schedule, (4, 2), num_steps=3)
