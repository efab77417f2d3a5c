"""One-step smoke test of the two-moons diffusion experiment, plus its resume path."""

import json

import pytest

from experiments import two_moons_diffusion as exp


def test_smoke_run_writes_the_run_folder(tmp_path):
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "metrics.jsonl", "samples.png", "denoising.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints").is_dir()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["ancestral/energy_distance"] == pytest.approx(metrics["ancestral/energy_distance"])
    assert metrics["noise_floor/energy_distance"] > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_train_steps"] == exp.SMOKE.num_train_steps
    # Running again in the same folder resumes from the final checkpoint: no new steps.
    again = exp.run(exp.SMOKE, workdir=tmp_path)
    assert again["final_loss"] == pytest.approx(metrics["final_loss"])


def test_bad_config_is_rejected(tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match="prediction"):
        exp.run(dataclasses.replace(exp.SMOKE, prediction="score"), workdir=tmp_path)
    with pytest.raises(ValueError, match="ddim_steps"):
        exp.run(dataclasses.replace(exp.SMOKE, ddim_steps=(1000,)), workdir=tmp_path)
