"""HMC: correlated Gaussian with each integrator and metric, hand-computed acceptance, jitter.

Tolerances as in test_kernels.py: independent chains, last state of each, 5 standard
errors on means (sqrt(S_ii / N)) and covariances (sqrt((S_ii S_jj + S_ij^2) / N)).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import hmc
from dgm_jax.mcmc.hmc import HMCState, build_kernel, hmc_transition
from dgm_jax.mcmc.integrators import generate_integrator, mclachlan, velocity_verlet, yoshida
from dgm_jax.mcmc.mass_matrix import build_metric

MEAN = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.8], [0.8, 2.0]])
PREC = jnp.linalg.inv(COV)


def gaussian_logdensity(x):
    d = x - MEAN
    return -0.5 * d @ PREC @ d


def run_chains(kernel, key, initial_positions, num_steps):
    num_chains = initial_positions.shape[0]

    @jax.jit
    def go(key, positions):
        states = jax.vmap(kernel.init)(positions)

        def body(states, step_key):
            states, infos = jax.vmap(kernel.step)(jax.random.split(step_key, num_chains), states)
            return states, jax.tree_util.tree_map(lambda x: jnp.mean(x.astype(float)), infos)

        return jax.lax.scan(body, states, jax.random.split(key, num_steps))

    return go(key, initial_positions)


def assert_gaussian_moments(samples, mean, cov, num_se=5.0):
    samples = np.asarray(samples, dtype=np.float64)
    mean, cov = np.asarray(mean), np.asarray(cov)
    n = samples.shape[0]
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), num_se * np.sqrt(np.diag(cov) / n))
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - cov), num_se * se_cov)


# Integration times are chosen so that no setting is near-periodic on this target (for
# example M^-1 = diag(1, 2) with L h = 2 nearly is, and needs > 100 steps to mix: slow,
# not wrong); the jittered case is the standard cure.
CASES = {
    "leapfrog_diag": dict(step_size=0.25, inverse_mass_matrix=jnp.ones(2), num_steps=7),
    "leapfrog_dense": dict(step_size=0.4, inverse_mass_matrix=COV, num_steps=5),
    "mclachlan_diag": dict(
        step_size=0.5, inverse_mass_matrix=jnp.ones(2), num_steps=4, integrator=mclachlan
    ),
    "yoshida_dense": dict(step_size=0.6, inverse_mass_matrix=COV, num_steps=3, integrator=yoshida),
    "jittered": dict(
        step_size=0.3,
        inverse_mass_matrix=jnp.ones(2),
        num_steps=8,
        jitter_step_size=0.3,
        jitter_num_steps=True,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_hmc_recovers_correlated_gaussian(name, key):
    case = dict(CASES[name])
    num_steps = case.pop("num_steps")
    kernel = hmc(gaussian_logdensity, num_integration_steps=num_steps, **case)
    key_init, key_run = jax.random.split(key)
    starts = MEAN[None, :] + 1.5 * jax.random.normal(key_init, (1000, 2))
    states, infos = run_chains(kernel, key_run, starts, 100)
    assert_gaussian_moments(states.position, MEAN, COV)
    assert float(infos.acceptance_rate.mean()) > 0.6
    assert float(infos.is_divergent.mean()) == 0.0
    stages = case.get("integrator", velocity_verlet).num_grad_evals
    if "jitter_num_steps" in case:  # uniform on {1..L}: mean (L + 1) / 2
        assert float(infos.num_integration_steps.mean()) == pytest.approx(
            stages * (num_steps + 1) / 2, rel=0.05
        )
    else:
        assert float(infos.num_integration_steps.mean()) == pytest.approx(stages * num_steps)


def fixed_momentum_metric(p0):
    """A unit metric whose momentum draw is fixed, to check the acceptance by hand."""
    metric = build_metric(jnp.ones(1))
    return metric._replace(sample_momentum=lambda key, position: jnp.array([p0]))


@pytest.mark.parametrize(("x0", "p0", "h", "num_steps"), [(1.2, 0.7, 0.8, 1), (0.3, 1.5, 0.9, 2)])
def test_hmc_acceptance_matches_closed_form(x0, p0, h, num_steps, key):
    """Standard normal, leapfrog by hand (both cases have H1 > H0, so acceptance < 1):

    p_half = p - h/2 x; x' = x + h p_half; p' = p_half - h/2 x'; H = x^2/2 + p^2/2.
    """
    x, p = x0, p0
    h_start = 0.5 * x**2 + 0.5 * p**2
    for _ in range(num_steps):
        p_half = p - 0.5 * h * x
        x = x + h * p_half
        p = p_half - 0.5 * h * x
    h_end = 0.5 * x**2 + 0.5 * p**2
    expected_acceptance = min(1.0, math.exp(h_start - h_end))

    def logdensity_fn(q):
        return -0.5 * jnp.sum(q**2)

    start = jnp.array([x0])
    state = HMCState(start, logdensity_fn(start), -start)
    new_state, info = hmc_transition(
        key, state, logdensity_fn, fixed_momentum_metric(p0), h, num_steps
    )
    assert float(info.energy_error) == pytest.approx(h_end - h_start, rel=1e-4, abs=1e-6)
    assert float(info.acceptance_rate) == pytest.approx(expected_acceptance, rel=1e-5)
    assert expected_acceptance < 1.0  # the case really tests the exp(-dH) branch
    moved = float(new_state.position[0]) == pytest.approx(x, rel=1e-5)
    assert moved == bool(info.is_accepted)


def test_divergence_is_flagged(key):
    """A step size far beyond the stability limit (h > 2 sigma) blows the energy up."""
    kernel = hmc(lambda x: -0.5 * jnp.sum(x**2) / 0.01, 5.0, jnp.ones(2), 20)
    state, info = jax.jit(kernel.step)(key, kernel.init(jnp.ones(2)))
    assert bool(info.is_divergent)
    assert not bool(info.is_accepted)
    np.testing.assert_array_equal(state.position, jnp.ones(2))


def test_build_kernel_matches_factory(key):
    kernel = build_kernel(integrator=mclachlan)
    algorithm = hmc(gaussian_logdensity, 0.3, jnp.ones(2), 4, integrator=mclachlan)
    state = algorithm.init(jnp.zeros(2))
    a, _ = kernel(key, state, gaussian_logdensity, 0.3, jnp.ones(2), 4)
    b, _ = algorithm.step(key, state)
    np.testing.assert_allclose(a.position, b.position, rtol=1e-6)


def test_hmc_bad_input():
    ld = gaussian_logdensity
    with pytest.raises(ValueError, match=r"inverse_mass_matrix must have shape \(2,\) or \(2, 2\)"):
        hmc(ld, 0.1, jnp.ones(3), 5).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        hmc(ld, 0.1, jnp.ones((2, 3)), 5)
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        hmc(ld, 0.1, jnp.ones((2, 2, 2)), 5)
    with pytest.raises(ValueError, match="num_integration_steps"):
        hmc(ld, 0.1, jnp.ones(2), 0)
    with pytest.raises(TypeError, match="num_integration_steps"):
        hmc(ld, 0.1, jnp.ones(2), 2.5)
    with pytest.raises(TypeError, match="integrator"):
        hmc(ld, 0.1, jnp.ones(2), 5, integrator="leapfrog")
    with pytest.raises(ValueError, match="jitter_step_size"):
        hmc(ld, 0.1, jnp.ones(2), 5, jitter_step_size=1.5)
    with pytest.raises(ValueError, match="divergence_threshold"):
        hmc(ld, 0.1, jnp.ones(2), 5, divergence_threshold=-1.0)
    with pytest.raises(ValueError, match="step_size"):
        hmc(ld, -0.1, jnp.ones(2), 5)
    with pytest.raises(ValueError, match="palindromic"):
        hmc(ld, 0.1, jnp.ones(2), 5, integrator=generate_integrator([0.3, 1.0, 0.7]))
