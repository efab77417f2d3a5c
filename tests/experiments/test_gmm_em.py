"""Smoke test of the 2-D EM experiment: run folder, figures, monotone histories."""

import dataclasses
import json

import pytest

from experiments import EXPERIMENTS
from experiments import gmm_em as exp


def test_smoke_run_writes_figures_and_metrics(tmp_path):
    assert EXPERIMENTS["gmm_em"] == "experiments.gmm_em"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "loglik.png", "ellipses.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for kind in ("full", "diag", "spherical"):
        assert saved[f"{kind}/num_iterations"] >= 1
        # EM never lowers the log-likelihood (up to float32 round-off and reg_covar).
        assert metrics[f"{kind}/min_loglik_change"] > -1e-4
    # A sanity bound only: 20 EM iterations on 300 points may stop short of (or away from)
    # the maximum-likelihood fit, but the full-covariance mixture is close to the truth.
    assert metrics["full/train_loglik"] > metrics["true/train_loglik"] - 0.5


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="covariance_types"):
        exp.run(dataclasses.replace(exp.SMOKE, covariance_types=("tied",)), workdir=tmp_path)
