"""Encoders and decoders for VAEs: MLPs and small convolutional nets for 28×28 images.

Encoders map ``x`` of shape ``(batch, *event)`` to ``(mean, log_scale)`` of a diagonal
Gaussian ``q(z | x)``, each ``(batch, latent_dim)``. Decoders map ``z`` of shape
``(batch, latent_dim)`` to what a :class:`dgm_jax.vae.Likelihood` reads: with
``num_outputs=1`` one array of shape ``(batch, *event)`` (Bernoulli logits, or a Gaussian
mean with fixed variance), with ``num_outputs=2`` a pair ``(loc, log_scale)`` (learned
Gaussian, discretized logistic). Pass ``likelihood.num_outputs``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> enc, dec = MLPEncoder(latent_dim=8), MLPDecoder(event_shape=(28, 28, 1))
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> pe = enc.init(jax.random.key(0), x)
    >>> mean, log_scale = enc.apply(pe, x)
    >>> pd = dec.init(jax.random.key(1), mean)
    >>> dec.apply(pd, mean).shape
    (2, 28, 28, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn

from dgm_jax.types import Array, Float

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]


def _check_latent_dim(latent_dim: int) -> None:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int):
        raise TypeError(f"latent_dim must be an int, got {type(latent_dim).__name__}")
    if latent_dim <= 0:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")


def _check_num_outputs(num_outputs: int) -> None:
    if num_outputs not in (1, 2):
        raise ValueError(
            f"num_outputs must be 1 (one array) or 2 ((loc, log_scale)), got {num_outputs!r}"
        )


def _split_outputs(h: Array, num_outputs: int, shape: tuple[int, ...]) -> Array | tuple:
    """``(batch, num_outputs · prod(shape))`` -> one array or a pair of ``(batch, *shape)``."""
    h = h.reshape(h.shape[0], num_outputs, *shape)
    if num_outputs == 1:
        return h[:, 0]
    return h[:, 0], h[:, 1]


class MLPEncoder(nn.Module):
    """A fully connected Gaussian encoder: flatten, hidden layers, ``(mean, log_scale)``.

    Attributes:
        latent_dim: size of ``z``, ``>= 1``.
        hidden_sizes: hidden widths (Burda et al. 2016 use ``(200, 200)`` with tanh).
        activation: nonlinearity.

    Examples:
        >>> import jax
        >>> enc = MLPEncoder(latent_dim=2, hidden_sizes=(16,))
        >>> p = enc.init(jax.random.key(0), jnp.zeros((3, 5)))
        >>> [a.shape for a in enc.apply(p, jnp.zeros((3, 5)))]
        [(3, 2), (3, 2)]
    """

    latent_dim: int
    hidden_sizes: Sequence[int] = (500, 500)
    activation: Callable[[Array], Array] = nn.tanh

    def __post_init__(self):
        _check_latent_dim(self.latent_dim)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Float[Array, " batch *event"]) -> tuple[Array, Array]:
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden_sizes:
            h = self.activation(nn.Dense(width)(h))
        mean = nn.Dense(self.latent_dim, name="mean")(h)
        log_scale = nn.Dense(self.latent_dim, name="log_scale")(h)
        return mean, log_scale


class MLPDecoder(nn.Module):
    """A fully connected decoder to ``num_outputs`` arrays of shape ``(batch, *event_shape)``.

    Attributes:
        event_shape: shape of one data point, e.g. ``(28, 28, 1)``.
        hidden_sizes: hidden widths.
        num_outputs: 1 or 2 (see the module docstring).
        activation: nonlinearity.

    Examples:
        >>> import jax
        >>> dec = MLPDecoder(event_shape=(4,), hidden_sizes=(8,), num_outputs=2)
        >>> p = dec.init(jax.random.key(0), jnp.zeros((3, 2)))
        >>> [a.shape for a in dec.apply(p, jnp.zeros((3, 2)))]
        [(3, 4), (3, 4)]
    """

    event_shape: Sequence[int]
    hidden_sizes: Sequence[int] = (500, 500)
    num_outputs: int = 1
    activation: Callable[[Array], Array] = nn.tanh

    def __post_init__(self):
        _check_num_outputs(self.num_outputs)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Float[Array, "batch latent"]) -> Array | tuple[Array, Array]:
        h = z
        for width in self.hidden_sizes:
            h = self.activation(nn.Dense(width)(h))
        shape = tuple(self.event_shape)
        h = nn.Dense(self.num_outputs * math.prod(shape))(h)
        return _split_outputs(h, self.num_outputs, shape)


class ConvEncoder(nn.Module):
    """A small convolutional encoder for ``(batch, H, W, C)`` images (e.g. 28×28×1).

    Two 3×3 stride-2 convolutions (28 → 14 → 7), a dense hidden layer and the Gaussian
    head. ``H`` and ``W`` must be divisible by 4.

    Attributes:
        latent_dim: size of ``z``, ``>= 1``.
        features: channels of the two convolutions.
        hidden_size: width of the dense layer.
        activation: nonlinearity.

    Examples:
        >>> import jax
        >>> enc = ConvEncoder(latent_dim=4, features=(8, 16), hidden_size=32)
        >>> x = jnp.zeros((2, 28, 28, 1))
        >>> p = enc.init(jax.random.key(0), x)
        >>> enc.apply(p, x)[0].shape
        (2, 4)
    """

    latent_dim: int
    features: Sequence[int] = (32, 64)
    hidden_size: int = 256
    activation: Callable[[Array], Array] = nn.silu

    def __post_init__(self):
        _check_latent_dim(self.latent_dim)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Float[Array, "batch height width channels"]) -> tuple[Array, Array]:
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(
                f"ConvEncoder needs images (batch, H, W, C) with H, W divisible by 4, got {x.shape}"
            )
        h = x
        for channels in self.features[:2]:
            h = self.activation(nn.Conv(channels, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = h.reshape(h.shape[0], -1)
        h = self.activation(nn.Dense(self.hidden_size)(h))
        mean = nn.Dense(self.latent_dim, name="mean")(h)
        log_scale = nn.Dense(self.latent_dim, name="log_scale")(h)
        return mean, log_scale


class ConvDecoder(nn.Module):
    """A small transposed-convolution decoder to ``(batch, H, W, C)`` images.

    Dense layers to a ``(H/4, W/4, features[1])`` map, two 3×3 stride-2 transposed
    convolutions (7 → 14 → 28) and a 3×3 convolution to ``num_outputs · C`` channels.

    Attributes:
        image_shape: ``(H, W, C)`` with ``H`` and ``W`` divisible by 4.
        features: channels of the two upsampling stages, coarsest last.
        hidden_size: width of the first dense layer.
        num_outputs: 1 or 2 (see the module docstring).
        activation: nonlinearity.

    Examples:
        >>> import jax
        >>> dec = ConvDecoder(features=(8, 16), hidden_size=32, num_outputs=2)
        >>> p = dec.init(jax.random.key(0), jnp.zeros((2, 4)))
        >>> [a.shape for a in dec.apply(p, jnp.zeros((2, 4)))]
        [(2, 28, 28, 1), (2, 28, 28, 1)]
    """

    image_shape: Sequence[int] = (28, 28, 1)
    features: Sequence[int] = (32, 64)
    hidden_size: int = 256
    num_outputs: int = 1
    activation: Callable[[Array], Array] = nn.silu

    def __post_init__(self):
        _check_num_outputs(self.num_outputs)
        height, width, _ = self.image_shape
        if height % 4 or width % 4:
            raise ValueError(
                f"image_shape height and width must be divisible by 4, got {self.image_shape}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Float[Array, "batch latent"]) -> Array | tuple[Array, Array]:
        height, width, channels = self.image_shape
        fine, coarse = self.features[0], self.features[1]
        h = self.activation(nn.Dense(self.hidden_size)(z))
        h = self.activation(nn.Dense((height // 4) * (width // 4) * coarse)(h))
        h = h.reshape(z.shape[0], height // 4, width // 4, coarse)
        h = self.activation(nn.ConvTranspose(fine, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = self.activation(nn.ConvTranspose(fine, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = nn.Conv(self.num_outputs * channels, (3, 3), padding="SAME")(h)
        h = h.reshape(z.shape[0], height, width, self.num_outputs, channels)
        if self.num_outputs == 1:
            return h[..., 0, :]
        return h[..., 0, :], h[..., 1, :]
