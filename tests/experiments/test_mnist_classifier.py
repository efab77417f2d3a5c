"""One-epoch smoke test of the MNIST classifier experiment on synthetic images."""

import json

from experiments import EXPERIMENTS, mnist_classifier


def test_smoke(tmp_path):
    assert EXPERIMENTS["mnist_classifier"] == "experiments.mnist_classifier"
    assert not mnist_classifier.SMOKE.export_weights  # never overwrite the shipped weights
    metrics = mnist_classifier.run(mnist_classifier.SMOKE, workdir=tmp_path)
    for name in ("config.json", "metrics.json", "training.png", "params.npz"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert metrics["num_params"] == 164_234
