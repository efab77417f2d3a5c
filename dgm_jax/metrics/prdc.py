"""k-NN precision, recall, density and coverage between real and generated samples.

* Precision and recall: Kynkäänniemi et al. (2019), "Improved Precision and Recall
  Metric for Assessing Generative Models". Each set's manifold is the union of balls
  around its points with radius the distance to the point's k-th nearest neighbour
  in its own set; precision is the share of fake points inside the real manifold,
  recall the share of real points inside the fake manifold.
* Density and coverage: Naeem et al. (2020), "Reliable Fidelity and Diversity
  Metrics for Generative Models". Density counts how many real balls contain each
  fake point (divided by k; ≈ 1 for identical distributions, unbounded above);
  coverage is the share of real points whose ball contains at least one fake point.

Everything runs in ``block_size × block_size`` tiles (``lax.map`` over row blocks,
``lax.scan`` over column blocks), so 50,000 × 50,000 comparisons need only
``O(block_size · (block_size + k))`` extra memory. Pure and jit-compatible with
``k`` and ``block_size`` static; the library does not jit for you. Distances are
Euclidean in whatever space you pass (usually network features).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from dgm_jax._validate import check_int
from dgm_jax.metrics._blocked import check_pair, row_reduce
from dgm_jax.types import Array, Float

__all__ = ["PRDC", "knn_radii", "prdc"]


class PRDC(NamedTuple):
    """Fidelity and diversity of fake samples with respect to real ones."""

    precision: Float[Array, ""]  # share of fake points inside the real k-NN manifold
    recall: Float[Array, ""]  # share of real points inside the fake k-NN manifold
    density: Float[Array, ""]  # mean number of real k-NN balls holding a fake point, / k
    coverage: Float[Array, ""]  # share of real balls holding at least one fake point


def knn_radii(
    points: Float[Array, "n d"], *, k: int = 5, block_size: int = 1024
) -> Float[Array, " n"]:
    """Squared distance from each point to its k-th nearest *other* point of the set.

    Args:
        points: ``(n, d)`` points, ``n > k``.
        k: neighbour rank (static).
        block_size: static tile edge.

    Returns:
        ``(n,)`` squared radii.

    Examples:
        >>> import jax.numpy as jnp
        >>> knn_radii(jnp.array([[0.0], [1.0], [3.0]]), k=1).tolist()
        [1.0, 1.0, 4.0]
    """
    check_pair("points", points, "points", points)
    check_int("k", k, minimum=1)
    check_int("block_size", block_size, minimum=1)
    if points.shape[0] <= k:
        raise ValueError(f"points must have more than k={k} rows, got shape {points.shape}")
    dtype = points.dtype

    def init(p):
        return jnp.full((p, k), jnp.inf, dtype)

    def update(best, gi, gj, valid, d2, _):
        mask = valid[None, :] & (gi[:, None] != gj[None, :])
        d2 = jnp.where(mask, d2, jnp.inf)
        both = jnp.concatenate([best, d2], axis=1)
        neg, _ = lax.top_k(-both, k)  # the k smallest distances so far
        return -neg

    return row_reduce(
        init, update, lambda best: best[:, k - 1], points, points, block_size=block_size
    )


def prdc(
    real: Float[Array, "n d"],
    fake: Float[Array, "m d"],
    *,
    k: int = 5,
    block_size: int = 1024,
) -> PRDC:
    """Precision, recall, density and coverage of ``fake`` against ``real``.

    Ties count as inside (``distance <= radius``), as in the papers' reference code.
    For identical sets precision = recall = coverage = 1 and density ≈ 1.

    Args:
        real: ``(n, d)`` real samples or features, ``n > k``.
        fake: ``(m, d)`` generated samples or features, ``m > k``.
        k: nearest-neighbour rank for the radii (papers: 3 for P/R, 5 for D/C).
        block_size: static tile edge.

    Returns:
        A :class:`PRDC` of scalars.

    Examples:
        >>> import jax
        >>> x = jax.random.normal(jax.random.key(0), (200, 2))
        >>> r = prdc(x, x, k=3)
        >>> float(r.precision), float(r.recall), float(r.coverage)
        (1.0, 1.0, 1.0)
    """
    check_pair("real", real, "fake", fake)
    check_int("k", k, minimum=1)
    check_int("block_size", block_size, minimum=1)
    for name, a in (("real", real), ("fake", fake)):
        if a.shape[0] <= k:
            raise ValueError(f"{name} must have more than k={k} rows, got shape {a.shape}")
    dtype = jnp.result_type(real.dtype, fake.dtype)
    real = real.astype(dtype)
    fake = fake.astype(dtype)
    # Distances are translation invariant; centring limits cancellation in |a|²+|b|²-2a·b.
    centre = jnp.mean(real, axis=0)
    real = real - centre[None, :]
    fake = fake - centre[None, :]
    r_real = knn_radii(real, k=k, block_size=block_size)
    r_fake = knn_radii(fake, k=k, block_size=block_size)

    # Rows = fake points, columns = real points with their radii.
    def count_update(count, gi, gj, valid, d2, radius):
        inside = valid[None, :] & (d2 <= radius[None, :])
        return count + jnp.sum(inside, axis=1)

    counts = row_reduce(
        lambda p: jnp.zeros((p,), jnp.int32),
        count_update,
        lambda c: c,
        fake,
        real,
        block_size=block_size,
        col_data=r_real,
    )

    # Rows = real points, columns = fake points: is the real point inside any fake ball,
    # and how near is its nearest fake point.
    def real_update(carry, gi, gj, valid, d2, radius):
        any_inside, nearest = carry
        inside = valid[None, :] & (d2 <= radius[None, :])
        nearest = jnp.minimum(nearest, jnp.min(jnp.where(valid[None, :], d2, jnp.inf), axis=1))
        return any_inside | jnp.any(inside, axis=1), nearest

    in_fake, nearest_fake = row_reduce(
        lambda p: (jnp.zeros((p,), bool), jnp.full((p,), jnp.inf, dtype)),
        real_update,
        lambda c: c,
        real,
        fake,
        block_size=block_size,
        col_data=r_fake,
    )
    fdtype = jnp.result_type(dtype, jnp.float32)
    return PRDC(
        precision=jnp.mean((counts > 0).astype(fdtype)),
        recall=jnp.mean(in_fake.astype(fdtype)),
        density=jnp.sum(counts).astype(fdtype) / float(k * fake.shape[0]),
        coverage=jnp.mean((nearest_fake <= r_real).astype(fdtype)),
    )
