"""Smoke test of the MNIST multi-scale flow experiment on synthetic 8-bit images (no network)."""

import dataclasses
import json
import math

import pytest

from experiments import EXPERIMENTS
from experiments import mnist_flow as exp


@pytest.mark.slow  # multi-scale conv flow: ~20 s of CPU
def test_smoke_run_writes_bits_per_dim_and_samples(tmp_path):
    assert EXPERIMENTS["mnist_flow"] == "experiments.mnist_flow"
    assert exp.SMOKE.dataset == "synthetic"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "metrics.jsonl", "samples.png", "loss.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints").is_dir()
    bpd = metrics["test_bits_per_dim"]
    # Uniform random bytes have entropy exactly 8 bits/dim: no model can do better.
    assert math.isfinite(bpd)
    assert bpd > 8.0 - 5 * metrics["test_bits_per_dim_stderr"]
    assert metrics["num_test"] == exp.SMOKE.num_test
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_bits_per_dim"] == pytest.approx(bpd)


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        exp.run(dataclasses.replace(exp.SMOKE, dataset="cifar"), workdir=tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        exp.run(dataclasses.replace(exp.SMOKE, batch_size=1000), workdir=tmp_path)
