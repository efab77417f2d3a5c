"""Flow models: densities normalise on a 2-D grid, an affine flow is exactly Gaussian,
samples are the inverse of the latent, and bits/dim follow from nats."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.flows import (
    ActNorm,
    Flow,
    MultiScaleFlow,
    build_dequantized_nll_loss,
    maf_2d,
    realnvp_2d,
)


def perturb(params, key, scale):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy)


@pytest.mark.parametrize("name", ["realnvp", "maf"])
def test_log_prob_integrates_to_one_on_a_grid(name):
    flow = realnvp_2d(4, (16,)) if name == "realnvp" else maf_2d(3, (16,))
    x0 = jax.random.normal(jax.random.key(0), (256, 2))
    params = perturb(flow.init(jax.random.key(1), x0), jax.random.key(2), 0.2)
    axis = np.linspace(-9.0, 9.0, 361)
    xx, yy = np.meshgrid(axis, axis)
    grid = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    lp = jax.jit(lambda p, x: flow.apply(p, x, method="log_prob"))(params, grid)
    mass = float(jnp.sum(jnp.exp(lp))) * (axis[1] - axis[0]) ** 2
    assert mass == pytest.approx(1.0, abs=0.01)
    # The perturbed flow is not Gaussian: its density differs from N(0, I) somewhere.
    gauss = -0.5 * jnp.sum(grid**2, 1) - math.log(2 * math.pi)
    assert float(jnp.max(jnp.abs(lp - gauss)[jnp.abs(grid).max(1) < 2])) > 0.05


def test_affine_flow_has_the_exact_gaussian_density():
    flow = Flow((ActNorm(init_scale=1.0),), (2,))
    params = {
        "params": {
            "bijectors_0": {
                "bias": jnp.array([0.5, -1.0]),
                "log_scale": jnp.log(jnp.array([2.0, 0.5])),
            }
        }
    }
    x = jax.random.normal(jax.random.key(3), (10, 2))
    lp = flow.apply(params, x)
    # z = (x + b) s ~ N(0, I)  <=>  x ~ N(-b, diag(1/s²))
    ref = jax.scipy.stats.norm.logpdf(
        x, -params["params"]["bijectors_0"]["bias"][None], jnp.array([[0.5, 2.0]])
    ).sum(1)
    np.testing.assert_allclose(lp, ref, atol=1e-5)


def test_sample_is_inverse_of_scaled_noise():
    flow = realnvp_2d(2, (8,))
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    params = perturb(flow.init(jax.random.key(0), x0), jax.random.key(1), 0.2)
    x = flow.apply(params, jax.random.key(5), 7, 0.5, method="sample")
    z = 0.5 * jax.random.normal(jax.random.key(5), (7, 2))
    np.testing.assert_allclose(x, flow.apply(params, z, method="inverse")[0], atol=1e-6)
    z_back, _ = flow.apply(params, x, method="forward")
    np.testing.assert_allclose(z_back, z, atol=1e-5)


def test_dequantized_loss_reports_bits_per_dim_of_the_nats():
    flow = MultiScaleFlow((4, 4, 1), num_scales=2, num_steps=1, hidden_channels=4, num_blocks=0)
    images = jax.random.randint(jax.random.key(0), (3, 4, 4, 1), 0, 256).astype(jnp.uint8)
    params = flow.init(jax.random.key(1), images / 256.0)
    bpd, metrics = build_dequantized_nll_loss(flow)(params, jax.random.key(2), images)
    assert float(bpd) == pytest.approx(
        float(metrics["nll_nats"]) / (16 * math.log(2)) + 8.0, rel=1e-5
    )


def test_bad_input_raises():
    flow = realnvp_2d(2, (8,))
    params = flow.init(jax.random.key(0), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        flow.apply(params, jnp.ones((4, 3)), method="log_prob")
    with pytest.raises(ValueError, match="image_shape"):
        MultiScaleFlow((6, 6, 1), num_scales=3).init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    with pytest.raises(ValueError, match="num"):
        flow.apply(params, jax.random.key(1), 0, method="sample")
