"""Two-step smoke test of the MNIST VQ-VAE experiment on synthetic images, and its resume."""

import dataclasses
import json

import pytest

from experiments import EXPERIMENTS
from experiments import mnist_vqvae as exp


@pytest.mark.slow  # two runs (resume) with conv nets: ~30 s of CPU
def test_smoke_run_writes_the_run_folder_and_resumes(tmp_path):
    assert EXPERIMENTS["mnist_vqvae"] == "experiments.mnist_vqvae"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in (
        "config.json",
        "metrics.json",
        "metrics.jsonl",
        "reconstructions.png",
        "code_usage.png",
        "perplexity.png",
        "loss.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints").is_dir()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_recon_mse"] == pytest.approx(metrics["test_recon_mse"])
    assert 1.0 <= metrics["test_perplexity"] <= exp.SMOKE.num_codes
    assert 0.0 < metrics["test_code_usage"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all("eval/perplexity" in r and "perplexity" in r for r in records)
    # The same folder again: training resumes from the final checkpoint (no new steps).
    again = exp.run(exp.SMOKE, workdir=tmp_path)
    assert again["test_recon_mse"] == pytest.approx(metrics["test_recon_mse"])


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="decay"):
        exp.run(dataclasses.replace(exp.SMOKE, decay=1.0), workdir=tmp_path)
    with pytest.raises(ValueError, match="dataset"):
        exp.run(dataclasses.replace(exp.SMOKE, dataset="cifar"), workdir=tmp_path)
