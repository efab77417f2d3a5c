"""Minibatch OT: the pure-JAX assignment against brute force and SciPy, Sinkhorn's marginals."""

import doctest
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from dgm_jax.flows import ot


def _brute_force(cost):
    n = cost.shape[0]
    return min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_assignment_equals_brute_force(n):
    solve = jax.jit(ot.linear_sum_assignment)
    rng = np.random.default_rng(n)
    for _ in range(4):
        cost = rng.standard_normal((n, n)).astype(np.float32)
        col = np.asarray(solve(jnp.asarray(cost)))
        assert sorted(col.tolist()) == list(range(n))  # a permutation
        np.testing.assert_allclose(cost[np.arange(n), col].sum(), _brute_force(cost), atol=1e-5)


def test_assignment_matches_scipy_and_vmaps():
    rng = np.random.default_rng(0)
    costs = rng.random((3, 60, 60)).astype(np.float32)
    cols = np.asarray(jax.jit(jax.vmap(ot.linear_sum_assignment))(jnp.asarray(costs)))
    for cost, col in zip(costs, cols):
        rows, ref = scipy_lsa(cost)
        np.testing.assert_allclose(cost[rows, col].sum(), cost[rows, ref].sum(), rtol=1e-5)


def test_assignment_with_ties_and_integer_costs():
    # All-equal costs: any permutation is optimal; a shifted identity has a unique optimum.
    col = ot.linear_sum_assignment(jnp.ones((4, 4)))
    assert sorted(col.tolist()) == [0, 1, 2, 3]
    perm = jnp.array([2, 0, 4, 1, 3])
    cost = jnp.ones((5, 5)).at[jnp.arange(5), perm].set(0.0)
    assert ot.linear_sum_assignment(cost).tolist() == perm.tolist()


def test_exact_ot_coupling_minimises_the_total_squared_distance():
    k0, k1 = jax.random.split(jax.random.key(1))
    x0 = jax.random.normal(k0, (6, 2))
    x1 = jax.random.normal(k1, (6, 2)) + 1.0
    idx = ot.exact_ot_coupling(jax.random.key(2), x0, x1)
    cost = np.asarray(ot.squared_euclidean_cost(x0, x1))
    direct = ((np.asarray(x0)[:, None] - np.asarray(x1)[None]) ** 2).sum(-1)
    np.testing.assert_allclose(cost, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cost[np.arange(6), np.asarray(idx)].sum(), _brute_force(cost), 1e-5)


def test_sinkhorn_marginals_and_cost():
    rng = np.random.default_rng(3)
    n, m = 7, 9
    cost = jnp.asarray(rng.random((n, m)), jnp.float32)
    a = jnp.asarray(rng.dirichlet(np.ones(n)), jnp.float32)
    b = jnp.asarray(rng.dirichlet(np.ones(m)), jnp.float32)
    out = jax.jit(lambda c, a, b: ot.sinkhorn(c, 0.05, a=a, b=b, tol=1e-6))(cost, a, b)
    plan = np.exp(np.asarray(out.log_plan))
    assert bool(out.converged)
    np.testing.assert_allclose(plan.sum(1), a, atol=2e-6)
    np.testing.assert_allclose(plan.sum(0), b, atol=2e-6)
    # Small ε on a square uniform problem: the plan's cost is within ε (log n + log m) of OT.
    cost = jnp.asarray(rng.random((8, 8)), jnp.float32)
    eps = 1e-3
    out = ot.sinkhorn(cost, eps, tol=1e-6, max_iters=5000)
    plan = np.exp(np.asarray(out.log_plan))
    rows, cols = scipy_lsa(np.asarray(cost))
    exact = np.asarray(cost)[rows, cols].mean()
    assert exact - 1e-5 <= float((plan * np.asarray(cost)).sum()) <= exact + eps * 2 * np.log(8)


def test_sinkhorn_coupling_recovers_the_assignment_at_small_epsilon():
    k0, k1, k2 = jax.random.split(jax.random.key(4), 3)
    x0 = jax.random.normal(k0, (16, 2))
    x1 = x0[jax.random.permutation(k1, 16)] + 0.01  # an obvious optimal matching
    exact = ot.exact_ot_coupling(k2, x0, x1)
    sampled = jax.jit(ot.sinkhorn_coupling(1e-3))(k2, x0, x1)
    assert sampled.tolist() == exact.tolist()


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        ot.linear_sum_assignment(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        ot.linear_sum_assignment(jnp.ones(3))
    with pytest.raises(TypeError, match="floating"):
        ot.linear_sum_assignment(jnp.ones((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="epsilon"):
        ot.sinkhorn(jnp.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="max_iters"):
        ot.sinkhorn(jnp.ones((2, 2)), 0.1, max_iters=0)
    with pytest.raises(ValueError, match="same shape"):
        ot.exact_ot_coupling(jax.random.key(0), jnp.ones((3, 2)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="relative_epsilon"):
        ot.sinkhorn_coupling(-1.0)


def test_docstring_examples():
    assert doctest.testmod(ot, optionflags=doctest.ELLIPSIS).failed == 0
