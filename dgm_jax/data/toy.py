"""Toy 2-D datasets: samplers and, where useful, unnormalized log densities for MCMC.

Every factory returns a :class:`Toy2D` of pure functions:

* ``sample(key, num) -> float32 (num, 2)``, deterministic given the key; ``num`` is a static
  Python int (jit with ``static_argnums=1``).
* ``logdensity(x) -> float32 scalar`` for ONE point ``x`` of shape ``(2,)`` (``jax.vmap`` it
  for many), unnormalized, differentiable, or ``None`` where no useful smooth density exists
  (checkerboard: piecewise constant; pinwheel: no closed form).

How ``logdensity`` relates to ``sample``:

* ``banana``, ``eight_gaussians``: exact up to an additive constant.
* ``two_moons``, ``swiss_roll``, ``rings``: ``sample`` draws a point uniformly in the curve
  parameter and adds isotropic Gaussian noise, so its density is a Gaussian blur of the curve.
  ``logdensity`` evaluates that blur with the midpoint rule on a grid of the curve parameter
  whose spacing along the curve is at most ``noise / 2``; for a Gaussian kernel this quadrature
  is accurate to far below Monte Carlo error away from the curve ends, so ``logdensity`` is,
  for all practical purposes, the log density of ``sample`` (a smooth MCMC target whose Stein
  identity holds against ``sample`` to within Monte Carlo error). A finer grid costs more per
  evaluation: each grid is capped at 4,096 points, which limits very small noise levels.

The library does not jit for you; all functions compose with ``jax.jit``, ``jax.vmap`` and
``jax.grad``.

Examples:
    >>> import jax
    >>> from dgm_jax.data import toy
    >>> target = toy.banana()
    >>> x = target.sample(jax.random.key(0), 1000)
    >>> x.shape, x.dtype
    ((1000, 2), dtype('float32'))
    >>> jax.vmap(target.logdensity)(x).shape
    (1000,)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import (
    check_floating,
    check_int,
    check_key,
    check_number,
    check_positive,
    check_shape,
)
from dgm_jax.types import Array, Float, Points2D, PRNGKeyArray, Scalar

__all__ = [
    "TOY_DATASETS",
    "Toy2D",
    "banana",
    "checkerboard",
    "eight_gaussians",
    "pinwheel",
    "rings",
    "swiss_roll",
    "two_moons",
]

Point2D = Float[Array, "2"]  # one point of the plane

_MAX_GRID = 4096  # most quadrature points per curve in a blurred-curve logdensity


class Toy2D(NamedTuple):
    """A toy 2-D dataset as pure functions."""

    name: str  # short identifier, the key in TOY_DATASETS
    sample: Callable[[PRNGKeyArray, int], Points2D]  # (key, num) -> float32 (num, 2)
    logdensity: Callable[[Point2D], Scalar] | None  # one point -> unnormalized log p


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------


def _wrap_sample(fn: Callable[[PRNGKeyArray, int], Array]) -> Callable:
    """Add argument checks and the float32 cast around a raw sampler."""

    def sample(key: PRNGKeyArray, num: int) -> Points2D:
        check_key("key", key)
        check_int("num", num, minimum=1)
        return fn(key, num).astype(jnp.float32)

    sample.__doc__ = "Draw ``num`` points: ``(key, num) -> float32 (num, 2)``."
    return sample


def _wrap_logdensity(fn: Callable[[Array], Array]) -> Callable:
    """Add argument checks around a one-point log density."""

    def logdensity(x: Point2D) -> Scalar:
        if np.ndim(x) != 1:
            raise ValueError(
                f"x must be one point of shape (2,), got shape {tuple(np.shape(x))}; "
                "use jax.vmap(logdensity) for a batch"
            )
        check_shape("x", x, (2,))
        check_floating("x", x)
        return fn(jnp.asarray(x))

    logdensity.__doc__ = "Unnormalized log density of one point ``x`` of shape ``(2,)``."
    return logdensity


def _blurred_curve_logdensity(grid: np.ndarray, log_weights: np.ndarray, noise: float):
    """``log Σ_j w_j N(x; grid_j, noise² I)`` up to a constant, for one point ``x``."""
    grid = jnp.asarray(grid, dtype=jnp.float32)
    log_weights = jnp.asarray(log_weights, dtype=jnp.float32)
    inv_two_var = 1.0 / (2.0 * noise**2)

    def logdensity(x):
        sq = jnp.sum((x[None, :] - grid) ** 2, axis=-1)
        return jax.nn.logsumexp(log_weights - sq * inv_two_var)

    return logdensity


def _num_grid(length: float, noise: float) -> int:
    """Midpoint-rule points so that the spacing along a curve of ``length`` is <= noise/2."""
    return int(min(max(math.ceil(length / (0.5 * noise)), 16), _MAX_GRID))


# --------------------------------------------------------------------------------------
# Two moons
# --------------------------------------------------------------------------------------

# Centre of the classic moons (upper arc x ∈ [-1, 1], lower arc x ∈ [0, 2]).
_MOONS_SHIFT = np.array([0.5, 0.25])


def _moons_curve(t: Array, lower: Array) -> Array:
    """Point at parameter ``t ∈ [0, π]`` on the upper (lower=0) or lower (lower=1) moon."""
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
    low = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)
    return jnp.where(lower[..., None], low, upper) - jnp.asarray(_MOONS_SHIFT[None, :], jnp.float32)


def two_moons(noise: float = 0.1) -> Toy2D:
    """Two interleaving half circles with Gaussian noise, centred at the origin.

    ``sample``: pick a moon with probability 1/2 each, ``t ~ U[0, π]``, take the point
    ``(cos t, sin t)`` (upper) or ``(1 - cos t, 1/2 - sin t)`` (lower), shift by
    ``-(0.5, 0.25)`` and add ``N(0, noise² I)``. The geometry is scikit-learn's
    ``make_moons``, centred.

    ``logdensity``: the exact log density of ``sample`` (a Gaussian blur of the two arcs)
    evaluated with the midpoint rule in ``t`` (see the module docstring); smooth everywhere,
    suited as an MCMC target.

    Args:
        noise: standard deviation of the Gaussian noise, > 0.

    Returns:
        :class:`Toy2D` named ``"two_moons"``.

    Examples:
        >>> x = two_moons().sample(jax.random.key(0), 4)
        >>> x.shape
        (4, 2)
    """
    check_positive("noise", noise)
    noise = float(noise)

    def raw_sample(key, num):
        key_moon, key_t, key_noise = jax.random.split(key, 3)
        lower = jax.random.bernoulli(key_moon, 0.5, (num,))
        t = jax.random.uniform(key_t, (num,), minval=0.0, maxval=jnp.pi)
        return _moons_curve(t, lower) + noise * jax.random.normal(key_noise, (num, 2))

    n = _num_grid(math.pi, noise)
    t = (np.arange(n) + 0.5) * math.pi / n
    grid = (
        np.concatenate(
            [
                np.stack([np.cos(t), np.sin(t)], -1),
                np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1),
            ]
        )
        - _MOONS_SHIFT[None, :]
    )
    log_w = np.zeros(2 * n)
    return Toy2D(
        "two_moons",
        _wrap_sample(raw_sample),
        _wrap_logdensity(_blurred_curve_logdensity(grid, log_w, noise)),
    )


# --------------------------------------------------------------------------------------
# Banana (twisted Gaussian)
# --------------------------------------------------------------------------------------


def banana(sigma1: float = math.sqrt(10.0), sigma2: float = 1.0, twist: float = 0.1) -> Toy2D:
    """The twisted Gaussian ("banana") of Haario, Saksman & Tamminen (1999), in 2-D.

    Draw ``z ~ N(0, diag(sigma1², sigma2²))`` and map it by the volume-preserving twist
    ``x = (z1, z2 + twist · (z1² − sigma1²))``. Hence

    ``log p(x) = −x1² / (2 sigma1²) − (x2 − twist (x1² − sigma1²))² / (2 sigma2²) + const``,

    with ``E[x] = 0``, ``Var x1 = sigma1²``, ``Var x2 = sigma2² + 2 twist² sigma1⁴``,
    ``Cov(x1, x2) = 0`` and ``E[x1² x2] = 2 twist sigma1⁴``. The defaults
    (``sigma1² = 10``, ``sigma2 = 1``, ``twist = 0.1``; ``Var x2 = 3``) bend the ridge by
    about 3 units at ``x1 = ±2 sigma1``: clearly curved, yet HMC with step size ≈ 0.3 mixes.

    Args:
        sigma1: standard deviation along the banana, > 0.
        sigma2: standard deviation across the banana, > 0.
        twist: curvature ``b``, any real number (0 gives a Gaussian).

    Returns:
        :class:`Toy2D` named ``"banana"`` with an exact unnormalized ``logdensity``.

    Examples:
        >>> jax.grad(banana().logdensity)(jnp.zeros(2)).shape
        (2,)
    """
    check_positive("sigma1", sigma1)
    check_positive("sigma2", sigma2)
    check_number("twist", twist)
    if not math.isfinite(float(twist)):
        raise ValueError(f"twist must be finite, got {twist!r}")
    s1, s2, b = float(sigma1), float(sigma2), float(twist)

    def raw_sample(key, num):
        z = jax.random.normal(key, (num, 2)) * jnp.array([[s1, s2]])
        return jnp.stack([z[:, 0], z[:, 1] + b * (z[:, 0] ** 2 - s1**2)], axis=-1)

    def raw_logdensity(x):
        z2 = x[1] - b * (x[0] ** 2 - s1**2)
        return -0.5 * (x[0] / s1) ** 2 - 0.5 * (z2 / s2) ** 2

    return Toy2D("banana", _wrap_sample(raw_sample), _wrap_logdensity(raw_logdensity))


# --------------------------------------------------------------------------------------
# Eight Gaussians
# --------------------------------------------------------------------------------------


def eight_gaussians(radius: float = 2.0, scale: float = 0.1) -> Toy2D:
    """Equal mixture of 8 isotropic Gaussians with means evenly spaced on a circle.

    Means ``radius · (cos(2πk/8), sin(2πk/8))``, ``k = 0..7``, standard deviation ``scale``.
    ``logdensity`` is the exact mixture log density up to a constant.

    Args:
        radius: radius of the circle of means, > 0.
        scale: standard deviation of each component, > 0.

    Returns:
        :class:`Toy2D` named ``"eight_gaussians"``.

    Examples:
        >>> eight_gaussians().sample(jax.random.key(0), 8).shape
        (8, 2)
    """
    check_positive("radius", radius)
    check_positive("scale", scale)
    radius, scale = float(radius), float(scale)
    angles = 2.0 * np.pi * np.arange(8) / 8
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def raw_sample(key, num):
        key_k, key_noise = jax.random.split(key)
        k = jax.random.randint(key_k, (num,), 0, 8)
        return jnp.asarray(means, jnp.float32)[k] + scale * jax.random.normal(key_noise, (num, 2))

    return Toy2D(
        "eight_gaussians",
        _wrap_sample(raw_sample),
        _wrap_logdensity(_blurred_curve_logdensity(means, np.zeros(8), scale)),
    )


# --------------------------------------------------------------------------------------
# Checkerboard
# --------------------------------------------------------------------------------------


def checkerboard(num_cells: int = 4, size: float = 4.0) -> Toy2D:
    """Uniform density on the "black" cells of a checkerboard centred at the origin.

    The square ``[-size/2, size/2]²`` is cut into ``num_cells × num_cells`` cells; cell
    ``(i, j)`` (column ``i``, row ``j`` from the lower left) is black when ``i + j`` is even.
    ``sample`` picks a black cell uniformly and a point uniformly inside it. The density is
    piecewise constant, so ``logdensity`` is ``None``.

    Args:
        num_cells: cells per side, an int >= 2.
        size: side length of the board, > 0.

    Returns:
        :class:`Toy2D` named ``"checkerboard"`` (``logdensity=None``).

    Examples:
        >>> checkerboard().sample(jax.random.key(0), 3).shape
        (3, 2)
    """
    check_int("num_cells", num_cells, minimum=2)
    check_positive("size", size)
    size = float(size)
    cell = size / num_cells
    corners = np.array(
        [(i, j) for i in range(num_cells) for j in range(num_cells) if (i + j) % 2 == 0],
        dtype=np.float64,
    )
    corners = corners * cell - size / 2

    def raw_sample(key, num):
        key_c, key_u = jax.random.split(key)
        c = jax.random.randint(key_c, (num,), 0, len(corners))
        u = jax.random.uniform(key_u, (num, 2))
        return jnp.asarray(corners, jnp.float32)[c] + cell * u

    return Toy2D("checkerboard", _wrap_sample(raw_sample), None)


# --------------------------------------------------------------------------------------
# Pinwheel
# --------------------------------------------------------------------------------------


def pinwheel(
    num_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> Toy2D:
    """Spiral arms ("pinwheel") as in Johnson et al. (2016), "Composing graphical models...".

    For arm ``k`` (chosen uniformly): ``r ~ N(1, radial_std²)``, ``s ~ N(0, tangential_std²)``;
    the point ``(r, s)`` is rotated by ``2πk/num_arms + rate · exp(r)``, so arms bend more
    further out. No closed-form density: ``logdensity`` is ``None``.

    Args:
        num_arms: number of arms, an int >= 1.
        radial_std: spread along each arm, > 0.
        tangential_std: spread across each arm, > 0.
        rate: bending rate, >= 0.

    Returns:
        :class:`Toy2D` named ``"pinwheel"`` (``logdensity=None``).

    Examples:
        >>> pinwheel().sample(jax.random.key(0), 5).shape
        (5, 2)
    """
    check_int("num_arms", num_arms, minimum=1)
    check_positive("radial_std", radial_std)
    check_positive("tangential_std", tangential_std)
    check_positive("rate", rate, allow_zero=True)
    radial_std, tangential_std, rate = float(radial_std), float(tangential_std), float(rate)

    def raw_sample(key, num):
        key_k, key_r = jax.random.split(key)
        k = jax.random.randint(key_k, (num,), 0, num_arms)
        eps = jax.random.normal(key_r, (num, 2)) * jnp.array([[radial_std, tangential_std]])
        r = 1.0 + eps[:, 0]
        s = eps[:, 1]
        angle = 2.0 * jnp.pi * k / num_arms + rate * jnp.exp(r)
        c, sn = jnp.cos(angle), jnp.sin(angle)
        return jnp.stack([c * r - sn * s, sn * r + c * s], axis=-1)

    return Toy2D("pinwheel", _wrap_sample(raw_sample), None)


# --------------------------------------------------------------------------------------
# Swiss roll
# --------------------------------------------------------------------------------------

_ROLL_T0, _ROLL_T1, _ROLL_SCALE = 1.5 * math.pi, 4.5 * math.pi, 0.2


def swiss_roll(noise: float = 0.1) -> Toy2D:
    """A 2-D Swiss roll (spiral) with Gaussian noise.

    ``t ~ U[1.5π, 4.5π]``, point ``0.2 · (t cos t, t sin t)`` (radius 0.94 to 2.83) plus
    ``N(0, noise² I)``. ``logdensity`` is the blurred-curve density of ``sample`` by the
    midpoint rule in ``t`` (see the module docstring).

    Args:
        noise: standard deviation of the Gaussian noise, > 0.

    Returns:
        :class:`Toy2D` named ``"swiss_roll"``.

    Examples:
        >>> swiss_roll().sample(jax.random.key(0), 2).shape
        (2, 2)
    """
    check_positive("noise", noise)
    noise = float(noise)

    def curve(t, xp):
        return _ROLL_SCALE * xp.stack([t * xp.cos(t), t * xp.sin(t)], axis=-1)

    def raw_sample(key, num):
        key_t, key_noise = jax.random.split(key)
        t = jax.random.uniform(key_t, (num,), minval=_ROLL_T0, maxval=_ROLL_T1)
        return curve(t, jnp) + noise * jax.random.normal(key_noise, (num, 2))

    # Arc length of r = 0.2 t over the range is at most 0.2 · sqrt(1 + t1²) · (t1 - t0).
    length = _ROLL_SCALE * math.sqrt(1.0 + _ROLL_T1**2) * (_ROLL_T1 - _ROLL_T0)
    n = _num_grid(length, noise)
    t = _ROLL_T0 + (np.arange(n) + 0.5) * (_ROLL_T1 - _ROLL_T0) / n
    return Toy2D(
        "swiss_roll",
        _wrap_sample(raw_sample),
        _wrap_logdensity(_blurred_curve_logdensity(curve(t, np), np.zeros(n), noise)),
    )


# --------------------------------------------------------------------------------------
# Concentric rings
# --------------------------------------------------------------------------------------


def rings(num_rings: int = 4, max_radius: float = 3.0, noise: float = 0.08) -> Toy2D:
    """Concentric circles with Gaussian noise.

    Radii ``max_radius · k / num_rings`` for ``k = 1..num_rings``; ``sample`` picks a ring
    uniformly, an angle uniformly, and adds ``N(0, noise² I)``. ``logdensity`` is the
    blurred-curve density of ``sample`` by the midpoint rule in the angle, each ring weighted
    ``1 / num_rings`` (see the module docstring).

    Args:
        num_rings: number of rings, an int >= 1.
        max_radius: radius of the outermost ring, > 0.
        noise: standard deviation of the Gaussian noise, > 0.

    Returns:
        :class:`Toy2D` named ``"rings"``.

    Examples:
        >>> rings().sample(jax.random.key(0), 2).shape
        (2, 2)
    """
    check_int("num_rings", num_rings, minimum=1)
    check_positive("max_radius", max_radius)
    check_positive("noise", noise)
    max_radius, noise = float(max_radius), float(noise)
    radii = max_radius * np.arange(1, num_rings + 1) / num_rings

    def raw_sample(key, num):
        key_k, key_a, key_noise = jax.random.split(key, 3)
        r = jnp.asarray(radii, jnp.float32)[jax.random.randint(key_k, (num,), 0, num_rings)]
        a = jax.random.uniform(key_a, (num,), maxval=2.0 * jnp.pi)
        circle = r[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
        return circle + noise * jax.random.normal(key_noise, (num, 2))

    grids, log_w = [], []
    for radius in radii:
        n = _num_grid(2.0 * math.pi * radius, noise)
        a = (np.arange(n) + 0.5) * 2.0 * math.pi / n
        grids.append(radius * np.stack([np.cos(a), np.sin(a)], axis=-1))
        log_w.append(np.full(n, -math.log(n * num_rings)))
    return Toy2D(
        "rings",
        _wrap_sample(raw_sample),
        _wrap_logdensity(
            _blurred_curve_logdensity(np.concatenate(grids), np.concatenate(log_w), noise)
        ),
    )


TOY_DATASETS: dict[str, Callable[..., Toy2D]] = {
    "two_moons": two_moons,
    "banana": banana,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "swiss_roll": swiss_roll,
    "rings": rings,
}
"""Every toy factory by name (called with its defaults, e.g. ``TOY_DATASETS["banana"]()``)."""
