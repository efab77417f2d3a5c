"""Two-step smoke test of the latent-vs-pixel diffusion experiment on synthetic images."""

import dataclasses
import json
import math

import pytest

from experiments import EXPERIMENTS
from experiments import mnist_latent_diffusion as exp


@pytest.mark.slow  # VQ-VAE, latent and pixel DDPMs: ~55 s of CPU, over the default suite's budget
def test_smoke_run_writes_the_run_folder(tmp_path):
    assert EXPERIMENTS["mnist_latent_diffusion"] == "experiments.mnist_latent_diffusion"
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "samples.png", "loss.png"):
        assert (tmp_path / name).is_file(), name
    for stage in ("vqvae", "latent_ddpm", "pixel_ddpm"):
        assert (tmp_path / stage / "checkpoints").is_dir(), stage
        assert (tmp_path / stage / "metrics.jsonl").is_file(), stage
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("latent_ddpm", "pixel_ddpm", "vqvae_reconstructions", "train_images_floor"):
        value = saved[f"fid_lenet/{name}"]
        assert math.isfinite(value) and value >= -1e-3, name
    assert saved["latent_shape"] == [7, 7, exp.SMOKE.ae_code_dim]
    assert saved["num_train_steps_each"] == exp.SMOKE.num_train_steps
    assert metrics["latent_scale"] > 0


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="latent_channels"):
        exp.run(dataclasses.replace(exp.SMOKE, latent_channels=(8, 16)), workdir=tmp_path)
    with pytest.raises(ValueError, match="sample_steps"):
        exp.run(dataclasses.replace(exp.SMOKE, sample_steps=1000), workdir=tmp_path)
