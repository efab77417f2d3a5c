"""Smoke test of the two-moons sampler comparison, and checks of its VP discretisation."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import sde as sdes
from experiments import two_moons_samplers as exp


def _check_run(config, tmp_path):
    metrics = exp.run(config, workdir=tmp_path)
    for name in (
        "config.json",
        "metrics.json",
        "metrics.jsonl",
        "quality_vs_nfe.png",
        "samples.png",
        "trajectories.png",
        "loss.png",
    ):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["noise_floor/energy_distance"] > 0
    table = saved["quality_vs_nfe"]
    # Every sampler appears; NFE per step is 1, 1, 1, 2, 1, 2, 4 at the smoke's 2 steps.
    assert {row["sampler"] for row in table} == set(config.samplers)
    nfe = {"ddpm": 2, "ddim": 2, "em": 2, "pc": 4, "ode_euler": 2, "ode_heun": 4, "ode_rk4": 8}
    for row in table:
        if row["sampler"] != "ode_dopri5":
            assert row["nfe"] == nfe[row["sampler"]], row
    dopri = [row for row in table if row["sampler"] == "ode_dopri5"]
    assert all(row["nfe"] >= 7 for row in dopri)  # at least one Dopri5 step (6 stages) + start
    assert all(np.isfinite(row["energy_distance"]) for row in table)
    name = f"{table[0]['sampler']}/2/energy_distance"
    assert saved[name] == pytest.approx(metrics[name])


def test_smoke_run_writes_the_run_folder(tmp_path):
    _check_run(exp.SMOKE, tmp_path)


@pytest.mark.slow
def test_smoke_run_with_every_sampler(tmp_path):
    _check_run(dataclasses.replace(exp.SMOKE, samplers=exp.SAMPLERS), tmp_path)


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="samplers"):
        exp.run(dataclasses.replace(exp.SMOKE, samplers=("euler",)), workdir=tmp_path)
    with pytest.raises(ValueError, match="step_counts"):
        exp.run(dataclasses.replace(exp.SMOKE, step_counts=(0,)), workdir=tmp_path)
    with pytest.raises(ValueError, match="eps"):
        exp.run(dataclasses.replace(exp.SMOKE, eps=0.0), workdir=tmp_path)


def test_vp_discrete_schedule_matches_the_sde():
    # ᾱ_i = m(t_i)² at t_i = (i + 1) / N; the recovered betas give back the same ᾱ.
    vp = sdes.vp_sde()
    schedule = exp.vp_discrete_schedule(vp, 50)
    m, _ = vp.marginal_fn(jnp.arange(1, 51) / 50.0)
    np.testing.assert_allclose(schedule.alpha_bars, m**2, rtol=1e-5)
