"""Warmup: dual averaging reaches its target, Welford matches numpy, Stan windows, pooling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import hmc, mala, nuts, rwm
from dgm_jax.mcmc.adaptation import (
    build_schedule,
    dual_averaging,
    welford_covariance,
    window_adaptation,
)


def test_dual_averaging_reaches_target_on_a_known_acceptance_curve():
    """Acceptance a(h) = exp(-h^2 / 2): the target 0.8 is reached at h* = sqrt(-2 log 0.8)."""
    target = 0.8
    da = dual_averaging(target)

    def acceptance(h):
        return jnp.exp(-(h**2) / 2)

    def body(state, _):
        return da.update(state, acceptance(jnp.exp(state.log_step_size))), None

    state, _ = jax.lax.scan(body, da.init(0.01), None, length=2000)
    h_star = math.sqrt(-2 * math.log(target))
    assert float(da.final(state)) == pytest.approx(h_star, rel=0.02)


def test_dual_averaging_with_noisy_acceptance(key):
    """Noise of sd 0.1 on each acceptance: the averaged iterate still lands near h*."""
    da = dual_averaging(0.65)

    def body(state, k):
        a = jnp.exp(-(jnp.exp(state.log_step_size) ** 2) / 2) + 0.1 * jax.random.normal(k)
        return da.update(state, jnp.clip(a, 0.0, 1.0)), None

    state, _ = jax.lax.scan(body, da.init(3.0), jax.random.split(key, 3000))
    h_star = math.sqrt(-2 * math.log(0.65))
    assert float(da.final(state)) == pytest.approx(h_star, rel=0.05)


@pytest.mark.parametrize("diagonal", [True, False])
def test_welford_matches_numpy(diagonal, key):
    x = np.asarray(jax.random.normal(key, (101, 3))) * np.array([1.0, 2.0, 0.5]) + 3.0
    w = welford_covariance(diagonal=diagonal)
    # one at a time
    state, _ = jax.lax.scan(lambda s, row: (w.update(s, row), None), w.init(3), jnp.asarray(x))
    expected = np.var(x, axis=0, ddof=1) if diagonal else np.cov(x.T)
    np.testing.assert_allclose(w.final(state, regularize=False), expected, rtol=1e-4)
    np.testing.assert_allclose(state.mean, x.mean(0), rtol=1e-5)
    # in batches (Chan et al. merge) gives the same
    batched = w.update(w.update(w.init(3), x[:40]), x[40:])
    np.testing.assert_allclose(w.final(batched, regularize=False), expected, rtol=1e-4)
    # Stan's regularisation: n/(n+5) C + 1e-3 * 5/(n+5) I
    eye = np.ones(3) if diagonal else np.eye(3)
    np.testing.assert_allclose(
        w.final(state), 101 / 106 * expected + 1e-3 * 5 / 106 * eye, rtol=1e-4
    )


def test_stan_schedule():
    schedule = build_schedule(1000)
    # 75 fast, slow windows 25, 50, 100, 200, 500 (stretched), 50 fast: Stan's defaults
    assert list(np.flatnonzero(schedule[:, 1])) == [99, 149, 249, 449, 949]
    assert schedule[:75, 0].sum() == 0 and schedule[75:950, 0].all() and not schedule[950:, 0].any()
    short = build_schedule(100)  # 15 / 75 / 10
    assert list(np.flatnonzero(short[:, 1])) == [89]
    assert short[:, 0].sum() == 75
    assert not build_schedule(10).any()


def gaussian(scales):
    def logdensity_fn(x):
        return -0.5 * jnp.sum((x / scales) ** 2)

    return logdensity_fn


@pytest.mark.parametrize(("factory", "kwargs"), [(hmc, {"num_integration_steps": 5}), (nuts, {})])
def test_pooled_window_adaptation_learns_the_variances(factory, kwargs, key):
    """32 chains pool 300 warmup steps on N(0, diag(0.5^2, 3^2)).

    The last slow window (steps 150-249 of Stan's schedule, 100 steps x 32 chains,
    autocorrelated) estimates the variances: a 20% relative tolerance is > 5 SE for
    an effective sample size above 1,250 (SE sqrt(2 / ESS)). Dual averaging makes the
    mean acceptance *during* the final fast window (50 steps) close to the target 0.8.
    The returned step size is the averaged iterate exp(x_bar), which is smaller than
    the fluctuating iterates (acceptance is concave in the step size), so sampling
    with it accepts a little more often than the target, as in Stan.
    """
    scales = jnp.array([0.5, 3.0])
    warmup = window_adaptation(factory, gaussian(scales), pool_chains=True, **kwargs)
    run = jax.jit(warmup.run, static_argnums=2)
    states, params, infos = run(key, jnp.ones((32, 2)), 300)
    assert params["step_size"].shape == ()
    assert params["inverse_mass_matrix"].shape == (2,)
    np.testing.assert_allclose(params["inverse_mass_matrix"], scales**2, rtol=0.2)
    assert infos.acceptance_rate.shape == (300, 32)
    assert float(infos.acceptance_rate[-50:].mean()) == pytest.approx(0.8, abs=0.07)
    if factory is nuts:  # one NUTS compilation is enough here; the HMC case samples on
        return
    # sampling with the tuned parameters
    kernel = factory(gaussian(scales), **params, **kwargs)
    step = jax.jit(jax.vmap(kernel.step))

    def sample(states, k):
        states, info = step(jax.random.split(k, 32), states)
        return states, info.acceptance_rate

    _, acceptance = jax.lax.scan(sample, states, jax.random.split(key, 50))
    assert 0.75 < float(acceptance.mean()) < 0.98


def test_per_chain_dense_adaptation_shapes_and_values(key):
    """Unpooled: each chain gets its own step size and dense mass matrix."""
    cov = jnp.array([[1.0, 0.6], [0.6, 1.0]])
    prec = jnp.linalg.inv(cov)
    warmup = window_adaptation(
        hmc,
        lambda x: -0.5 * x @ prec @ x,
        is_mass_matrix_diagonal=False,
        num_integration_steps=5,
    )
    states, params, infos = jax.jit(warmup.run, static_argnums=2)(key, jnp.zeros((4, 2)), 300)
    assert params["step_size"].shape == (4,)
    assert params["inverse_mass_matrix"].shape == (4, 2, 2)
    assert states.position.shape == (4, 2)
    # each chain's estimate from ~200 correlated draws: loose 50% check of the correlation
    m = np.asarray(params["inverse_mass_matrix"])
    corr = m[:, 0, 1] / np.sqrt(m[:, 0, 0] * m[:, 1, 1])
    np.testing.assert_allclose(corr, 0.6, atol=0.3)
    assert float(infos.acceptance_rate[-50:].mean()) == pytest.approx(0.8, abs=0.1)


def test_mala_adapts_only_the_step_size(key):
    warmup = window_adaptation(mala, gaussian(jnp.ones(3)), pool_chains=True)
    _, params, infos = jax.jit(warmup.run, static_argnums=2)(key, jnp.zeros((16, 3)), 200)
    assert set(params) == {"step_size"}
    assert float(infos.acceptance_rate[-50:].mean()) == pytest.approx(0.8, abs=0.08)


def test_adaptation_bad_input(key):
    ld = gaussian(jnp.ones(2))
    with pytest.raises(TypeError, match="step_size"):
        window_adaptation(rwm, ld)
    with pytest.raises(ValueError, match="target_acceptance"):
        window_adaptation(hmc, ld, target_acceptance=1.5, num_integration_steps=3)
    with pytest.raises(ValueError, match="initial_step_size"):
        window_adaptation(hmc, ld, initial_step_size=0.0, num_integration_steps=3)
    warmup = window_adaptation(hmc, ld, num_integration_steps=3)
    with pytest.raises(ValueError, match="num_steps"):
        warmup.run(key, jnp.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match="NaN"):
        warmup.run(key, jnp.full((2, 2), jnp.nan), 10)
    with pytest.raises(ValueError, match="chains axis"):
        warmup.run(key, jnp.array(0.0), 10)
    with pytest.raises(ValueError, match="kappa"):
        dual_averaging(kappa=0.3)
    with pytest.raises(ValueError, match=r"x must have shape"):
        w = welford_covariance()
        w.update(w.init(3), jnp.zeros(2))
