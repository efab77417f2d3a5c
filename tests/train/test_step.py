"""make_step and TrainState: one update is the optax update, loss and gradient norm are right."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgm_jax.train import TrainState, init_train_state, make_step

from ._helpers import least_squares, linear_loss, linear_params, regression_data


def test_init_train_state():
    opt = optax.adam(1e-2)
    state = init_train_state(linear_params(), opt)
    assert isinstance(state, TrainState)
    assert state.step.dtype == jnp.int32 and state.step.shape == ()
    assert int(state.step) == 0
    chex_like = jax.tree.structure(opt.init(linear_params()))
    assert jax.tree.structure(state.opt_state) == chex_like


def test_one_step_matches_manual_update(key):
    x, y = regression_data()
    opt = optax.sgd(0.1)
    state = init_train_state(linear_params(), opt)
    params0 = state.params
    step = make_step(linear_loss, opt, donate=False)
    new, metrics = step(state, key, (x, y))

    (loss, aux), grads = jax.value_and_grad(linear_loss, has_aux=True)(params0, key, (x, y))
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params0, grads)
    assert int(new.step) == 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    np.testing.assert_allclose(metrics["mean_residual"], aux["mean_residual"], rtol=1e-6)
    assert set(metrics) == {"loss", "grad_norm", "mean_residual"}


def test_gradient_descent_reaches_least_squares(key):
    # Full-batch gradient descent on a strongly convex quadratic contracts the error by
    # max|1 - lr * λ| per step, λ the eigenvalues of the Hessian 2/n [X 1]^T [X 1] (here in
    # [1.3, 2.6]); lr = 0.4 gives a factor <= 0.47, so 100 steps leave < 1e-32 of the initial
    # error: what remains is float32 rounding (~1e-6), hence atol 1e-4.
    x, y = regression_data()
    w_star, b_star = least_squares(x, y)
    opt = optax.sgd(0.4)
    state = init_train_state(linear_params(), opt)
    num_traces = []

    def counted_loss(params, key, batch):
        num_traces.append(1)  # a Python side effect: runs once per trace, not per call
        return linear_loss(params, key, batch)

    step = make_step(counted_loss, opt)
    losses = []
    for i in range(100):
        state, metrics = step(state, jax.random.fold_in(key, i), (x, y))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(state.params["w"], w_star, atol=1e-4)
    np.testing.assert_allclose(state.params["b"], b_star, atol=1e-4)
    assert float(metrics["grad_norm"]) < 1e-4
    assert len(num_traces) == 1  # no retracing across steps


def test_donation_consumes_input_state(key):
    x, y = regression_data()
    opt = optax.sgd(0.1)
    state = init_train_state(linear_params(), opt)
    params_w = state.params["w"]
    new, _ = make_step(linear_loss, opt, donate=True)(state, key, (x, y))
    assert int(new.step) == 1
    assert params_w.is_deleted()


def test_make_step_rejects_bad_input(key):
    opt = optax.sgd(0.1)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        make_step("loss", opt)
    with pytest.raises(TypeError, match=r"optimizer must be an optax\.GradientTransformation"):
        make_step(linear_loss, object())
    with pytest.raises(TypeError, match="donate must be a bool"):
        make_step(linear_loss, opt, donate=1)
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        make_step(linear_loss, opt, mesh="data")
    with pytest.raises(ValueError, match="axis named 'data'"):
        make_step(linear_loss, opt, mesh=jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",)))

    x, y = regression_data()
    state = init_train_state(linear_params(), opt)
    step = make_step(linear_loss, opt, donate=False)
    with pytest.raises(TypeError, match="state must be a TrainState"):
        step(state.params, key, (x, y))

    def no_aux(params, key, batch):
        return linear_loss(params, key, batch)[0]

    with pytest.raises(TypeError, match=r"must return a pair \(scalar_loss, metrics_dict\)"):
        make_step(no_aux, opt)(state, key, (x, y))

    def vector_loss(params, key, batch):
        return jnp.zeros(3) + params["b"], {}

    with pytest.raises(TypeError, match="floating scalar loss, got shape \\(3,\\)"):
        make_step(vector_loss, opt)(state, key, (x, y))

    def reserved(params, key, batch):
        loss, _ = linear_loss(params, key, batch)
        return loss, {"grad_norm": loss}

    with pytest.raises(ValueError, match="reserved names"):
        make_step(reserved, opt)(state, key, (x, y))


def test_init_train_state_rejects_bad_input():
    with pytest.raises(TypeError, match="optimizer must be"):
        init_train_state(linear_params(), "adam")
    with pytest.raises(ValueError, match="empty pytree"):
        init_train_state({}, optax.sgd(0.1))
    with pytest.raises(TypeError, match="floating arrays"):
        init_train_state({"n": jnp.arange(3)}, optax.sgd(0.1))
