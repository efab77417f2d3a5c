"""One-step smoke test of experiments/mcmc_silent_failures."""

import json

import pytest

from experiments import mcmc_silent_failures as exp


def test_smoke_run_writes_files_and_metrics(tmp_path):
    metrics = exp.run(exp.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "samples.png", "table.md", "table.json"):
        assert (tmp_path / name).is_file(), name
    assert metrics["num_runs"] == len(exp.SMOKE.targets) * len(exp.SMOKE.methods)
    assert json.loads((tmp_path / "metrics.json").read_text())["num_runs"] == metrics["num_runs"]
    rows = json.loads((tmp_path / "table.json").read_text())
    for row in rows:
        for field in (
            "max_rhat",
            "min_ess_bulk",
            "ess_per_grad",
            "energy_distance",
            "silent_failure",
            "divergences",
        ):
            assert field in row
        assert row["grad_evals"] > 0
    assert "right_mode_fraction" in rows[0]
    assert "| bimodal | rwm |" in (tmp_path / "table.md").read_text()


def test_bad_config_raises(tmp_path):
    import dataclasses

    with pytest.raises(ValueError, match="unknown target"):
        exp.run(dataclasses.replace(exp.SMOKE, targets=("nope",)), workdir=tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        exp.run(dataclasses.replace(exp.SMOKE, methods=("gibbs",)), workdir=tmp_path)
