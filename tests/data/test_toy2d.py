"""Tests for dgm_jax.data.toy: shapes, determinism, argument checks, and that each
logdensity is the density of its sampler (moments, Stein identities)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.data import toy

NAMES = sorted(toy.TOY_DATASETS)
WITH_DENSITY = ["banana", "eight_gaussians", "rings", "swiss_roll", "two_moons"]


def test_registry_names_match():
    assert set(NAMES) == {
        "two_moons",
        "banana",
        "eight_gaussians",
        "checkerboard",
        "pinwheel",
        "swiss_roll",
        "rings",
    }
    for name, factory in toy.TOY_DATASETS.items():
        target = factory()
        assert isinstance(target, toy.Toy2D)
        assert target.name == name
        assert (target.logdensity is not None) == (name in WITH_DENSITY)


# One sample size everywhere: eager JAX ops compile once per shape, so reusing it keeps the
# module fast on a loaded 2-core machine.
NUM = 20_000


@pytest.fixture(scope="module")
def draws():
    """Samples of every dataset with its defaults, drawn eagerly with jax.random.key(0)."""
    return {name: toy.TOY_DATASETS[name]().sample(jax.random.key(0), NUM) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_sample_shape_dtype_and_determinism(name, draws):
    target = toy.TOY_DATASETS[name]()
    x = draws[name]
    assert x.shape == (NUM, 2)
    assert x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_array_equal(x, target.sample(jax.random.key(0), NUM))  # same key
    assert not np.array_equal(x, target.sample(jax.random.key(1), NUM))  # another key
    # Legacy uint32 keys are accepted too.
    assert target.sample(jax.random.PRNGKey(0), NUM).shape == (NUM, 2)


def test_sample_jits_with_static_num():
    target = toy.banana()
    key = jax.random.key(3)
    jitted = jax.jit(target.sample, static_argnums=1)(key, 64)
    np.testing.assert_allclose(jitted, target.sample(key, 64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_sample_rejects_bad_arguments(name, key):
    target = toy.TOY_DATASETS[name]()
    with pytest.raises(ValueError, match="num must be >= 1"):
        target.sample(key, 0)
    with pytest.raises(TypeError, match="num must be an int"):
        target.sample(key, 2.0)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        target.sample(jnp.zeros(3), 4)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_logdensity_one_point(name):
    logdensity = toy.TOY_DATASETS[name]().logdensity
    value, grad = jax.jit(jax.value_and_grad(logdensity))(jnp.array([0.3, -0.2]))
    assert value.shape == ()
    assert value.dtype == jnp.float32
    assert grad.shape == (2,)
    # Far from the data (40 units out) the density underflows but its log and gradient do not.
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(logdensity)))(
        jnp.array([[0.3, -0.2], [40.0, -40.0]])
    )
    assert bool(jnp.all(jnp.isfinite(values))) and bool(jnp.all(jnp.isfinite(grads)))
    np.testing.assert_allclose(values[0], value, rtol=1e-5)
    with pytest.raises(ValueError, match=r"use jax.vmap"):
        logdensity(jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(2\)"):
        logdensity(jnp.zeros(3))
    with pytest.raises(TypeError, match="floating dtype"):
        logdensity(jnp.zeros(2, dtype=jnp.int32))


@pytest.mark.parametrize(
    ("factory", "kwargs", "error", "match"),
    [
        (toy.two_moons, {"noise": 0.0}, ValueError, "noise must be a finite number > 0"),
        (toy.two_moons, {"noise": "big"}, TypeError, "noise must be a real number"),
        (toy.banana, {"sigma1": -1.0}, ValueError, "sigma1 must be a finite number > 0"),
        (toy.banana, {"sigma2": math.inf}, ValueError, "sigma2 must be a finite number > 0"),
        (toy.banana, {"twist": math.nan}, ValueError, "twist must be finite"),
        (toy.banana, {"twist": jnp.ones(2)}, TypeError, "twist must be a real scalar"),
        (toy.eight_gaussians, {"radius": 0}, ValueError, "radius must be a finite number > 0"),
        (toy.eight_gaussians, {"scale": -0.1}, ValueError, "scale must be a finite number > 0"),
        (toy.checkerboard, {"num_cells": 1}, ValueError, "num_cells must be >= 2"),
        (toy.checkerboard, {"num_cells": 4.0}, TypeError, "num_cells must be an int"),
        (toy.checkerboard, {"size": 0.0}, ValueError, "size must be a finite number > 0"),
        (toy.pinwheel, {"num_arms": 0}, ValueError, "num_arms must be >= 1"),
        (toy.pinwheel, {"radial_std": 0.0}, ValueError, "radial_std must be a finite"),
        (toy.pinwheel, {"rate": -1.0}, ValueError, "rate must be a finite number >= 0"),
        (toy.swiss_roll, {"noise": -1.0}, ValueError, "noise must be a finite number > 0"),
        (toy.rings, {"num_rings": 0}, ValueError, "num_rings must be >= 1"),
        (toy.rings, {"max_radius": 0.0}, ValueError, "max_radius must be a finite"),
        (toy.rings, {"noise": 0.0}, ValueError, "noise must be a finite number > 0"),
    ],
)
def test_factories_reject_bad_settings(factory, kwargs, error, match):
    with pytest.raises(error, match=match):
        factory(**kwargs)


def _mean_within(samples, expected, num_se=5.0):
    """Check a Monte Carlo mean against truth.

    The standard error of the mean of n i.i.d. values is std / sqrt(n); we use the sample std
    (plug-in). A 5-sigma band has a false-failure probability below 1e-6 per check.
    """
    samples = np.asarray(samples, dtype=np.float64)
    n = samples.shape[0]
    se = samples.std(axis=0) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - expected), num_se * se + 1e-12)


def test_banana_moments_match_closed_form(draws):
    s1, s2, b = math.sqrt(10.0), 1.0, 0.1  # the defaults
    x = np.asarray(draws["banana"], dtype=np.float64)
    x1, x2 = x[:, 0], x[:, 1]
    # E[x] = 0, E[x1²] = σ1², E[x2²] = σ2² + 2 b² σ1⁴, E[x1 x2] = 0, E[x1² x2] = 2 b σ1⁴.
    _mean_within(x, np.zeros(2))
    _mean_within(x1**2, s1**2)
    _mean_within(x2**2, s2**2 + 2 * b**2 * s1**4)
    _mean_within(x1 * x2, 0.0)
    _mean_within(x1**2 * x2, 2 * b * s1**4)


def test_banana_logdensity_is_exact_up_to_constant():
    s1, s2, b = 2.0, 0.5, 0.3
    logdensity = toy.banana(s1, s2, b).logdensity
    points = np.array([[0.0, 0.0], [1.0, -2.0], [-3.0, 0.5], [2.5, 2.5]])

    def reference(p):  # log N(z1; 0, s1²) + log N(z2; 0, s2²) of the untwisted point
        z1, z2 = p[0], p[1] - b * (p[0] ** 2 - s1**2)
        return -0.5 * (z1 / s1) ** 2 - 0.5 * (z2 / s2) ** 2

    diffs = [float(logdensity(jnp.asarray(p, jnp.float32))) - reference(p) for p in points]
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-4)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_stein_identities_hold_against_sample(name, draws):
    """If logdensity is the log density of sample, then for x ~ sample
    E[∇ log p(x)] = 0 and E[x · ∇ log p(x)] = -2 (Stein's identity with f(x) = 1 and x,
    integrating by parts in 2-D; valid for these densities with Gaussian tails)."""
    target = toy.TOY_DATASETS[name]()
    x = draws[name]
    grad = jax.jit(jax.vmap(jax.grad(target.logdensity)))(x)
    grad = np.asarray(grad, dtype=np.float64)
    _mean_within(grad, np.zeros(2))
    _mean_within(np.sum(np.asarray(x, np.float64) * grad, axis=1), -2.0)


def test_wrong_scale_would_fail_the_stein_check(key):
    # The x·∇ identity is sensitive to the noise scale: a density with noise 0.1 against
    # samples with noise 0.15 gives E[x·∇log p] ≈ -2 · (0.15/0.1)² per the Gaussian part.
    x = toy.eight_gaussians(scale=0.15).sample(key, NUM)
    grad = jax.jit(jax.vmap(jax.grad(toy.eight_gaussians(scale=0.1).logdensity)))(x)
    stat = np.asarray(jnp.sum(x * grad, axis=1))
    assert abs(stat.mean() + 2.0) > 10 * stat.std() / math.sqrt(len(stat))


def test_eight_gaussians_geometry(draws):
    x = np.asarray(draws["eight_gaussians"])  # radius 2, scale 0.1
    angles = 2 * np.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
    dist = np.linalg.norm(x[:, None, :] - means[None], axis=-1)
    nearest = dist.argmin(1)
    # Each component has probability 1/8: counts ~ Binomial(NUM, 1/8), sd = sqrt(NUM·7/64)
    # ≈ 47; 5 sd ≈ 234.
    sd = math.sqrt(NUM * 7 / 64)
    np.testing.assert_array_less(np.abs(np.bincount(nearest, minlength=8) - NUM / 8), 5 * sd)
    # Squared distance to the own mean / scale² ~ χ²(2) with mean 2, sd 2; se 2/sqrt(NUM).
    sq = dist.min(1) ** 2 / 0.1**2
    assert abs(sq.mean() - 2.0) < 5 * 2.0 / math.sqrt(NUM)


def test_checkerboard_points_lie_on_black_cells(draws):
    x = np.asarray(draws["checkerboard"])  # 4 × 4 cells on [-2, 2]²
    assert np.all(np.abs(x) <= 2.0)
    cells = np.floor(x + 2.0).astype(int)
    assert np.all(cells.sum(1) % 2 == 0)
    # All 8 black cells are used.
    assert len({tuple(c) for c in cells}) == 8


def test_rings_radii(key):
    x = np.asarray(toy.rings(num_rings=3, max_radius=3.0, noise=0.05).sample(key, NUM))
    r = np.linalg.norm(x, axis=1)
    nearest = np.abs(r[:, None] - np.array([1.0, 2.0, 3.0])[None]).min(1)
    assert nearest.max() < 0.05 * 6  # 6 sd of the radial noise


def test_two_moons_points_lie_near_the_arcs(key):
    x = np.asarray(toy.two_moons(noise=0.01).sample(key, NUM)) + np.array([0.5, 0.25])
    d_upper = np.abs(np.linalg.norm(x, axis=1) - 1.0)
    d_lower = np.abs(np.linalg.norm(x - np.array([1.0, 0.5]), axis=1) - 1.0)
    assert np.minimum(d_upper, d_lower).max() < 0.06  # 6 sd of the noise
