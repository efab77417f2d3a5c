"""NUTS: Gaussians in 1 and 50 dimensions, tree depth limit, divergence, dense metric, errors.

Tolerances: independent chains, last state of each (see test_kernels.py). For 50-D we
whiten the draws with the exact covariance, z = L^-1 (x - mu) ~ N(0, I) if the sampler
is right: each mean of z has SE 1/sqrt(N) (max over 50 coordinates allowed 5 SE), and
the average of |z|^2 / d has SE sqrt(2 / (N d)) (allowed 5 SE).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import nuts
from dgm_jax.mcmc.integrators import mclachlan
from dgm_jax.mcmc.nuts import build_kernel


def run_chains(kernel, key, initial_positions, num_steps):
    num_chains = jax.tree_util.tree_leaves(initial_positions)[0].shape[0]

    @jax.jit
    def go(key, positions):
        states = jax.vmap(kernel.init)(positions)

        def body(states, step_key):
            states, infos = jax.vmap(kernel.step)(jax.random.split(step_key, num_chains), states)
            return states, jax.tree_util.tree_map(lambda x: jnp.mean(x.astype(float)), infos)

        return jax.lax.scan(body, states, jax.random.split(key, num_steps))

    return go(key, initial_positions)


def test_nuts_1d_gaussian(key):
    """N(1, 2^2) with a step size of 1: 1,000 chains x 40 steps."""
    mu, sigma, n = 1.0, 2.0, 1000

    def logdensity_fn(x):
        return -0.5 * jnp.sum((x - mu) ** 2) / sigma**2

    kernel = nuts(logdensity_fn, 1.0, jnp.ones(1))
    key_init, key_run = jax.random.split(key)
    states, infos = run_chains(kernel, key_run, 3.0 * jax.random.normal(key_init, (n, 1)), 40)
    x = np.asarray(states.position[:, 0], np.float64)
    assert abs(x.mean() - mu) < 5 * sigma / math.sqrt(n)
    assert abs(x.var() / sigma**2 - 1) < 5 * math.sqrt(2 / n)
    assert 0.75 < float(infos.acceptance_rate.mean()) <= 1.0
    assert float(infos.is_divergent.mean()) == 0.0
    assert 1.0 <= float(infos.tree_depth.mean()) <= 4.0


def correlated_gaussian_50d():
    d = 50
    idx = np.arange(d)
    correlation = 0.5 ** np.abs(idx[:, None] - idx[None, :])  # AR(1), rho = 0.5
    scales = np.linspace(0.7, 1.4, d)
    cov = correlation * np.outer(scales, scales)
    mean = np.linspace(-1.0, 1.0, d)
    return mean, cov


@pytest.mark.parametrize("dense", [False, True])
def test_nuts_50d_correlated_gaussian(dense, key):
    """300 chains x 40 steps from N(0, I) starts, unit or exact (dense) metric."""
    mean, cov = correlated_gaussian_50d()
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mean_j = jnp.asarray(mean, jnp.float32)

    def logdensity_fn(x):
        r = x - mean_j
        return -0.5 * r @ precision @ r

    n = 300
    if dense:
        kernel = nuts(logdensity_fn, 0.7, jnp.asarray(cov, jnp.float32), integrator=mclachlan)
    else:
        kernel = nuts(logdensity_fn, 0.45, jnp.ones(50))
    key_init, key_run = jax.random.split(key)
    states, infos = run_chains(kernel, key_run, jax.random.normal(key_init, (n, 50)), 40)
    x = np.asarray(states.position, np.float64)
    z = np.linalg.solve(np.linalg.cholesky(cov), (x - mean).T).T
    assert np.max(np.abs(z.mean(0))) < 5 / math.sqrt(n)
    assert abs(np.mean(z**2) - 1) < 5 * math.sqrt(2 / (n * 50))
    # per-coordinate marginal variances, chi-square relative SE sqrt(2/n) = 6.3%, 5 SE
    np.testing.assert_allclose(x.var(0), np.diag(cov), rtol=5 * math.sqrt(2 / n))
    assert float(infos.acceptance_rate.mean()) > 0.6
    assert float(infos.is_divergent.mean()) == 0.0


def steep_logdensity(x):
    """N(0, 0.1^2 I) in 2-D."""
    return -0.5 * jnp.sum(x**2) / 0.01


@pytest.fixture(scope="module")
def depth3_kernel():
    """build_kernel with max_tree_depth=3, jitted once with a traced step size."""
    kernel = build_kernel(max_tree_depth=3)
    return jax.jit(
        lambda key, state, step_size: kernel(key, state, steep_logdensity, step_size, jnp.ones(2))
    )


def test_max_tree_depth_caps_the_trajectory(depth3_kernel, key):
    """7 steps of 1e-3 cover 0.007 << sigma = 0.1: no U-turn, so the depth hits the cap."""
    state = nuts(steep_logdensity, 1e-3, jnp.ones(2)).init(jnp.full(2, 0.1))
    _, info = depth3_kernel(key, state, 1e-3)
    assert int(info.tree_depth) == 3
    assert int(info.num_integration_steps) == 2**3 - 1
    assert not bool(info.is_divergent)


def test_divergence_is_flagged(depth3_kernel, key):
    """A step of 50 sigma, far past leapfrog's stability limit of 2 sigma."""
    state = nuts(steep_logdensity, 5.0, jnp.ones(2)).init(jnp.full(2, 0.1))
    new_state, info = depth3_kernel(key, state, 5.0)
    assert bool(info.is_divergent)
    assert int(info.tree_depth) <= 2
    assert np.all(np.isfinite(np.asarray(new_state.position)))


def test_build_kernel_matches_factory(depth3_kernel, key):
    algorithm = nuts(steep_logdensity, 0.05, jnp.ones(2), max_tree_depth=3)
    state = algorithm.init(jnp.full(2, 0.1))
    a, info_a = jax.jit(algorithm.step)(key, state)
    b, info_b = depth3_kernel(key, state, 0.05)
    np.testing.assert_allclose(a.position, b.position, rtol=1e-6)
    assert int(info_a.tree_depth) == int(info_b.tree_depth)


def test_nuts_bad_input():
    def ld(x):
        return -0.5 * jnp.sum(x**2)

    with pytest.raises(ValueError, match=r"inverse_mass_matrix must have shape \(2,\)"):
        nuts(ld, 0.1, jnp.ones(3)).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="max_tree_depth"):
        nuts(ld, 0.1, jnp.ones(2), max_tree_depth=0)
    with pytest.raises(TypeError, match="max_tree_depth"):
        nuts(ld, 0.1, jnp.ones(2), max_tree_depth=2.0)
    with pytest.raises(ValueError, match="step_size"):
        nuts(ld, 0.0, jnp.ones(2))
    with pytest.raises(TypeError, match="integrator"):
        nuts(ld, 0.1, jnp.ones(2), integrator=None)


@pytest.mark.slow
def test_nuts_skewed_target(key):
    """Non-Gaussian check: x = log G, G ~ Gamma(2), log p(x) = 2x - e^x.

    E[x] = digamma(2) = 1 - gamma_Euler, Var[x] = trigamma(2) = pi^2/6 - 1; its excess
    kurtosis is trigamma'' (2) / trigamma(2)^2 = 1.19, so a sample variance has relative
    SE sqrt(3.19 / N). 4,000 chains x 300 steps, 5 SE.
    """
    n = 4000
    kernel = nuts(lambda x: jnp.sum(2.0 * x - jnp.exp(x)), 0.8, jnp.ones(1))
    key_init, key_run = jax.random.split(key)
    starts = 0.4 + 0.5 * jax.random.normal(key_init, (n, 1))
    states, _ = run_chains(kernel, key_run, starts, 300)
    x = np.asarray(states.position[:, 0], np.float64)
    mean, var = 1 - np.euler_gamma, math.pi**2 / 6 - 1
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(x.var() / var - 1) < 5 * math.sqrt(3.19 / n)


@pytest.mark.parametrize(
    ("key_words", "counter", "expected"),
    [
        # Known-answer vectors of Threefry-2x32-20 from the Random123 distribution
        # (Salmon et al. 2011): zero key and counter, all-ones, and the digits of pi.
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry_known_answers(key_words, counter, expected):
    """The tree's counter-based generator is the standard Threefry-2x32-20."""
    from dgm_jax.mcmc.counter_rng import threefry2x32 as _threefry2x32

    words = _threefry2x32(
        jnp.asarray(key_words, jnp.uint32), jnp.uint32(counter[0]), jnp.uint32(counter[1])
    )
    assert tuple(int(w) for w in words) == expected


def test_leaf_uniforms_are_uniform():
    """Counter-based U[0, 1) draws: 2^16 of them have mean 1/2 and variance 1/12 within
    5 standard errors (SE of the mean sqrt(1/12/N), of the variance sqrt(1/180/N)), and
    stay below 1."""
    from dgm_jax.mcmc.counter_rng import threefry2x32 as _threefry2x32
    from dgm_jax.mcmc.counter_rng import uniform_from_words as _uniform

    n = 2**16
    words = _threefry2x32(
        jnp.asarray([7, 11], jnp.uint32),
        jnp.zeros(n, jnp.uint32),
        jnp.arange(n, dtype=jnp.uint32),
    )
    u = np.asarray(_uniform(words, jnp.float32), np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
