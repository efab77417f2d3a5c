"""Two-moons DDPM: train an MLP denoiser, sample with DDPM and DDIM, compare to the noise floor.

The run trains a time-conditioned MLP to predict the noise of a DDPM (Ho et al. 2020)
on two-moons data, samples with ancestral sampling and with deterministic DDIM at a few
step counts, and reports the energy distance and MMD between model samples and fresh
data next to the same metrics between two fresh data sets (the noise floor).

Outputs in the run folder: ``config.json``, ``metrics.json``, ``metrics.jsonl``,
``samples.png`` (data vs samplers), ``denoising.png`` (samples emerging from noise step
by step), ``loss.png`` and ``checkpoints/``. Pass the same ``--workdir`` again to resume.

Example:
    python -m experiments run two_moons_diffusion
    python -m experiments run two_moons_diffusion --set num_train_steps=2000
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgm_jax import diffusion, metrics, train, viz
from dgm_jax.data import two_moons
from dgm_jax.nn import TimeConditionedMLP

NAME = "two_moons_diffusion"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the two-moons diffusion run (the defaults take a few CPU minutes)."""

    seed: int = 0
    data_noise: float = 0.1  # standard deviation of the two-moons noise
    num_diffusion_steps: int = 1000  # T of the discrete schedule
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "epsilon"  # what the network predicts: epsilon, x0 or v
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    time_embedding_dim: int = 64
    batch_size: int = 1024
    num_train_steps: int = 8000
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    log_every: int = 200
    eval_every: int = 2000  # quick DDIM energy distance during training (0: only at the end)
    checkpoint_every: int = 2000
    num_eval_samples: int = 2000  # samples compared with fresh data at the end
    num_floor_repeats: int = 10  # repeats of (model set, data set, data set) averaged
    ddim_steps: tuple[int, ...] = (10, 50, 200)
    progress: bool = True


SMOKE = Config(
    hidden_sizes=(16, 16),
    time_embedding_dim=8,
    num_diffusion_steps=20,
    beta_start=1e-3,
    beta_end=0.3,
    batch_size=32,
    num_train_steps=2,
    log_every=1,
    eval_every=0,
    checkpoint_every=1,
    num_eval_samples=64,
    num_floor_repeats=2,
    ddim_steps=(5,),
    progress=False,
)


def _validate(config: Config) -> None:
    if config.prediction not in diffusion.PREDICTIONS:
        raise ValueError(
            f"prediction must be one of {list(diffusion.PREDICTIONS)}, got {config.prediction!r}"
        )
    for name in ("num_train_steps", "batch_size", "num_eval_samples", "num_diffusion_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.num_floor_repeats < 1:
        raise ValueError(f"num_floor_repeats must be >= 1, got {config.num_floor_repeats}")
    if any(s < 1 or s > config.num_diffusion_steps for s in config.ddim_steps):
        raise ValueError(
            f"ddim_steps must lie in [1, {config.num_diffusion_steps}], got {config.ddim_steps}"
        )


_plugin_energy_distance = jax.jit(functools.partial(metrics.energy_distance, unbiased=False))
_mmd2 = jax.jit(metrics.mmd2)


def plugin_energy_distance(x: jax.Array, y: jax.Array) -> float:
    """The plug-in (V-statistic) energy distance, whose value for two fresh data sets
    of sizes n and m is about ``(1/n + 1/m) E|X - X'| > 0``: the noise floor."""
    return float(_plugin_energy_distance(x, y))


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train, sample, evaluate and write the run folder; return the final metrics."""
    _validate(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()

    dataset = two_moons(config.data_noise)
    draw_data = jax.jit(dataset.sample, static_argnums=1)  # one compile per size
    key = jax.random.key(config.seed)
    key_scale, key_init, key_train, key_eval, key_data = jax.random.split(key, 5)
    # Standardise the data with statistics of a large fixed sample.
    reference = draw_data(key_scale, 100_000)
    shift, scale = reference.mean(0), reference.std(0)

    def per_coordinate(v, x):  # broadcast a (2,) vector against (..., 2) explicitly
        return v.reshape((1,) * (x.ndim - 1) + (2,))

    def standardise(x):
        return (x - per_coordinate(shift, x)) / per_coordinate(scale, x)

    def unstandardise(x):
        return x * per_coordinate(scale, x) + per_coordinate(shift, x)

    schedule = diffusion.linear_schedule(
        config.num_diffusion_steps, config.beta_start, config.beta_end
    )
    net = TimeConditionedMLP(config.hidden_sizes, config.time_embedding_dim)
    params = jax.jit(net.init)(key_init, jnp.zeros((1, 2)), jnp.zeros(1))

    def loss_fn(params, key, batch):
        return diffusion.ddpm_loss(
            lambda x, t: net.apply(params, x, t), schedule, key, batch, prediction=config.prediction
        )

    learning_rate = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        min(config.warmup_steps, max(config.num_train_steps - 1, 1)),
        config.num_train_steps,
        end_value=0.01 * config.learning_rate,
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))
    state = train.init_train_state(params, optimizer)
    step_fn = train.make_step(loss_fn, optimizer)

    sample_data = jax.jit(lambda k: standardise(dataset.sample(k, config.batch_size)))

    def batch_fn(step: int) -> jax.Array:
        return sample_data(jax.random.fold_in(key_data, step))

    def model(params):
        return lambda x, t: net.apply(params, x, t)

    @jax.jit
    def ddim(params, key):
        return diffusion.ddim_sample(
            key,
            model(params),
            schedule,
            (1000, 2),
            num_steps=min(20, schedule.num_steps),
            prediction=config.prediction,
        )

    fresh = draw_data(jax.random.fold_in(key_eval, 10_000), 1000)

    def eval_fn(state, step):
        x = unstandardise(ddim(state.params, jax.random.fold_in(key_eval, step)))
        return {"energy_distance_ddim20": plugin_energy_distance(x, fresh)}

    result = train.fit(
        step_fn,
        state,
        key_train,
        batch_fn,
        config.num_train_steps,
        run_dir=run_dir,
        eval_fn=eval_fn if config.eval_every > 0 else None,
        eval_every=config.eval_every,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=NAME,
    )
    params = result.state.params
    train_seconds = time.perf_counter() - started

    # ---- evaluation -------------------------------------------------------------
    # Each repeat draws fresh model samples and two fresh data sets, so the ratio of
    # mean energy distances (model vs data) / (data vs data) averages out the O(1/n)
    # fluctuations that both estimates share.
    n = config.num_eval_samples
    samplers = {"ancestral": None} | {f"ddim{s}": s for s in config.ddim_steps}

    def draw(sampler_steps, key, shape, trajectory=False):
        if sampler_steps is None:
            return diffusion.ancestral_sample(
                key,
                model(params),
                schedule,
                shape,
                prediction=config.prediction,
                return_trajectory=trajectory,
            )
        return diffusion.ddim_sample(
            key,
            model(params),
            schedule,
            shape,
            num_steps=sampler_steps,
            prediction=config.prediction,
            return_trajectory=trajectory,
        )

    compiled = {
        name: jax.jit(lambda k, s=steps: draw(s, k, (n, 2))) for name, steps in samplers.items()
    }
    floor_ed, floor_mmd = [], []
    model_ed = {name: [] for name in samplers}
    model_mmd = {name: [] for name in samplers}
    last_samples = {}
    for r in range(config.num_floor_repeats):
        key_r = jax.random.fold_in(key_eval, r)
        key_a, key_b, key_model = jax.random.split(key_r, 3)
        data_a, data_b = draw_data(key_a, n), draw_data(key_b, n)
        floor_ed.append(plugin_energy_distance(data_a, data_b))
        floor_mmd.append(float(_mmd2(data_a, data_b)))
        for name, sample_fn in compiled.items():
            x = unstandardise(sample_fn(key_model))
            model_ed[name].append(plugin_energy_distance(x, data_a))
            model_mmd[name].append(float(_mmd2(x, data_a)))
            last_samples[name] = x
    ed_floor = float(np.mean(floor_ed))

    def sd(values):
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    results: dict[str, Any] = {
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "train_seconds": train_seconds,
        "num_eval_samples": n,
        "num_eval_repeats": config.num_floor_repeats,
        "noise_floor/energy_distance": ed_floor,
        "noise_floor/energy_distance_sd": sd(floor_ed),
        "noise_floor/mmd2_unbiased": float(np.mean(floor_mmd)),
        "noise_floor/mmd2_unbiased_sd": sd(floor_mmd),
    }
    for name in samplers:
        ed = float(np.mean(model_ed[name]))
        results[f"{name}/energy_distance"] = ed
        results[f"{name}/energy_distance_sd"] = sd(model_ed[name])
        results[f"{name}/energy_distance_over_floor"] = ed / ed_floor
        results[f"{name}/mmd2_unbiased"] = float(np.mean(model_mmd[name]))
        results[f"{name}/mmd2_unbiased_sd"] = sd(model_mmd[name])

    # ---- figures ----------------------------------------------------------------
    panels = {"data": data_a} | last_samples
    viz.save_figure(viz.plot_scatter_panels(panels), run_dir / "samples.png")

    def snapshots(path, num):
        # Denser towards the end, where the structure appears.
        fractions = 1.0 - np.linspace(1.0, 0.0, num) ** 2
        idx = np.unique(np.round(fractions * (len(path) - 1)).astype(int))
        return unstandardise(path[idx]), idx

    num_shown = min(n, 1000)
    key_fig = jax.random.fold_in(key_eval, 1_000_000)  # apart from the repeats
    _, anc_path = jax.jit(lambda k: draw(None, k, (num_shown, 2), True))(key_fig)
    anc_snaps, anc_idx = snapshots(anc_path, 6)
    total = schedule.num_steps
    rows = {"DDPM ancestral": (anc_snaps, [f"t={total - i}" for i in anc_idx])}
    if config.ddim_steps:
        steps = max(config.ddim_steps)
        _, ddim_path = jax.jit(lambda k: draw(steps, k, (num_shown, 2), True))(key_fig)
        snaps, idx = snapshots(ddim_path, len(anc_idx))
        if len(idx) == len(anc_idx):
            rows[f"DDIM {steps} steps"] = (snaps, [f"step {i}/{steps}" for i in idx])
    viz.save_figure(viz.plot_trajectory_snapshots(rows), run_dir / "denoising.png")
    viz.save_figure(viz.plot_history(result.history, ["loss"]), run_dir / "loss.png")

    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
