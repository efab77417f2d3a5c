"""Multilayer perceptrons, plain and time-conditioned."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dgm_jax.nn.embeddings import sinusoidal_embedding
from dgm_jax.types import Array, Float

__all__ = ["MLP", "TimeConditionedMLP"]


class MLP(nn.Module):
    """A fully connected network: hidden layers with an activation, linear output.

    Attributes:
        hidden_sizes: width of each hidden layer.
        out_dim: size of the output.
        activation: elementwise nonlinearity between layers.

    Examples:
        >>> import jax
        >>> net = MLP((32, 32), out_dim=2)
        >>> params = net.init(jax.random.key(0), jnp.zeros((5, 3)))
        >>> net.apply(params, jnp.zeros((5, 3))).shape
        (5, 2)
    """

    hidden_sizes: Sequence[int]
    out_dim: int
    activation: Callable[[Array], Array] = nn.silu

    @nn.compact
    def __call__(self, x: Float[Array, "*batch in_dim"]) -> Float[Array, "*batch out_dim"]:
        for width in self.hidden_sizes:
            x = self.activation(nn.Dense(width)(x))
        return nn.Dense(self.out_dim)(x)


class TimeConditionedMLP(nn.Module):
    """An MLP of ``(x, t)`` for score, noise or velocity prediction in low dimension.

    The time is embedded with sinusoidal features, passed through a small MLP and
    added to every hidden layer (as in the DDPM U-Net's residual blocks, Ho et al.
    2020, here without convolutions). The output has the dimension of ``x``.

    Attributes:
        hidden_sizes: width of each hidden layer; all equal widths keep the
            time projection simple, but any widths work.
        time_embedding_dim: number of sinusoidal features of ``t``.
        time_scale: ``t`` is multiplied by this before embedding; 1 suits integer
            steps 0..T-1, about 1000 suits continuous times in [0, 1].
        activation: elementwise nonlinearity.

    Examples:
        >>> import jax
        >>> net = TimeConditionedMLP((64, 64))
        >>> x, t = jnp.zeros((8, 2)), jnp.zeros(8)
        >>> params = net.init(jax.random.key(0), x, t)
        >>> net.apply(params, x, t).shape
        (8, 2)
    """

    hidden_sizes: Sequence[int] = (128, 128, 128)
    time_embedding_dim: int = 64
    time_scale: float = 1.0
    activation: Callable[[Array], Array] = nn.silu

    @nn.compact
    def __call__(
        self, x: Float[Array, "*batch dim"], t: Float[Array, "*batch"]
    ) -> Float[Array, "*batch dim"]:
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:-1])
        emb = sinusoidal_embedding(t * self.time_scale, self.time_embedding_dim)
        emb = nn.Dense(self.time_embedding_dim)(
            self.activation(nn.Dense(self.time_embedding_dim)(emb))
        )
        h = x
        for width in self.hidden_sizes:
            h = nn.Dense(width)(h) + nn.Dense(width)(emb)
            h = self.activation(h)
        return nn.Dense(x.shape[-1])(h)
