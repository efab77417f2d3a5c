import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import diffusion


@pytest.mark.parametrize(
    "schedule",
    [
        diffusion.linear_schedule(1000),
        diffusion.cosine_schedule(1000),
        diffusion.sigmoid_schedule(1000),
    ],
    ids=["linear", "cosine", "sigmoid"],
)
def test_schedules_are_consistent_and_end_near_pure_noise(schedule):
    assert schedule.num_steps == 1000
    np.testing.assert_allclose(schedule.alphas, 1.0 - schedule.betas)
    np.testing.assert_allclose(schedule.alpha_bars, jnp.cumprod(schedule.alphas), rtol=1e-6)
    assert bool(jnp.all(jnp.diff(schedule.alpha_bars) < 0))
    assert float(schedule.alpha_bars[-1]) < 1e-3
    assert float(schedule.alpha_bars[0]) > 0.99


def test_linear_schedule_endpoints():
    s = diffusion.linear_schedule(1000, 1e-4, 0.02)
    np.testing.assert_allclose([s.betas[0], s.betas[-1]], [1e-4, 0.02], rtol=1e-6)


def test_cosine_schedule_matches_its_closed_form():
    T, s = 1000, 0.008
    sched = diffusion.cosine_schedule(T, s)
    t = np.arange(1, T + 1) / T
    f = np.cos(np.pi / 2 * (t + s) / (1 + s)) ** 2 / np.cos(np.pi / 2 * s / (1 + s)) ** 2
    # Betas are clipped at 0.999 only at the very end, where alpha_bar is ~0 anyway.
    np.testing.assert_allclose(sched.alpha_bars[:-1], f[:-1], rtol=1e-4, atol=1e-7)


def test_ddim_timesteps():
    np.testing.assert_array_equal(diffusion.ddim_timesteps(10, 10), np.arange(9, -1, -1))
    np.testing.assert_array_equal(diffusion.ddim_timesteps(1000, 1), [999])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.linear_schedule(0)
    with pytest.raises(TypeError, match="num_steps"):
        diffusion.linear_schedule(10.0)
    with pytest.raises(ValueError, match="beta_end"):
        diffusion.linear_schedule(10, 0.1, 0.01)
    with pytest.raises(ValueError, match="betas"):
        diffusion.schedule_from_betas(jnp.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="start < end"):
        diffusion.sigmoid_schedule(10, start=3.0, end=-3.0)
