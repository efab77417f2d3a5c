"""Integrators: reversibility, energy-error convergence order, coefficient tables."""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.mcmc.integrators import (
    Integrator,
    IntegratorState,
    generate_integrator,
    mclachlan,
    velocity_verlet,
    yoshida,
)
from dgm_jax.mcmc.mass_matrix import build_metric

INTEGRATORS = {"velocity_verlet": velocity_verlet, "mclachlan": mclachlan, "yoshida": yoshida}


@contextlib.contextmanager
def float64():
    """Double precision for the order tests: a fourth-order error of 1e-9 is below float32."""
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
    else:  # pragma: no cover - older/newer jax spelling
        previous = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", previous)


def anharmonic_logdensity(position):
    """-U for a pytree position: a quartic oscillator with coupling (non-quadratic on purpose)."""
    q = jnp.concatenate([position["a"], position["b"][None]])
    return -(0.5 * jnp.sum(q**2) + 0.25 * jnp.sum(q**4) + 0.3 * q[0] * q[1])


def make_state(logdensity_fn, position, momentum):
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    return IntegratorState(position, momentum, value, grad)


def integrate(integrator, logdensity_fn, metric, state, step_size, num_steps):
    one_step = integrator(logdensity_fn, metric.velocity)
    return jax.lax.fori_loop(0, num_steps, lambda _, s: one_step(s, step_size), state)


def hamiltonian(metric, state):
    return -state.logdensity + metric.kinetic_energy(state.momentum)


@functools.cache
def _max_energy_error_fn(integrator):
    """A jitted max_t |H(t) - H(0)|; step size and number of steps are traced (one compile)."""

    @jax.jit
    def fn(state, step_size, num_steps):
        metric = build_metric(jnp.ones(3, state.logdensity.dtype))
        one_step = integrator(anharmonic_logdensity, metric.velocity)
        h0 = hamiltonian(metric, state)

        def body(_, carry):
            s, worst = carry
            s = one_step(s, step_size)
            return s, jnp.maximum(worst, jnp.abs(hamiltonian(metric, s) - h0))

        return jax.lax.fori_loop(0, num_steps, body, (state, jnp.zeros_like(h0)))[1]

    return fn


def max_energy_error(integrator, state, step_size, num_steps):
    """max_t |H(t) - H(0)| along the trajectory (the end point alone can cross zero)."""
    dtype = state.logdensity.dtype
    return float(_max_energy_error_fn(integrator)(state, jnp.asarray(step_size, dtype), num_steps))


def test_tables_match_the_papers():
    # Yoshida (1990): w1 = 1/(2 - 2^(1/3)), w0 = -2^(1/3) w1; kicks are half sums.
    w1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
    w0 = -(2.0 ** (1.0 / 3.0)) * w1
    np.testing.assert_allclose(yoshida.coefficients[:4], [w1 / 2, w1, (w0 + w1) / 2, w0])
    assert velocity_verlet.coefficients == (0.5, 1.0, 0.5)
    assert mclachlan.coefficients[0] == pytest.approx(0.1931833275037836)
    assert [i.num_grad_evals for i in INTEGRATORS.values()] == [1, 2, 3]


@pytest.mark.parametrize("name", INTEGRATORS)
@pytest.mark.parametrize("dense", [False, True])
def test_reversible(name, dense):
    """Forward L steps, flip the momentum, L steps back: the start comes back (float32 roundoff)."""
    integrator = INTEGRATORS[name]
    inverse_mass = jnp.array([1.0, 0.5, 2.0])
    if dense:
        inverse_mass = jnp.array([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 2.0]])
    metric = build_metric(inverse_mass)
    position = {"a": jnp.array([0.7, -0.4]), "b": jnp.array(1.1)}
    momentum = {"a": jnp.array([0.2, 0.9]), "b": jnp.array(-0.5)}
    start = make_state(anharmonic_logdensity, position, momentum)
    run = jax.jit(lambda s: integrate(integrator, anharmonic_logdensity, metric, s, 0.1, 20))
    end = run(start)
    flipped = end._replace(momentum=jax.tree_util.tree_map(jnp.negative, end.momentum))
    back = run(flipped)
    # 20 steps of O(1) values in float32: roundoff ~ 20 * 1e-7 * |q|, use 1e-4.
    for x, y in zip(jax.tree_util.tree_leaves(back.position), jax.tree_util.tree_leaves(position)):
        np.testing.assert_allclose(x, y, atol=1e-4)
    for x, y in zip(jax.tree_util.tree_leaves(back.momentum), jax.tree_util.tree_leaves(momentum)):
        np.testing.assert_allclose(-x, y, atol=1e-4)
    # the trajectory really moved
    assert float(jnp.abs(end.position["b"] - position["b"])) > 0.1


@pytest.mark.parametrize(
    ("name", "step_sizes"),
    [
        ("velocity_verlet", [0.1, 0.05, 0.025, 0.0125]),
        ("mclachlan", [0.2, 0.1, 0.05, 0.025]),
        ("yoshida", [0.2, 0.1, 0.05, 0.025]),
    ],
)
def test_energy_error_converges_at_the_theoretical_order(name, step_sizes):
    """max |H(t) - H(0)| over t <= 2 scales like h^order: slope of the log-log fit."""
    integrator = INTEGRATORS[name]
    with float64():
        position = {"a": jnp.array([0.7, -0.4]), "b": jnp.array(1.1)}
        momentum = {"a": jnp.array([0.2, 0.9]), "b": jnp.array(-0.5)}
        start = make_state(anharmonic_logdensity, position, momentum)
        assert start.logdensity.dtype == jnp.float64
        errors = [max_energy_error(integrator, start, h, round(2.0 / h)) for h in step_sizes]
    slope = np.polyfit(np.log(step_sizes), np.log(errors), 1)[0]
    # Deterministic: measured slopes 1.997, 2.011, 3.945; the coarsest step carries a
    # higher-order term, so allow +-0.15 around the theoretical order.
    assert slope == pytest.approx(integrator.order, abs=0.15), (errors, slope)


def test_mclachlan_beats_leapfrog_at_equal_cost():
    """Two-stage McLachlan with step 2h costs as much as leapfrog with h and errs less."""
    position = {"a": jnp.array([0.7, -0.4]), "b": jnp.array(1.1)}
    momentum = {"a": jnp.array([0.2, 0.9]), "b": jnp.array(-0.5)}
    start = make_state(anharmonic_logdensity, position, momentum)
    lf = max_energy_error(velocity_verlet, start, 0.1, 20)
    mc = max_energy_error(mclachlan, start, 0.2, 10)
    assert mc < 0.5 * lf


@pytest.mark.parametrize("name", INTEGRATORS)
def test_fused_trajectory_equals_repeated_steps(name):
    """trajectory() merges adjacent kicks; it is the same map as num_steps one_step calls."""
    integrator = INTEGRATORS[name]
    metric = build_metric(jnp.array([1.0, 0.5, 2.0]))
    position = {"a": jnp.array([0.7, -0.4]), "b": jnp.array(1.1)}
    momentum = {"a": jnp.array([0.2, 0.9]), "b": jnp.array(-0.5)}
    start = make_state(anharmonic_logdensity, position, momentum)
    run = jax.jit(integrator.trajectory(anharmonic_logdensity, metric.velocity))
    for num_steps in (1, 2, 5):
        fused = run(start, 0.1, num_steps)
        stepped = integrate(integrator, anharmonic_logdensity, metric, start, 0.1, num_steps)
        for x, y in zip(jax.tree_util.tree_leaves(fused), jax.tree_util.tree_leaves(stepped)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_generate_integrator_rejects_bad_tables():
    with pytest.raises(ValueError, match="odd length"):
        generate_integrator([0.5, 0.5])
    with pytest.raises(ValueError, match="palindromic"):
        generate_integrator([0.4, 1.0, 0.6])
    with pytest.raises(ValueError, match="sum to 1"):
        generate_integrator([0.5, 0.9, 0.5])
    assert isinstance(generate_integrator([0.5, 1.0, 0.5], order=2), Integrator)
