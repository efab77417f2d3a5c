"""Counter-based random numbers written as plain elementwise ``jax.numpy`` expressions.

Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011) maps a 64-bit key and a 64-bit counter to 64 random bits. Because
it only adds, rotates and XORs 32-bit words, the same expression runs elementwise on
arrays of any shape, inside a fused XLA loop or inside a Pallas kernel on ``(B,)``
vectors, and each draw is addressed by its counter instead of by a split key.
:func:`jax.random` uses the same function under its ``threefry2x32`` implementation.

Examples:
    >>> import jax.numpy as jnp
    >>> words = threefry2x32((jnp.uint32(7), jnp.uint32(11)), jnp.zeros(4, jnp.uint32),
    ...                      jnp.arange(4, dtype=jnp.uint32))
    >>> u = uniform_from_words(words, jnp.float32)      # (4,) in [0, 1)
    >>> z0, z1 = normal_pair_from_words(words, jnp.float32)  # two (4,) N(0, 1) draws
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

__all__ = ["normal_pair_from_words", "threefry2x32", "uniform_from_words", "words_per_uniform"]

# Rotation constants of the eight rounds between key injections (Salmon et al. 2011,
# table 4) and the key-schedule parity constant.
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def threefry2x32(key_words: Any, counter_hi: Any, counter_lo: Any) -> tuple[Any, Any]:
    """Threefry-2x32-20 of the counter ``(counter_hi, counter_lo)`` under ``key_words``.

    Args:
        key_words: two uint32 key words (a ``(2,)`` array or a pair of scalars).
        counter_hi, counter_lo: uint32 arrays (broadcast together).

    Returns:
        The two uint32 output words, each of the broadcast counter shape.
    """
    k0, k1 = key_words[0], key_words[1]
    schedule = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
    x0, x1 = counter_hi + k0, counter_lo + k1
    for injection in range(1, 6):
        offset = 4 * ((injection - 1) % 2)
        for r in _ROTATIONS[offset : offset + 4]:
            x0 = x0 + x1
            x1 = (x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + schedule[injection % 3]
        x1 = x1 + schedule[(injection + 1) % 3] + jnp.uint32(injection)
    return x0, x1


def words_per_uniform(dtype: Any) -> int:
    """Output words of :func:`threefry2x32` one uniform consumes: 1 (<= 32 bits), 2 (64)."""
    return 2 if jnp.finfo(dtype).bits > 32 else 1


def uniform_from_words(words: tuple[Any, Any], dtype: Any) -> Any:
    """``U[0, 1)`` draws from random uint32 words.

    Float32 (and narrower) keeps 24 random bits of the first word; float64 uses 53 bits
    from both words.
    """
    word_a, word_b = words
    if jnp.finfo(dtype).bits > 32:
        high = (word_a >> jnp.uint32(5)).astype(dtype) * 2.0**-27
        return high + (word_b >> jnp.uint32(6)).astype(dtype) * 2.0**-53
    return (word_a >> jnp.uint32(8)).astype(jnp.float32) * jnp.float32(2.0**-24)


def normal_pair_from_words(words: tuple[Any, Any], dtype: Any) -> tuple[Any, Any]:
    """Two independent ``N(0, 1)`` draws from two random uint32 words (Box–Muller).

    ``z0 = r cos(2 pi u2)``, ``z1 = r sin(2 pi u2)`` with ``r = sqrt(-2 log u1)``
    (Box & Muller, Ann. Math. Statist. 29, 1958); ``u1`` lies in ``(0, 1]`` so the
    logarithm is finite (the largest draw is about 5.7 in float32). Float32 only takes
    24 bits of each word; for float64 pass the words of two Threefry calls through
    :func:`uniform_from_words` yourself.
    """
    word_a, word_b = words
    scale = 2.0**-24
    u1 = ((word_a >> jnp.uint32(8)).astype(jnp.float32) + 1.0) * scale  # (0, 1]
    u2 = (word_b >> jnp.uint32(8)).astype(jnp.float32) * scale  # [0, 1)
    radius = jnp.sqrt(-2.0 * jnp.log(u1))
    angle = (2.0 * math.pi) * u2
    return (radius * jnp.cos(angle)).astype(dtype), (radius * jnp.sin(angle)).astype(dtype)
