"""Experiments: thin scripts that turn a frozen config into a run folder.

Each experiment module ``experiments/<name>.py`` defines:

* ``Config``: a frozen dataclass with defaults (the full-size run);
* ``SMOKE``: a tiny ``Config`` used by the one-step smoke tests;
* ``run(config, workdir=None) -> dict``: runs the experiment, writes
  ``config.json``, ``metrics.json`` and figures into the run folder (see
  ``dgm_jax.train.runs``) and returns the metrics.

``EXPERIMENTS`` below is the one visible map from command-line names to modules.
"""

EXPERIMENTS: dict[str, str] = {
    "mnist_classifier": "experiments.mnist_classifier",
    "mcmc_silent_failures": "experiments.mcmc_silent_failures",
    "two_moons_diffusion": "experiments.two_moons_diffusion",
    "two_moons_samplers": "experiments.two_moons_samplers",
}
