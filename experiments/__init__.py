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
    "flow_matching_2d": "experiments.flow_matching_2d",
    "mnist_flow_matching": "experiments.mnist_flow_matching",
    "flows_2d": "experiments.flows_2d",
    "mnist_flow": "experiments.mnist_flow",
    "gmm_em": "experiments.gmm_em",
    "mnist_vae": "experiments.mnist_vae",
    "mnist_vqvae": "experiments.mnist_vqvae",
    "mnist_latent_diffusion": "experiments.mnist_latent_diffusion",
    "mnist_classifier": "experiments.mnist_classifier",
    "mnist_diffusion": "experiments.mnist_diffusion",
    "mnist_cfg": "experiments.mnist_cfg",
    "mcmc_silent_failures": "experiments.mcmc_silent_failures",
    "two_moons_diffusion": "experiments.two_moons_diffusion",
    "two_moons_samplers": "experiments.two_moons_samplers",
}
