"""Embeddings of a scalar time (or noise level) for conditioning networks.

Both embeddings map a time of shape ``(*batch,)`` to features of shape
``(*batch, dim)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_positive
from dgm_jax.types import Array, Float

__all__ = ["GaussianFourierEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(
    t: Float[Array, "*batch"], dim: int, *, max_period: float = 10_000.0
) -> Float[Array, "*batch dim"]:
    """Transformer-style sinusoidal features of a scalar time.

    Follows Vaswani et al. (2017), as used for diffusion time steps by Ho et al.
    (2020): half the features are ``sin(t * f_k)`` and half ``cos(t * f_k)`` with
    frequencies ``f_k = max_period ** (-k / (dim / 2))`` spaced geometrically.

    Args:
        t: times, any shape; integer steps or continuous times (scale continuous
            times in [0, 1] up, e.g. by 1000, so the high frequencies are used).
        dim: number of output features; must be even and >= 2.
        max_period: the longest period of the features.

    Returns:
        Features of shape ``t.shape + (dim,)``.

    Examples:
        >>> sinusoidal_embedding(jnp.arange(3.0), 8).shape
        (3, 8)
    """
    check_int("dim", dim, minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    check_positive("max_period", max_period)
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    t = jnp.asarray(t, jnp.float32)
    angles = t[..., None] * freqs.reshape((1,) * t.ndim + (half,))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar time with fixed (untrained) frequencies.

    Following Tancik et al. (2020) and Song et al. (2021, score SDEs): frequencies
    are drawn once from ``N(0, scale²)`` at initialisation and held fixed by a
    ``stop_gradient``.

    Attributes:
        dim: number of output features (even).
        scale: standard deviation of the frequencies.

    Examples:
        >>> emb = GaussianFourierEmbedding(16)
        >>> params = emb.init(jax.random.key(0), jnp.zeros(4))
        >>> emb.apply(params, jnp.zeros(4)).shape
        (4, 16)
    """

    dim: int
    scale: float = 16.0

    @nn.compact
    def __call__(self, t: Float[Array, "*batch"]) -> Float[Array, "*batch dim"]:
        check_int("dim", self.dim, minimum=2)
        if self.dim % 2:
            raise ValueError(f"dim must be even, got {self.dim}")
        w = self.param(
            "frequencies",
            lambda key, shape: self.scale * jax.random.normal(key, shape),
            (self.dim // 2,),
        )
        t = jnp.asarray(t, jnp.float32)
        w = jax.lax.stop_gradient(w).reshape((1,) * t.ndim + w.shape)
        angles = 2.0 * jnp.pi * t[..., None] * w
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
