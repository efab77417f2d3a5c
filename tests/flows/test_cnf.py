"""CNF log-density against the closed form of a linear field, and Hutchinson's unbiasedness.

For ``dx/dt = A x`` the latent is ``z = e^{A (t1 - t0)} x`` and the exact log-density is
``log N(z; 0, I) + (t1 - t0) tr A`` (Liouville: the divergence is ``tr A`` everywhere).
"""

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import pytest

from dgm_jax import flows
from dgm_jax.flows import build_cnf_nll_loss, cnf_log_prob, cnf_sample, standard_normal_logpdf
from dgm_jax.sde import adaptive_solver

A = jnp.array([[0.3, -0.8, 0.1], [0.5, -0.2, 0.0], [0.2, 0.4, -0.6]])


def linear_field(x, t):
    return x @ A.T


def exact_log_prob(x, a=A, duration=1.0):
    z = x @ jax.scipy.linalg.expm(duration * a).T
    return standard_normal_logpdf(z) + duration * jnp.trace(a)


def test_exact_trace_matches_closed_form_fixed_and_adaptive():
    x = jax.random.normal(jax.random.key(0), (6, 3))
    lp, _ = jax.jit(lambda x: cnf_log_prob(jax.random.key(1), linear_field, x, num_steps=40))(x)
    np.testing.assert_allclose(lp, exact_log_prob(x), atol=1e-4, rtol=1e-5)
    lp_a, info_a = cnf_log_prob(
        jax.random.key(1), linear_field, x, solver=adaptive_solver(rtol=1e-7, atol=1e-7)
    )
    assert not bool(info_a.ode.max_steps_reached)
    np.testing.assert_allclose(lp_a, exact_log_prob(x), atol=1e-4, rtol=1e-5)


def test_hutchinson_is_unbiased_within_monte_carlo_error():
    x = jax.random.normal(jax.random.key(2), (1, 3))
    keys = jax.random.split(jax.random.key(3), 4000)
    truth = float(exact_log_prob(x)[0])
    for probe in ("rademacher", "gaussian"):

        def one(k, probe=probe):
            lp, _ = cnf_log_prob(k, linear_field, x, trace="hutchinson", probe=probe, num_steps=20)
            return lp[0]

        est = np.asarray(jax.jit(jax.vmap(one))(keys))
        se = est.std() / np.sqrt(est.size)
        assert est.std() > 0.05  # the estimator is genuinely random
        assert abs(est.mean() - truth) < 4 * se


def test_sampling_inverts_the_flow():
    z_key = jax.random.key(4)
    x, _ = cnf_sample(z_key, linear_field, (5, 3), num_steps=40)
    z = jax.random.normal(z_key, (5, 3))
    np.testing.assert_allclose(x, z @ jax.scipy.linalg.expm(-A).T, atol=1e-4)


def test_training_gradient_matches_closed_form_gradient():
    """Reverse mode through the fixed-step solver gives the exact likelihood gradient."""
    x = jax.random.normal(jax.random.key(5), (16, 3))
    loss_fn = build_cnf_nll_loss(lambda a, y, t: y @ a.T, num_steps=30)
    grad = jax.jit(jax.grad(lambda a: loss_fn(a, jax.random.key(6), x)[0]))(A)
    grad_exact = jax.grad(lambda a: -jnp.mean(exact_log_prob(x, a)))(A)
    np.testing.assert_allclose(grad, grad_exact, atol=2e-4)


def test_bad_input_raises():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="trace"):
        cnf_log_prob(jax.random.key(0), linear_field, x, trace="skilling")
    with pytest.raises(ValueError, match="field_fn"):
        cnf_log_prob(jax.random.key(0), lambda y, t: y[:, :2], x)
    with pytest.raises(ValueError, match="x must have shape"):
        cnf_log_prob(jax.random.key(0), linear_field, jnp.zeros(3))
    with pytest.raises(ValueError, match="num_steps"):
        cnf_log_prob(jax.random.key(0), linear_field, x, num_steps=0)
    with pytest.raises(ValueError, match="shape"):
        cnf_sample(jax.random.key(0), linear_field, (3,))


def test_rnode_regularizers_match_closed_forms():
    """v = c (constant) for t in [0, 2]: kinetic ‖c‖² · 2, Jacobian 0, latent x + 2c.
    v = 2x from x = 0: the path stays at 0 (kinetic 0), ‖2I‖_F² = 8 exactly for a
    Rademacher probe, and log p = log N(0; 0, I) + 2 · 2."""
    c = jnp.array([1.0, -2.0])
    x = jnp.ones((3, 2))
    lp, kinetic, frob = flows.cnf_regularizers(
        jax.random.key(0), lambda y, t: jnp.broadcast_to(c, y.shape), x, t1=2.0
    )
    np.testing.assert_allclose(kinetic, 10.0, rtol=1e-5)
    np.testing.assert_allclose(frob, 0.0, atol=1e-6)
    expected = -jnp.log(2 * jnp.pi) - 0.5 * jnp.sum((x + 2 * c[None, :]) ** 2, axis=1)
    np.testing.assert_allclose(lp, expected, rtol=1e-5)
    lp, kinetic, frob = flows.cnf_regularizers(
        jax.random.key(1), lambda y, t: 2.0 * y, jnp.zeros((3, 2))
    )
    np.testing.assert_allclose(kinetic, 0.0, atol=1e-6)
    np.testing.assert_allclose(frob, 8.0, rtol=1e-5)
    np.testing.assert_allclose(lp, -jnp.log(2 * jnp.pi) + 4.0, rtol=1e-5)


def test_regularized_loss_adds_the_weighted_penalties():
    apply_fn = lambda p, x, t: p * x  # noqa: E731
    batch = jax.random.normal(jax.random.key(2), (8, 2))
    plain = flows.build_cnf_nll_loss(apply_fn, num_steps=8)
    reg = flows.build_cnf_nll_loss(apply_fn, num_steps=8, kinetic_weight=0.1, jacobian_weight=0.2)
    p = jnp.float32(0.3)
    loss_plain, _ = plain(p, jax.random.key(3), batch)
    loss_reg, metrics = reg(p, jax.random.key(3), batch)
    np.testing.assert_allclose(metrics["nll"], loss_plain, rtol=1e-5)
    expected = loss_plain + 0.1 * metrics["kinetic"] + 0.2 * metrics["jacobian_frobenius"]
    np.testing.assert_allclose(loss_reg, expected, rtol=1e-5)
    # ‖0.3 I‖_F² = 0.18 at every time
    np.testing.assert_allclose(metrics["jacobian_frobenius"], 0.18, rtol=1e-4)
    assert np.isfinite(float(jax.grad(lambda q: reg(q, jax.random.key(3), batch)[0])(p)))
    with pytest.raises(ValueError, match="kinetic_weight"):
        flows.build_cnf_nll_loss(apply_fn, kinetic_weight=-1.0)
    with pytest.raises(ValueError, match="exact"):
        flows.build_cnf_nll_loss(apply_fn, trace="hutchinson", jacobian_weight=0.1)
