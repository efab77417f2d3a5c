"""Two-moons samplers: one VP-SDE noise network, sampled by DDPM, DDIM, SDE/PC and ODE solvers.

The run trains one time-conditioned MLP to predict the noise of the continuous
variance-preserving SDE (Song et al. 2021) by denoising score matching on two-moons
data, ``x_t = m(t) x_0 + s(t) ε`` with ``t ~ U(eps, 1)`` and loss ``‖ε̂(x_t, t) − ε‖²``,
so that the score is ``∇ log p_t(x) ≈ −ε̂(x, t) / s(t)``. The same network is then
sampled at several step counts by:

* ``ddpm``: DDPM ancestral sampling (Ho et al. 2020) and ``ddim``: deterministic DDIM
  (Song, Meng & Ermon 2021) on the VP discretisation with ``N`` steps: a
  :class:`~dgm_jax.diffusion.DiscreteSchedule` with ``ᾱ_i = m(t_i)²`` at
  ``t_i = (i + 1) / N``, ``i = 0..N−1``, and ``model_fn(x, i)`` evaluating the network at
  the continuous time ``t_i`` (so the last step predicts ``x_0`` from ``t = 1/N``);
* ``em``: Euler–Maruyama on the reverse SDE and ``pc``: the reverse-diffusion predictor
  with one Langevin corrector step per level (Song et al. 2021, Alg. 2), on the uniform
  grid from 1 to ``eps``;
* ``ode_euler``, ``ode_heun``, ``ode_rk4``: the probability-flow ODE with fixed steps, and
  ``ode_dopri5``: adaptive Dormand–Prince at a few tolerances (its NFE is measured).

NFE counts network evaluations: ``N`` for DDPM, DDIM and EM, ``2N`` for PC and Heun,
``4N`` for RK4. Quality is the plug-in energy distance to fresh data, averaged over
repeats, next to the same distance between two fresh data sets (the noise floor).

Outputs in the run folder: ``config.json``, ``metrics.json`` (with a ``quality_vs_nfe``
table), ``metrics.jsonl``, ``quality_vs_nfe.png``, ``samples.png`` (samplers × step
counts), ``trajectories.png`` (paths of 50 points from noise to data: DDPM, DDIM, SDE,
ODE from the same starting noise), ``loss.png`` and ``checkpoints/``.

Example:
    python -m experiments run two_moons_samplers
    python -m experiments run two_moons_samplers --set num_train_steps=6000
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import optax

from dgm_jax import diffusion, metrics, train, viz
from dgm_jax import sde as sdes
from dgm_jax.data import two_moons
from dgm_jax.nn import TimeConditionedMLP

NAME = "two_moons_samplers"

# Network evaluations per step of each fixed-step sampler (dopri5's NFE is measured).
NFE_PER_STEP = {
    "ddpm": 1,
    "ddim": 1,
    "em": 1,
    "pc": 2,
    "ode_euler": 1,
    "ode_heun": 2,
    "ode_rk4": 4,
}
ODE_TABLEAUS = {"ode_euler": sdes.euler, "ode_heun": sdes.heun, "ode_rk4": sdes.rk4}
SAMPLERS = (*NFE_PER_STEP, "ode_dopri5")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the two-moons sampler comparison (the defaults take a few CPU minutes)."""

    seed: int = 0
    data_noise: float = 0.1  # standard deviation of the two-moons noise
    beta_min: float = 0.1  # VP SDE β(0)
    beta_max: float = 20.0  # VP SDE β(1)
    eps: float = 1e-3  # smallest time: training draws t ~ U(eps, 1), samplers stop at eps
    hidden_sizes: tuple[int, ...] = (128, 128, 128)
    time_embedding_dim: int = 32
    time_scale: float = 1000.0  # continuous t in [eps, 1] is scaled by this before embedding
    batch_size: int = 512
    num_train_steps: int = 8000
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    log_every: int = 100
    checkpoint_every: int = 2000
    samplers: tuple[str, ...] = SAMPLERS
    step_counts: tuple[int, ...] = (10, 25, 50, 100, 250)
    max_nfe: int = 500  # skip (sampler, steps) pairs costing more network evaluations
    dopri5_tolerances: tuple[float, ...] = (1e-2, 1e-3, 1e-4)  # rtol = atol
    pc_snr: float = 0.16  # signal-to-noise ratio of the Langevin corrector
    num_eval_samples: int = 1000  # samples compared with fresh data
    num_eval_repeats: int = 8  # repeats of (model set, data set, data set) averaged
    num_trajectories: int = 50  # points whose paths are drawn
    trajectory_steps: int = 100  # steps of the samplers in the trajectory figure
    progress: bool = True


SMOKE = Config(
    hidden_sizes=(16, 16),
    time_embedding_dim=8,
    batch_size=32,
    num_train_steps=2,
    log_every=1,
    checkpoint_every=1,
    samplers=("ddim", "pc", "ode_heun", "ode_dopri5"),  # one of each kind (compiles dominate)
    step_counts=(2,),
    max_nfe=8,
    dopri5_tolerances=(1e-1,),
    num_eval_samples=64,
    num_eval_repeats=2,
    num_trajectories=8,
    trajectory_steps=4,
    progress=False,
)


def _validate(config: Config) -> None:
    for name in (
        "num_train_steps",
        "batch_size",
        "num_eval_samples",
        "num_eval_repeats",
        "num_trajectories",
        "trajectory_steps",
        "max_nfe",
    ):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    unknown = [s for s in config.samplers if s not in SAMPLERS]
    if unknown or not config.samplers:
        raise ValueError(f"samplers must be a non-empty subset of {list(SAMPLERS)}, got {unknown}")
    if not config.step_counts or any(n < 1 for n in config.step_counts):
        raise ValueError(f"step_counts must be integers >= 1, got {config.step_counts}")
    if any(tol <= 0 for tol in config.dopri5_tolerances):
        raise ValueError(f"dopri5_tolerances must be > 0, got {config.dopri5_tolerances}")
    if not 0.0 < config.eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {config.eps}")
    if config.pc_snr <= 0:
        raise ValueError(f"pc_snr must be > 0, got {config.pc_snr}")


def vp_discrete_schedule(vp: sdes.SDE, num_steps: int) -> diffusion.DiscreteSchedule:
    """DDPM schedule of the VP SDE on ``t_i = (i + 1) / N``: ``ᾱ_i = m(t_i)²``."""
    times = jnp.arange(1, num_steps + 1, dtype=jnp.float32) / num_steps
    m, _ = vp.marginal_fn(times)
    return diffusion.schedule_from_alpha_bars(m**2)


def score_from_noise(net, vp: sdes.SDE, params):
    """``score_fn(x, t) = −ε̂(x, t) / s(t)`` from the noise network (batch-first)."""
    return sdes.score_from_noise_prediction(lambda x, t: net.apply(params, x, t), vp)


def _sampler_nfe(name: str, num_steps: int) -> int:
    return NFE_PER_STEP[name] * num_steps


def _standardiser(reference: jax.Array):
    shift, scale = reference.mean(0), reference.std(0)

    def forward(x):
        return (x - shift[None, :]) / scale[None, :]

    def inverse(x):  # x (..., 2)
        shape = (1,) * (x.ndim - 1) + (2,)
        return x * scale.reshape(shape) + shift.reshape(shape)

    return forward, inverse


def build_draw(name, num_steps, net, vp, config):
    """``draw(params, key, shape) -> samples`` (standardised coordinates) of one sampler."""

    def score(params):
        return score_from_noise(net, vp, params)

    if name in ("ddpm", "ddim"):
        schedule = vp_discrete_schedule(vp, num_steps)

        def draw(params, key, shape):
            def model_fn(x, index):  # discrete step index i -> continuous time (i + 1) / N
                return net.apply(params, x, (index + 1.0) / num_steps)

            if name == "ddpm":
                return diffusion.ancestral_sample(key, model_fn, schedule, shape)
            return diffusion.ddim_sample(key, model_fn, schedule, shape, num_steps=num_steps)

        return draw
    if name in ("em", "pc"):
        predictor = sdes.euler_maruyama if name == "em" else sdes.reverse_diffusion
        corrector = None if name == "em" else sdes.langevin_corrector(config.pc_snr, 1)

        def draw(params, key, shape):
            return sdes.sample_sde(
                key,
                vp,
                score(params),
                shape,
                num_steps=num_steps,
                predictor=predictor,
                corrector=corrector,
            )

        return draw
    if name in ODE_TABLEAUS:

        def draw(params, key, shape):
            x, _ = sdes.sample_ode(
                key, vp, score(params), shape, solver=ODE_TABLEAUS[name], num_steps=num_steps
            )
            return x

        return draw
    raise ValueError(f"unknown sampler {name!r}")


def build_dopri5(tol, net, vp):
    """``draw(params, key, shape) -> (samples, nfe)`` with adaptive Dopri5 at rtol = atol = tol."""
    solver = sdes.adaptive_solver(rtol=tol, atol=tol, max_steps=4096)

    def draw(params, key, shape):
        score_fn = score_from_noise(net, vp, params)
        x, info = sdes.sample_ode(key, vp, score_fn, shape, solver=solver)
        return x, info.num_fn_evals, info.max_steps_reached

    return draw


def trajectories(params, key, net, vp, num_points, num_steps):
    """Paths from the same noise: DDPM, DDIM, reverse SDE (EM) and probability-flow ODE (Heun).

    Returns a jitted ``paths(params, key)`` giving a dict name -> array
    ``(num_steps + 1, num_points, 2)`` from noise to data (standardised coordinates).
    """
    schedule = vp_discrete_schedule(vp, num_steps)  # built eagerly: it validates its values

    @jax.jit
    def paths(params, key):
        return _paths(params, key, net, vp, schedule, num_points, num_steps)

    return paths(params, key)


def _paths(params, key, net, vp, schedule, num_points, num_steps):
    key_x, key_ddpm, key_em = jax.random.split(key, 3)
    x_T = jax.random.normal(key_x, (num_points, 2))

    def model_fn(x, index):
        return net.apply(params, x, (index + 1.0) / num_steps)

    score_fn = score_from_noise(net, vp, params)
    _, ddpm_path = diffusion.ancestral_sample(
        key_ddpm, model_fn, schedule, None, x_T=x_T, return_trajectory=True
    )
    _, ddim_path = diffusion.ddim_sample(
        key_ddpm, model_fn, schedule, None, num_steps=num_steps, x_T=x_T, return_trajectory=True
    )
    grid = vp.time_grid_fn(num_steps)
    flow = sdes.probability_flow(vp, score_fn)

    def flow_fn(t, y):
        return flow.drift_fn(y, jnp.full((num_points,), t, jnp.float32))

    def ode_step(y, times):
        t, t_next = times
        y_next, _, _ = sdes.rk_step(sdes.heun, flow_fn, t, y, t_next - t)
        return y_next, y_next

    _, ode_path = jax.lax.scan(ode_step, x_T, (grid[:-1], grid[1:]))

    def sde_step(x, inputs):
        t, t_next, step_key = inputs
        x_next, x_mean = sdes.euler_maruyama(step_key, vp, score_fn, x, t, t_next)
        return x_next, x_mean  # the path shows the step means; the last one is the sample

    keys = jax.random.split(key_em, num_steps)
    _, sde_path = jax.lax.scan(sde_step, x_T, (grid[:-1], grid[1:], keys))
    return {  # jit returns dicts in sorted key order: the caller restores this one
        f"DDPM ancestral ({num_steps} steps)": ddpm_path,
        f"DDIM ({num_steps} steps)": ddim_path,
        f"reverse SDE, Euler–Maruyama ({num_steps})": jnp.concatenate([x_T[None], sde_path]),
        f"probability-flow ODE, Heun ({num_steps})": jnp.concatenate([x_T[None], ode_path]),
    }


def _plot_quality(table, floor, floor_sd, num_repeats):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in dict.fromkeys(row["sampler"] for row in table):
        rows = sorted((r for r in table if r["sampler"] == name), key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in rows]
        ed = [r["energy_distance"] for r in rows]
        se = [r["energy_distance_sd"] / np.sqrt(num_repeats) for r in rows]
        style = "s--" if name == "ode_dopri5" else "o-"
        ax.errorbar(nfe, ed, yerr=se, fmt=style, ms=4, capsize=2, label=name)
    ax.axhline(floor, color="k", ls=":", label="noise floor (data vs data)")
    floor_se = floor_sd / np.sqrt(num_repeats)
    ax.axhspan(max(floor - floor_se, 1e-12), floor + floor_se, color="k", alpha=0.08)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel(f"energy distance to fresh data (mean ± s.e., {num_repeats} repeats)")
    ax.set_title("two moons: sample quality vs NFE")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _plot_sample_grid(rows, data):
    """``rows``: sampler -> list of (panel title, samples (n, 2)); data in the first row."""
    num_cols = max(len(panels) for panels in rows.values())
    rows = {"data": [("fresh data", data)]} | rows
    fig, axes = plt.subplots(
        len(rows), num_cols, figsize=(1.9 * num_cols, 1.9 * len(rows)), squeeze=False
    )
    lo, hi = data.min(0) - 0.5, data.max(0) + 0.5
    for ax in axes.ravel():
        ax.axis("off")
    for i, (name, panels) in enumerate(rows.items()):
        for j, (title, x) in enumerate(panels):
            ax = axes[i, j]
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.scatter(x[:, 0], x[:, 1], s=1, c="k" if name == "data" else None)
            ax.set_title(title, fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def _plot_trajectories(paths, data):
    fig, axes = plt.subplots(1, len(paths), figsize=(3.4 * len(paths), 3.6), squeeze=False)
    for ax, (title, path) in zip(axes[0], paths.items()):
        path = np.asarray(path)
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8")
        for k in range(path.shape[1]):
            ax.plot(path[:, k, 0], path[:, k, 1], lw=0.4, alpha=0.45)
        ax.scatter(path[0, :, 0], path[0, :, 1], s=6, c="tab:blue", marker="o", label="noise")
        ax.scatter(path[-1, :, 0], path[-1, :, 1], s=8, c="tab:red", marker="x", label="sample")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train, sample with every sampler and step count, evaluate, and write the run folder."""
    _validate(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()

    dataset = two_moons(config.data_noise)
    key = jax.random.key(config.seed)
    key_scale, key_init, key_train, key_eval, key_data = jax.random.split(key, 5)
    sample_fn = jax.jit(dataset.sample, static_argnums=1)  # (key, num) -> (num, 2)
    standardise, unstandardise = _standardiser(sample_fn(key_scale, 100_000))

    vp = sdes.vp_sde(config.beta_min, config.beta_max, eps=config.eps)
    net = TimeConditionedMLP(
        config.hidden_sizes, config.time_embedding_dim, time_scale=config.time_scale
    )
    params = net.init(key_init, jnp.zeros((1, 2)), jnp.zeros(1))

    def loss_fn(params, key, batch):
        return sdes.dsm_loss(lambda x, t: net.apply(params, x, t), vp, key, batch)

    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        min(config.warmup_steps, max(config.num_train_steps - 1, 1)),
        config.num_train_steps,
        end_value=0.01 * config.learning_rate,
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    step_fn = train.make_step(loss_fn, optimizer)
    sample_data = jax.jit(lambda k: standardise(dataset.sample(k, config.batch_size)))
    result = train.fit(
        step_fn,
        train.init_train_state(params, optimizer),
        key_train,
        lambda step: sample_data(jax.random.fold_in(key_data, step)),
        config.num_train_steps,
        run_dir=run_dir,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=NAME,
    )
    params = result.state.params
    train_seconds = time.perf_counter() - started

    # ---- evaluation -------------------------------------------------------------
    n = config.num_eval_samples
    shape = (n, 2)
    runs = {}  # (name, steps or tol) -> jitted draw
    for name in config.samplers:
        if name == "ode_dopri5":
            for tol in config.dopri5_tolerances:
                runs[(name, tol)] = jax.jit(build_dopri5(tol, net, vp), static_argnums=2)
            continue
        for steps in config.step_counts:
            if _sampler_nfe(name, steps) <= config.max_nfe:
                runs[(name, steps)] = jax.jit(
                    build_draw(name, steps, net, vp, config), static_argnums=2
                )

    # The plug-in (V-statistic) energy distance: for two fresh data sets of sizes n and m it
    # is about (1/n + 1/m) E|X - X'| > 0, the noise floor (as in two_moons_diffusion).
    energy = jax.jit(lambda x, y: metrics.energy_distance(x, y, unbiased=False))
    floor_ed = []
    model_ed = {k: [] for k in runs}
    nfe = {k: [] for k in runs}
    incomplete = {k: False for k in runs}
    seconds = {k: 0.0 for k in runs}
    last = {}
    for r in range(config.num_eval_repeats):
        key_a, key_b, key_model = jax.random.split(jax.random.fold_in(key_eval, r), 3)
        data_a, data_b = sample_fn(key_a, n), sample_fn(key_b, n)
        floor_ed.append(float(energy(data_a, data_b)))
        for k, draw in runs.items():
            tic = time.perf_counter()
            out = draw(params, key_model, shape)
            if k[0] == "ode_dopri5":
                out, evals, hit_max = out
                nfe[k].append(int(evals))
                incomplete[k] |= bool(hit_max)
            else:
                nfe[k].append(_sampler_nfe(k[0], k[1]))
            x = unstandardise(jax.block_until_ready(out))
            if r > 0:  # the first repeat includes compilation
                seconds[k] += time.perf_counter() - tic
            model_ed[k].append(float(energy(x, data_a)))
            last[k] = np.asarray(x)
    ed_floor = float(np.mean(floor_ed))

    def sd(values):
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    results: dict[str, Any] = {
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "train_seconds": train_seconds,
        "num_eval_samples": n,
        "num_eval_repeats": config.num_eval_repeats,
        "noise_floor/energy_distance": ed_floor,
        "noise_floor/energy_distance_sd": sd(floor_ed),
    }
    table = []
    for k in runs:
        name, setting = k
        label = f"{name}/tol{setting:g}" if name == "ode_dopri5" else f"{name}/{setting}"
        ed = float(np.mean(model_ed[k]))
        row = {
            "sampler": name,
            "steps": None if name == "ode_dopri5" else setting,
            "tol": setting if name == "ode_dopri5" else None,
            "nfe": float(np.mean(nfe[k])),
            "energy_distance": ed,
            "energy_distance_sd": sd(model_ed[k]),
            "energy_distance_over_floor": ed / ed_floor,
            "seconds_per_draw": (
                seconds[k] / (config.num_eval_repeats - 1) if config.num_eval_repeats > 1 else None
            ),
        }
        if name == "ode_dopri5":
            row["max_steps_reached"] = incomplete[k]
        table.append(row)
        for field in ("nfe", "energy_distance", "energy_distance_sd", "energy_distance_over_floor"):
            results[f"{label}/{field}"] = row[field]
    results["quality_vs_nfe"] = table

    # ---- figures ----------------------------------------------------------------
    fig_data = np.asarray(data_a)
    viz.save_figure(
        _plot_quality(table, ed_floor, sd(floor_ed), config.num_eval_repeats),
        run_dir / "quality_vs_nfe.png",
    )
    panels: dict[str, list] = {}
    for row in table:
        k = (row["sampler"], row["tol"] if row["sampler"] == "ode_dopri5" else row["steps"])
        setting = f"tol {k[1]:g}" if row["sampler"] == "ode_dopri5" else f"{k[1]} steps"
        title = f"{setting}, NFE {row['nfe']:.0f}"
        panels.setdefault(row["sampler"], []).append((title, last[k]))
    viz.save_figure(_plot_sample_grid(panels, fig_data), run_dir / "samples.png")
    paths = trajectories(
        params,
        jax.random.fold_in(key_eval, 1_000_000),
        net,
        vp,
        config.num_trajectories,
        config.trajectory_steps,
    )
    order = ("DDPM", "DDIM", "reverse SDE", "probability-flow")
    paths = {
        title: unstandardise(paths[title])
        for prefix in order
        for title in paths
        if title.startswith(prefix)
    }
    viz.save_figure(_plot_trajectories(paths, fig_data), run_dir / "trajectories.png")
    viz.save_figure(viz.plot_history(result.history, ["loss"]), run_dir / "loss.png")

    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
