"""The forward SDEs: kernels against moment ODEs and simulation, priors, reverse drifts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import sde as sdelib

SDES = {
    "vp": sdelib.vp_sde(),
    "subvp": sdelib.subvp_sde(),
    "ve": sdelib.ve_sde(),
    "edm": sdelib.edm_sde(),
}


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_matches_moment_odes(name):
    # For dx = f(t) x dt + g(t) dw started at x_0 (a point), the kernel mean is m(t) x_0 and
    # its variance v(t) solves dm/dt = f m, dv/dt = 2 f v + g², m(0) = 1, v(0) = 0. Solve
    # those with RK4 (400 steps; global error ~1e-8 relative) and compare with marginal_fn.
    sde = SDES[name]

    def moments(t, state):
        m, v = state
        f = sde.drift_fn(jnp.ones((1, 1)), t[None])[0, 0]  # linear drift: f(x, t) = f(t) x
        g = sde.diffusion_fn(t)
        return f * m, 2.0 * f * v + g**2

    for frac in (0.05, 0.3, 1.0):
        t_end = frac * sde.T
        m, v = sdelib.odeint_fixed(sdelib.rk4, moments, (1.0, 0.0), 0.0, t_end, 400)
        m_ref, s_ref = sde.marginal_fn(jnp.float32(t_end))
        np.testing.assert_allclose(m, m_ref, rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(v, s_ref**2, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_matches_euler_maruyama_simulation(name, key):
    # Forward Euler–Maruyama from x_0 = 1 (n = 20,000 one-dimensional paths, 400 steps to
    # t = T/2). Standard errors: mean s/sqrt(n), variance s² sqrt(2/n) (0.7%). The EM bias is
    # O(Δt) and below 0.5% here, so 4 standard errors plus 1% of the variance bounds the test.
    sde = SDES[name]
    n, num_steps, t_end = 20_000, 400, 0.5 * sde.T
    dt = t_end / num_steps

    def step(x, inputs):
        t, k = inputs
        tb = jnp.full((n,), t)
        noise = jax.random.normal(k, x.shape)
        g = sde.diffusion_fn(tb)[:, None]
        return x + sde.drift_fn(x, tb) * dt + g * math.sqrt(dt) * noise, None

    ts = jnp.arange(num_steps) * dt
    x, _ = jax.lax.scan(step, jnp.ones((n, 1)), (ts, jax.random.split(key, num_steps)))
    m, s = sde.marginal_fn(jnp.float32(t_end))
    assert abs(float(x.mean()) - float(m)) < 4 * float(s) / math.sqrt(n)
    var = float(x.var())
    assert abs(var - float(s) ** 2) < 4 * float(s) ** 2 * math.sqrt(2 / n) + 0.01 * float(s) ** 2


@pytest.mark.parametrize("name", list(SDES))
def test_prior_logp_and_sample(name, key):
    sde = SDES[name]
    z = sde.prior_sample_fn(key, (4000, 3))
    assert z.shape == (4000, 3)
    prior_std = float(jnp.std(z))
    # VP and sub-VP: N(0, I); VE and EDM: N(0, σ_max² I). The std of 12,000 draws has a
    # relative standard error 1/sqrt(2 · 12,000) = 0.65%; allow 4 of them.
    expected_std = 1.0 if name in ("vp", "subvp") else sde.T if name == "edm" else 50.0
    assert abs(prior_std / expected_std - 1.0) < 0.026
    x = jnp.array([[0.0, 1.0, -2.0]])
    expected = -0.5 * float(jnp.sum((x / expected_std) ** 2)) - 3 * (
        0.5 * math.log(2 * math.pi) + math.log(expected_std)
    )
    np.testing.assert_allclose(sde.prior_logp_fn(x), [expected], rtol=1e-5)


def test_subvp_variance_is_below_vp_and_ve_has_unit_mean():
    t = jnp.linspace(0.01, 1.0, 50)
    _, s_vp = SDES["vp"].marginal_fn(t)
    _, s_sub = SDES["subvp"].marginal_fn(t)
    m_ve, _ = SDES["ve"].marginal_fn(t)
    assert bool(jnp.all(s_sub < s_vp))
    np.testing.assert_array_equal(m_ve, 1.0)
    # s(0) = 0 for every SDE: the kernel of the SDE started at t = 0.
    for sde in SDES.values():
        np.testing.assert_allclose(sde.marginal_fn(jnp.float32(0.0))[1], 0.0, atol=1e-7)


def test_reverse_sde_and_probability_flow_drifts(key):
    sde = SDES["vp"]
    score_fn = lambda x, t: -2.0 * x  # noqa: E731
    x = jax.random.normal(key, (5, 3))
    t = jnp.linspace(0.1, 0.9, 5)
    f = sde.drift_fn(x, t)
    g2 = sde.diffusion_fn(t)[:, None] ** 2
    rev = sdelib.reverse_sde(sde, score_fn)
    ode = sdelib.probability_flow(sde, score_fn)
    np.testing.assert_allclose(rev.drift_fn(x, t), f - g2 * score_fn(x, t), rtol=1e-6)
    np.testing.assert_allclose(ode.drift_fn(x, t), f - 0.5 * g2 * score_fn(x, t), rtol=1e-6)
    np.testing.assert_allclose(rev.diffusion_fn(t), sde.diffusion_fn(t))
    np.testing.assert_array_equal(ode.diffusion_fn(t), 0.0)


def test_marginal_sample_moments(key):
    sde = SDES["ve"]
    n = 20_000
    x0 = jnp.full((n, 1), 2.0)
    t = jnp.full((n,), 0.5)
    xt, noise = sdelib.marginal_sample(key, sde, x0, t)
    m, s = sde.marginal_fn(jnp.float32(0.5))
    np.testing.assert_allclose(xt, m * x0 + s * noise, rtol=1e-6)
    assert abs(float(xt.mean()) - 2.0 * float(m)) < 4 * float(s) / math.sqrt(n)


def test_time_grids():
    grid = SDES["edm"].time_grid_fn(18)
    assert grid.shape == (19,)
    np.testing.assert_allclose([grid[0], grid[-1]], [80.0, 0.002], rtol=1e-5)
    assert bool(jnp.all(jnp.diff(grid) < 0))
    grid = SDES["vp"].time_grid_fn(10)
    np.testing.assert_allclose([grid[0], grid[-1]], [1.0, 1e-5], rtol=1e-5)


def test_bad_settings_and_inputs_are_rejected(key):
    with pytest.raises(ValueError, match="beta_min"):
        sdelib.vp_sde(beta_min=-1.0)
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        sdelib.subvp_sde(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sdelib.ve_sde(sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="eps"):
        sdelib.vp_sde(eps=1.5)
    with pytest.raises(TypeError, match="num_steps"):
        sdelib.edm_time_grid(0.002, 80.0, 2.5)
    with pytest.raises(ValueError, match="num_steps"):
        sdelib.uniform_time_grid(1.0, 0.0, 0)
    sde = SDES["vp"]
    x0 = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1.0\]"):
        sdelib.marginal_sample(key, sde, x0, jnp.array([0.1, 0.5, 1.5]))
    with pytest.raises(ValueError, match=r"t must lie in"):
        sdelib.marginal_sample(key, sde, x0, jnp.array([-0.1, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"t must have shape \(batch,\)"):
        sdelib.marginal_sample(key, sde, x0, jnp.array([0.1, 0.5]))
    with pytest.raises(ValueError, match="x0 must have shape"):
        sdelib.marginal_sample(key, sde, jnp.ones(3), jnp.array([0.1, 0.5, 0.2]))
    with pytest.raises(TypeError, match="sde must be an SDE"):
        sdelib.reverse_sde("vp", lambda x, t: x)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        sdelib.probability_flow(sde, None)
