"""Tests for the shipped MNIST classifier and fid_mnist / inception_score_mnist.

Fast tests use synthetic images (no dataset in the test suite): the weights load offline,
shapes and determinism hold, and FID is 0 for identical sets. The accuracy and the
train-vs-test FID checks need the real MNIST files and are marked slow.
"""

import json
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.metrics import (
    fid_mnist,
    inception_score_mnist,
    load_mnist_classifier,
    mnist_features,
    mnist_logits,
)


@pytest.fixture(scope="module")
def params():
    return load_mnist_classifier()


def test_weights_load_offline_and_are_small(params):
    ref = resources.files("dgm_jax.metrics").joinpath("weights", "mnist_classifier.npz")
    assert len(ref.read_bytes()) < 1_000_000
    record = json.loads(
        resources.files("dgm_jax.metrics").joinpath("weights", "mnist_classifier.json").read_text()
    )
    assert record["test_accuracy"] >= 0.99
    leaves = jax.tree.leaves(params)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert sum(leaf.size for leaf in leaves) == 164_234


def test_shapes_dtypes_and_determinism(params, key):
    imgs = jax.random.uniform(key, (7, 28, 28, 1))
    logits = mnist_logits(imgs, params=params, batch_size=3)  # 3 does not divide 7
    feats = mnist_features(imgs, params=params)
    assert logits.shape == (7, 10) and feats.shape == (7, 128)
    np.testing.assert_allclose(mnist_logits(imgs, params=params), logits, rtol=1e-5, atol=1e-5)
    # uint8 input is divided by 255; (n, 28, 28) input gets a channel axis.
    u8 = (np.asarray(imgs[..., 0]) * 255).round().astype(np.uint8)
    np.testing.assert_allclose(
        mnist_features(u8, params=params),
        mnist_features(jnp.asarray(u8, jnp.float32)[..., None] / 255.0, params=params),
        rtol=1e-5,
        atol=1e-5,
    )


def test_fid_identical_is_zero_and_jits(params, key):
    imgs = jax.random.uniform(key, (64, 28, 28, 1))
    fid = jax.jit(lambda a, b: fid_mnist(a, b, params=params))(imgs, imgs)
    assert abs(float(fid)) < 1e-2
    score = inception_score_mnist(imgs, params=params)
    assert 1.0 <= float(score.mean) <= 10.0


def test_custom_feature_fn():
    a = jnp.ones((10, 3, 3, 3))
    b = jnp.zeros((10, 3, 3, 3))

    def feature_fn(x):
        return x.reshape(x.shape[0], -1)[:, :4] + jnp.arange(10.0)[:, None]

    # Means differ by 1 in 4 coordinates, covariances equal: FD = 4.
    np.testing.assert_allclose(fid_mnist(a, b, feature_fn=feature_fn), 4.0, rtol=1e-3)


def test_rejects_bad_images(params):
    with pytest.raises(ValueError, match=r"\(\*, 28, 28, 1\)"):
        mnist_features(jnp.zeros((2, 32, 32, 3)), params=params)
    with pytest.raises(ValueError, match="images"):
        fid_mnist(jnp.zeros((4, 28, 28, 1)), jnp.zeros((4, 27, 28, 1)), params=params)


def _mnist():
    from dgm_jax.data.mnist import load_mnist

    try:
        return load_mnist("train"), load_mnist("test")
    except Exception as err:  # no offline copy on this machine
        pytest.skip(f"MNIST not available: {err}")


@pytest.mark.slow
def test_accuracy_on_mnist_test(params):
    _, test = _mnist()
    logits = jax.jit(lambda x: mnist_logits(x, params=params))(test.images)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test.labels))
    assert accuracy >= 0.99


@pytest.mark.slow
def test_fid_train_vs_test_small_and_grows_with_noise(params, key):
    train, test = _mnist()
    a = jnp.asarray(train.images[:10_000], jnp.float32) / 255.0
    b = jnp.asarray(test.images, jnp.float32) / 255.0
    fid = jax.jit(lambda x, y: fid_mnist(x, y, params=params))
    base = float(fid(a, b))
    noisy = []
    for sigma in (0.1, 0.3, 0.6):
        eps = sigma * jax.random.normal(jax.random.fold_in(key, int(sigma * 10)), b.shape)
        noisy.append(float(fid(a, jnp.clip(b + eps, 0.0, 1.0))))
    # Measured with the shipped weights: train vs test ≈ 1.6 (sampling noise and the small
    # train/test shift), σ = 0.1 noise ≈ 12; much larger noise grows it further.
    assert noisy == sorted(noisy)
    assert base < 0.25 * noisy[0], (base, noisy)
    score = inception_score_mnist(b, params=params, num_splits=10)
    assert float(score.mean) > 9.0
