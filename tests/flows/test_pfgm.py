"""PFGM and PFGM++: point-charge fields, kernel moments, the D → ∞ (VE) limit, exact samplers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import flows
from dgm_jax import sde as sdes


@pytest.mark.parametrize("d", [3, 5])
def test_single_charge_field_matches_the_analytic_field(d):
    charge = jnp.arange(d, dtype=jnp.float32)[None] * 0.1
    x = charge + jax.random.normal(jax.random.key(d), (16, d)) * jnp.linspace(0.2, 3.0, 16)[:, None]
    field = flows.poisson_field(x, charge)
    r = jnp.linalg.norm(x - charge, axis=1)
    np.testing.assert_allclose(
        field / jnp.linalg.norm(field, axis=1, keepdims=True),
        (x - charge) / r[:, None],
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(jnp.linalg.norm(field, axis=1), r ** -(d - 1), rtol=1e-4)
    unit = flows.normalized_poisson_field(x, charge)
    np.testing.assert_allclose(jnp.linalg.norm(unit, axis=1), math.sqrt(d - 1), rtol=1e-5)


def test_field_superposes_and_links_to_the_pfgmpp_posterior():
    N, D = 2, 3
    data = jax.random.normal(jax.random.key(0), (5, N))
    charges = jnp.concatenate([data, jnp.zeros((5, D))], axis=1)
    both = flows.poisson_field(jnp.ones((1, N + D)), charges)
    single = sum(flows.poisson_field(jnp.ones((1, N + D)), c[None]) for c in charges) / 5
    np.testing.assert_allclose(both, single, rtol=1e-5)
    # r E_x / E_{z1} at z = (r, 0, 0) equals x − E[y | x] under the PFGM++ kernel with σ = r/√D.
    x = jax.random.normal(jax.random.key(1), (8, N)) * 2.0
    r = jnp.linspace(0.3, 5.0, 8)
    points = jnp.concatenate([x, r[:, None], jnp.zeros((8, D - 1))], axis=1)
    field = flows.poisson_field(points, charges)
    via_field = r[:, None] * field[:, :N] / field[:, N : N + 1]
    via_posterior = x - flows.pfgmpp_posterior_mean(x, r / math.sqrt(D), data, D)
    np.testing.assert_allclose(via_field, via_posterior, rtol=1e-4, atol=1e-5)


def test_pfgmpp_kernel_second_moment():
    n, N, D, sigma = 20_000, 2, 8, 1.5
    x = flows.pfgmpp_perturb(jax.random.key(2), jnp.zeros((n, N)), jnp.full((n,), sigma), D)
    sq = np.asarray(jnp.sum(x**2, axis=1))
    expected = sigma**2 * N * D / (D - 2)  # r² N/(D − 2) with r = σ√D
    assert sq.mean() == pytest.approx(expected, abs=5 * float(sq.std()) / math.sqrt(n))


def test_large_D_recovers_the_ve_marginals():
    ve = sdes.ve_sde(0.01, 50.0)
    _, s = ve.marginal_fn(jnp.asarray(0.6))  # VE kernel N(y, s² I)
    n, N = 40_000, 3
    y = jnp.full((n, N), 0.7)
    sigma = jnp.full((n,), s)
    for D in (1_000_000, math.inf):
        x = np.asarray(flows.pfgmpp_perturb(jax.random.key(3), y, sigma, D) - y) / float(s)
        var, m4 = (x**2).mean(), (x**4).mean()
        assert abs(x.mean()) < 5 / math.sqrt(n * N)
        assert var == pytest.approx(1.0, abs=5 * math.sqrt(2 / (n * N)))
        assert m4 == pytest.approx(3.0, abs=5 * math.sqrt(96 / (n * N)))  # Var(z⁴) = 96
    # Small D is heavy-tailed: a much larger fourth moment (finite for D > 4).
    x = np.asarray(flows.pfgmpp_perturb(jax.random.key(4), y, sigma, 8) - y) / float(s)
    assert (x**4).mean() > 5.0
    # The posterior weights converge too.
    data = jax.random.normal(jax.random.key(5), (6, N))
    q = jax.random.normal(jax.random.key(6), (4, N))
    big = flows.pfgmpp_posterior_mean(q, jnp.full((4,), 0.8), data, 10_000_000)
    gauss = flows.pfgmpp_posterior_mean(q, jnp.full((4,), 0.8), data, math.inf)
    np.testing.assert_allclose(big, gauss, atol=1e-3)


def _landing_fractions(samples, data):
    d = np.linalg.norm(np.asarray(samples)[:, None] - np.asarray(data)[None], axis=-1)
    nearest, dist = d.argmin(1), d.min(1)
    return np.bincount(nearest, minlength=len(data)) / len(samples), dist


def test_pfgm_backward_ode_with_the_exact_field_samples_the_charges():
    data = jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    charges = jnp.concatenate([data, jnp.zeros((3, 1))], axis=1)
    n = 400
    x, _ = jax.jit(
        lambda k: flows.pfgm_sample(
            k,
            lambda p: flows.normalized_poisson_field(p, charges),
            n,
            2,
            z_max=60.0,
            z_min=1e-5,
            num_steps=200,
        )
    )(jax.random.key(7))
    frac, dist = _landing_fractions(x, data)
    assert np.mean(dist < 0.05) > 0.97
    np.testing.assert_allclose(frac, 1 / 3, atol=4 * math.sqrt(2 / 9 / n) + 0.02)


@pytest.mark.parametrize("D", [1, math.inf])
def test_pfgmpp_sampler_with_the_exact_denoiser_samples_the_data(D):
    data = jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    n = 400
    x, info = jax.jit(
        lambda k: flows.pfgmpp_sample(
            k,
            lambda x, s: flows.pfgmpp_posterior_mean(x, s, data, D),
            (n, 2),
            D=D,
            sigma_max=40.0,
            sigma_min=1e-3,
            num_steps=60,
        )
    )(jax.random.key(8))
    frac, dist = _landing_fractions(x, data)
    assert np.mean(dist < 0.05) > 0.97
    np.testing.assert_allclose(frac, 1 / 3, atol=4 * math.sqrt(2 / 9 / n) + 0.02)
    assert int(info.num_fn_evals) == 120


def test_losses():
    batch = jax.random.normal(jax.random.key(9), (32, 4))
    loss, m = flows.pfgm_loss(lambda x: jnp.zeros_like(x), jax.random.key(10), batch)
    assert float(loss) == pytest.approx(4 / 5, rel=1e-5)  # ‖target‖² = N over N + 1 entries
    assert float(m["mean_z"]) > 0
    # PFGM++ loss of the exact posterior mean on a one-point data set is 0.
    y = jnp.ones((16, 4))
    exact = lambda x, s: flows.pfgmpp_posterior_mean(x, s, y[:1], math.inf)  # noqa: E731
    loss, _ = flows.pfgmpp_loss(exact, jax.random.key(11), y, D=math.inf)
    assert float(loss) < 1e-8
    denoise = flows.edm_preconditioned(lambda x, c: jnp.zeros_like(x), sigma_data=0.5)
    np.testing.assert_allclose(denoise(jnp.ones((2, 4)), jnp.array([0.5, 0.5])), 0.5)


def test_bad_input():
    key = jax.random.key(0)
    y = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="D"):
        flows.pfgmpp_perturb(key, y, jnp.ones(4), 0)
    with pytest.raises(ValueError, match="D"):
        flows.pfgmpp_perturb(key, y, jnp.ones(4), 2.5)
    with pytest.raises(ValueError, match="sigma"):
        flows.pfgmpp_perturb(key, y, jnp.ones(3), 4)
    with pytest.raises(ValueError, match="charges"):
        flows.poisson_field(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="z_min < z_max"):
        flows.pfgm_sample(key, lambda x: x, 4, 2, z_max=1.0, z_min=2.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        flows.pfgmpp_sample(key, lambda x, s: x, (4, 2), sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="batch"):
        flows.pfgmpp_loss(lambda x, s: x, key, jnp.ones(4))
