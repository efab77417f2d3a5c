import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import nn


def test_sinusoidal_embedding_values_and_shape():
    t = jnp.array([0.0, 1.0, 5.0])
    e = nn.sinusoidal_embedding(t, 8)
    assert e.shape == (3, 8)
    freqs = 10_000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(e[:, :4], np.sin(np.asarray(t)[:, None] * freqs[None]), atol=1e-6)
    np.testing.assert_allclose(e[:, 4:], np.cos(np.asarray(t)[:, None] * freqs[None]), atol=1e-6)


def test_embedding_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        nn.sinusoidal_embedding(jnp.zeros(3), 7)


def test_fourier_frequencies_are_not_trained():
    emb = nn.GaussianFourierEmbedding(8)
    params = emb.init(jax.random.key(0), jnp.zeros(2))
    grads = jax.grad(lambda p: emb.apply(p, jnp.array([0.3, 0.7])).sum())(params)
    assert float(jnp.abs(grads["params"]["frequencies"]).max()) == 0.0


def test_time_conditioned_mlp_depends_on_time_and_batches():
    net = nn.TimeConditionedMLP((16, 16), time_embedding_dim=8)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    params = net.init(jax.random.key(0), x, jnp.zeros(5))
    out0 = net.apply(params, x, jnp.zeros(5))
    out1 = net.apply(params, x, jnp.full(5, 10.0))
    assert out0.shape == (5, 3)
    assert not np.allclose(out0, out1)
    # Row i of a batch equals the network applied to example i alone.
    single = net.apply(params, x[2:3], jnp.zeros(1))
    np.testing.assert_allclose(out0[2:3], single, rtol=1e-5, atol=1e-6)
