"""The MNIST feature network and the "Fréchet LeNet-style distance" built on it.

A small LeNet-style convolutional classifier (three 2×2-pooled conv layers, a
128-unit ReLU feature layer, 10 logits) trained on MNIST by
``experiments/mnist_classifier.py``; its weights ship with the package in
``dgm_jax/metrics/weights/mnist_classifier.npz`` (with the measured test
accuracy in ``mnist_classifier.json``) and load with no network.

**These are not Inception-v3 FIDs.** :func:`fid_mnist` is the Fréchet distance
between Gaussians fitted to the 128-d penultimate features of *this* network
(a "Fréchet LeNet-style distance", as in many MNIST papers), and
:func:`inception_score_mnist` the Inception Score computed from *its* logits.
Numbers are comparable only with other numbers computed by this network and
these weights. To use another network (e.g. an Inception-v3 port), pass
``feature_fn`` / ``logit_fn``.

Reading the weight file is the one piece of file I/O in ``dgm_jax.metrics``
(package data, done in :func:`load_mnist_classifier`); every other function here
is pure and jit-compatible.

Examples:
    >>> import jax.numpy as jnp
    >>> params = load_mnist_classifier()
    >>> mnist_logits(jnp.zeros((3, 28, 28, 1)), params=params).shape
    (3, 10)
"""

from __future__ import annotations

import importlib.resources
import io
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from dgm_jax._validate import check_int, check_shape
from dgm_jax.metrics.features import (
    ScoreWithStd,
    frechet_distance_from_features,
    inception_score,
)
from dgm_jax.types import Array, Float, Params, Scalar

__all__ = [
    "FEATURE_DIM",
    "MNIST_MEAN",
    "MNIST_STD",
    "WEIGHTS_FILE",
    "MnistClassifier",
    "fid_mnist",
    "inception_score_mnist",
    "load_mnist_classifier",
    "mnist_features",
    "mnist_logits",
    "params_from_flat",
    "params_to_flat",
]

FEATURE_DIM = 128
MNIST_MEAN = 0.1307  # pixel mean of the MNIST training set, values in [0, 1]
MNIST_STD = 0.3081  # pixel standard deviation of the MNIST training set
WEIGHTS_FILE = "mnist_classifier.npz"


class MnistClassifier(nn.Module):
    """LeNet-style CNN: ``(..., 28, 28, 1)`` images in [0, 1] -> (logits, features).

    conv5×5(16)-ReLU-pool, conv5×5(32)-ReLU-pool, conv3×3(64)-ReLU-pool (7→4, SAME),
    dense(128)-ReLU (the features), dense(10) (the logits). About 164k parameters.
    """

    num_classes: int = 10
    feature_dim: int = FEATURE_DIM

    @nn.compact
    def __call__(self, images: Float[Array, "b 28 28 1"]) -> tuple[Array, Array]:
        x = (images - MNIST_MEAN) / MNIST_STD
        for feats, size in ((16, 5), (32, 5), (64, 3)):
            x = nn.Conv(feats, (size, size), padding="SAME")(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        x = x.reshape((*x.shape[:-3], -1))
        features = nn.relu(nn.Dense(self.feature_dim)(x))
        logits = nn.Dense(self.num_classes)(features)
        return logits, features


def params_to_flat(params: Params) -> dict[str, np.ndarray]:
    """Flatten a Flax parameter tree to ``{"Conv_0/kernel": array, ...}`` for ``np.savez``."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


def params_from_flat(flat: dict[str, Any]) -> Params:
    """Inverse of :func:`params_to_flat` (arrays become ``jnp`` float32)."""
    return traverse_util.unflatten_dict(
        {k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}, sep="/"
    )


def load_mnist_classifier() -> Params:
    """Load the shipped weights of :class:`MnistClassifier` (offline, package data).

    Returns:
        The Flax parameter tree (``{"params": ...}``), float32.

    Raises:
        FileNotFoundError: if the package was installed without its data files.

    Examples:
        >>> params = load_mnist_classifier()
        >>> params["params"]["Dense_0"]["kernel"].shape
        (1024, 128)
    """
    ref = importlib.resources.files("dgm_jax.metrics").joinpath("weights", WEIGHTS_FILE)
    if not ref.is_file():
        raise FileNotFoundError(
            f"MNIST classifier weights not found at {ref}; regenerate them with "
            "`python -m experiments run mnist_classifier --set export_weights=true`"
        )
    with np.load(io.BytesIO(ref.read_bytes())) as data:
        flat = {k: data[k] for k in data.files}
    return params_from_flat(flat)


def _check_images(name: str, images: Any) -> None:
    shape = np.shape(images)
    if len(shape) == 3:
        check_shape(name, images, (None, 28, 28))
    else:
        check_shape(name, images, (None, 28, 28, 1))


def _prepare(images: Any) -> Array:
    x = jnp.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def _apply_batched(params: Params, images: Array, batch_size: int) -> tuple[Array, Array]:
    n = images.shape[0]
    b = min(batch_size, n)
    nb = -(-n // b)
    pad = nb * b - n
    xp = jnp.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))).reshape(nb, b, 28, 28, 1)
    logits, feats = lax.map(lambda xb: MnistClassifier().apply(params, xb), xp)
    return logits.reshape(nb * b, -1)[:n], feats.reshape(nb * b, -1)[:n]


def mnist_logits(
    images: Float[Array, "n 28 28 1"],
    *,
    params: Params | None = None,
    batch_size: int = 500,
) -> Float[Array, "n 10"]:
    """Class logits of the shipped MNIST classifier.

    Args:
        images: ``(n, 28, 28, 1)`` or ``(n, 28, 28)`` images, floats in [0, 1] or
            ``uint8`` in [0, 255] (divided by 255).
        params: classifier parameters; default :func:`load_mnist_classifier` (read
            from disk, so pass them explicitly inside ``jit``).
        batch_size: static batch size of the ``lax.map`` over the images.

    Returns:
        ``(n, 10)`` logits.

    Examples:
        >>> import jax.numpy as jnp
        >>> mnist_logits(jnp.zeros((2, 28, 28))).shape
        (2, 10)
    """
    _check_images("images", images)
    check_int("batch_size", batch_size, minimum=1)
    params = load_mnist_classifier() if params is None else params
    return _apply_batched(params, _prepare(images), batch_size)[0]


def mnist_features(
    images: Float[Array, "n 28 28 1"],
    *,
    params: Params | None = None,
    batch_size: int = 500,
) -> Float[Array, "n 128"]:
    """128-d penultimate (post-ReLU) features of the shipped MNIST classifier.

    Args and conventions as :func:`mnist_logits`.

    Returns:
        ``(n, 128)`` features.

    Examples:
        >>> import jax.numpy as jnp
        >>> mnist_features(jnp.zeros((2, 28, 28, 1))).shape
        (2, 128)
    """
    _check_images("images", images)
    check_int("batch_size", batch_size, minimum=1)
    params = load_mnist_classifier() if params is None else params
    return _apply_batched(params, _prepare(images), batch_size)[1]


def fid_mnist(
    images_a: Any,
    images_b: Any,
    *,
    feature_fn: Callable[[Array], Array] | None = None,
    params: Params | None = None,
) -> Scalar:
    """Fréchet LeNet-style distance between two sets of MNIST-like images.

    The Fréchet distance (Heusel et al., 2017) between Gaussians fitted to the
    features of ``images_a`` and ``images_b``. With the default ``feature_fn`` the
    features are the 128-d penultimate layer of the shipped MNIST classifier: this
    is **not** an Inception-v3 FID and is not comparable with published CIFAR/ImageNet
    FIDs. Supply ``feature_fn`` (``images -> (n, k)`` features, e.g. an Inception-v3
    pool3 port) to use another network; then the image shapes are not checked here.

    Args:
        images_a: ``(n, 28, 28, 1)`` images (floats in [0, 1] or uint8).
        images_b: ``(m, 28, 28, 1)`` images.
        feature_fn: optional feature extractor.
        params: classifier parameters for the default features.

    Returns:
        Scalar distance (float32; see :func:`frechet_distance` for the tolerance).

    Examples:
        >>> import jax
        >>> imgs = jax.random.uniform(jax.random.key(0), (64, 28, 28, 1))
        >>> float(fid_mnist(imgs, imgs)) < 1e-2
        True
    """
    if feature_fn is None:
        params = load_mnist_classifier() if params is None else params
        fa = mnist_features(images_a, params=params)
        fb = mnist_features(images_b, params=params)
    else:
        fa, fb = feature_fn(images_a), feature_fn(images_b)
    return frechet_distance_from_features(fa, fb)


def inception_score_mnist(
    images: Any,
    *,
    logit_fn: Callable[[Array], Array] | None = None,
    params: Params | None = None,
    num_splits: int = 1,
) -> ScoreWithStd:
    """Inception Score (Salimans et al., 2016) from the MNIST classifier's logits.

    ``exp(E_x KL(p(y|x) || p(y)))``; between 1 and 10 for MNIST, the real test set
    scores close to 10. Not an Inception-v3 score; pass ``logit_fn`` for another
    classifier.

    Args:
        images: ``(n, 28, 28, 1)`` images.
        logit_fn: optional ``images -> (n, classes)`` logits.
        params: classifier parameters for the default logits.
        num_splits: number of splits for the mean ± std (see :func:`inception_score`).

    Returns:
        :class:`~dgm_jax.metrics.features.ScoreWithStd`.

    Examples:
        >>> import jax
        >>> imgs = jax.random.uniform(jax.random.key(0), (20, 28, 28, 1))
        >>> float(inception_score_mnist(imgs).mean) >= 1.0
        True
    """
    if logit_fn is None:
        logits = mnist_logits(images, params=load_mnist_classifier() if params is None else params)
    else:
        logits = logit_fn(images)
    return inception_score(logits, num_splits=num_splits)
