"""RWM, ULA and MALA against a correlated Gaussian; every kernel under jit/vmap/pytrees; errors.

Tolerances: we run many independent chains and keep only each chain's last state, so
the N kept draws are (after burn-in) independent draws from the chain's stationary law.
A sample mean then has standard error sqrt(S_ii / N) and a sample covariance entry
sqrt((S_ii S_jj + S_ij^2) / N) (Gaussian fourth moments); we allow 5 standard errors
(each check fails with probability < 6e-7 if the kernel is right, and the seeds are fixed).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import hmc, mala, nuts, rwm, ula
from dgm_jax.mcmc.langevin import LangevinState, mala_log_acceptance_ratio

MEAN = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.8], [0.8, 2.0]])
PREC = jnp.linalg.inv(COV)
INFO_FIELDS = (
    "acceptance_rate",
    "is_accepted",
    "is_divergent",
    "energy_error",
    "num_integration_steps",
)


def gaussian_logdensity(x):
    d = x - MEAN
    return -0.5 * d @ PREC @ d


def run_chains(kernel, key, initial_positions, num_steps):
    """Run vmapped chains with lax.scan under jit; return final states and mean infos."""
    num_chains = jax.tree_util.tree_leaves(initial_positions)[0].shape[0]

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
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), num_se * se_mean)
    sample_cov = np.cov(samples.T)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(sample_cov - cov), num_se * se_cov)


def overdispersed_start(key, num_chains):
    return MEAN[None, :] + 1.5 * jax.random.normal(key, (num_chains, 2))


@pytest.mark.parametrize(
    ("name", "factory"),
    [
        ("rwm", lambda: rwm(gaussian_logdensity, scale=1.2)),
        ("mala", lambda: mala(gaussian_logdensity, step_size=0.3)),
    ],
)
def test_exact_kernels_recover_correlated_gaussian(name, factory, key):
    key_init, key_run = jax.random.split(key)
    states, infos = run_chains(factory(), key_run, overdispersed_start(key_init, 1000), 150)
    assert_gaussian_moments(states.position, MEAN, COV)
    assert 0.3 < float(infos.acceptance_rate.mean()) < 0.99
    assert float(infos.is_divergent.mean()) == 0.0


def test_ula_recovers_its_biased_stationary_covariance(key):
    """ULA on N(mu, S) is the linear recursion x' = x - h P (x - mu) + sqrt(2h) z, P = S^-1.

    Its stationary covariance V solves V = (I - hP) V (I - hP) + 2h I, i.e.
    V = (P - h P^2 / 2)^-1 = S (I - h P / 2)^-1 (1-D: s^2 / (1 - h / (2 s^2))); the
    mean is unbiased. With h = 0.2 the variance along the stiffest direction is 22%
    too large, many standard errors, so this also checks the kernel is not corrected.
    """
    h = 0.2
    num_chains = 2000
    key_init, key_run = jax.random.split(key)
    states, infos = run_chains(
        ula(gaussian_logdensity, step_size=h),
        key_run,
        overdispersed_start(key_init, num_chains),
        150,
    )
    prec = np.asarray(PREC, np.float64)
    biased_cov = np.linalg.inv(prec - h * prec @ prec / 2)
    assert_gaussian_moments(states.position, MEAN, biased_cov)
    assert float(infos.acceptance_rate.mean()) == 1.0
    # along the top eigenvector u of P: exact variance 1/lambda, ULA's 1/(lambda - h lambda^2/2)
    eigenvalues, eigenvectors = np.linalg.eigh(prec)
    u, lam = eigenvectors[:, -1], eigenvalues[-1]
    projected = np.var(np.asarray(states.position, np.float64) @ u)
    biased = 1.0 / (lam - h * lam**2 / 2)
    se = biased * math.sqrt(2 / num_chains)  # chi-square standard error of a variance
    assert abs(projected - biased) < 5 * se
    assert abs(projected - 1.0 / lam) > 3 * se


def test_mala_acceptance_matches_closed_form(key):
    """Standard normal, x = 0.3 -> x' = 1.1, h = 0.4, by hand:

    log r = -x'^2/2 + x^2/2 - (x - (1-h) x')^2 / (4h) + (x' - (1-h) x)^2 / (4h).
    """
    x, y, h = 0.3, 1.1, 0.4
    expected = -(y**2) / 2 + x**2 / 2 - (x - (1 - h) * y) ** 2 / (4 * h)
    expected += (y - (1 - h) * x) ** 2 / (4 * h)

    def logdensity_fn(z):
        return -0.5 * jnp.sum(z**2)

    def state(v):
        v = jnp.array([v])
        return LangevinState(v, logdensity_fn(v), -v)

    got = mala_log_acceptance_ratio(state(x), state(y), h)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(jnp.minimum(1.0, jnp.exp(got))) == pytest.approx(min(1.0, math.exp(expected)))

    # The kernel reports the same ratio for the move it made (an accepted step).
    kernel = mala(logdensity_fn, step_size=h)
    start = kernel.init(jnp.array([x]))
    step = jax.jit(kernel.step)
    for k in jax.random.split(key, 20):
        new, info = step(k, start)
        if bool(info.is_accepted):
            break
    assert bool(info.is_accepted)
    x1 = float(new.position[0])
    closed = -(x1**2) / 2 + x**2 / 2 - (x - (1 - h) * x1) ** 2 / (4 * h)
    closed += (x1 - (1 - h) * x) ** 2 / (4 * h)
    assert float(-info.energy_error) == pytest.approx(closed, rel=1e-4, abs=1e-5)
    assert float(info.acceptance_rate) == pytest.approx(min(1.0, math.exp(closed)), rel=1e-4)


# ------------------------------------------------------------ every kernel: jit, vmap, pytree


def pytree_logdensity(position):
    """Independent Gaussian on a dict position: a ~ N((1, -1), diag(1, 4)), b ~ N(0.5, 0.25)."""
    a, b = position["a"], position["b"]
    return -0.5 * (jnp.sum((a - MEAN) ** 2 / jnp.array([1.0, 4.0])) + (b - 0.5) ** 2 / 0.25)


PYTREE_VARIANCE = np.array([1.0, 4.0, 0.25])  # ravel_pytree order: a then b
PYTREE_MEAN = np.array([1.0, -1.0, 0.5])

ALL_KERNELS = {
    "rwm": lambda ld: rwm(ld, scale=jnp.array([0.8, 1.6, 0.4])),
    "ula": lambda ld: ula(ld, step_size=0.1),
    "mala": lambda ld: mala(ld, step_size=0.2),
    "hmc": lambda ld: hmc(ld, 0.3, jnp.array(PYTREE_VARIANCE), 5),
    "hmc_dense_jitter": lambda ld: hmc(
        ld,
        0.3,
        jnp.diag(jnp.array(PYTREE_VARIANCE)),
        5,
        jitter_step_size=0.2,
        jitter_num_steps=True,
    ),
    "nuts": lambda ld: nuts(ld, 0.5, jnp.array(PYTREE_VARIANCE), max_tree_depth=6),
}


@pytest.mark.parametrize("name", ALL_KERNELS)
def test_every_kernel_jit_vmap_pytree(name, key):
    kernel = ALL_KERNELS[name](pytree_logdensity)
    position = {"a": jnp.array([0.5, 0.0]), "b": jnp.array(0.0)}

    # fields and dtypes from abstract evaluation (no compilation)
    state = kernel.init(position)
    assert set(state._fields) >= {"position", "logdensity"}
    _, info = jax.eval_shape(kernel.step, key, state)
    assert set(INFO_FIELDS) <= set(info._fields)
    assert info.num_integration_steps.dtype == jnp.int32
    assert info.is_accepted.dtype == jnp.bool_
    assert info.is_divergent.dtype == jnp.bool_
    # one step eagerly and jitted agree (NUTS's while loops compile even eagerly: skipped)
    if name != "nuts":
        eager, _ = kernel.step(key, state)
        jitted, _ = jax.jit(kernel.step)(key, state)
        for x, y in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
        assert jax.tree_util.tree_structure(jitted.position) == jax.tree_util.tree_structure(
            position
        )

    # many chains under vmap, with a statistical check of the pytree plumbing:
    # 500 chains x 80 steps, last states, 5 SE on the means (see module docstring).
    num_chains = 500
    starts = {"a": jnp.zeros((num_chains, 2)), "b": jnp.zeros(num_chains)}
    states, _ = run_chains(kernel, key, starts, 80)
    assert states.position["a"].shape == (num_chains, 2)
    assert states.position["b"].shape == (num_chains,)
    flat = np.column_stack([states.position["a"], states.position["b"]])
    variance = PYTREE_VARIANCE
    if name == "ula":  # biased stationary variance s^2 / (1 - h / (2 s^2)), h = 0.1
        variance = PYTREE_VARIANCE / (1 - 0.1 / (2 * PYTREE_VARIANCE))
    np.testing.assert_array_less(
        np.abs(flat.mean(0) - PYTREE_MEAN), 5 * np.sqrt(variance / num_chains)
    )
    # variances: chi-square, relative SE sqrt(2 / N) = 6.3%; 5 SE
    np.testing.assert_allclose(flat.var(0), variance, rtol=5 * math.sqrt(2 / num_chains))


# ------------------------------------------------------------------------------- bad input

FACTORIES = {
    "rwm": lambda ld, s: rwm(ld, scale=s),
    "ula": lambda ld, s: ula(ld, step_size=s),
    "mala": lambda ld, s: mala(ld, step_size=s),
    "hmc": lambda ld, s: hmc(ld, s, jnp.ones(2), 3),
    "nuts": lambda ld, s: nuts(ld, s, jnp.ones(2)),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_input_gives_clear_errors(name):
    factory = FACTORIES[name]
    what = "scale" if name == "rwm" else "step_size"
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=what):
            factory(gaussian_logdensity, bad)
    kernel = factory(gaussian_logdensity, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        kernel.init(jnp.array([jnp.nan, 0.0]))
    with pytest.raises(TypeError, match="floating"):
        kernel.init(jnp.array([1, 2]))
    with pytest.raises(ValueError, match="scalar"):
        factory(lambda x: -0.5 * x**2, 0.1).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        factory(lambda x: jnp.log(x[0]) + x[1], 0.1).init(jnp.array([-1.0, 0.0]))
    with pytest.raises(TypeError, match="callable"):
        factory("not a function", 0.1)


def test_rwm_scale_shape_is_checked():
    with pytest.raises(ValueError, match=r"scale must have shape \(2,\)"):
        rwm(gaussian_logdensity, scale=jnp.ones(3)).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="scale must be > 0"):
        rwm(gaussian_logdensity, scale=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="1-D"):
        rwm(gaussian_logdensity, scale=jnp.ones((2, 2)))
