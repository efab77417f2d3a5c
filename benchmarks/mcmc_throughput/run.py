"""MCMC throughput: our HMC, MALA and NUTS against BlackJAX (and NumPyro's NUTS), and our fused
Pallas backend for HMC and MALA.

Side by side in one process, on the same target, from the same initial positions
(exact draws, so the chains are stationary and no warm-up is needed), with the same
step size, mass matrix and number of steps. Both libraries run inside the same
harness: ``jax.jit`` of a ``lax.scan`` over steps of ``jax.vmap(step)`` over chains,
with the per-step keys ``split(fold_in(key, t), num_chains)``. The compile time is
measured separately (``lower().compile()``); the run time is the best of
``--repeats`` runs of the compiled function, timed with ``block_until_ready``.

NumPyro's NUTS runs through its own ``MCMC(..., chain_method="vectorized")`` with
adaptation switched off (its compile time is the first run minus the second).

The fused backend (``dgm_jax.mcmc.FusedBackend``, HMC and MALA only) runs the same
kernel through the driver's fused runner (``build_fused_runner``: one Pallas kernel per
block of chains for the whole run), jit-compiled the same way, once per random-number
mode (``--fused counter,predrawn``). It writes every coordinate and the Info of every
step, more than the scan harness keeps. For its rows we also report the memory traffic
it needs (draws and Info written; with predrawn noise also the noise written and read)
and an estimate of its arithmetic (lane operations of the unrolled log density and
gradient) as fractions of the device's nominal peaks. On a CPU the Pallas kernels run
in interpret mode: those numbers only show that the path works.

Reported per (algorithm, target, chains): samples/s, gradient evaluations/s, ESS/s
(bulk ESS of the first coordinate), the ratio of each to BlackJAX's, compile time,
and the mean acceptance rate of both with a z-score (a cross-check that both sample
the same chain: |z| < 4 is "within noise").

Usage::

    python benchmarks/mcmc_throughput/run.py --quick            # CPU, a few minutes
    python benchmarks/mcmc_throughput/run.py --chains 1,1024,65536,1048576   # GPU
    python benchmarks/mcmc_throughput/run.py --cases hmc-banana,mala-banana,hmc-funnel,mala-funnel \
        --chains 1024,65536,1048576 --no-numpyro              # GPU, fused backend goal
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax.mcmc import diagnostics, targets
from dgm_jax.mcmc.fused import FusedBackend, build_algorithm, build_fused_runner
from dgm_jax.mcmc.hmc import hmc as our_hmc
from dgm_jax.mcmc.langevin import mala as our_mala
from dgm_jax.mcmc.nuts import nuts as our_nuts

RESULTS = Path(__file__).resolve().parents[1] / "results"

# (algorithm, target, settings). Step sizes give acceptance ≈ 0.6–0.9 on these targets.
CASES = {
    "hmc-banana": ("hmc", "banana", {"step_size": 0.3, "num_integration_steps": 10}),
    "mala-banana": ("mala", "banana", {"step_size": 0.1}),
    "nuts-banana": ("nuts", "banana", {"step_size": 0.3}),
    "nuts-gaussian50": ("nuts", "gaussian50", {"step_size": 0.15}),
    "hmc-funnel": ("hmc", "funnel10", {"step_size": 0.1, "num_integration_steps": 10}),
    "mala-funnel": ("mala", "funnel10", {"step_size": 0.02}),
}
FUSABLE = ("hmc", "mala")

# Nominal peaks (NVIDIA data sheets): HBM bandwidth in bytes/s, FP32 (non-tensor) flop/s.
PEAKS = {
    "H100 PCIe": (2.0e12, 51.2e12),
    "H100": (3.35e12, 66.9e12),
    "H200": (4.8e12, 66.9e12),
}

# Steps per run: fewer for many chains so each run takes about the same time.
STEPS_FULL = {
    "hmc": {1: 5000, 1024: 1000, 65536: 100, 1048576: 100},
    "mala": {1: 20000, 1024: 2000, 65536: 200, 1048576: 200},
    "nuts": {1: 1000, 1024: 200, 65536: 20, 1048576: 10},
}
STEPS_QUICK = {
    "hmc": {1: 20000, 1024: 1000, 65536: 20},
    "mala": {1: 50000, 1024: 2000, 65536: 50},
    "nuts": {1: 1000, 1024: 50, 65536: 5},
    # 50-D NUTS: ~60 gradients of a 50x50 matvec per step; 1,024 chains x 50 steps took
    # ~60 s per library on the 2-core CPU, so the quick run keeps it short.
    "nuts-gaussian50": {1: 300, 1024: 8, 65536: 2},
}


def make_target(name: str) -> targets.Target:
    if name == "banana":
        return targets.banana()
    if name == "gaussian50":
        return targets.correlated_gaussian(50, rho=0.9)
    if name == "funnel10":
        return targets.funnel(dim=10)
    raise ValueError(name)


def our_kernel(algo: str, target: targets.Target, settings: dict) -> Any:
    h = settings["step_size"]
    if algo == "hmc":
        return our_hmc(
            target.logdensity_fn, h, jnp.ones(target.dim), settings["num_integration_steps"]
        )
    if algo == "mala":
        return our_mala(target.logdensity_fn, h)
    return our_nuts(target.logdensity_fn, h, jnp.ones(target.dim))


def build_kernel(lib: str, algo: str, target: targets.Target, settings: dict) -> Any:
    """Return ``(init, step, grads_per_step(info))`` for one library."""
    inv_mass = jnp.ones(target.dim)
    h = settings["step_size"]
    if lib == "ours":
        k = our_kernel(algo, target, settings)
        if algo == "mala":
            return k.init, k.step, lambda info: jnp.ones_like(info.acceptance_rate)
        return k.init, k.step, lambda info: info.num_integration_steps
    import blackjax

    if algo == "hmc":
        k = blackjax.hmc(target.logdensity_fn, h, inv_mass, settings["num_integration_steps"])
        return k.init, k.step, lambda info: info.num_integration_steps
    if algo == "mala":
        k = blackjax.mala(target.logdensity_fn, h)
        return k.init, k.step, lambda info: jnp.ones_like(info.acceptance_rate)
    k = blackjax.nuts(target.logdensity_fn, h, inv_mass)
    return k.init, k.step, lambda info: info.num_integration_steps


def make_runner(step, grads_fn, num_chains: int, num_steps: int):
    def run(key, states):
        def body(states, t):
            keys = jax.random.split(jax.random.fold_in(key, t), num_chains)
            states, info = jax.vmap(step)(keys, states)
            acc = info.acceptance_rate.astype(jnp.float32)
            return states, (states.position[:, 0], acc, grads_fn(info).astype(jnp.float32))

        states, (trace, acc, grads) = jax.lax.scan(body, states, jnp.arange(num_steps))
        # per-chain mean acceptance (for the z-score) and the total gradient count
        return states, trace.T, acc.mean(axis=0), grads.sum()

    return jax.jit(run)


def prepare(lib: str, algo: str, target, settings, positions, num_steps: int, key) -> dict:
    """Build, vmap-initialise and compile one library's run; nothing is timed but compile."""
    init, step, grads_fn = build_kernel(lib, algo, target, settings)
    num_chains = positions.shape[0]
    states = jax.jit(jax.vmap(init))(positions)
    runner = make_runner(step, grads_fn, num_chains, num_steps)
    return compile_run(lib, runner, key, states, num_steps)


def compile_run(lib: str, runner, key, states, num_steps: int, **extra) -> dict:
    """Compile ``runner(key, states)`` (timed), run it once, and return the run record."""
    t0 = time.perf_counter()
    compiled = runner.lower(key, states).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(key, states))  # first execution (allocations)
    return {
        "lib": lib,
        "fn": compiled,
        "args": (key, states),
        "compile_s": compile_s,
        "num_chains": jax.tree_util.tree_leaves(states)[0].shape[0],
        "num_steps": num_steps,
        "best": math.inf,
        "out": None,
        **extra,
    }


def prepare_fused(rng: str, algo, target, settings, positions, num_steps: int, key) -> dict:
    """Compile the fused backend's run of our kernel (``rng``: counter or predrawn)."""
    kernel = our_kernel(algo, target, settings)
    num_chains = positions.shape[0]
    states = jax.jit(jax.vmap(kernel.init))(positions)
    _, draws = build_fused_runner(kernel, num_chains, 1, None, FusedBackend(rng=rng))

    def run(key, states):
        states, samples, infos = draws(key, states, 0, num_draws=num_steps)
        grads = jnp.sum(infos.num_integration_steps.astype(jnp.float32))
        return states, samples[:, :, 0], infos.acceptance_rate.mean(axis=1), grads

    alg = build_algorithm(kernel.fusion, positions[0])
    return compile_run(f"fused-{rng}", jax.jit(run), key, states, num_steps, algorithm=alg, rng=rng)


def roofline(run: dict, summary: dict, device_kind: str) -> dict:
    """Memory traffic and arithmetic the fused run needs, against the device's peaks."""
    alg = run["algorithm"]
    steps = run["num_chains"] * run["num_steps"]
    # Per chain and step: the draw (d floats) and three Info words written; predrawn
    # noise is written by the generator and read by the kernel (slots floats each way).
    per_step = 4 * (alg.num_dims + 3)
    if run["rng"] == "predrawn":
        per_step += 2 * 4 * (alg.num_normals + int(alg.uses_uniform))
    bytes_per_s = per_step * steps / run["best"]
    flops_per_s = alg.lane_ops_per_step * steps / run["best"]
    peak = next((v for k, v in PEAKS.items() if k in device_kind), None)
    return {
        "bytes_per_step": per_step,
        "bytes_per_s": bytes_per_s,
        "lane_ops_per_step": alg.lane_ops_per_step,
        "flops_per_s_estimate": flops_per_s,
        "peak_bandwidth": None if peak is None else peak[0],
        "peak_fp32_flops": None if peak is None else peak[1],
        "bandwidth_fraction": None if peak is None else bytes_per_s / peak[0],
        "fp32_peak_fraction": None if peak is None else flops_per_s / peak[1],
    }


def time_once(run: dict) -> None:
    t0 = time.perf_counter()
    out = jax.block_until_ready(run["fn"](*run["args"]))
    run["best"] = min(run["best"], time.perf_counter() - t0)
    run["out"] = out


def finish(run: dict) -> dict:
    _, trace, acc_per_chain, grads = run["out"]
    return summarise(
        run["lib"],
        run["num_chains"],
        run["num_steps"],
        run["best"],
        run["compile_s"],
        trace,
        acc_per_chain,
        grads,
    )


def time_numpyro(target, settings, positions, num_steps: int, repeats: int, key) -> dict:
    from numpyro.infer import MCMC, NUTS

    num_chains, dim = positions.shape
    kernel = NUTS(
        potential_fn=lambda x: -target.logdensity_fn(x),
        step_size=settings["step_size"],
        inverse_mass_matrix=jnp.ones(dim),
        adapt_step_size=False,
        adapt_mass_matrix=False,
        max_tree_depth=10,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=0,
        num_samples=num_steps,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    init = positions[0] if num_chains == 1 else positions
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        mcmc.run(key, init_params=init, extra_fields=("accept_prob", "num_steps"))
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        times.append(time.perf_counter() - t0)
    best = min(times[1:])
    extra = mcmc.get_extra_fields(group_by_chain=True)
    trace = samples.reshape(num_chains, num_steps, dim)[:, :, 0]
    acc = extra["accept_prob"].reshape(num_chains, num_steps).mean(axis=1)
    grads = extra["num_steps"].astype(jnp.float32).sum()
    return summarise("numpyro", num_chains, num_steps, best, times[0] - best, trace, acc, grads)


def summarise(lib, num_chains, num_steps, seconds, compile_s, trace, acc, grads) -> dict:
    ess = float(diagnostics.ess_bulk(trace)) if num_steps >= 4 else float("nan")
    acc = np.asarray(acc, np.float64)
    return {
        "lib": lib,
        "seconds": seconds,
        "compile_s": compile_s,
        "samples_per_s": num_chains * num_steps / seconds,
        "grads_per_s": float(grads) / seconds,
        "grads_per_sample": float(grads) / (num_chains * num_steps),
        "ess_bulk_x0": ess,
        "ess_per_s": ess / seconds,
        "acceptance": float(acc.mean()),
        # standard error of the mean acceptance across chains (chains are independent);
        # one chain: the per-step values are autocorrelated, so fall back on sqrt(p(1-p)/n)
        "acceptance_se": (
            float(acc.std(ddof=1) / math.sqrt(len(acc)))
            if len(acc) > 1
            else math.sqrt(max(acc.mean() * (1 - acc.mean()), 1e-4) / num_steps)
        ),
    }


def compare(ours: dict, peer: dict) -> dict:
    se = math.hypot(ours["acceptance_se"], peer["acceptance_se"])
    # one chain: per-step acceptances are correlated; sqrt(p(1-p)/n) understates the
    # error of their mean by up to sqrt(tau); use 4 standard errors either way
    z = (ours["acceptance"] - peer["acceptance"]) / max(se, 1e-9)
    return {
        "peer": peer["lib"],
        "samples_per_s_ratio": ours["samples_per_s"] / peer["samples_per_s"],
        "grads_per_s_ratio": ours["grads_per_s"] / peer["grads_per_s"],
        "ess_per_s_ratio": ours["ess_per_s"] / peer["ess_per_s"],
        "acceptance_z": z,
        "acceptance_agrees": bool(abs(z) < 4.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU-sized step counts")
    parser.add_argument("--chains", default="1,1024,65536", help="comma list of chain counts")
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of cases")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-numpyro", action="store_true")
    parser.add_argument(
        "--fused",
        default="counter,predrawn",
        help="random-number modes of the fused backend to run for HMC/MALA ('' for none)",
    )
    parser.add_argument(
        "--max-gaussian50-chains",
        type=int,
        default=None,
        help="cap chains for the 50-D NUTS case (default: 1,024 with --quick, else none)",
    )
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results)")
    args = parser.parse_args(argv)

    chain_counts = [int(c) for c in args.chains.split(",") if c]
    if args.quick and args.max_gaussian50_chains is None:
        args.max_gaussian50_chains = 1024
    steps_table = STEPS_QUICK if args.quick else STEPS_FULL
    device = jax.devices()[0]
    versions = {
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__,
        "python": platform.python_version(),
    }
    for name in ("blackjax", "numpyro"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    key = jax.random.key(0)
    rows = []
    for case in args.cases.split(","):
        algo, target_name, settings = CASES[case]
        target = make_target(target_name)
        for num_chains in chain_counts:
            if (
                target_name == "gaussian50"
                and args.max_gaussian50_chains
                and num_chains > args.max_gaussian50_chains
            ):
                continue
            table = steps_table.get(case, steps_table[algo])
            num_steps = table.get(num_chains) or table[max(k for k in table if k <= num_chains)]
            positions = target.sample(jax.random.fold_in(key, num_chains), num_chains)
            run_key = jax.random.fold_in(key, 7)
            runs = [
                prepare(lib, algo, target, settings, positions, num_steps, run_key)
                for lib in ("ours", "blackjax")
            ]
            if algo in FUSABLE:
                runs += [
                    prepare_fused(rng, algo, target, settings, positions, num_steps, run_key)
                    for rng in args.fused.split(",")
                    if rng
                ]
            # Interleave the repeats so that load from other processes hits both alike;
            # the best of the repeats is the least disturbed run.
            for _ in range(args.repeats):
                for run in runs:
                    time_once(run)
                if min(run["best"] for run in runs) > 10.0:  # long runs: noise is small
                    break
            ours, bj = finish(runs[0]), finish(runs[1])
            row = {
                "case": case,
                "algorithm": algo,
                "target": target_name,
                "dim": target.dim,
                "settings": settings,
                "num_chains": num_chains,
                "num_steps": num_steps,
                "ours": ours,
                "blackjax": bj,
                "vs_blackjax": compare(ours, bj),
            }
            for run in runs[2:]:
                fused = finish(run)
                row[run["lib"]] = fused
                row[f"{run['lib']}_vs_blackjax"] = compare(fused, bj)
                row[f"{run['lib']}_vs_ours"] = compare(fused, ours)
                row[f"{run['lib']}_roofline"] = roofline(run, fused, device.device_kind)
            if algo == "nuts" and versions["numpyro"] and not args.no_numpyro:
                npy = time_numpyro(target, settings, positions, num_steps, args.repeats, run_key)
                row["numpyro"] = npy
                row["vs_numpyro"] = compare(ours, npy)
            print(json.dumps(row), flush=True)
            rows.append(row)

    platform_name = device.platform
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else RESULTS / f"mcmc_throughput-{platform_name}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "mcmc_throughput",
        "device": {
            "platform": platform_name,
            "device_kind": device.device_kind,
            "num_devices": jax.device_count(),
        },
        "versions": versions,
        "date": date,
        "quick": args.quick,
        "command": " ".join(sys.argv),
        "measurements": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"wrote": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
