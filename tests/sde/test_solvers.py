"""Runge–Kutta tables, convergence orders, adaptive step control, transformations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import sde as sdelib

TABLEAUS = {
    "euler": sdelib.euler,
    "midpoint": sdelib.midpoint,
    "heun": sdelib.heun,
    "rk4": sdelib.rk4,
    "dopri5": sdelib.dopri5,
}


@pytest.mark.parametrize("name", list(TABLEAUS))
def test_tableaus_satisfy_their_order_conditions(name):
    tab = TABLEAUS[name]
    a = np.zeros((tab.num_stages, tab.num_stages))
    for i, row in enumerate(tab.a):
        a[i, : len(row)] = row
    b, c = np.array(tab.b), np.array(tab.c)
    np.testing.assert_allclose(a.sum(axis=1), c, atol=1e-14)  # row sums are the nodes
    conditions = [  # (order, Σ, exact) for the trees up to order 4
        (1, b.sum(), 1.0),
        (2, b @ c, 1 / 2),
        (3, b @ c**2, 1 / 3),
        (3, b @ a @ c, 1 / 6),
        (4, b @ c**3, 1 / 4),
        (4, (b * c) @ a @ c, 1 / 8),
        (4, b @ a @ c**2, 1 / 12),
        (4, b @ a @ a @ c, 1 / 24),
    ]
    for order, value, exact in conditions:
        if order <= tab.order:
            np.testing.assert_allclose(value, exact, atol=1e-12)
    if tab.b_error is not None:
        np.testing.assert_allclose(sum(tab.b_error), 1.0, atol=1e-12)
    assert sdelib.dopri5.fsal and not sdelib.rk4.fsal


# Step counts in each solver's asymptotic range.
ORDER_STEPS = {"euler": (128, 256, 512), "heun": (16, 32, 64), "rk4": (8, 16, 32),
               "dopri5": (16, 32, 64)}  # fmt: skip


@pytest.mark.parametrize("name", list(ORDER_STEPS))
def test_convergence_order_on_a_linear_ode(name):
    # y' = A y with A a damped rotation, y(0) = (1, 0), on [0, 4]: y(t) = expm(tA) y0.
    # The slope of log(error) against log(h) is the order; float64 keeps rounding out of it.
    tab = TABLEAUS[name]
    with jax.enable_x64(True):
        A = jnp.array([[-0.5, 2.0], [-2.0, -0.5]], dtype=jnp.float64)
        y0 = jnp.array([1.0, 0.0], dtype=jnp.float64)
        t1 = 4.0
        exact = math.exp(-0.5 * t1) * np.array([math.cos(2 * t1), -math.sin(2 * t1)])
        steps = np.array(ORDER_STEPS[name])
        errors = []
        for n in steps:
            y = sdelib.odeint_fixed(tab, lambda t, y: A @ y, y0, 0.0, t1, int(n))
            assert y.dtype == jnp.float64
            errors.append(float(jnp.max(jnp.abs(y - exact))))
    slope = np.polyfit(np.log(t1 / steps), np.log(errors), 1)[0]
    assert abs(slope - tab.order) < 0.3, (errors, slope)


def test_fixed_steps_backwards_and_pytree_state():
    # Integrating from 1 back to 0 undoes the forward solve; a tuple state works.
    def f(t, state):
        y, z = state
        return -y, t * jnp.ones_like(z)

    y1, z1 = sdelib.odeint_fixed(sdelib.rk4, f, (jnp.ones(3), jnp.zeros(())), 0.0, 1.0, 50)
    np.testing.assert_allclose(y1, math.exp(-1.0), rtol=1e-6)
    np.testing.assert_allclose(z1, 0.5, rtol=1e-6)
    y0, _ = sdelib.odeint_fixed(sdelib.rk4, f, (y1, z1), 1.0, 0.0, 50)
    np.testing.assert_allclose(y0, 1.0, rtol=1e-5)


def _rotation():
    A = jnp.array([[-0.1, 1.0], [-1.0, -0.1]])
    t1 = 2 * math.pi
    exact = math.exp(-0.1 * t1) * np.array([1.0, 0.0])
    return (lambda t, y: A @ y), jnp.array([1.0, 0.0]), t1, exact


def test_adaptive_dopri5_meets_its_tolerance_and_counts_evaluations():
    f, y0, t1, exact = _rotation()
    previous_error, previous_nfe = np.inf, 0
    for tol in (1e-3, 1e-4, 1e-5):
        y, info = sdelib.odeint_adaptive(f, y0, 0.0, t1, rtol=tol, atol=tol)
        error = float(jnp.max(jnp.abs(y - exact)))
        # Global error is a small multiple of the per-step tolerance on this smooth problem.
        assert error < 10 * tol
        assert error < previous_error and int(info.num_fn_evals) > previous_nfe
        # FSAL: 2 evaluations to start (f0 and the initial-step probe), then 6 per attempt.
        attempts = int(info.num_steps) + int(info.num_rejected)
        assert int(info.num_fn_evals) == 2 + 6 * attempts
        assert not bool(info.max_steps_reached)
        previous_error, previous_nfe = error, int(info.num_fn_evals)


def test_adaptive_backwards_reports_max_steps_and_handles_rejections():
    f, y0, t1, exact = _rotation()
    y_back, info = sdelib.odeint_adaptive(f, jnp.asarray(exact, jnp.float32), t1, 0.0, rtol=1e-6)
    np.testing.assert_allclose(y_back, y0, atol=1e-4)
    assert not bool(info.max_steps_reached)
    _, info = sdelib.odeint_adaptive(f, y0, 0.0, t1, rtol=1e-6, max_steps=3)
    assert bool(info.max_steps_reached)
    # A far too large first step is rejected and shrunk, and the answer is still right.
    y, info = sdelib.odeint_adaptive(f, y0, 0.0, t1, rtol=1e-5, atol=1e-5, dt0=5.0)
    assert int(info.num_rejected) >= 1
    np.testing.assert_allclose(y, exact, atol=1e-3)


def test_jit_vmap_grad_and_jvp():
    def solve(lam):
        return sdelib.odeint_fixed(sdelib.rk4, lambda t, y: lam * y, jnp.ones(()), 0.0, 1.0, 20)

    lams = jnp.array([-1.0, -0.5, 0.3])
    np.testing.assert_allclose(jax.jit(jax.vmap(solve))(lams), jnp.exp(lams), rtol=1e-5)
    # d/dλ e^λ = e^λ, through the scan.
    np.testing.assert_allclose(jax.grad(solve)(-0.5), math.exp(-0.5), rtol=1e-4)

    def solve_adaptive(lam):
        y, _ = sdelib.odeint_adaptive(lambda t, y: lam * y, jnp.ones(()), 0.0, 1.0, rtol=1e-6)
        return y

    np.testing.assert_allclose(jax.jit(jax.vmap(solve_adaptive))(lams), jnp.exp(lams), rtol=1e-4)
    _, tangent = jax.jvp(solve_adaptive, (jnp.float32(-0.5),), (jnp.float32(1.0),))
    np.testing.assert_allclose(tangent, math.exp(-0.5), rtol=1e-3)


def test_bad_inputs_are_rejected():
    f = lambda t, y: -y  # noqa: E731
    y0 = jnp.ones(3)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        sdelib.odeint_fixed(sdelib.rk4, f, y0, 0.0, 1.0, 0)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        sdelib.odeint_fixed(sdelib.rk4, f, y0, 0.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="shaped like y0"):
        sdelib.odeint_fixed(sdelib.rk4, lambda t, y: jnp.ones(2), y0, 0.0, 1.0, 10)
    with pytest.raises(ValueError, match="structure of y0"):
        sdelib.odeint_fixed(sdelib.rk4, lambda t, y: (y, y), y0, 0.0, 1.0, 10)
    with pytest.raises(TypeError, match="ButcherTableau"):
        sdelib.odeint_fixed("rk4", f, y0, 0.0, 1.0, 10)
    with pytest.raises(ValueError, match="b_error"):
        sdelib.odeint_adaptive(f, y0, 0.0, 1.0, tableau=sdelib.rk4)
    with pytest.raises(ValueError, match="rtol"):
        sdelib.odeint_adaptive(f, y0, 0.0, 1.0, rtol=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        sdelib.adaptive_solver(max_steps=0)
    with pytest.raises(ValueError, match="lower triangular"):
        sdelib.odeint_fixed(sdelib.ButcherTableau(((1.0,),), (1.0,), (0.0,), 1), f, y0, 0, 1, 2)
    with pytest.raises(ValueError, match="ts must be a 1-D array"):
        sdelib.odeint_grid(sdelib.rk4, f, y0, jnp.array([0.0]))
