"""The U-Net: shapes, conditioning, parameter count, jit, and a few training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgm_jax import diffusion
from dgm_jax.nn import UNET_MNIST_5M, UNet

TINY = {"channels": (8, 16, 16), "num_res_blocks": 1, "attention_resolutions": (7,)}


def fast_init(key, net, *args):
    """Parameters shaped as ``net.init`` makes them, drawn with one random call.

    Flax's ``init`` draws each parameter with its own threefry call, which takes 20-40 s
    to compile for these nets on a shared 2-core CPU; the tests only need the shapes
    and a sensible scale: kernels and embeddings ~ N(0, 1/fan_in), norms' scales 1,
    biases 0.
    """
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), *args))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    flat = jax.random.normal(key, (sum(leaf.size for _, leaf in leaves),))
    out, start = [], 0
    for path, leaf in leaves:
        name = str(path[-1])
        if "bias" in name:
            value = jnp.zeros(leaf.shape)
        elif "scale" in name:
            value = jnp.ones(leaf.shape)
        else:
            fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 1
            value = flat[start : start + leaf.size].reshape(leaf.shape) / np.sqrt(fan_in)
        start += leaf.size
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


def num_params(params):
    return sum(p.size for p in jax.tree_util.tree_leaves(params))


def test_output_shape_and_class_conditioning_on_28x28():
    net = UNet(**TINY, num_classes=10, norm_groups=4)
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
    t = jnp.array([0.0, 10.0, 999.0])
    labels = jnp.array([0, 5, 10])  # 10 is the null label

    params = fast_init(jax.random.key(0), net, x, t, labels)
    apply = jax.jit(net.apply)  # one compilation for all the calls with labels
    out = apply(params, x, t, labels)
    other_labels = apply(params, x, t, jnp.array([1, 6, 0]))
    later = apply(params, x, t + 50.0, labels)
    assert out.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out, other_labels)  # the class changes the output
    assert not np.allclose(out, later)  # and so does the time


def test_parameter_counts():
    # Counted from shapes only (no initialisation compute).
    x, t = jnp.zeros((1, 28, 28, 1)), jnp.zeros(1)

    def count(net):
        return num_params(jax.eval_shape(lambda: net.init(jax.random.key(0), x, t)))

    assert count(UNet()) == 1_623_169  # the default (32, 64, 64), 2 blocks, attention at 7
    # FACTS.md's MNIST U-Net (64/128/128, 2 blocks, attention at 7x7): ~5.8M quoted there.
    assert count(UNet(**UNET_MNIST_5M)) == 6_469_889
    # The class table adds (num_classes + 1) x embedding width.
    assert count(UNet(num_classes=10)) - count(UNet()) == 11 * 128


def test_tiny_unet_learns_on_a_fixed_batch():
    # A few Adam steps on the DDPM loss with a fixed key (same t and noise each step, so
    # the loss is a deterministic function of the parameters) must lower it.
    schedule = diffusion.linear_schedule(100, 1e-3, 0.2)
    net = UNet(channels=(8, 8), num_res_blocks=1, attention_resolutions=(4,), norm_groups=4)
    x0 = jnp.tanh(jax.random.normal(jax.random.key(2), (8, 8, 8, 1)))
    params = fast_init(jax.random.key(0), net, x0, jnp.zeros(8))
    optimizer = optax.adam(3e-3)
    loss_key = jax.random.key(3)

    def loss_fn(p):
        return diffusion.ddpm_loss(lambda x, t: net.apply(p, x, t), schedule, loss_key, x0)[0]

    @jax.jit
    def step(p, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for _ in range(10):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]


def test_dropout_and_null_label_on_a_small_net():
    net = UNet(channels=(8, 8), num_res_blocks=1, attention_resolutions=(4,), dropout=0.5,
               num_classes=3, norm_groups=4)  # fmt: skip
    x, t = jax.random.normal(jax.random.key(1), (2, 8, 8, 1)), jnp.zeros(2)
    params = fast_init(jax.random.key(0), net, x, t)

    @jax.jit
    def run(params):
        def drop(k):
            return net.apply(params, x, t, train=True, rngs={"dropout": jax.random.key(k)})

        null = jnp.full(2, 3)
        return drop(1), drop(2), net.apply(params, x, t), net.apply(params, x, t, null)

    a, b, unconditional, null_label = run(params)
    assert not np.allclose(a, b)  # dropout is random with train=True
    # Without labels a class-conditional net predicts with the null label, deterministically.
    np.testing.assert_array_equal(unconditional, null_label)


def test_bad_input_is_rejected():
    x, t = jnp.zeros((2, 28, 28, 1)), jnp.zeros(2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(**TINY).init(key, jnp.zeros((2, 30, 30, 1)), t)
    with pytest.raises(ValueError, match="x must have shape"):
        UNet(**TINY).init(key, jnp.zeros((2, 28, 28)), t)
    with pytest.raises(ValueError, match="t must have shape"):
        UNet(**TINY).init(key, x, jnp.zeros(3))
    with pytest.raises(ValueError, match="num_classes=None"):
        UNet(**TINY).init(key, x, t, jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="labels must have shape"):
        UNet(**TINY, num_classes=10).init(key, x, t, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="dropout"):
        UNet(**TINY, dropout=1.5).init(key, x, t)


def test_bfloat16_compute_keeps_float32_parameters_and_output():
    # dtype=bfloat16 changes the computation, not the parameters: the same parameter tree
    # serves both, the output comes back in x's dtype and agrees with float32 to bf16
    # precision (8 mantissa bits: relative error ~1e-2 after a few layers).
    kwargs = {"channels": (8, 8), "num_res_blocks": 1, "attention_resolutions": (4,)}
    net32 = UNet(**kwargs, norm_groups=4)
    net16 = UNet(**kwargs, norm_groups=4, dtype=jnp.bfloat16)
    x, t = jax.random.normal(jax.random.key(1), (2, 8, 8, 1)), jnp.array([3.0, 70.0])
    params = fast_init(jax.random.key(0), net32, x, t)
    shapes16 = jax.eval_shape(lambda: net16.init(jax.random.key(0), x, t))
    assert jax.tree.structure(shapes16) == jax.tree.structure(params)
    assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(shapes16))
    out32, out16 = jax.jit(net32.apply)(params, x, t), jax.jit(net16.apply)(params, x, t)
    assert out16.dtype == jnp.float32 and out16.shape == x.shape
    scale = float(jnp.sqrt(jnp.mean(out32**2)))
    assert float(jnp.max(jnp.abs(out16 - out32))) < 0.1 * scale
    assert not np.array_equal(out16, out32)  # bf16 was really used
