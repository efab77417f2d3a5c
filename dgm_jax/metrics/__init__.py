"""Evaluation metrics for every family in dgm_jax.

* :mod:`~dgm_jax.metrics.sample` — two-sample metrics in any dimension: unbiased MMD²
  (multi-bandwidth RBF), energy distance, sliced and exact Wasserstein, mode coverage.
* :mod:`~dgm_jax.metrics.prdc` — k-NN precision, recall, density, coverage.
* :mod:`~dgm_jax.metrics.features` — Fréchet distance (FID from any features), KID,
  Inception Score (from any logits).
* :mod:`~dgm_jax.metrics.mnist_net` — the shipped MNIST classifier and
  :func:`fid_mnist` / :func:`inception_score_mnist` ("Fréchet LeNet-style distances",
  not Inception-v3 FIDs).
* :mod:`~dgm_jax.metrics.likelihood` — bits/dim, dequantization, IWAE, log-mean-exp.
* :mod:`~dgm_jax.metrics.timeseries` — discriminative and predictive scores, Fréchet
  distance in a trained sequence encoder's features.

Pairwise metrics run in tiles (``block_size``) so 50,000 × 50,000 comparisons fit in
memory. All functions are pure and jit-compatible unless their docstring says "host
side"; the library never jit-compiles for you.

Examples:
    >>> import jax
    >>> from dgm_jax.metrics import energy_distance, mmd2, prdc
    >>> kx, ky = jax.random.split(jax.random.key(0))
    >>> x, y = jax.random.normal(kx, (256, 2)), jax.random.normal(ky, (256, 2))
    >>> d = jax.jit(mmd2)(x, y)
    >>> e = jax.jit(energy_distance)(x, y)
    >>> pr = prdc(x, y, k=5)
"""

from dgm_jax.metrics.features import (
    FeatureStats,
    ScoreWithStd,
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    inception_score,
    kernel_inception_distance,
)
from dgm_jax.metrics.likelihood import (
    IWAEEstimate,
    bits_per_dim_to_nats,
    iwae_log_likelihood,
    logmeanexp,
    nats_to_bits_per_dim,
    uniform_dequantize,
    variational_dequantization_elbo,
)
from dgm_jax.metrics.mnist_net import (
    MnistClassifier,
    fid_mnist,
    inception_score_mnist,
    load_mnist_classifier,
    mnist_features,
    mnist_logits,
)
from dgm_jax.metrics.prdc import PRDC, knn_radii, prdc
from dgm_jax.metrics.sample import (
    DEFAULT_BANDWIDTH_FACTORS,
    ModeCoverage,
    energy_distance,
    median_distance,
    mmd2,
    mode_coverage,
    sliced_wasserstein,
    wasserstein_1d,
    wasserstein_exact,
)
from dgm_jax.metrics.timeseries import (
    discriminative_score,
    frechet_ts_distance,
    predictive_score,
)

__all__ = [
    "DEFAULT_BANDWIDTH_FACTORS",
    "PRDC",
    "FeatureStats",
    "IWAEEstimate",
    "MnistClassifier",
    "ModeCoverage",
    "ScoreWithStd",
    "bits_per_dim_to_nats",
    "discriminative_score",
    "energy_distance",
    "feature_stats",
    "fid_mnist",
    "frechet_distance",
    "frechet_distance_from_features",
    "frechet_ts_distance",
    "inception_score",
    "inception_score_mnist",
    "iwae_log_likelihood",
    "kernel_inception_distance",
    "knn_radii",
    "load_mnist_classifier",
    "logmeanexp",
    "median_distance",
    "mmd2",
    "mnist_features",
    "mnist_logits",
    "mode_coverage",
    "nats_to_bits_per_dim",
    "prdc",
    "predictive_score",
    "sliced_wasserstein",
    "uniform_dequantize",
    "variational_dequantization_elbo",
    "wasserstein_1d",
    "wasserstein_exact",
]
