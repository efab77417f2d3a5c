"""A DDPM-style U-Net for small images, with time and optional class conditioning.

Follows Ho et al. (2020, App. B) and the improvements of Nichol & Dhariwal (2021) in
their simplest form: a sinusoidal time embedding passed through a two-layer MLP; residual
blocks ``GroupNorm → SiLU → conv → (+ embedding) → GroupNorm → SiLU → dropout → conv``
with a 1×1 skip projection when the width changes; self-attention at the listed
resolutions; strided-conv downsampling and nearest-neighbour upsampling; skip
connections from every down-path block to the matching up-path block.

Class conditioning adds a learned class embedding to the time embedding; the embedding
table has ``num_classes + 1`` rows, the last one the *null label* ``num_classes`` used for
unconditional predictions in classifier-free guidance
(:func:`dgm_jax.diffusion.classifier_free_guidance`).

Inputs are NHWC: ``x`` of shape ``(batch, height, width, channels)``; the output has the
same shape. Height and width must be divisible by ``2 ** (len(channels) - 1)``
(28 → 14 → 7 with the default three levels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dgm_jax.nn.embeddings import sinusoidal_embedding
from dgm_jax.types import Array, Float, Int

__all__ = ["UNET_MNIST_5M", "AttentionBlock", "ResBlock", "UNet"]


def _group_norm(channels: int, max_groups: int, dtype: Any = jnp.float32) -> nn.GroupNorm:
    # The largest number of groups <= max_groups that divides the width. Flax computes the
    # statistics in float32 whatever ``dtype`` is.
    return nn.GroupNorm(num_groups=math.gcd(channels, max_groups), dtype=dtype)


class ResBlock(nn.Module):
    """A residual block with an additive (time + class) embedding.

    Attributes:
        channels: output width.
        dropout: dropout rate before the second convolution.
        norm_groups: maximum number of GroupNorm groups.
        dtype: computation dtype (parameters stay float32).
    """

    channels: int
    dropout: float = 0.0
    norm_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, emb: Array, *, train: bool) -> Array:
        dt = self.dtype
        h = nn.silu(_group_norm(x.shape[-1], self.norm_groups, dt)(x))
        h = nn.Conv(self.channels, (3, 3), dtype=dt)(h)
        h = h + nn.Dense(self.channels, dtype=dt)(nn.silu(emb))[:, None, None, :]
        h = nn.silu(_group_norm(self.channels, self.norm_groups, dt)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.channels, (3, 3), dtype=dt)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), dtype=dt)(x)
        return x + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the spatial positions, with a residual connection.

    Attributes:
        num_heads: attention heads (must divide the width).
        norm_groups: maximum number of GroupNorm groups.
        dtype: computation dtype (parameters stay float32).
    """

    num_heads: int = 1
    norm_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        h = _group_norm(channels, self.norm_groups, self.dtype)(x)
        h = h.reshape(batch, height * width, channels)
        h = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(h, h)
        return x + h.reshape(batch, height, width, channels)


class UNet(nn.Module):
    """A U-Net ``(x, t[, labels]) -> output`` shaped like ``x`` for diffusion on images.

    Attributes:
        channels: width at each resolution level; level ``i`` runs at
            ``size / 2**i``. The default ``(32, 64, 64)`` has 1,623,169 parameters;
            :data:`UNET_MNIST_5M` is the ~5.8M-parameter MNIST configuration.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: spatial sizes (height) at which self-attention is used,
            e.g. ``(7,)`` for 28×28 inputs; the bottleneck always has one.
        num_classes: number of classes for class conditioning, or ``None`` for an
            unconditional network. The null label ``num_classes`` means "no class".
        dropout: dropout rate in the residual blocks (active with ``train=True``, which
            needs a ``"dropout"`` RNG).
        time_embedding_dim: width of the time (and class) embedding; defaults to
            ``4 * channels[0]``.
        num_heads: attention heads.
        norm_groups: maximum number of GroupNorm groups (32 in the paper).
        time_scale: ``t`` is multiplied by this before the sinusoidal embedding (1 for
            integer steps, about 1000 for continuous times in [0, 1]).
        dtype: computation dtype of the convolutions, dense layers and attention, e.g.
            ``jnp.bfloat16`` for mixed precision on GPU; parameters, the sinusoidal
            embedding and the normalisation statistics stay float32, and the output is
            cast back to the dtype of ``x``. Default float32.

    On CPU, ``init`` is slow to compile for the larger configurations (Flax draws each
    parameter with its own random call); initialise once and checkpoint, or build the
    parameters from ``jax.eval_shape(net.init, ...)`` when only shapes are needed.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> net = UNet(channels=(8, 16), num_res_blocks=1, attention_resolutions=(4,),
        ...            num_classes=10)
        >>> x, t, y = jnp.zeros((2, 8, 8, 1)), jnp.zeros(2), jnp.array([3, 10])
        >>> params = net.init(jax.random.key(0), x, t, y)
        >>> net.apply(params, x, t, y).shape
        (2, 8, 8, 1)
    """

    channels: Sequence[int] = (32, 64, 64)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] = (7,)
    num_classes: int | None = None
    dropout: float = 0.0
    time_embedding_dim: int | None = None
    num_heads: int = 1
    norm_groups: int = 32
    time_scale: float = 1.0
    dtype: Any = jnp.float32

    def _check(self, x, t, labels) -> None:
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ValueError(
                f"channels must be a non-empty sequence of positive widths, got {self.channels}"
            )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if x.ndim != 4:
            raise ValueError(f"x must have shape (batch, height, width, channels), got {x.shape}")
        factor = 2 ** (len(self.channels) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"height and width must be divisible by {factor} for {len(self.channels)} "
                f"levels, got {x.shape[1:3]}"
            )
        if jnp.shape(t) != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {jnp.shape(t)}")
        if self.num_classes is None and labels is not None:
            raise ValueError("labels were given but the UNet has num_classes=None")
        if labels is not None and jnp.shape(labels) != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {jnp.shape(labels)}")

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "batch height width channels"],
        t: Float[Array, " batch"],
        labels: Int[Array, " batch"] | None = None,
        *,
        train: bool = False,
    ) -> Float[Array, "batch height width channels"]:
        """Predict a tensor shaped like ``x`` (ε, x̂_0 or v: the loss decides).

        Args:
            x: noisy images, ``(batch, height, width, channels)``.
            t: the step or time of each example, ``(batch,)``.
            labels: integer classes ``(batch,)`` in ``[0, num_classes]`` (the last is the
                null label); ``None`` means unconditional (all null labels) when the
                network is class-conditional.
            train: enables dropout.
        """
        self._check(x, t, labels)
        ch0 = self.channels[0]
        emb_dim = self.time_embedding_dim or 4 * ch0
        t = jnp.asarray(t, jnp.float32) * self.time_scale
        emb = sinusoidal_embedding(t, ch0 + ch0 % 2)  # the embedding needs an even width
        dt = self.dtype
        emb = nn.Dense(emb_dim, dtype=dt)(nn.silu(nn.Dense(emb_dim, dtype=dt)(emb)))
        if self.num_classes is not None:
            if labels is None:
                labels = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
            emb = emb + nn.Embed(self.num_classes + 1, emb_dim, dtype=dt)(labels)

        def block(h, width):
            return ResBlock(width, self.dropout, self.norm_groups, dt)(h, emb, train=train)

        def attention(h):
            return AttentionBlock(self.num_heads, self.norm_groups, dt)(h)

        h = nn.Conv(ch0, (3, 3), dtype=dt)(x)
        skips = [h]
        for level, width in enumerate(self.channels):
            for _ in range(self.num_res_blocks):
                h = block(h, width)
                if h.shape[1] in self.attention_resolutions:
                    h = attention(h)
                skips.append(h)
            if level < len(self.channels) - 1:
                h = nn.Conv(width, (3, 3), strides=(2, 2), dtype=dt)(h)
                skips.append(h)

        h = block(h, self.channels[-1])
        h = attention(h)
        h = block(h, self.channels[-1])

        for level, width in reversed(list(enumerate(self.channels))):
            for _ in range(self.num_res_blocks + 1):
                h = block(jnp.concatenate([h, skips.pop()], axis=-1), width)
                if h.shape[1] in self.attention_resolutions:
                    h = attention(h)
            if level > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest neighbour
                h = nn.Conv(h.shape[-1], (3, 3), dtype=dt)(h)

        h = nn.silu(_group_norm(h.shape[-1], self.norm_groups, dt)(h))
        return nn.Conv(x.shape[-1], (3, 3), dtype=dt)(h).astype(x.dtype)


UNET_MNIST_5M = {"channels": (64, 128, 128), "num_res_blocks": 2, "attention_resolutions": (7,)}
"""The MNIST configuration of FACTS.md's reference U-Net, for 28×28×1 images:
``UNet(**UNET_MNIST_5M)`` (widths 64/128/128, two residual blocks per level, attention at
7×7). It has 6,469,889 parameters here (FACTS.md quotes ~5.8M for its twin, whose
up/downsampling layers are not specified; ours use 3×3 convolutions in both)."""
