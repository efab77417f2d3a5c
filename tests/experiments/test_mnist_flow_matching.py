"""Smoke test of the MNIST flow matching / PFGM++ experiment on random images (no network)."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import EXPERIMENTS
from experiments import mnist_flow_matching as exp


@pytest.mark.slow  # two tiny U-Net trainings and samplers: about a minute of compilation on CPU
def test_smoke_run_writes_the_run_folder(tmp_path):
    assert EXPERIMENTS["mnist_flow_matching"] == "experiments.mnist_flow_matching"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "fid_vs_nfe.png", "samples.png"):
        assert (tmp_path / name).is_file(), name
    table = json.loads((tmp_path / "metrics.json").read_text())["fid_vs_nfe"]
    assert [(r["method"], r["nfe"]) for r in table] == [("fm", 2), ("pfgmpp", 4)]
    assert all(np.isfinite(r["fid_lenet"]) for r in table)
    assert metrics["num_params"] > 0


def test_bad_config_is_rejected(tmp_path):
    assert exp.SMOKE.dataset == "synthetic"  # the smoke config never downloads MNIST
    with pytest.raises(ValueError, match="coupling"):
        exp.run(dataclasses.replace(exp.SMOKE, coupling="sinkhorn_typo"), workdir=tmp_path)
    with pytest.raises(ValueError, match="methods"):
        exp.run(dataclasses.replace(exp.SMOKE, methods=("gan",)), workdir=tmp_path)
