"""Silent MCMC failures: R-hat and ESS look healthy while RWM, MALA, HMC or NUTS is wrong.

Each sampler runs ``num_chains`` chains on four targets (banana, two moons, Neal's
funnel, a well-separated bimodal mixture) with the same gradient budget per chain in
the sampling phase (RWM counts log-density evaluations). MALA, HMC and NUTS are tuned
first by window adaptation (each chain its own step size and diagonal mass matrix, as
Stan does); RWM's scale by a short pilot aiming at 23% acceptance. Chains start
uniformly in [-2, 2]^d (Stan's default); on the bimodal mixture, by default, around one
mode (``bimodal_init="one_mode"``), as after an optimiser or a Pathfinder start.

For every (target, sampler) the run records the usual diagnostics (rank-normalized
split R-hat, bulk/tail ESS, ESS per second and per gradient, divergences, acceptance)
and the truth: the energy distance to exact draws (with the distance between two exact
samples of the same sizes as a noise floor), the occupancy of the right mode (bimodal,
exact 1/2), of the upper moon (two moons, exact 1/2), and of the funnel neck
(``P(v < -3)`` and ``P(v < -5)``, exact Φ(-1) and Φ(-5/3) for ``v ~ N(0, 3²)``).
A run is a *silent failure* when the diagnostics pass (max R-hat < 1.01, min bulk ESS
>= 100 per chain, no divergence) but the truth says it is wrong.

Findings (default config, CPU; numbers in docs/experiments/mcmc_silent_failures.md): on
the bimodal mixture (modes 12 σ apart, chains started in one mode) MALA, HMC, NUTS and
NUTS with target acceptance 0.95 never leave that mode, yet R-hat is 1.000–1.008, bulk
ESS is in the thousands and there is no divergence: a silent failure for all of them. On
the 10-D funnel no sampler enters the neck at this budget, but the failure is loud
(R-hat 1.15–1.4, or divergences for HMC/NUTS; for NUTS the divergences are the only
signal under the old R-hat < 1.1 rule). Banana and two moons are sampled correctly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax.mcmc import diagnostics, driver, targets
from dgm_jax.mcmc.adaptation import window_adaptation
from dgm_jax.mcmc.base import SamplingAlgorithm
from dgm_jax.mcmc.hmc import hmc
from dgm_jax.mcmc.langevin import mala
from dgm_jax.mcmc.nuts import nuts
from dgm_jax.mcmc.rwm import rwm
from dgm_jax.metrics.sample import energy_distance
from dgm_jax.train.runs import make_run_dir, save_config, save_metrics

NAME = "mcmc_silent_failures"
TARGETS = ("banana", "two_moons", "funnel", "bimodal")
METHODS = ("rwm", "mala", "hmc", "nuts", "nuts95")
FACTORIES = {"mala": mala, "hmc": hmc, "nuts": nuts, "nuts95": nuts}  # name -> kernel
TARGET_ACCEPTANCE = {"nuts95": 0.95}  # the usual cure for divergences; 0.8 otherwise


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the study (defaults: the full run, a few minutes on a CPU)."""

    targets: tuple[str, ...] = TARGETS
    methods: tuple[str, ...] = METHODS
    num_chains: int = 4
    grad_budget: int = 20_000  # gradient (RWM: log-density) evaluations per chain, sampling
    num_warmup: int = 1000  # adaptation steps (not counted in the budget)
    hmc_num_integration_steps: int = 10
    funnel_dim: int = 10
    bimodal_separation: float = 12.0  # barrier e^{-18}: no chain crosses at this budget
    bimodal_init: str = "one_mode"  # "one_mode" or "uniform" (Stan's [-2, 2]^d)
    max_draws_per_chain: int = 5000  # thin longer runs down to this
    num_reference: int = 2000  # exact draws for the energy distance
    num_metric_draws: int = 2000  # MCMC draws (evenly thinned, pooled) for the distance
    seed: int = 0


SMOKE = Config(
    targets=("bimodal",),
    methods=("rwm", "mala"),
    num_chains=2,
    grad_budget=200,
    num_warmup=40,
    funnel_dim=3,
    num_reference=100,
    num_metric_draws=100,
)


class TunedState(NamedTuple):
    """A chain's kernel state together with its own adapted parameters."""

    position: Any  # the inner state's position (what the driver records)
    logdensity: Any  # the inner state's log density
    inner: Any  # the kernel's own state
    params: Any  # this chain's step_size (and inverse_mass_matrix)


def per_chain_kernel(factory: Any, logdensity_fn: Any, **kwargs: Any) -> Any:
    """A kernel whose state carries each chain's adapted parameters (see TunedState)."""

    def init(position: Any) -> TunedState:
        raise TypeError("per_chain_kernel states come from window adaptation, not init")

    def step(key: Any, state: TunedState) -> tuple[TunedState, Any]:
        inner, info = factory(logdensity_fn, **state.params, **kwargs).step(key, state.inner)
        return TunedState(inner.position, inner.logdensity, inner, state.params), info

    return SamplingAlgorithm(init, step)


def make_target(name: str, config: Config) -> targets.Target:
    if name == "banana":
        return targets.banana()
    if name == "two_moons":
        return targets.two_moons()
    if name == "funnel":
        return targets.funnel(dim=config.funnel_dim)
    if name == "bimodal":
        return targets.bimodal_mixture(config.bimodal_separation)
    raise ValueError(f"unknown target {name!r}; choose from {TARGETS}")


def initial_positions(key: Any, name: str, dim: int, config: Config) -> jax.Array:
    x = jax.random.uniform(key, (config.num_chains, dim), minval=-2.0, maxval=2.0)
    if name == "bimodal" and config.bimodal_init == "one_mode":
        x = x + targets.bimodal_centers(config.bimodal_separation, dim)[1][None, :]
    return x


def _nan_or(reduce: Any, x: np.ndarray) -> float:
    """``reduce`` over the non-NaN entries (NaN where a component is constant), or NaN."""
    x = np.asarray(x, np.float64)
    return float(reduce(x)) if np.any(~np.isnan(x)) else float("nan")


def _upper_moon_fraction(x: np.ndarray) -> float:
    """Fraction of points nearer the upper arc of ``two_moons`` than the lower one."""
    t = np.linspace(0.0, math.pi, 200)
    shift = np.array([0.5, 0.25])
    upper = np.stack([np.cos(t), np.sin(t)], -1) - shift
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1) - shift
    du = ((x[:, None, :] - upper[None]) ** 2).sum(-1).min(1)
    dl = ((x[:, None, :] - lower[None]) ** 2).sum(-1).min(1)
    return float(np.mean(du < dl))


def tune_rwm_scale(key: Any, target: targets.Target, x0: jax.Array, num_steps: int) -> float:
    """Pick the RWM scale (on a log grid) whose pilot acceptance is nearest 0.234."""
    scales = 2.38 / math.sqrt(target.dim) * np.array([0.03, 0.1, 0.3, 1.0, 3.0, 10.0])

    @jax.jit
    def acceptance(scale):
        kernel = rwm(target.logdensity_fn, scale)
        states = jax.vmap(kernel.init)(x0)

        def body(s, k):
            s, info = jax.vmap(kernel.step)(jax.random.split(k, x0.shape[0]), s)
            return s, info.acceptance_rate.mean()

        _, acc = jax.lax.scan(body, states, jax.random.split(key, num_steps))
        return acc[num_steps // 2 :].mean()

    acc = np.array([float(acceptance(jnp.float32(s))) for s in scales])
    return float(scales[np.argmin(np.abs(acc - 0.234))])


def run_one(key: Any, name: str, method: str, config: Config) -> dict[str, Any]:
    """Tune, sample and evaluate one (target, sampler) pair."""
    target = make_target(name, config)
    k_init, k_warm, k_sample, k_ref = jax.random.split(key, 4)
    x0 = initial_positions(k_init, name, target.dim, config)
    t0 = time.perf_counter()
    if method == "rwm":
        scale = tune_rwm_scale(k_warm, target, x0, max(config.num_warmup // 2, 10))
        kernel = rwm(target.logdensity_fn, scale)
        start: Any = x0
        num_warmup_steps, grads_per_step, params = config.num_warmup, 1.0, {"scale": scale}
    else:
        kwargs = {}
        if method == "hmc":
            kwargs["num_integration_steps"] = config.hmc_num_integration_steps
        warmup = window_adaptation(
            FACTORIES[method],
            target.logdensity_fn,
            target_acceptance=TARGET_ACCEPTANCE.get(method, 0.8),
            **kwargs,
        )
        states, params, infos = jax.jit(warmup.run, static_argnums=2)(k_warm, x0, config.num_warmup)
        kernel = per_chain_kernel(FACTORIES[method], target.logdensity_fn, **kwargs)
        start = TunedState(states.position, states.logdensity, states, params)
        num_warmup_steps = 0
        late = infos.num_integration_steps[config.num_warmup // 2 :]
        grads_per_step = max(float(jnp.mean(late)), 1.0)
    warmup_s = time.perf_counter() - t0

    num_steps = max(int(config.grad_budget / grads_per_step), 8)
    thin = max(1, num_steps // config.max_draws_per_chain)
    num_samples = num_steps // thin

    def sample() -> driver.SampleResult:
        return driver.sample(
            k_sample, kernel, start, num_samples, num_warmup=num_warmup_steps, thin=thin
        )

    t0 = time.perf_counter()
    result = jax.block_until_ready(sample())
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = jax.block_until_ready(sample())  # compiled loop cached: this is run time only
    sample_s = time.perf_counter() - t0

    draws = result.samples  # (chains, draws, dim)
    infos = result.infos
    if method in ("rwm", "mala"):  # one log-density (RWM) or gradient (MALA) per step
        grads = float(num_samples * thin * config.num_chains)
    else:  # HMC, NUTS: the kernel reports its gradient evaluations; thin is 1 for NUTS
        grads = float(jnp.sum(infos.num_integration_steps)) * thin
    rhat = np.asarray(diagnostics.split_rhat(draws))
    bulk = np.asarray(diagnostics.ess_bulk(draws))
    tail = np.asarray(diagnostics.ess_tail(draws))
    divergences = int(jnp.sum(infos.is_divergent))

    pooled = np.asarray(draws).reshape(-1, target.dim)
    idx = np.linspace(0, len(pooled) - 1, min(config.num_metric_draws, len(pooled))).astype(int)
    subset = jnp.asarray(pooled[idx])
    k_ref1, k_ref2 = jax.random.split(k_ref)
    reference = target.sample(k_ref1, config.num_reference)
    ed = float(energy_distance(subset, reference))
    # Noise floor: the largest |distance| between the reference and 3 other exact samples
    # of the MCMC subset's size (what an exact sampler would score).
    ed_floor = max(
        abs(float(energy_distance(target.sample(k, len(idx)), reference)))
        for k in jax.random.split(k_ref2, 3)
    )

    row: dict[str, Any] = {
        "target": name,
        "method": method,
        "dim": target.dim,
        "params": {k: np.asarray(v).tolist() for k, v in params.items()},
        "num_steps": num_steps,
        "thin": thin,
        "grad_evals": grads,
        "warmup_s": warmup_s,
        "compile_and_sample_s": first_s,
        "sample_s": sample_s,
        "max_rhat": _nan_or(np.nanmax, rhat),
        "min_ess_bulk": _nan_or(np.nanmin, bulk),
        "min_ess_tail": _nan_or(np.nanmin, tail),
        "ess_per_s": _nan_or(np.nanmin, bulk) / sample_s,
        "ess_per_grad": _nan_or(np.nanmin, bulk) / grads,
        "divergences": divergences,
        "acceptance": float(jnp.mean(infos.acceptance_rate)),
        "energy_distance": ed,
        "energy_distance_floor": ed_floor,
    }
    wrong = ed > 5.0 * max(ed_floor, 1e-3)  # 5x what exact draws of the same size score
    if name == "bimodal":
        frac = float(np.mean(pooled[:, 0] > 0))
        row["right_mode_fraction"] = frac
        row["right_mode_fraction_exact"] = 0.5
        wrong = wrong or abs(frac - 0.5) > 0.2
    if name == "two_moons":
        frac = _upper_moon_fraction(pooled[idx])
        row["upper_moon_fraction"] = frac
        row["upper_moon_fraction_exact"] = 0.5
        wrong = wrong or abs(frac - 0.5) > 0.2
    if name == "funnel":
        sv = 3.0
        for cut in (-3.0, -5.0):
            exact = 0.5 * math.erfc(-cut / sv / math.sqrt(2.0))
            row[f"neck_fraction_v_below_{int(-cut)}"] = float(np.mean(pooled[:, 0] < cut))
            row[f"neck_fraction_v_below_{int(-cut)}_exact"] = exact
        wrong = wrong or row["neck_fraction_v_below_3"] < 0.5 * row["neck_fraction_v_below_3_exact"]
    healthy = (
        row["max_rhat"] < 1.01
        and row["min_ess_bulk"] >= 100 * config.num_chains
        and divergences == 0
    )
    # What many users check: R-hat < 1.1 (Gelman & Rubin's old rule) and no divergences.
    lenient = row["max_rhat"] < 1.1 and divergences == 0
    row["diagnostics_healthy"] = bool(healthy)
    row["diagnostics_healthy_lenient"] = bool(lenient)
    row["wrong"] = bool(wrong)
    row["silent_failure"] = bool(healthy and wrong)
    row["silent_failure_lenient"] = bool(lenient and wrong)
    row["_draws"] = pooled[idx]
    row["_reference"] = np.asarray(reference)
    return row


def _yn(flag: bool, bold: bool = False) -> str:
    if flag:
        return "**YES**" if bold else "yes"
    return "no"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| target | sampler | max R-hat | min ESS bulk | ESS/s | ESS/grad | divergences | "
        "energy dist. (floor) | truth check | healthy? strict / lenient | wrong? | "
        "silent failure strict / lenient |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if r["target"] == "bimodal":
            truth = f"right mode {r['right_mode_fraction']:.2f} (0.50)"
        elif r["target"] == "two_moons":
            truth = f"upper moon {r['upper_moon_fraction']:.2f} (0.50)"
        elif r["target"] == "funnel":
            truth = (
                f"P(v<-3) {r['neck_fraction_v_below_3']:.3f} "
                f"({r['neck_fraction_v_below_3_exact']:.3f})"
            )
        else:
            truth = "-"
        lines.append(
            f"| {r['target']} | {r['method']} | {r['max_rhat']:.3f} | {r['min_ess_bulk']:.0f} | "
            f"{r['ess_per_s']:.3g} | {r['ess_per_grad']:.2g} | {r['divergences']} | "
            f"{r['energy_distance']:.3f} ({r['energy_distance_floor']:.3f}) | {truth} | "
            f"{_yn(r['diagnostics_healthy'])} / {_yn(r['diagnostics_healthy_lenient'])} | "
            f"{_yn(r['wrong'])} | {_yn(r['silent_failure'], True)} / "
            f"{_yn(r['silent_failure_lenient'], True)} |"
        )
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], config: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t for t in config.targets]
    methods = [m for m in config.methods]
    fig, axes = plt.subplots(
        len(names), len(methods), figsize=(3.2 * len(methods), 3.0 * len(names)), squeeze=False
    )
    by_key = {(r["target"], r["method"]): r for r in rows}
    for i, name in enumerate(names):
        for j, method in enumerate(methods):
            ax = axes[i, j]
            r = by_key[(name, method)]
            ref, x = r["_reference"], r["_draws"]
            cols = (1, 0) if name == "funnel" else (0, 1)  # funnel: x1 against v
            ax.scatter(ref[:, cols[0]], ref[:, cols[1]], s=2, c="0.75", label="exact")
            ax.scatter(
                x[:, cols[0]], x[:, cols[1]], s=2, c="C3" if r["wrong"] else "C0", label=method
            )
            if r["silent_failure"]:
                tag = "SILENT FAILURE"
            elif r["silent_failure_lenient"]:
                tag = "silent (lenient)"
            else:
                tag = "wrong, flagged" if r["wrong"] else "ok"
            ax.set_title(
                f"{name} / {method}: {tag}\nR-hat {r['max_rhat']:.3f}, ESS {r['min_ess_bulk']:.0f},"
                f" div {r['divergences']}",
                fontsize=8,
            )
            if name == "funnel":
                ax.set_xlim(-30, 30)
                ax.set_ylim(-10, 10)
                ax.set_xlabel("x1", fontsize=7)
                ax.set_ylabel("v", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Run the study; write config.json, metrics.json, table.md and samples.png."""
    for name in config.targets:
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}; choose from {TARGETS}")
    for method in config.methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if config.bimodal_init not in ("one_mode", "uniform"):
        raise ValueError(
            f"bimodal_init must be 'one_mode' or 'uniform', got {config.bimodal_init!r}"
        )
    run_dir = make_run_dir(NAME, workdir)
    save_config(run_dir, config)
    key = jax.random.key(config.seed)
    rows = []
    for i, name in enumerate(config.targets):
        for j, method in enumerate(config.methods):
            rows.append(run_one(jax.random.fold_in(key, 100 * i + j), name, method, config))
    plot(rows, config, run_dir / "samples.png")
    table = markdown_table(rows)
    (run_dir / "table.md").write_text(table)
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (run_dir / "table.json").write_text(json.dumps(public, indent=2) + "\n")
    metrics: dict[str, Any] = {
        "num_silent_failures": sum(r["silent_failure"] for r in rows),
        "num_silent_failures_lenient": sum(r["silent_failure_lenient"] for r in rows),
        "num_wrong": sum(r["wrong"] for r in rows),
        "num_runs": len(rows),
        "silent_failures": [f"{r['target']}/{r['method']}" for r in rows if r["silent_failure"]],
        "silent_failures_lenient": [
            f"{r['target']}/{r['method']}" for r in rows if r["silent_failure_lenient"]
        ],
    }
    for r in public:
        prefix = f"{r['target']}/{r['method']}/"
        for k in (
            "max_rhat",
            "min_ess_bulk",
            "ess_per_s",
            "ess_per_grad",
            "divergences",
            "energy_distance",
            "silent_failure",
        ):
            metrics[prefix + k] = r[k]
    save_metrics(run_dir, metrics)
    return metrics
