"""init_params: the structure, shapes and scales of Flax's default initialisers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.nn import UNet, init_params


def test_init_params_matches_flax_structure_and_scale():
    net = UNet(channels=(32,), num_res_blocks=1, attention_resolutions=(), num_classes=10)
    args = (jnp.zeros((1, 28, 28, 1)), jnp.zeros(1), jnp.zeros(1, jnp.int32))
    params = init_params(jax.random.key(0), net, *args)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), *args))
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    assert jax.tree.map(lambda p: p.shape, params) == jax.tree.map(lambda s: s.shape, shapes)
    p = params["params"]
    conv = p["ResBlock_0"]["Conv_0"]["kernel"]  # (3, 3, 32, 32): fan-in 288, 9,216 draws
    # sd of the sample sd is about sd / sqrt(2 n): 0.7 %; allow 5 %.
    assert float(jnp.std(conv)) == pytest.approx(1 / math.sqrt(288), rel=0.05)
    query = p["AttentionBlock_0"]["MultiHeadDotProductAttention_0"]["query"]["kernel"]
    assert float(jnp.std(query)) == pytest.approx(1 / math.sqrt(32), rel=0.1)
    assert float(jnp.max(jnp.abs(conv))) <= 2 / 0.8796 / math.sqrt(288) + 1e-6  # truncated
    assert not np.any(p["ResBlock_0"]["Conv_0"]["bias"])  # biases 0, norm scales 1
    assert np.all(p["ResBlock_0"]["GroupNorm_0"]["scale"] == 1.0)
