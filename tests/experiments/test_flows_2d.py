"""Smoke test of the 2-D flows experiment (RealNVP, MAF, CNF on two datasets)."""

import dataclasses
import json
import math

import pytest

from experiments import EXPERIMENTS
from experiments import flows_2d as exp


def test_smoke_run_writes_figures_and_nll(tmp_path):
    assert EXPERIMENTS["flows_2d"] == "experiments.flows_2d"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for d in exp.SMOKE.datasets:
        assert (tmp_path / f"density_{d}.png").is_file()
        assert (tmp_path / f"samples_{d}.png").is_file()
        for m in exp.SMOKE.models:
            nll = metrics[f"{d}/{m}/test_nll_nats"]
            assert math.isfinite(nll)
            # No model beats the data's own entropy by more than Monte Carlo error.
            assert nll > metrics[f"{d}/data_entropy_nats"] - 5 * metrics[f"{d}/{m}/test_nll_stderr"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    key = "two_moons/maf/test_nll_nats"
    assert saved[key] == pytest.approx(metrics[key])


def test_data_entropy_of_a_gaussian_mixture():
    """Eight well-separated Gaussians of sd s: H = log 8 + log(2πe s²)."""
    h = exp.data_entropy(exp.data.eight_gaussians(scale=0.2), 300)  # means 7.6 sd apart
    assert h == pytest.approx(math.log(8) + math.log(2 * math.pi * math.e * 0.04), abs=2e-3)


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="models"):
        exp.run(dataclasses.replace(exp.SMOKE, models=("glow",)), workdir=tmp_path)
    with pytest.raises(ValueError, match="datasets"):
        exp.run(dataclasses.replace(exp.SMOKE, datasets=("banana",)), workdir=tmp_path)
