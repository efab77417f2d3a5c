"""Samplers driven by the exact score of Gaussian data return the data's moments.

Each reverse-SDE sampler starts from the exact marginal at T (drawn with
``_gaussian.with_exact_prior``), so with the exact score it targets exactly
``p_eps = N(m(eps) MU, Σ_eps)``; what is left is Monte Carlo error (checked at 4 standard
errors, see ``_gaussian.assert_moments``) and discretisation bias, kept below about one
standard error by the step counts (measured: at n = 10,000 the largest bias seen was
~2 standard errors for ancestral sampling with EDM's grid at 500 steps).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import sde as sdelib

from ._gaussian import (
    COV,
    MU,
    assert_moments,
    exact_flow_map,
    exact_score,
    marginal_cov,
    with_exact_prior,
)

SDES = {
    "vp": sdelib.vp_sde(),
    "subvp": sdelib.subvp_sde(),
    "ve": sdelib.ve_sde(),
    "edm": sdelib.edm_sde(),
}
PREDICTORS = {
    "em": sdelib.euler_maruyama,
    "rd": sdelib.reverse_diffusion,
    "anc": sdelib.ancestral,
}


def _run_and_check(sde_name, predictor, corrector, num_steps, n, seed):
    sde = with_exact_prior(SDES[sde_name])
    sample_fn = jax.jit(
        lambda k: sdelib.sample_sde(
            k,
            sde,
            exact_score(sde),
            (n, 2),
            num_steps=num_steps,
            predictor=PREDICTORS[predictor],
            corrector=corrector,
        )
    )
    x = sample_fn(jax.random.key(seed))
    assert x.shape == (n, 2) and bool(jnp.all(jnp.isfinite(x)))
    mean = sde.marginal_fn(jnp.float32(sde.eps))[0] * MU
    assert_moments(x, mean, marginal_cov(sde, sde.eps))


FAST_CASES = [  # (sde, predictor, Langevin corrector?, steps)
    ("vp", "em", False, 400),
    ("vp", "rd", False, 400),
    ("vp", "anc", True, 400),
    ("subvp", "em", False, 400),
    ("ve", "rd", True, 400),
    ("ve", "anc", False, 400),
    ("edm", "em", False, 400),
    ("edm", "anc", False, 400),
]


@pytest.mark.parametrize("case", FAST_CASES, ids=lambda c: f"{c[0]}-{c[1]}{'-lc' * c[2]}")
def test_samplers_return_data_moments(case):
    # n = 4,000 keeps this fast; the slow test below runs every pair at n = 10,000.
    sde_name, predictor, use_corrector, num_steps = case
    corrector = sdelib.langevin_corrector(snr=0.1, num_steps=1) if use_corrector else None
    _run_and_check(sde_name, predictor, corrector, num_steps, 4000, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("predictor", list(PREDICTORS))
@pytest.mark.parametrize("use_corrector", [False, True])
def test_all_samplers_return_data_moments_slow(sde_name, predictor, use_corrector):
    corrector = sdelib.langevin_corrector(snr=0.1, num_steps=1) if use_corrector else None
    _run_and_check(sde_name, predictor, corrector, 1000, 10_000, seed=2)


def test_sampling_from_the_default_prior(key):
    # VP's prior N(0, I) differs from the exact marginal at T by a mean m(T) MU ≈ 0.007 MU;
    # through the flow that moves the output mean by at most ~0.007 · 1.1, a third of one
    # standard error at n = 4,000, so the 4-standard-error check still holds.
    sde = SDES["vp"]
    x = sdelib.sample_sde(
        key, sde, exact_score(sde), (4000, 2), num_steps=200, predictor=sdelib.reverse_diffusion
    )
    assert_moments(x, MU * sde.marginal_fn(jnp.float32(sde.eps))[0], marginal_cov(sde, sde.eps))


@pytest.mark.parametrize("sde_name", ["vp", "ve", "edm"])
def test_probability_flow_sampler_converges_to_the_exact_map(sde_name, key):
    # The flow map of the exact probability-flow ODE is known (_gaussian.exact_flow_map);
    # doubling the steps divides the error by about 2^order (at least: coarse grids can be
    # pre-asymptotic and gain more; we require 60% of 2^order), and RK4 with 40 steps is
    # accurate to 1e-3 relative.
    sde = SDES[sde_name]
    score_fn = exact_score(sde)
    x_T = with_exact_prior(sde).prior_sample_fn(key, (64, 2))
    exact = exact_flow_map(sde, x_T)

    def error(solver, num_steps):
        y, info = sdelib.sample_ode(
            key, sde, score_fn, None, solver=solver, num_steps=num_steps, x_T=x_T
        )
        assert int(info.num_fn_evals) == solver.num_stages * num_steps
        return float(np.max(np.abs(np.asarray(y) - exact)))

    # Step counts coarse enough that float32 rounding (~1e-6) stays out of the ratio.
    for solver, num_steps in ((sdelib.heun, 10), (sdelib.rk4, 5)):
        coarse, fine = error(solver, num_steps), error(solver, 2 * num_steps)
        assert coarse / fine > 0.6 * 2**solver.order, (coarse, fine)
    assert error(sdelib.rk4, 40) < 1e-3 * float(np.max(np.abs(exact)))


def test_adaptive_probability_flow_sampler(key):
    sde = SDES["ve"]
    x_T = with_exact_prior(sde).prior_sample_fn(key, (64, 2))
    exact = exact_flow_map(sde, x_T)
    errors = []
    for tol in (1e-3, 1e-5):
        solver = sdelib.adaptive_solver(rtol=tol, atol=tol)
        y, info = sdelib.sample_ode(key, sde, exact_score(sde), None, solver=solver, x_T=x_T)
        assert not bool(info.max_steps_reached) and int(info.num_fn_evals) > 0
        errors.append(float(np.max(np.abs(np.asarray(y) - exact))))
    assert errors[1] < errors[0] and errors[1] < 1e-3
    solver = sdelib.adaptive_solver(rtol=1e-6, atol=1e-6, max_steps=4)
    _, info = sdelib.sample_ode(key, sde, exact_score(sde), None, solver=solver, x_T=x_T)
    assert bool(info.max_steps_reached)


def test_jit_vmap_and_denoising(key):
    sde = SDES["vp"]
    score_fn = exact_score(sde)

    def run(k, denoise=True):
        return sdelib.sample_sde(k, sde, score_fn, (8, 2), num_steps=20, denoise_final=denoise)

    eager = run(key)
    np.testing.assert_allclose(jax.jit(run)(key), eager, rtol=1e-4, atol=1e-5)
    batched = jax.vmap(run)(jax.random.split(key, 3))
    assert batched.shape == (3, 8, 2)
    # Without denoising the last step adds noise of std g sqrt(|Δt|) > 0.
    assert float(jnp.max(jnp.abs(run(key, False) - eager))) > 0
    # An explicit decreasing time grid and a starting point are accepted.
    grid = np.linspace(1.0, 1e-3, 11)
    x = sdelib.sample_sde(key, sde, score_fn, None, time_grid=grid, x_T=jnp.zeros((4, 2)))
    assert x.shape == (4, 2)


def test_bad_inputs_are_rejected(key):
    sde = SDES["vp"]
    score_fn = exact_score(sde)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2), num_steps=0)
    with pytest.raises(ValueError, match="num_steps is required"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        sdelib.sample_ode(key, sde, score_fn, (8, 2), num_steps=0)
    with pytest.raises(ValueError, match="score_fn"):
        sdelib.sample_sde(key, sde, lambda x, t: x[:, :1], (8, 2), num_steps=5)
    with pytest.raises(ValueError, match="shape must be"):
        sdelib.sample_sde(key, sde, score_fn, (8,), num_steps=5)
    with pytest.raises(ValueError, match="does not match x_T"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2), num_steps=5, x_T=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"time_grid must lie in \[0, 1.0\]"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2), time_grid=[1.5, 0.5, 0.1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2), time_grid=[0.1, 0.5, 1.0])
    with pytest.raises(ValueError, match="end at a time > 0"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2), time_grid=[1.0, 0.5, 0.0])
    with pytest.raises(TypeError, match="solver must be"):
        sdelib.sample_ode(key, sde, score_fn, (8, 2), solver="rk4", num_steps=5)
    with pytest.raises(TypeError, match="predictor must be a function"):
        sdelib.sample_sde(key, sde, score_fn, (8, 2), num_steps=5, predictor="euler")
    with pytest.raises(ValueError, match="snr"):
        sdelib.langevin_corrector(snr=0.0)
    with pytest.raises(TypeError, match="key"):
        sdelib.sample_sde(0, sde, score_fn, (8, 2), num_steps=5)


def test_reference_data_is_what_the_docstring_says():
    np.testing.assert_allclose(COV, COV.T)
    assert bool(jnp.all(jnp.linalg.eigvalsh(COV) > 0)) and MU.shape == (2,)
