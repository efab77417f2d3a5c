"""The fused Pallas backend (interpret mode on CPU) against the ordinary driver and known truth.

* ``rng="predrawn"`` feeds the fused kernels the random numbers the ordinary kernels
  draw, so both must produce the same chains up to float32 rounding: the lane code
  sums in another order (a few ulp per operation) and an HMC trajectory carries those
  differences along; 1e-4 absolute/relative on values of order 1–10 after a dozen
  transitions leaves a wide margin over the ~1e-6 seen, while any wrong coefficient
  or sign shows up at order 1e-2 or more. Accept decisions must agree exactly.
* ``rng="counter"`` draws its own numbers; it is checked against exact results: the
  stationary variance of ULA on a Gaussian (which depends on every normal's variance
  and their independence across steps), the closed-form acceptance rate of random-walk
  Metropolis on N(0, 1) (which depends on the uniforms too), and the moments of
  correlated Gaussian and banana targets started from exact draws (invariance).
  Independent chains give independent final states, so standard errors are the usual
  ones (see ``test_kernels.py``); we allow 5 of them, with fixed seeds.
"""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import mcmc
from dgm_jax.mcmc import targets
from dgm_jax.mcmc.fused import FusedBackend, FusionError

PREDRAWN = FusedBackend(rng="predrawn", block_size=64)
COUNTER = FusedBackend(rng="counter")
BANANA = targets.banana()
GAUSS = targets.correlated_gaussian(2, rho=0.8)


def pytree_logdensity(x):
    return -0.5 * (x["a"] ** 2 + jnp.sum((x["b"] - 1.0) ** 2 / 4.0))


KERNELS = {
    "hmc": lambda: mcmc.hmc(BANANA.logdensity_fn, 0.4, jnp.array([1.0, 0.5]), 6),
    "hmc_dense_mclachlan": lambda: mcmc.hmc(
        GAUSS.logdensity_fn, 0.5, GAUSS.cov, 3, integrator=mcmc.mclachlan
    ),
    "mala": lambda: mcmc.mala(BANANA.logdensity_fn, 0.2),
    "ula": lambda: mcmc.ula(BANANA.logdensity_fn, 0.05),
    "rwm": lambda: mcmc.rwm(BANANA.logdensity_fn, jnp.array([1.5, 1.0])),
    "mala_pytree": lambda: mcmc.mala(pytree_logdensity, 0.3),
}


def start(name, num_chains, key):
    if name == "mala_pytree":
        ka, kb = jax.random.split(key)
        return {
            "a": jax.random.normal(ka, (num_chains,)),
            "b": jax.random.normal(kb, (num_chains, 2)),
        }
    return 2.0 * jax.random.normal(key, (num_chains, 2))


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_predrawn_matches_ordinary_driver(name):
    kernel = KERNELS[name]()
    x0 = start(name, 100, jax.random.key(1))  # 100 chains: padded to 2 blocks of 64
    args = (jax.random.key(2), kernel, x0, 6)
    ref = mcmc.sample(*args, num_warmup=3, thin=2)
    out = mcmc.sample(*args, num_warmup=3, thin=2, backend=PREDRAWN)
    assert type(out.infos) is type(ref.infos)
    assert type(out.final_state) is type(ref.final_state)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # noqa: E731
    jax.tree_util.tree_map(close, out.samples, ref.samples)
    jax.tree_util.tree_map(close, out.final_state, ref.final_state)
    for field in ("is_accepted", "is_divergent", "num_integration_steps"):
        np.testing.assert_array_equal(getattr(out.infos, field), getattr(ref.infos, field))
    close(out.infos.acceptance_rate, ref.infos.acceptance_rate)
    np.testing.assert_allclose(out.infos.energy_error, ref.infos.energy_error, atol=1e-3)
    assert 0.0 < float(jnp.mean(out.infos.is_accepted)) <= 1.0


def test_predrawn_noise_cut_into_launches_changes_nothing():
    """A small noise budget cuts the run into several kernel launches: same chains."""
    kernel = KERNELS["mala"]()
    x0 = start("mala", 64, jax.random.key(3))
    one = mcmc.sample(jax.random.key(4), kernel, x0, 7, thin=2, backend=PREDRAWN)
    budget = FusedBackend(rng="predrawn", block_size=64, noise_bytes=3 * 64 * 4 * 2 * 2)
    cut = mcmc.sample(jax.random.key(4), kernel, x0, 7, thin=2, backend=budget)
    np.testing.assert_array_equal(cut.samples, one.samples)
    np.testing.assert_array_equal(cut.infos.is_accepted, one.infos.is_accepted)


def test_counter_ula_stationary_variance():
    """ULA on N(0, I) with step h is exactly Gaussian with variance 1 / (1 - h / 2)."""
    h, num_chains = 0.5, 4096
    kernel = mcmc.ula(lambda x: -0.5 * jnp.sum(x**2), h)
    out = mcmc.sample(
        jax.random.key(5), kernel, jnp.zeros((num_chains, 2)), 1, num_warmup=60, backend=COUNTER
    )
    # (1 - h)^60 ~ 1e-18: the start is forgotten.
    var = 1.0 / (1.0 - h / 2.0)
    final = np.asarray(out.final_state.position, np.float64)
    se_mean, se_var = math.sqrt(var / num_chains), var * math.sqrt(2.0 / num_chains)
    np.testing.assert_array_less(np.abs(final.mean(0)), 5 * se_mean)
    np.testing.assert_array_less(np.abs(final.var(0) - var), 5 * se_var)
    corr = np.corrcoef(final.T)[0, 1]
    assert abs(corr) < 5 / math.sqrt(num_chains)


def test_counter_rwm_acceptance_rate_closed_form():
    """Random-walk Metropolis on N(0, 1) at stationarity accepts with probability
    (2 / pi) arctan(2 / sigma) (Gelman, Roberts & Gilks 1996)."""
    sigma, num_chains, num_draws = 2.4, 1024, 16
    kernel = mcmc.rwm(lambda x: -0.5 * jnp.sum(x**2), sigma)
    x0 = jax.random.normal(jax.random.key(6), (num_chains, 1))  # exact draws: stationary
    out = mcmc.sample(jax.random.key(7), kernel, x0, num_draws, backend=COUNTER)
    expected = 2.0 / math.pi * math.atan(2.0 / sigma)
    # Per-chain means are independent across chains; their spread gives the SE.
    for field in ("acceptance_rate", "is_accepted"):
        per_chain = np.asarray(getattr(out.infos, field), np.float64).mean(1)
        se = per_chain.std(ddof=1) / math.sqrt(num_chains)
        assert abs(per_chain.mean() - expected) < 5 * se, (field, per_chain.mean(), expected)


def assert_moments(samples, mean, cov, num_se=5.0):
    samples = np.asarray(samples, np.float64)
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    n = samples.shape[0]
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), num_se * np.sqrt(np.diag(cov) / n))
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - cov), num_se * se_cov)


@pytest.mark.parametrize(
    ("name", "target"),
    [("hmc_dense_mclachlan", GAUSS), ("mala", BANANA), ("hmc", BANANA), ("rwm", BANANA)],
)
def test_counter_moments_from_exact_start(name, target):
    """Chains started at exact draws stay distributed as the target (Gaussian moments for
    the Gaussian; for the banana the first two moments, whose SEs use its covariance —
    conservative there is the non-Gaussian fourth moment, so allow 6 SE)."""
    num_chains = 2048
    x0 = target.sample(jax.random.key(8), num_chains)
    out = mcmc.sample(jax.random.key(9), KERNELS[name](), x0, 1, num_warmup=15, backend=COUNTER)
    assert_moments(out.final_state.position, target.mean, target.cov, num_se=6.0)
    assert float(jnp.mean(out.infos.acceptance_rate)) > 0.3


def test_counter_resume_equals_uninterrupted(tmp_path):
    kernel = KERNELS["hmc"]()
    x0 = start("hmc", 64, jax.random.key(10))
    whole = mcmc.sample(jax.random.key(11), kernel, x0, 6, num_warmup=2, backend=COUNTER)
    parts = mcmc.sample(
        jax.random.key(11),
        kernel,
        x0,
        6,
        num_warmup=2,
        backend=COUNTER,
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
    )
    np.testing.assert_array_equal(parts.samples, whole.samples)
    np.testing.assert_array_equal(parts.infos.is_accepted, whole.infos.is_accepted)
    again = mcmc.sample(jax.random.key(11), kernel, x0, 6, num_warmup=2, backend=COUNTER)
    np.testing.assert_array_equal(again.samples, whole.samples)
    other = mcmc.sample(jax.random.key(12), kernel, x0, 6, num_warmup=2, backend=COUNTER)
    assert not np.array_equal(other.samples, whole.samples)


def test_unsupported_kernels_and_settings_raise_or_fall_back():
    x0 = jnp.zeros((8, 2))
    nuts = mcmc.nuts(BANANA.logdensity_fn, 0.3, jnp.ones(2))
    with pytest.raises(FusionError, match="supports the kernels built by"):
        mcmc.sample(jax.random.key(0), nuts, x0, 2, backend=COUNTER)
    jitter = mcmc.hmc(BANANA.logdensity_fn, 0.3, jnp.ones(2), 3, jitter_step_size=0.2)
    with pytest.raises(FusionError, match="jitter"):
        mcmc.sample(jax.random.key(0), jitter, x0, 2, backend=COUNTER)
    with pytest.warns(UserWarning, match="falling back"):
        res = mcmc.sample(jax.random.key(0), nuts, x0, 2, backend=COUNTER, fallback=True)
    assert res.samples.shape == (8, 2, 2)

    def needs_cholesky(x):
        chol = jnp.linalg.cholesky(jnp.eye(2) * (1.0 + x[0] ** 2))
        return -0.5 * jnp.sum(jnp.linalg.solve(chol, x) ** 2)

    with pytest.raises(FusionError, match="cholesky"):
        mcmc.sample(jax.random.key(0), mcmc.rwm(needs_cholesky, 1.0), x0, 2, backend=COUNTER)


def test_bad_backend_settings():
    kernel = KERNELS["rwm"]()
    with pytest.raises(TypeError, match="backend must be None or a"):
        mcmc.sample(jax.random.key(0), kernel, jnp.zeros((4, 2)), 2, backend="fused")
    with pytest.raises(TypeError, match="fallback must be a bool"):
        mcmc.sample(jax.random.key(0), kernel, jnp.zeros((4, 2)), 2, backend=COUNTER, fallback=1)
    with pytest.raises(ValueError, match="rng must be one of"):
        FusedBackend(rng="philox")
    with pytest.raises(ValueError, match="block_size must be a power of two"):
        FusedBackend(block_size=48)
    with pytest.raises(ValueError, match="noise_bytes"):
        FusedBackend(noise_bytes=0)
    with pytest.raises(FusionError, match="float32"):
        mcmc.sample(jax.random.key(0), kernel, jnp.zeros((4, 2), jnp.float16), 2, backend=COUNTER)


def test_kernels_lower_for_the_gpu_triton_backend():
    """Without a GPU, generate the Triton IR of the compiled (non-interpreted) kernels:
    this fails on any operation the Pallas Triton lowering does not support."""
    from jax import export

    from dgm_jax.mcmc.fused.backend import build_fused_runner

    funnel = targets.funnel(dim=4)
    cases = [
        ("hmc", mcmc.hmc(BANANA.logdensity_fn, 0.3, jnp.ones(2), 4), 2),
        ("mala", mcmc.mala(funnel.logdensity_fn, 0.1), 4),
        ("rwm", mcmc.rwm(GAUSS.logdensity_fn, 1.0), 2),
    ]
    skip = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    for name, kernel, dim in cases:
        for rng in ("counter", "predrawn"):
            states = jax.vmap(kernel.init)(jnp.zeros((512, dim)).at[:, 0].set(0.1))
            options = FusedBackend(rng=rng, interpret=False)
            _, draws = build_fused_runner(kernel, 512, 1, None, options)
            run = jax.jit(lambda key, s, draws=draws: draws(key, s, 0, num_draws=2))
            exported = export.export(run, platforms=["cuda"], disabled_checks=skip)(
                jax.random.key(0), states
            )
            assert "xla.gpu.triton" in exported.mlir_module(), (name, rng)


SHARDING_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, jax.numpy as jnp, numpy as np
    from dgm_jax import mcmc
    assert jax.device_count() == 2
    kernel = mcmc.mala(lambda x: -0.5 * jnp.sum(x**2), 0.3)
    x0 = jnp.ones((96, 2))
    for rng in ("counter", "predrawn"):
        backend = mcmc.FusedBackend(rng=rng, block_size=32)
        two = mcmc.sample(jax.random.key(0), kernel, x0, 4, backend=backend)
        assert len(two.final_state.position.sharding.device_set) == 2
        one = mcmc.sample(jax.random.key(0), kernel, x0, 4, backend=backend,
                          mesh=mcmc.chain_mesh(jax.devices()[:1]))
        np.testing.assert_allclose(np.asarray(two.samples), np.asarray(one.samples), rtol=1e-6)
    print("ok")
    """
)


def test_fused_chains_sharded_across_devices(tmp_path):
    """Two (simulated) devices run their halves of the chains: same draws as one device."""
    script = tmp_path / "shard.py"
    script.write_text(SHARDING_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok" in out.stdout
