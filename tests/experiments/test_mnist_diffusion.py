"""MNIST DDPM experiment: smoke run and resume, sampler NFE counts, respacing, EMA, init."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgm_jax import diffusion
from dgm_jax import sde as sdes
from experiments import EXPERIMENTS
from experiments import mnist_diffusion as exp


def _check_run(config, tmp_path):
    metrics = exp.run(config, workdir=tmp_path)
    names = ["config.json", "metrics.json", "metrics.jsonl", "quality_vs_nfe.png", "loss.png"]
    names += [f"samples_{sampler}.png" for sampler in config.samplers]
    for name in names:
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / str(config.num_train_steps)).is_dir()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["channels"] == list(config.channels)
    assert saved_config["samplers"] == list(config.samplers)
    logged = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [1, 2]

    table = saved["quality_vs_nfe"]
    assert [(r["sampler"], r["steps"]) for r in table] == [
        (s, n) for s in config.samplers for n in config.step_counts
    ]
    for row in table:
        assert row["nfe"] == row["steps"]  # one network evaluation per step, every sampler
        assert row["finite"] and math.isfinite(row["fid_lenet"]) and row["fid_lenet"] > 0
        assert saved[f"{row['sampler']}/{row['nfe']}/fid_lenet"] == pytest.approx(row["fid_lenet"])
    assert math.isfinite(saved["fid_lenet_floor"]) and saved["fid_lenet_floor"] > 0
    assert math.isfinite(saved["test/bits_per_dim"]) and saved["test/bits_per_dim"] > 0
    assert saved["test/bits_per_dim_num_images"] == config.num_bpd_images
    # Euler evaluates the network once per step (the divergence rides on the same pass).
    assert saved["test/bits_per_dim_ode_nfe"] == config.bpd_solver_steps
    assert saved["num_params"] == metrics["num_params"] > 0
    return metrics


def test_smoke_run_writes_the_run_folder_and_resumes(tmp_path):
    assert EXPERIMENTS["mnist_diffusion"] == "experiments.mnist_diffusion"
    metrics = _check_run(exp.SMOKE, tmp_path)
    # Running again in the same folder resumes from the last checkpoint: no new steps, the
    # same weights, hence the same deterministic (DPM-Solver++) samples and distance.
    again = exp.run(exp.SMOKE, workdir=tmp_path)
    assert again["final_loss"] == pytest.approx(metrics["final_loss"])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    name = "dpm_solver_pp/2/fid_lenet"
    assert again[name] == pytest.approx(metrics[name], rel=1e-5)


@pytest.mark.slow
def test_smoke_run_with_every_sampler(tmp_path):
    _check_run(dataclasses.replace(exp.SMOKE, samplers=exp.SAMPLERS), tmp_path)


@pytest.mark.parametrize("sampler", exp.SAMPLERS)
def test_each_sampler_evaluates_the_network_nfe_times(sampler):
    # Count real network evaluations with a host callback inside the compiled loop.
    schedule = diffusion.linear_schedule(50, 2e-3, 0.2)
    for num_steps in (1, 4):
        calls = []

        def model_fn(x, t, calls=calls):
            jax.debug.callback(lambda: calls.append(1))
            return 0.1 * x

        x = exp.sample(sampler, jax.random.key(0), model_fn, schedule, (2, 3), num_steps)
        jax.block_until_ready(x)
        jax.effects_barrier()
        assert len(calls) == exp.sampler_nfe(sampler, num_steps) == num_steps


def test_respacing_every_step_is_the_training_ddpm():
    schedule = diffusion.linear_schedule(30, 1e-3, 0.3)
    respaced = exp.respaced_schedule(schedule, jnp.arange(30))
    np.testing.assert_allclose(respaced.betas, schedule.betas, rtol=1e-5, atol=1e-7)
    # On a sub-sequence the signal fractions are exactly those of the visited steps.
    steps = jnp.array([0, 7, 19, 29])
    sub = exp.respaced_schedule(schedule, steps)
    np.testing.assert_allclose(sub.alpha_bars, schedule.alpha_bars[steps], rtol=1e-6)
    np.testing.assert_allclose(jnp.cumprod(sub.alphas), sub.alpha_bars, rtol=1e-5)

    # With NFE = T the "ddpm" sampler is ancestral sampling on the training schedule.
    def model_fn(x, t):
        return 0.3 * x + 1e-3 * t[:, None]

    key = jax.random.key(1)
    ours = exp.sample("ddpm", key, model_fn, schedule, (4, 2), 30)
    reference = diffusion.ancestral_sample(key, model_fn, schedule, (4, 2))
    # Equal up to float32 roundoff: ᾱ_t / ᾱ_{t-1} recomputed from ᾱ (samples of size ~10).
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_score_from_eps_is_the_exact_score_for_gaussian_data():
    # Data N(0, I): x_t ~ N(0, I) at every noise level, the exact noise prediction is
    # E[ε | x_t] = sqrt(1 - ᾱ) x_t and the score is -x. Querying the discrete network at
    # the noise-matched step must give back -x up to the interpolation between steps.
    schedule = diffusion.linear_schedule(1000)
    vp = sdes.vp_sde(0.1, 20.0)

    class ExactEps:
        def apply(self, params, x, index):
            ab = jnp.interp(index, jnp.arange(1000.0), schedule.alpha_bars)
            return jnp.sqrt(1.0 - ab)[:, None] * x

    score_fn = exp.score_from_eps(ExactEps(), None, vp, schedule)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    for t in (0.01, 0.1, 0.5, 1.0):
        np.testing.assert_allclose(score_fn(x, jnp.full(5, t)), -x, rtol=2e-3, atol=1e-5)


def test_param_ema_follows_its_recursion():
    opt = optax.chain(optax.sgd(1.0), exp.param_ema(0.9))
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    ema = 0.0
    for n, g in enumerate((1.0, -2.0, 0.5, 3.0, 1.0)):
        updates, state = opt.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
        d = min(0.9, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * float(params["w"])
        assert float(state[-1].ema["w"]) == pytest.approx(ema, rel=1e-6)
    assert int(state[-1].count) == 5


@pytest.mark.parametrize(
    "change, field",
    [
        ({"samplers": ("euler",)}, "samplers"),
        ({"step_counts": (0,)}, "step_counts"),
        ({"step_counts": (21,)}, "step_counts"),  # more than the smoke's T = 20
        ({"bpd_solver": "dopri5"}, "bpd_solver"),
        ({"dataset": "cifar"}, "dataset"),
        ({"num_fid_samples": 1}, "num_fid_samples"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"beta_end": 1.5}, "beta_start and beta_end"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(tmp_path, change, field):
    with pytest.raises(ValueError, match=field):
        exp.run(dataclasses.replace(exp.SMOKE, **change), workdir=tmp_path)
    assert not (tmp_path / "config.json").exists()  # rejected before anything is written
