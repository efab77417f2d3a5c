"""Lane programs: one-chain log densities unrolled into elementwise code on (B,) lanes.

Every program is checked against ``jax.vmap(jax.value_and_grad(f))`` on a few random
positions. Tolerances are rtol = atol = 1e-5 in float32: the unrolled code sums in a
different order than XLA's fused reductions and dot products (pairwise trees, constants
folded first), so results agree to float32 rounding, not bitwise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from dgm_jax.mcmc import targets
from dgm_jax.mcmc.fused.lanes import (
    FusionError,
    LaneProgram,
    lane_program,
    lane_value,
    lane_value_and_grad,
)

NUM_CHAINS = 7
TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 rounding order differs, see module docstring
# The probit likelihood uses the erf/erfc formulas (1e-7 relative) where the reference has
# XLA's erf; log Phi and its gradient magnify that by up to |z| ~ 10 on these points.
CASE_TOL = {"probit_regression": {"rtol": 1e-4, "atol": 1e-4}}


def _points(dim, seed=0, scale=1.0):
    return scale * jax.random.normal(jax.random.key(seed), (NUM_CHAINS, dim))


def _check_value_and_grad(logdensity_fn, dim, *, seed=0, scale=1.0, tol=TOL):
    fn, num_ops = lane_value_and_grad(logdensity_fn, dim)
    x = _points(dim, seed, scale)
    value, grad = fn(list(x.T))
    ref_value, ref_grad = jax.vmap(jax.value_and_grad(logdensity_fn))(x)
    assert value.shape == (NUM_CHAINS,) and len(grad) == dim
    np.testing.assert_allclose(value, ref_value, **tol)
    np.testing.assert_allclose(jnp.stack(grad, axis=1), ref_grad, **tol)
    assert num_ops > 0
    return num_ops


_COV = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.5]], np.float32)
_X = np.asarray(jax.random.normal(jax.random.key(42), (20, 4)), np.float32)
_Y = (np.arange(20) % 2).astype(np.float32)


def _logistic_regression(beta):
    logits = _X @ beta
    return -jnp.sum(jax.nn.softplus(logits) - _Y * logits) - 0.5 * jnp.sum(beta**2)


def _probit_regression(beta):
    # Normal-CDF likelihood: erf/erfc replayed as elementwise formulas on float32 lanes.
    z = _X @ beta
    loglik = _Y * jax.scipy.stats.norm.logcdf(z) + (1.0 - _Y) * jax.scipy.stats.norm.logcdf(-z)
    return jnp.sum(loglik) - 0.5 * jnp.sum(beta**2)


def _scan_density(x):
    def step(carry, xi):
        carry = 0.5 * carry + xi
        return carry, carry**2

    last, squares = lax.scan(step, 0.0, x)
    return -0.5 * jnp.sum(squares) - 0.1 * last**2


def _cond_density(x):
    # The branch depends on the chain: every branch is evaluated and selected per lane.
    return lax.cond(
        x[0] > 0.0,
        lambda z: -0.5 * jnp.sum(z**2),
        lambda z: -jnp.sum(jnp.abs(z)) - 0.25 * z[1] ** 4,
        x,
    )


CASES = {
    "banana": (targets.banana().logdensity_fn, 2),
    "funnel5": (targets.funnel(dim=5).logdensity_fn, 5),
    "two_moons": (targets.two_moons().logdensity_fn, 2),
    "bimodal3": (targets.bimodal_mixture(dim=3).logdensity_fn, 3),
    "correlated_gaussian": (targets.correlated_gaussian(4, rho=0.8).logdensity_fn, 4),
    "logistic_regression": (_logistic_regression, 4),
    "probit_regression": (_probit_regression, 4),
    "scan": (_scan_density, 3),
    "switch": (
        lambda x: lax.switch(
            jnp.clip(jnp.floor(x[0] + 1.5), 0, 2).astype(jnp.int32),
            [lambda z: z[1], lambda z: -(z[1] ** 2), lambda z: jnp.sin(z[1])],
            x,
        ),
        2,
    ),
    "where": (lambda x: jnp.sum(jnp.where(x > 0.0, -(x**2), 2.0 * x)), 3),
    "reverse": (lambda x: jnp.sum(x[::-1] * jnp.arange(1.0, 4.0)) - jnp.sum(x**2), 3),
    "reshape_matmul": (
        lambda x: -jnp.sum((x.reshape(2, 2) @ jnp.array([[2.0, 0.5], [0.0, 1.0]])) ** 2),
        4,
    ),
    "dot_self": (lambda x: -0.5 * jnp.dot(x, x) + jnp.sin(x[0]), 3),
    "gather": (lambda x: -jnp.sum(x[jnp.array([2, 0])] ** 2) - 0.5 * x[1] ** 2, 3),
    "solve_constant_matrix": (lambda x: -0.5 * x @ jnp.linalg.solve(_COV, x), 3),
}


def test_erf_and_erfc_formulas_against_exact_values():
    """On float32 lanes erf/erfc are replayed as formulas (erfc fit: relative error
    1.2e-7). Against float64 SciPy, allow 4 eps (1 + x^2): erfc(x) ~ exp(-x^2) and a
    float32 argument of size x^2 carries a relative error x^2 eps (XLA's own erfc is
    3.7e-6 off at x = 9)."""
    from scipy import special

    x = jnp.linspace(-9.0, 9.0, 4001, dtype=jnp.float32)
    x64 = np.asarray(x, np.float64)
    bound = 4 * np.finfo(np.float32).eps * (1.0 + x64**2)
    for f, exact in ((jax.scipy.special.erf, special.erf), (jax.scipy.special.erfc, special.erfc)):
        out = np.asarray(lane_program(lambda v, f=f: f(v), 1).fn([x])[0], np.float64)
        ref = exact(x64)
        kept = np.abs(ref) > 1e-30  # erfc underflows past x ~ 9.2 in float32
        rel = np.abs(out - ref)[kept] / np.abs(ref)[kept]
        np.testing.assert_array_less(rel, bound[kept])
    # erf near 0 keeps its relative accuracy (erf(x) ~ 1.128 x).
    small = jnp.array([1e-30, -1e-8, 3e-4, 0.49], jnp.float32)
    out = lane_program(jax.scipy.special.erf, 1).fn([small])[0]
    np.testing.assert_allclose(out, special.erf(np.asarray(small, np.float64)), rtol=5e-7)


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_grad_matches_vmap(name):
    logdensity_fn, dim = CASES[name]
    _check_value_and_grad(logdensity_fn, dim, tol=CASE_TOL.get(name, TOL))


def test_cond_takes_both_branches():
    # Points on both sides of x[0] = 0 exercise the lane select.
    x = _points(2, seed=3)
    assert bool(jnp.any(x[:, 0] > 0)) and bool(jnp.any(x[:, 0] < 0))
    _check_value_and_grad(_cond_density, 2, seed=3)


def test_lane_value_matches_vmap_and_keeps_custom_jvp_primal():
    logdensity_fn = targets.bimodal_mixture(dim=3).logdensity_fn  # logsumexp: custom_jvp
    fn, num_ops = lane_value(logdensity_fn, 3)
    x = _points(3, seed=1, scale=3.0)
    np.testing.assert_allclose(fn(list(x.T)), jax.vmap(logdensity_fn)(x), **TOL)
    _, num_ops_grad = lane_value_and_grad(logdensity_fn, 3)
    assert 0 < num_ops < num_ops_grad


def test_identity_and_constant_gradient_entries():
    prog = lane_program(lambda x: x, 2)
    assert prog.num_ops == 0
    xs = [jnp.arange(3.0), jnp.ones(3)]
    out = prog.fn(xs)
    np.testing.assert_array_equal(out[0], xs[0])
    fn, _ = lane_value_and_grad(lambda x: x[0] ** 2 + 3.0 * x[1], 2)
    _, grad = fn(xs)
    np.testing.assert_array_equal(grad[1], jnp.full(3, 3.0))  # a constant, broadcast


def test_lane_program_shapes_constants_and_op_count():
    prog = lane_program(lambda x: {"rev": x[::-1] * 2.0, "one": jnp.ones((2, 2))}, 2)
    assert isinstance(prog, LaneProgram)
    assert prog.num_ops == 2  # two multiplications; the reversal and constants are free
    assert prog.out_shapes == {"rev": (2,), "one": (2, 2)}
    out = prog.fn([jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])])
    assert out["rev"].dtype == object and out["rev"].shape == (2,)
    np.testing.assert_array_equal(out["rev"][0], [6.0, 8.0])
    assert out["one"][1, 0].shape == (2,) and out["one"][1, 0].dtype == jnp.float32


def test_while_loop_with_constant_condition_unrolls():
    def logdensity_fn(x):
        _, acc = lax.while_loop(
            lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 0.5 + x[0] ** 2), (0, x[1])
        )
        return -acc

    fn, _ = lane_value(logdensity_fn, 2)
    x = _points(2)
    np.testing.assert_allclose(fn(list(x.T)), jax.vmap(logdensity_fn)(x), **TOL)


def test_program_built_inside_jit_folds_constants_eagerly():
    logdensity_fn = targets.bimodal_mixture(dim=3).logdensity_fn

    @jax.jit
    def run(x):
        fn, _ = lane_value_and_grad(logdensity_fn, 3)
        value, grad = fn(list(x.T))
        return value, jnp.stack(grad, axis=1)

    x = _points(3, seed=2, scale=3.0)
    value, grad = run(x)
    ref_value, ref_grad = jax.vmap(jax.value_and_grad(logdensity_fn))(x)
    np.testing.assert_allclose(value, ref_value, **TOL)
    np.testing.assert_allclose(grad, ref_grad, **TOL)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_unsupported_primitive_names_it_and_the_xla_backend():
    def logdensity_fn(x):
        chol = jnp.linalg.cholesky(jnp.eye(2) + jnp.outer(x, x))
        return jnp.sum(jnp.log(jnp.diag(chol)))

    with pytest.raises(FusionError, match=r"'cholesky' \(at .*test_fused_lanes\.py.*backend=None"):
        lane_value_and_grad(logdensity_fn, 2)


def test_while_loop_with_lane_condition_is_refused():
    def logdensity_fn(x):
        return lax.while_loop(lambda v: v < 10.0, lambda v: v + 1.0, x[0]) - x[1] ** 2

    with pytest.raises(FusionError, match=r"'while'.*depends on the position"):
        lane_value(logdensity_fn, 2)


def test_data_dependent_index_is_refused():
    def logdensity_fn(x):
        return x[jnp.argmax(x)] - jnp.sum(x**2)

    with pytest.raises(FusionError, match="argmax"):
        lane_value(logdensity_fn, 3)


def test_too_many_ops_is_refused():
    with pytest.raises(FusionError, match=r"too large to fuse.* 2 dimensions.*16 dimensions"):
        lane_value_and_grad(targets.banana().logdensity_fn, 2, max_ops=5)


def test_non_scalar_logdensity_is_refused():
    with pytest.raises(ValueError, match="logdensity_fn must return a scalar"):
        lane_value_and_grad(lambda x: x**2, 2)
    with pytest.raises(TypeError, match="logdensity_fn"):
        lane_value(lambda x: (x[0], x[1]), 2)
    with pytest.raises(TypeError, match="num_dims"):
        lane_value(lambda x: x[0], 2.0)


def test_closing_over_a_traced_value_is_refused():
    @jax.jit
    def build(scale):
        lane_value(lambda x: -jnp.sum((x * scale) ** 2), 2)

    with pytest.raises(FusionError, match="traced value"):
        build(jnp.float32(2.0))


# --------------------------------------------------------------------------------------
# Pallas: the emitted ops lower for Triton (no GPU needed) and run in interpret mode
# --------------------------------------------------------------------------------------

LANES = 128


def _pallas_value_and_grad(logdensity_fn, dim, **kwargs):
    fn, _ = lane_value_and_grad(logdensity_fn, dim)

    def kernel(x_ref, o_ref):
        pid = pl.program_id(0)
        xs = [x_ref[j, pl.ds(pid * LANES, LANES)] for j in range(dim)]
        value, grad = fn(xs)
        o_ref[0, pl.ds(pid * LANES, LANES)] = value
        for j in range(dim):
            o_ref[j + 1, pl.ds(pid * LANES, LANES)] = grad[j]

    out_shape = jax.ShapeDtypeStruct((dim + 1, 2 * LANES), jnp.float32)
    return pl.pallas_call(kernel, out_shape=out_shape, grid=(2,), **kwargs)


PALLAS_CASES = ["banana", "funnel5", "bimodal3", "probit_regression"]


@pytest.mark.parametrize("name", PALLAS_CASES)
def test_lowers_for_triton(name):
    logdensity_fn, dim = CASES[name]
    params = plt.CompilerParams(num_warps=4, num_stages=1)
    call = _pallas_value_and_grad(logdensity_fn, dim, compiler_params=params)
    exported = export.export(
        jax.jit(call),
        platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(jax.ShapeDtypeStruct((dim, 2 * LANES), jnp.float32))
    assert exported.out_avals[0].shape == (dim + 1, 2 * LANES)


@pytest.mark.parametrize("name", PALLAS_CASES)
def test_interpret_mode_matches_vmap(name):
    logdensity_fn, dim = CASES[name]
    call = _pallas_value_and_grad(logdensity_fn, dim, interpret=True)
    x = jax.random.normal(jax.random.key(5), (2 * LANES, dim))
    out = jax.jit(call)(x.T)
    ref_value, ref_grad = jax.vmap(jax.value_and_grad(logdensity_fn))(x)
    tol = CASE_TOL.get(name, TOL)
    np.testing.assert_allclose(out[0], ref_value, **tol)
    np.testing.assert_allclose(out[1:].T, ref_grad, **tol)
