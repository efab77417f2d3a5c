"""Flow matching: the analytic Gaussian velocity is the loss's stationary point, flows transport
the right marginals, straightness against closed forms, reflow straightens a learned flow."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgm_jax import flows
from dgm_jax.diffusion import classifier_free_guidance
from dgm_jax.nn import TimeConditionedMLP

MEAN = jnp.array([2.0, -1.0])
STD = jnp.array([0.5, 1.5])
PATHS = {
    "straight": flows.straight_path(),
    "lipman": flows.straight_path(0.1),
    "vp": flows.vp_path(),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_path_velocity_is_the_time_derivative(name):
    path = PATHS[name]
    k0, k1 = jax.random.split(jax.random.key(0))
    x0, x1 = jax.random.normal(k0, (4, 2)), jax.random.normal(k1, (4, 2))
    t = jnp.array([0.1, 0.3, 0.6, 0.9])
    h = 1e-3
    _, u = flows.path_sample(path, t, x0, x1)
    plus, _ = flows.path_sample(path, t + h, x0, x1)
    minus, _ = flows.path_sample(path, t - h, x0, x1)
    np.testing.assert_allclose(u, (plus - minus) / (2 * h), rtol=2e-2, atol=2e-2)
    start, _ = flows.path_sample(path, jnp.zeros(4), x0, x1)  # noise at t = 0 (VP: α(0) ≈ 0.007)
    np.testing.assert_allclose(start, x0, atol=0.01 * float(jnp.abs(x1).max()) + 1e-6)


@pytest.mark.parametrize("name", ["straight", "vp"])
def test_analytic_gaussian_velocity_is_the_minimiser(name):
    """∂L/∂θ = 0 at v* for v_θ = v* + θ·(1, x, t, t x), within MC error; not at a wrong v."""
    path = PATHS[name]
    n = 100_000
    x1 = MEAN[None] + STD[None] * jax.random.normal(jax.random.key(1), (n, 2))
    keys = jax.random.split(jax.random.key(2), n)

    def per_example_grad(base_fn):
        def loss(theta, key, x):
            def v(x, t):
                feats = jnp.stack(
                    [jnp.ones_like(x), x, t[:, None] * jnp.ones_like(x), t[:, None] * x]
                )
                return base_fn(x, t) + jnp.sum(theta[:, None, :] * feats, axis=0)

            return flows.flow_matching_loss(v, path, key, x[None])[0]

        return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(jnp.zeros((4, 2)), keys, x1)

    exact = flows.gaussian_velocity(path, MEAN, STD)
    g = per_example_grad(exact)
    z = g.mean(0) / (g.std(0) / math.sqrt(n))
    assert float(jnp.abs(z).max()) < 4.5, z
    g_wrong = per_example_grad(lambda x, t: 1.1 * exact(x, t))
    z_wrong = g_wrong.mean(0) / (g_wrong.std(0) / math.sqrt(n))
    assert float(jnp.abs(z_wrong).max()) > 10.0, z_wrong


@pytest.mark.parametrize("name", ["straight", "vp"])
def test_sampling_the_analytic_velocity_gives_the_target(name):
    path = PATHS[name]
    n = 20_000
    x, info = flows.sample_flow(
        jax.random.key(3), flows.gaussian_velocity(path, MEAN, STD), path, (n, 2), num_steps=100
    )
    alpha = path.alpha_fn(jnp.asarray(path.t_max))
    sigma = path.sigma_fn(jnp.asarray(path.t_max))
    mean, sd = alpha * MEAN, jnp.sqrt(alpha**2 * STD**2 + sigma**2)
    np.testing.assert_allclose(x.mean(0), mean, atol=4 * float(sd.max()) / math.sqrt(n))
    np.testing.assert_allclose(x.std(0), sd, rtol=4 / math.sqrt(2 * n) + 2e-3)
    assert int(info.num_fn_evals) == 200


def test_straightness_closed_forms():
    # v(x, t) = x: z_t = e^t z0, S = ‖z0‖² ∫(e − 1 − e^t)² dt = ‖z0‖² (e − 1)(3 − e)/2.
    x0 = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    s = flows.straightness(lambda x, t: x, flows.straight_path(), x0, num_steps=4000)
    expected = float(jnp.mean(jnp.sum(x0**2, 1))) * (math.e - 1) * (3 - math.e) / 2
    assert float(s) == pytest.approx(expected, rel=2e-3)
    # 1-rectified flow from N(0, 1) to N(μ, s²): z_t = tμ + σ_t z0 with σ_t² = (1 − t)² + t² s².
    path = flows.straight_path()
    z0 = jax.random.normal(jax.random.key(4), (20_000, 2))
    s = flows.straightness(flows.gaussian_velocity(path, MEAN, STD), path, z0, num_steps=400)
    t = np.linspace(0, 1, 200_001)
    expected = 0.0
    for sd in np.asarray(STD):
        dsig = (t * sd**2 - (1 - t)) / np.sqrt((1 - t) ** 2 + t**2 * sd**2)
        expected += np.trapezoid((sd - 1 - dsig) ** 2, t)
    assert float(s) == pytest.approx(expected, rel=0.03)


def _train(loss_fn, params, num_steps, batch_fn, seed):
    """Adam inside one jitted fori_loop (one compilation, no per-step dispatch)."""
    opt = optax.adam(3e-3)

    @jax.jit
    def run(params):
        def body(i, carry):
            p, s = carry
            grads = jax.grad(
                lambda p: loss_fn(p, jax.random.fold_in(jax.random.key(seed), i), batch_fn(i))[0]
            )(p)
            updates, s = opt.update(grads, s, p)
            return optax.apply_updates(p, updates), s

        return jax.lax.fori_loop(0, num_steps, body, (params, opt.init(params)))[0]

    return run(params)


def test_reflow_makes_paths_straighter():
    """Two Gaussians at (±2, 0): 1-RF paths bend, the reflowed 2-RF paths are nearly straight."""
    path = flows.straight_path()
    net = TimeConditionedMLP((32, 32), time_embedding_dim=16, time_scale=100.0)
    params = net.init(jax.random.key(5), jnp.zeros((1, 2)), jnp.zeros(1))

    def data(i):
        k1, k2 = jax.random.split(jax.random.fold_in(jax.random.key(1000), i))
        sign = jnp.where(jax.random.bernoulli(k1, 0.5, (256, 1)), 1.0, -1.0)
        noise = 0.2 * jax.random.normal(k2, (256, 2))
        return jnp.concatenate([2.0 * sign, jnp.zeros((256, 1))], 1) + noise

    def loss_fn(p, key, batch):
        return flows.flow_matching_loss(lambda x, t: net.apply(p, x, t), path, key, batch)

    def velocity(p):
        return lambda x, t: net.apply(p, x, t)

    p1 = _train(loss_fn, params, 500, data, 6)
    x0, x1 = flows.reflow_pairs(jax.random.key(7), velocity(p1), path, (4096, 2), num_steps=40)

    def pairs(i):
        start = (i * 256) % 4096
        return (
            jax.lax.dynamic_slice_in_dim(x0, start, 256),
            jax.lax.dynamic_slice_in_dim(x1, start, 256),
        )

    p2 = _train(loss_fn, p1, 500, pairs, 8)
    z0 = jax.random.normal(jax.random.key(9), (1024, 2))
    s1 = float(flows.straightness(velocity(p1), path, z0, num_steps=50))
    s2 = float(flows.straightness(velocity(p2), path, z0, num_steps=50))
    assert s2 < 0.5 * s1, (s1, s2)


def test_ot_coupling_shortens_pairs_and_labels_follow():
    x1 = jax.random.normal(jax.random.key(10), (64, 2)) + 3.0
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    path = flows.straight_path()
    _, indep = flows.flow_matching_loss(zero, path, jax.random.key(11), x1)
    _, ot = flows.flow_matching_loss(
        zero, path, jax.random.key(11), x1, coupling=flows.exact_ot_coupling
    )
    assert float(ot["pair_sq_dist"]) < float(indep["pair_sq_dist"])  # same noise, optimal pairing
    x0 = x1[::-1] + 0.01
    labels = jnp.arange(64)
    _, x1c, yc = flows.couple(jax.random.key(0), flows.exact_ot_coupling, x0, x1, labels)
    np.testing.assert_allclose(x1c, x1[yc])
    assert yc.tolist() == labels[::-1].tolist()


def test_class_conditional_loss_and_guidance():
    null = 3

    def cond_v(x, t, y):  # velocity 0 for the null label, else y
        return jnp.where((y == null)[:, None], 0.0, y[:, None].astype(x.dtype)) * jnp.ones_like(x)

    x1 = jnp.ones((512, 2))
    labels = jnp.full((512,), 2)
    path = flows.straight_path()
    key = jax.random.key(12)
    dropped, m = flows.flow_matching_loss(
        cond_v, path, key, x1, labels=labels, p_uncond=1.0, null_label=null
    )
    assert float(dropped) == pytest.approx(float(m["target_sq_norm"]), rel=1e-6)  # all null: v = 0
    guided = classifier_free_guidance(cond_v, 2.0, null_label=null)
    x = jnp.zeros((4, 2))
    out = guided(x, jnp.zeros(4), jnp.full((4,), 2))
    np.testing.assert_allclose(out, 4.0)  # 0 + 2 (2 − 0)
    xs, _ = flows.sample_flow(key, guided, path, None, x0=x, labels=jnp.full((4,), 2), num_steps=2)
    np.testing.assert_allclose(xs, 4.0, rtol=1e-6)


def test_bad_input():
    path = flows.straight_path()
    zero = lambda x, t: jnp.zeros_like(x)  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="sigma_min"):
        flows.straight_path(1.0)
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        flows.vp_path(2.0, 1.0)
    with pytest.raises(TypeError, match="AffinePath"):
        flows.flow_matching_loss(zero, "straight", key, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="batch"):
        flows.flow_matching_loss(zero, path, key, jnp.ones(4))
    with pytest.raises(ValueError, match="velocity_fn output"):
        flows.flow_matching_loss(lambda x, t: x[:, :1], path, key, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="null_label"):
        flows.flow_matching_loss(
            lambda x, t, y: x, path, key, jnp.ones((4, 2)), labels=jnp.zeros(4, int), p_uncond=0.1
        )
    with pytest.raises(ValueError, match="labels"):
        flows.flow_matching_loss(
            lambda x, t, y: x, path, key, jnp.ones((4, 2)), labels=jnp.zeros(3, int)
        )
    with pytest.raises(ValueError, match="num_steps"):
        flows.sample_flow(key, zero, path, (4, 2), num_steps=0)
    with pytest.raises(ValueError, match="shape or x0"):
        flows.sample_flow(key, zero, path, None)
