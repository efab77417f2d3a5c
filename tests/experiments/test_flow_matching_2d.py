"""Smoke test of the 2-D flow matching comparison (FM, OT-FM, reflow)."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import EXPERIMENTS
from experiments import flow_matching_2d as exp


@pytest.mark.slow  # three trainings (FM, OT-FM, reflow): ~25 s of CPU
def test_smoke_run_writes_the_run_folder(tmp_path):
    assert EXPERIMENTS["flow_matching_2d"] == "experiments.flow_matching_2d"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "quality_vs_nfe.png", "trajectories.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    table = saved["quality_vs_steps"]
    assert {row["method"] for row in table} == set(exp.METHODS)
    assert all(row["nfe"] == 4 for row in table)  # Heun, 2 steps
    assert all(np.isfinite(row["energy_distance"]) for row in table)
    for method in exp.METHODS:
        assert metrics[f"eight_gaussians/{method}/straightness"] >= 0


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="datasets"):
        exp.run(dataclasses.replace(exp.SMOKE, datasets=("moons",)), workdir=tmp_path)
    with pytest.raises(ValueError, match="solvers"):
        exp.run(dataclasses.replace(exp.SMOKE, solvers=("rk9",)), workdir=tmp_path)
