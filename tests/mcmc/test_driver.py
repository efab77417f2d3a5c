"""The driver: shapes, correctness on a Gaussian, thinning, checkpoint/resume, errors."""

import os
import subprocess
import sys
import textwrap
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc import diagnostics, driver


class RWState(NamedTuple):
    position: Any  # (d,)
    logdensity: Any  # scalar


class RWInfo(NamedTuple):
    acceptance_rate: Any  # min(1, ratio)
    is_accepted: Any  # bool
    is_divergent: Any  # always False
    energy_error: Any  # -log ratio
    num_integration_steps: Any  # 0 gradients


class Algorithm(NamedTuple):
    init: Any
    step: Any


def gaussian_rw(logdensity_fn, scale):
    """A tiny random-walk Metropolis kernel following the kernel contract."""

    def init(position):
        return RWState(position, logdensity_fn(position))

    def step(key, state):
        k1, k2 = jax.random.split(key)
        proposal = state.position + scale * jax.random.normal(k1, state.position.shape)
        logp = logdensity_fn(proposal)
        log_ratio = logp - state.logdensity
        accept = jnp.log(jax.random.uniform(k2)) < log_ratio
        new = RWState(
            jnp.where(accept, proposal, state.position), jnp.where(accept, logp, state.logdensity)
        )
        info = RWInfo(jnp.minimum(1.0, jnp.exp(log_ratio)), accept, False, -log_ratio, 0)
        return new, info

    return Algorithm(init, step)


def std_normal(x):
    return -0.5 * jnp.sum(x**2)


@pytest.fixture
def kernel():
    return gaussian_rw(std_normal, 1.0)


def test_shapes_and_moments(key, kernel):
    k1, k2 = jax.random.split(key)
    x0 = jax.random.normal(k1, (8, 2))
    result = driver.sample(k2, kernel, x0, 500, num_warmup=100)
    assert result.samples.shape == (8, 500, 2)
    assert result.infos.acceptance_rate.shape == (8, 500)
    assert result.final_state.position.shape == (8, 2)
    np.testing.assert_array_equal(result.final_state.position, result.samples[:, -1])
    # RWM on N(0, I_2) with scale 1: ESS ≈ 4000 · 0.15 ≈ 600 per coordinate (the
    # estimate itself is used); the mean's MCSE is 1/sqrt(ESS) ≈ 0.04: allow 4.5 MCSE.
    mean = np.asarray(result.samples.mean(axis=(0, 1)))
    mcse = np.asarray(diagnostics.mcse_mean(result.samples))
    assert np.all(np.abs(mean) < 4.5 * mcse)
    assert np.all(np.asarray(diagnostics.split_rhat(result.samples)) < 1.05)


def test_thin_keeps_every_kth_state(key, kernel):
    x0 = jnp.zeros((3, 2))
    full = driver.sample(key, kernel, x0, 12, num_warmup=5)
    thinned = driver.sample(key, kernel, x0, 4, num_warmup=5, thin=3)
    np.testing.assert_array_equal(thinned.samples, full.samples[:, 2::3])
    np.testing.assert_array_equal(thinned.infos.is_accepted, full.infos.is_accepted[:, 2::3])


def test_pytree_positions(key):
    def logdensity(p):
        return -0.5 * (jnp.sum(p["a"] ** 2) + p["b"] ** 2)

    def init(p):
        return RWState(p, logdensity(p))

    def step(k, s):
        ks = jax.random.split(k, 2)
        prop = {
            "a": s.position["a"] + 0.5 * jax.random.normal(ks[0], (3,)),
            "b": s.position["b"] + 0.5 * jax.random.normal(ks[1], ()),
        }
        return RWState(prop, logdensity(prop)), RWInfo(1.0, True, False, 0.0, 0)

    x0 = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(2)}
    result = driver.sample(key, Algorithm(init, step), x0, 7)
    assert result.samples["a"].shape == (2, 7, 3) and result.samples["b"].shape == (2, 7)


def test_resume_after_crash_equals_uninterrupted(key, kernel, tmp_path, monkeypatch):
    x0 = jnp.zeros((4, 2))
    kwargs = dict(num_warmup=6, thin=2)
    reference = driver.sample(key, kernel, x0, 10, **kwargs)

    # Crash right after the second checkpoint (warm-up, then 3 draws) is written.
    real_save = driver._save
    calls = []

    def crashing_save(directory, step, tree):
        real_save(directory, step, tree)
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(driver, "_save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        driver.sample(key, kernel, x0, 10, checkpoint_dir=tmp_path, checkpoint_every=3, **kwargs)
    assert calls == [6, 12]
    monkeypatch.setattr(driver, "_save", real_save)

    resumed = driver.sample(
        key, kernel, x0, 10, checkpoint_dir=tmp_path, checkpoint_every=3, **kwargs
    )
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_extend_finished_run_and_prefix(key, kernel, tmp_path):
    x0 = jnp.ones((2, 2))
    reference = driver.sample(key, kernel, x0, 9)
    first = driver.sample(key, kernel, x0, 4, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(first.samples, reference.samples[:, :4])
    extended = driver.sample(key, kernel, x0, 9, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(extended.samples, reference.samples)
    np.testing.assert_array_equal(extended.infos.is_accepted, reference.infos.is_accepted)
    prefix = driver.sample(key, kernel, x0, 3, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(prefix.samples, reference.samples[:, :3])
    with pytest.raises(ValueError, match="different key"):
        driver.sample(jax.random.key(99), kernel, x0, 12, checkpoint_dir=tmp_path)


def test_progress_bar_runs(key, kernel, capsys):
    result = driver.sample(key, kernel, jnp.zeros((2, 1)), 20, progress=True, progress_every=5)
    assert result.samples.shape == (2, 20, 1)
    assert "20/20" in capsys.readouterr().err


def test_bad_input_raises(key, kernel):
    with pytest.raises(ValueError, match="leading chain axis"):
        driver.sample(key, kernel, jnp.float32(0.0), 5)
    with pytest.raises(ValueError, match="NaN or infinite values in chains \\[1\\]"):
        driver.sample(key, kernel, jnp.array([[0.0], [jnp.nan]]), 5)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        driver.sample(key, kernel, jnp.zeros((2, 1)), 0)
    with pytest.raises(ValueError, match="thin must be >= 1"):
        driver.sample(key, kernel, jnp.zeros((2, 1)), 5, thin=0)
    with pytest.raises(TypeError, match="num_samples must be an int"):
        driver.sample(key, kernel, jnp.zeros((2, 1)), 5.0)
    with pytest.raises(TypeError, match="kernel must be a SamplingAlgorithm"):
        driver.sample(key, std_normal, jnp.zeros((2, 1)), 5)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        driver.sample(0, kernel, jnp.zeros((2, 1)), 5)
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        driver.sample(key, kernel, jnp.zeros((2, 1)), 5, checkpoint_every=2)
    with pytest.raises(ValueError, match="log density is not finite"):
        bounded = gaussian_rw(lambda x: jnp.where(x[0] > 0, 0.0, -jnp.inf), 1.0)
        driver.sample(key, bounded, jnp.array([[1.0], [-1.0]]), 5)
    with pytest.raises(ValueError, match="axis named 'chains'"):
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        driver.sample(key, kernel, jnp.zeros((2, 1)), 5, mesh=mesh)


SHARDING_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    sys_path = {path!r}
    import sys; sys.path.insert(0, sys_path)
    from test_driver import gaussian_rw, std_normal
    from dgm_jax.mcmc import driver
    assert jax.device_count() == 4
    kernel = gaussian_rw(std_normal, 1.0)
    x0 = jnp.zeros((8, 2))
    res = driver.sample(jax.random.key(0), kernel, x0, 5)
    assert len(res.final_state.position.sharding.device_set) == 4, res.final_state.position.sharding
    one = driver.sample(jax.random.key(0), kernel, x0, 5, mesh=driver.chain_mesh(jax.devices()[:1]))
    np.testing.assert_allclose(np.asarray(res.samples), np.asarray(one.samples), rtol=1e-6)
    try:
        driver.sample(jax.random.key(0), kernel, jnp.zeros((6, 2)), 5)
    except ValueError as err:
        assert "divisible" in str(err)
    else:
        raise SystemExit("no error for 6 chains on 4 devices")
    print("ok")
    """
)


def test_chains_sharded_across_devices(tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(SHARDING_SCRIPT.format(path=os.path.dirname(__file__)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok" in out.stdout


def test_states_as_input_continue_without_init(key, kernel):
    # Passing states (e.g. from window adaptation) skips init: same draws as from positions.
    x0 = jnp.ones((2, 2))
    from_positions = driver.sample(key, kernel, x0, 6)
    states = jax.vmap(kernel.init)(x0)
    from_states = driver.sample(key, kernel, states, 6)
    np.testing.assert_array_equal(from_states.samples, from_positions.samples)
