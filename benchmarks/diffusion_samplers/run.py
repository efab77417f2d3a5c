"""Diffusion-sampler benchmark: our fixed-step solvers against diffrax's ``diffeqsolve``.

Side by side in one process, on the same SDE and the same score function: the reverse
VP-SDE (``dgm_jax.sde.vp_sde()``, β from 0.1 to 20) of a Gaussian data law
``N(μ, diag σ²)``, whose score is exact in closed form,
``∇ log p_t(x) = -(x - m(t) μ) / (m(t)² σ² + s(t)²)``. Both sides integrate from
``t = 1`` down to ``eps = 1e-5`` in ``--num-steps`` equal steps, the whole batch as one
state:

* **ODE** (probability flow, Heun): ours is :func:`dgm_jax.sde.sample_ode` with
  ``solver=heun``; diffrax is ``diffeqsolve(ODETerm(...), Heun(), ...)`` with a
  constant step. Both start from the same ``x_T``, so their outputs should agree to
  float32 round-off: the benchmark reports the largest difference.
* **SDE** (reverse SDE, Euler–Maruyama): ours is :func:`dgm_jax.sde.sample_sde` with
  ``predictor=euler_maruyama`` (``denoise_final=False``, so both do the same steps);
  diffrax is ``Euler()`` on ``MultiTerm(ODETerm, ControlTerm)`` in the forward time
  ``τ = 1 - t`` (the reverse SDE ``dx = [f - g² ∇log p] dt + g dw̄`` becomes
  ``dx = -[f - g² ∇log p](1 - τ) dτ + g(1 - τ) dW_τ``), with diagonal noise as a
  ``lineax.DiagonalLinearOperator`` on the flattened state, and two Brownian paths:

  - ``UnsafeBrownianPath`` (one normal draw per step; needs ``adjoint=ForwardMode()``),
  - ``VirtualBrownianTree`` (diffrax's default for SDEs, needed for reverse-mode
    gradients through the solve) with ``tol = dt / 2`` as its documentation suggests.

  Noise differs between the sides, so accuracy is checked by moments against the exact
  law at ``eps`` (per-coordinate mean error in units of the standard deviation and
  relative variance error, worst coordinate; with ``n`` samples the Monte Carlo noise
  is about ``1/sqrt(n)`` and ``sqrt(2/n)`` respectively).

Sizes: 2-D × 4,096 samples and 784-D × 256 samples, 1,000 steps. Compile time is the
first call minus the best timed call; run time is the best of ``--repeats`` calls with
``block_until_ready``, the solvers interleaved round by round. Throughput is samples
per second; ratios are ours / diffrax's throughput (> 1: ours faster). Results go to
``benchmarks/results/diffusion_samplers-<platform>-<date>.json``.

Usage::

    python benchmarks/diffusion_samplers/run.py --quick     # CPU: 3 repeats, ~5 minutes
    python benchmarks/diffusion_samplers/run.py             # GPU: 5 timed repeats
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax import sde as sdes

RESULTS = Path(__file__).resolve().parents[1] / "results"
SIZES = ((2, 4096), (784, 256))  # (dim, num_samples)


def gaussian_problem(dim: int, key: jax.Array):
    """A VP SDE, a data law N(mu, diag sigma²) and its exact score ``score_fn(x, t)``."""
    vp = sdes.vp_sde()
    key_mu, key_sd = jax.random.split(key)
    mu = jax.random.normal(key_mu, (dim,))
    sigma = jax.random.uniform(key_sd, (dim,), minval=0.3, maxval=1.5)

    def score_fn(x, t):  # x (batch, dim), t (batch,)
        m, s = vp.marginal_fn(t)
        m, s = m[:, None], s[:, None]
        return -(x - m * mu[None, :]) / (m**2 * sigma[None, :] ** 2 + s**2)

    m_eps, s_eps = vp.marginal_fn(jnp.float32(vp.eps))
    exact_mean = m_eps * mu
    exact_var = m_eps**2 * sigma**2 + s_eps**2
    return vp, score_fn, exact_mean, exact_var


def build_ours(vp, score_fn, num_steps: int):
    """Jitted ``ode(x_T)`` and ``sde(key, x_T)`` of dgm_jax."""

    @jax.jit
    def ode(x_T):
        x, _ = sdes.sample_ode(
            jax.random.key(0), vp, score_fn, None, solver=sdes.heun, num_steps=num_steps, x_T=x_T
        )
        return x

    @jax.jit
    def sde(key, x_T):
        return sdes.sample_sde(
            key,
            vp,
            score_fn,
            None,
            num_steps=num_steps,
            predictor=sdes.euler_maruyama,
            denoise_final=False,
            x_T=x_T,
        )

    return ode, sde


def build_diffrax(vp, score_fn, num_steps: int, shape: tuple[int, int]):
    """Jitted diffrax ``ode(x_T)``, ``sde_unsafe(key, x_T)`` and ``sde_tree(key, x_T)``."""
    import diffrax
    import lineax

    batch = shape[0]
    t0, t1 = vp.T, vp.eps
    dt = (t1 - t0) / num_steps  # negative: the ODE runs backwards in t
    flow = sdes.probability_flow(vp, score_fn)
    reverse = sdes.reverse_sde(vp, score_fn)

    def ode_field(t, y, args):
        return flow.drift_fn(y, jnp.full((batch,), t, jnp.float32))

    @jax.jit
    def ode(x_T):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(ode_field),
            diffrax.Heun(),
            t0=t0,
            t1=t1,
            dt0=dt,
            y0=x_T,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=num_steps + 1,
        )
        return sol.ys[0]

    # Forward time tau = T - t for the SDE: tau runs from 0 to T - eps.
    tau1 = t0 - t1
    dtau = tau1 / num_steps

    def drift(tau, y, args):  # y flattened to (batch * dim,)
        x = y.reshape(shape)
        t = jnp.full((batch,), t0 - tau, jnp.float32)
        return -reverse.drift_fn(x, t).reshape(-1)

    def diffusion(tau, y, args):
        g = vp.diffusion_fn(t0 - tau)
        return lineax.DiagonalLinearOperator(jnp.full(y.shape, g, y.dtype))

    def solve(path, x_T, adjoint):
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, path))
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            t0=0.0,
            t1=tau1,
            dt0=dtau,
            y0=x_T.reshape(-1),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=num_steps + 1,
            adjoint=adjoint,
        )
        return sol.ys[0].reshape(shape)

    size = math.prod(shape)

    @jax.jit
    def sde_unsafe(key, x_T):
        path = diffrax.UnsafeBrownianPath(shape=(size,), key=key)
        return solve(path, x_T, diffrax.ForwardMode())

    @jax.jit
    def sde_tree(key, x_T):
        path = diffrax.VirtualBrownianTree(0.0, tau1, tol=dtau / 2, shape=(size,), key=key)
        return solve(path, x_T, diffrax.RecursiveCheckpointAdjoint())

    return ode, sde_unsafe, sde_tree


def moment_errors(x, exact_mean, exact_var) -> dict[str, float]:
    """Mean error (in standard deviations) and relative variance error: worst and RMS
    over coordinates (the RMS should be near the Monte Carlo scale when unbiased)."""
    x = np.asarray(x, np.float64)
    mean_err = np.abs(x.mean(0) - np.asarray(exact_mean)) / np.sqrt(np.asarray(exact_var))
    var_err = np.abs(x.var(0, ddof=1) / np.asarray(exact_var) - 1.0)
    return {
        "max_mean_error_in_sd": float(mean_err.max()),
        "rms_mean_error_in_sd": float(np.sqrt(np.mean(mean_err**2))),
        "max_relative_variance_error": float(var_err.max()),
        "rms_relative_variance_error": float(np.sqrt(np.mean(var_err**2))),
        "finite": bool(np.all(np.isfinite(x))),
    }


def measure_all(cases, *, num_samples, num_steps, repeats, exact, slow_seconds=None):
    """Time every case: a first call each (compile + run), then ``repeats`` rounds that
    interleave the cases, so that load from other processes hits all of them alike.
    A case whose timed call took more than ``slow_seconds`` is timed once only.

    ``cases`` maps name -> (jitted fn, args). Returns (outputs, rows) keyed by name.
    """
    outputs, first, best = {}, {}, {}
    for name, (fn, args) in cases.items():
        start = time.perf_counter()
        outputs[name] = jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - start
        best[name] = float("inf")
    for round_ in range(repeats):
        for name, (fn, args) in cases.items():
            if round_ > 0 and slow_seconds is not None and best[name] > slow_seconds:
                continue
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - start)
    rows = {
        name: {
            "solver": name,
            "seconds": best[name],
            "compile_seconds": max(first[name] - best[name], 0.0),
            "samples_per_second": num_samples / best[name],
            "microseconds_per_step": 1e6 * best[name] / num_steps,
        }
        | moment_errors(outputs[name], *exact)
        for name in cases
    }
    return outputs, rows


def bench_size(dim, num_samples, *, num_steps, repeats, skip_tree, slow_seconds, emit):
    key = jax.random.key(dim)
    key_problem, key_xT, key_noise = jax.random.split(key, 3)
    vp, score_fn, exact_mean, exact_var = gaussian_problem(dim, key_problem)
    shape = (num_samples, dim)
    x_T = jax.random.normal(key_xT, shape)
    exact = (exact_mean, exact_var)
    tolerances = {  # Monte Carlo scale of the moment errors, one coordinate
        "mean_error_sd_scale": 1.0 / math.sqrt(num_samples),
        "variance_error_sd_scale": math.sqrt(2.0 / num_samples),
    }
    ours_ode, ours_sde = build_ours(vp, score_fn, num_steps)
    dx_ode, dx_unsafe, dx_tree = build_diffrax(vp, score_fn, num_steps, shape)
    common = {"num_samples": num_samples, "num_steps": num_steps, "repeats": repeats}
    cases = {
        "ours_ode_heun": (ours_ode, (x_T,)),
        "diffrax_ode_heun": (dx_ode, (x_T,)),
        "ours_sde_em": (ours_sde, (key_noise, x_T)),
        "diffrax_sde_euler_unsafe": (dx_unsafe, (key_noise, x_T)),
    }
    if not skip_tree:
        cases["diffrax_sde_euler_vbt"] = (dx_tree, (key_noise, x_T))
    outputs, rows = measure_all(cases, exact=exact, slow_seconds=slow_seconds, **common)
    ode_diff = float(jnp.max(jnp.abs(outputs["ours_ode_heun"] - outputs["diffrax_ode_heun"])))

    def ratio(ours, peer):
        if peer not in rows:
            return None
        return rows[ours]["samples_per_second"] / rows[peer]["samples_per_second"]

    result = {
        "dim": dim,
        "num_samples": num_samples,
        "num_steps": num_steps,
        "rows": rows,
        "ode_max_abs_difference_ours_vs_diffrax": ode_diff,
        "ode_output_scale": float(jnp.max(jnp.abs(outputs["ours_ode_heun"]))),
        "moment_error_scales": tolerances,
        "ratios": {
            "ode_heun_ours_over_diffrax": ratio("ours_ode_heun", "diffrax_ode_heun"),
            "sde_em_ours_over_diffrax_unsafe": ratio("ours_sde_em", "diffrax_sde_euler_unsafe"),
            "sde_em_ours_over_diffrax_vbt": ratio("ours_sde_em", "diffrax_sde_euler_vbt"),
        },
    }
    for row in rows.values():
        emit({"dim": dim} | row)
    emit({"dim": dim, "ratios": result["ratios"], "ode_max_abs_difference": ode_diff})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU: 3 timed repeats, 1 for a call slower than 5 s (VirtualBrownianTree at 784-D)",
    )
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--skip-tree", action="store_true", help="skip diffrax's VirtualBrownianTree (slow)"
    )
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results)")
    args = parser.parse_args(argv)
    if args.num_steps < 1:
        parser.error(f"--num-steps must be >= 1, got {args.num_steps}")
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")

    import diffrax
    import equinox
    import lineax

    device = jax.devices()[0]
    versions = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__,
        "diffrax": diffrax.__version__,
        "equinox": equinox.__version__,
        "lineax": lineax.__version__,
        "numpy": np.__version__,
    }
    date = datetime.date.today().isoformat()

    def emit(obj):
        print(json.dumps(obj), flush=True)

    emit({"device": device.device_kind, "platform": device.platform} | versions)
    results = [
        bench_size(
            dim,
            num,
            num_steps=args.num_steps,
            repeats=repeats,
            skip_tree=args.skip_tree,
            slow_seconds=5.0 if args.quick else None,
            emit=emit,
        )
        for dim, num in SIZES
    ]
    report = {
        "benchmark": "diffusion_samplers",
        "date": date,
        "device": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "num_devices": jax.device_count(),
            "host": platform.machine(),
            "cpu_count": os.cpu_count(),
            # Other jobs share this machine's cores: the 1-minute load average at the end.
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "versions": versions,
        "settings": {
            "quick": args.quick,
            "repeats": repeats,
            "slow_seconds": "5 (a slower call is timed once)" if args.quick else None,
            "num_steps": args.num_steps,
            "sde": "vp_sde(beta_min=0.1, beta_max=20), t from 1 to eps=1e-5",
            "score": "exact score of N(mu, diag sigma^2) data, sigma ~ U(0.3, 1.5)",
            "vbt_tol": "dt / 2",
            "timing": "best of interleaved repeats, block_until_ready; compile = first call - best",
        },
        "results": results,
    }
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"diffusion_samplers-{device.platform}-{date}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    emit({"written": str(out)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
