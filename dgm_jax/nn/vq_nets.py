"""Convolutional encoder and decoder of a VQ-VAE for 28×28 images (7×7 latent maps).

The architecture of van den Oord et al. (2017, §4.1), scaled to MNIST: two strided 4×4
convolutions (28 → 14 → 7), a 3×3 convolution, a stack of residual blocks
``x + conv1×1(ReLU(conv3×3(ReLU(x))))`` and a 1×1 projection to the code dimension; the
decoder mirrors it with transposed convolutions. Inputs and outputs are NHWC.

Examples:
    Shapes only (``jax.eval_shape`` traces without compiling):

    >>> import jax, jax.numpy as jnp
    >>> enc, dec = VQEncoder(code_dim=8, hidden=16), VQDecoder(out_channels=1, hidden=16)
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> z = jax.eval_shape(enc.apply, jax.eval_shape(enc.init, jax.random.key(0), x), x)
    >>> z.shape
    (2, 7, 7, 8)
    >>> jax.eval_shape(dec.apply, jax.eval_shape(dec.init, jax.random.key(1), z), z).shape
    (2, 28, 28, 1)
"""

from __future__ import annotations

import flax.linen as nn

from dgm_jax.types import Array, Float

__all__ = ["ResidualStack", "VQDecoder", "VQEncoder"]


def _check_widths(module: nn.Module, **widths: int) -> None:
    for name, value in widths.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(module).__name__}.{name} must be an int >= 1, got {value!r}")


def _check_image(x: Array, factor: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must have shape (batch, height, width, channels), got {x.shape}")
    if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(f"height and width of x must be divisible by {factor}, got {x.shape[1:3]}")


class ResidualStack(nn.Module):
    """``num_blocks`` residual blocks ``x + conv1×1(ReLU(conv3×3(ReLU(x))))``, then a ReLU.

    Attributes:
        num_blocks: number of blocks (0 gives just the final ReLU).
        res_hidden: width inside each block.
    """

    num_blocks: int = 2
    res_hidden: int = 32

    @nn.compact
    def __call__(self, x: Float[Array, "batch h w c"]) -> Float[Array, "batch h w c"]:
        for _ in range(self.num_blocks):
            h = nn.Conv(self.res_hidden, (3, 3))(nn.relu(x))
            x = x + nn.Conv(x.shape[-1], (1, 1))(nn.relu(h))
        return nn.relu(x)


class VQEncoder(nn.Module):
    """Images ``(B, H, W, C)`` → pre-quantisation latents ``(B, H/4, W/4, code_dim)``.

    Attributes:
        code_dim: width D of the latent vectors.
        hidden: width of the main path (the first convolution has ``hidden // 2``).
        num_res_blocks: residual blocks.
        res_hidden: width inside the residual blocks.
    """

    code_dim: int = 64
    hidden: int = 128
    num_res_blocks: int = 2
    res_hidden: int = 32

    @nn.compact
    def __call__(self, x: Float[Array, "batch h w c"]) -> Float[Array, "batch h4 w4 code_dim"]:
        _check_widths(self, code_dim=self.code_dim, hidden=self.hidden, res_hidden=self.res_hidden)
        _check_image(x, 4)
        h = nn.relu(nn.Conv(max(self.hidden // 2, 1), (4, 4), strides=(2, 2))(x))
        h = nn.relu(nn.Conv(self.hidden, (4, 4), strides=(2, 2))(h))
        h = nn.Conv(self.hidden, (3, 3))(h)
        h = ResidualStack(self.num_res_blocks, self.res_hidden)(h)
        return nn.Conv(self.code_dim, (1, 1))(h)


class VQDecoder(nn.Module):
    """Latents ``(B, h, w, D)`` → images ``(B, 4h, 4w, out_channels)`` (unbounded outputs).

    Attributes:
        out_channels: image channels.
        hidden: width of the main path.
        num_res_blocks: residual blocks.
        res_hidden: width inside the residual blocks.
    """

    out_channels: int = 1
    hidden: int = 128
    num_res_blocks: int = 2
    res_hidden: int = 32

    @nn.compact
    def __call__(self, z: Float[Array, "batch h w d"]) -> Float[Array, "batch h4 w4 out"]:
        _check_widths(
            self, out_channels=self.out_channels, hidden=self.hidden, res_hidden=self.res_hidden
        )
        _check_image(z, 1)
        h = nn.Conv(self.hidden, (3, 3))(z)
        h = ResidualStack(self.num_res_blocks, self.res_hidden)(h)
        h = nn.relu(nn.ConvTranspose(max(self.hidden // 2, 1), (4, 4), strides=(2, 2))(h))
        return nn.ConvTranspose(self.out_channels, (4, 4), strides=(2, 2))(h)
