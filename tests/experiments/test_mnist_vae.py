"""Smoke test of the MNIST VAE experiment on synthetic images (no MNIST files needed)."""

import dataclasses
import json
import math

import pytest

from experiments import EXPERIMENTS
from experiments import mnist_vae as exp


@pytest.mark.slow  # two runs (the second resumes): ~35 s of CPU
def test_smoke_run_writes_table_figures_and_resumes(tmp_path):
    assert EXPERIMENTS["mnist_vae"] == "experiments.mnist_vae"
    assert exp.SMOKE.dataset == "synthetic"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    files = ["config.json", "metrics.json", "results.md"]
    for model in exp.SMOKE.models:
        files += [
            f"{model}_{what}.png"
            for what in ("reconstructions", "samples", "interpolations", "traversals", "loss")
        ]
        assert (tmp_path / model / "checkpoints").is_dir()
    for name in files:
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    nll = f"test_nll_iwae{exp.SMOKE.eval_k}"
    for model in exp.SMOKE.models:
        # An almost untrained Bernoulli decoder: about 784 log 2 nats per image, and the
        # importance-weighted NLL can never exceed minus the ELBO by more than noise.
        assert abs(saved[f"{model}/{nll}"] - 784 * math.log(2)) < 0.2 * 784
        assert saved[f"{model}/{nll}"] <= -saved[f"{model}/test_elbo"] + 5.0
    assert "| iwae |" in (tmp_path / "results.md").read_text()
    # Running again in the same folder resumes each model from its final checkpoint.
    again = exp.run(exp.SMOKE, workdir=tmp_path)
    assert again["iwae/final_loss"] == pytest.approx(metrics["iwae/final_loss"])


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="models"):
        exp.run(dataclasses.replace(exp.SMOKE, models=("gan",)), workdir=tmp_path)
    with pytest.raises(ValueError, match="latent_dim"):
        exp.run(dataclasses.replace(exp.SMOKE, latent_dim=0), workdir=tmp_path)
    with pytest.raises(ValueError, match="eval_k"):
        exp.run(dataclasses.replace(exp.SMOKE, eval_k=0), workdir=tmp_path)
