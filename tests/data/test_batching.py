"""Tests for dgm_jax.data.batching: coverage per epoch, determinism, remainders, resumption."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.data import MNIST, batch_at, batching, make_batch_fn

N, BATCH = 10, 4  # 2 full batches and a remainder of 2


def _data(n=N):
    """A pytree whose leaves are consistent per example: row i holds i everywhere."""
    ids = jnp.arange(n)
    return {"id": ids, "x": jnp.stack([ids, 10 * ids], axis=1).astype(jnp.float32)}


def _assert_rows_consistent(batch):
    np.testing.assert_array_equal(batch["x"][..., 0], batch["id"])
    np.testing.assert_array_equal(batch["x"][..., 1], 10 * batch["id"])


def test_epoch_drop_remainder(key):
    batches = batching.epoch_batches(key, _data(), BATCH)
    assert batches["id"].shape == (2, BATCH) and batches["x"].shape == (2, BATCH, 2)
    assert batches["x"].dtype == jnp.float32
    _assert_rows_consistent(batches)
    ids = np.asarray(batches["id"]).ravel()
    assert len(set(ids)) == 2 * BATCH and set(ids) <= set(range(N))  # no repeats


def test_epoch_keep_remainder_sees_every_example_once(key):
    batches, mask = batching.epoch_batches(key, _data(), BATCH, drop_remainder=False)
    assert batches["id"].shape == (3, BATCH) and mask.shape == (3, BATCH)
    assert mask.dtype == jnp.bool_
    _assert_rows_consistent(batches)
    np.testing.assert_array_equal(mask[:2], True)
    np.testing.assert_array_equal(mask[2], [True, True, False, False])
    real = np.asarray(batches["id"])[np.asarray(mask)]
    np.testing.assert_array_equal(np.sort(real), np.arange(N))  # each example exactly once


def test_exact_multiple_has_no_padding(key):
    batches, mask = batching.epoch_batches(key, _data(8), BATCH, drop_remainder=False)
    assert batches["id"].shape == (2, BATCH) and bool(mask.all())
    np.testing.assert_array_equal(np.sort(np.asarray(batches["id"]).ravel()), np.arange(8))


def test_epoch_determinism_and_jit(key):
    k1, k2 = jax.random.split(key)
    a = batching.epoch_batches(k1, _data(), BATCH)
    np.testing.assert_array_equal(a["id"], batching.epoch_batches(k1, _data(), BATCH)["id"])
    assert not np.array_equal(a["id"], batching.epoch_batches(k2, _data(), BATCH)["id"])
    jitted = jax.jit(batching.epoch_batches, static_argnums=2)(k1, _data(), BATCH)
    np.testing.assert_array_equal(jitted["id"], a["id"])


def test_numpy_namedtuple_data(key):
    data = MNIST(
        images=np.arange(6 * 4, dtype=np.uint8).reshape(6, 2, 2, 1),
        labels=np.arange(6, dtype=np.int32),
    )
    batches = batching.epoch_batches(key, data, 3)
    assert isinstance(batches, MNIST)
    assert batches.images.shape == (2, 3, 2, 2, 1) and batches.images.dtype == jnp.uint8
    np.testing.assert_array_equal(batches.images[..., 0, 0, 0], 4 * batches.labels)


def test_iterate_batches_epochs(key):
    data = _data()
    items = list(batching.iterate_batches(key, data, BATCH, num_epochs=3))
    assert len(items) == 3 * 2
    for epoch in range(3):
        expected = batching.epoch_batches(jax.random.fold_in(key, epoch), data, BATCH)
        for i in range(2):
            np.testing.assert_array_equal(items[2 * epoch + i]["id"], expected["id"][i])
            _assert_rows_consistent(items[2 * epoch + i])
    assert not np.array_equal(items[0]["id"], items[2]["id"])  # reshuffled each epoch


def test_iterate_batches_keep_remainder_and_forever(key):
    items = list(batching.iterate_batches(key, _data(), BATCH, num_epochs=2, drop_remainder=False))
    assert len(items) == 2 * 3
    for epoch in range(2):
        epoch_items = items[3 * epoch : 3 * epoch + 3]
        ids = np.concatenate([np.asarray(b["id"])[np.asarray(m)] for b, m in epoch_items])
        np.testing.assert_array_equal(np.sort(ids), np.arange(N))
        assert epoch_items[-1][1].tolist() == [True, True, False, False]
    forever = batching.iterate_batches(key, _data(), BATCH)
    assert len(list(itertools.islice(forever, 7))) == 7


def test_batch_at_matches_iteration_and_resumes(key):
    data = _data()
    items = list(batching.iterate_batches(key, data, BATCH, num_epochs=3))
    for step, item in enumerate(items):
        np.testing.assert_array_equal(batching.batch_at(key, data, BATCH, step)["id"], item["id"])
    # Under jit with a traced step (what a training loop does), and resumed at step 4.
    batch_fn = jax.jit(lambda step: batching.batch_at(key, data, BATCH, step))
    for step in range(4, 6):
        np.testing.assert_array_equal(batch_fn(step)["id"], items[step]["id"])
    np.testing.assert_array_equal(batch_fn(jnp.int32(5))["x"], items[5]["x"])
    assert batching.steps_per_epoch(data, BATCH) == 2


def test_num_batches():
    assert batching.num_batches(10, 4) == 2
    assert batching.num_batches(10, 4, drop_remainder=False) == 3
    assert batching.num_batches(8, 4, drop_remainder=False) == 2


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda k: batching.epoch_batches(k, _data(), 0), ValueError, "batch_size must be >= 1"),
        (lambda k: batching.epoch_batches(k, _data(), 2.0), TypeError, "batch_size must be an int"),
        (lambda k: batching.epoch_batches(k, _data(), 11), ValueError, "exceeds the number"),
        (
            lambda k: batching.epoch_batches(k, _data(), 2, drop_remainder=None),
            TypeError,
            "drop_remainder must be a bool",
        ),
        (
            lambda k: batching.epoch_batches(k, {"a": jnp.zeros(3), "b": jnp.zeros(4)}, 2),
            ValueError,
            r"share the leading \(examples\) axis size, got sizes \[3, 4\]",
        ),
        (lambda k: batching.epoch_batches(k, jnp.float32(1.0), 1), ValueError, "scalar leaf"),
        (lambda k: batching.epoch_batches(k, [1, 2, 3], 1), TypeError, "leaves must be arrays"),
        (lambda k: batching.epoch_batches(k, {}, 1), ValueError, "at least one array leaf"),
        (lambda k: batching.epoch_batches(k, jnp.zeros((0, 2)), 1), ValueError, "at least one"),
        (lambda k: batching.epoch_batches(0, _data(), 2), TypeError, "key must be a JAX PRNG"),
        (
            lambda k: batching.iterate_batches(k, _data(), 2, num_epochs=0),
            ValueError,
            "num_epochs must be >= 1",
        ),
        (lambda k: batching.iterate_batches(k, _data(), 20), ValueError, "exceeds the number"),
        (lambda k: batching.batch_at(k, _data(), 2, -1), ValueError, "step must be >= 0"),
        (lambda k: batching.batch_at(k, _data(), 2, 1.0), TypeError, "step must be an int"),
        (lambda k: batching.batch_at(k, _data(), 2, True), TypeError, "got bool"),
        (
            lambda k: batching.batch_at(k, _data(), 2, jnp.zeros(2, jnp.int32)),
            TypeError,
            "step must be an integer scalar",
        ),
        (lambda k: batching.batch_at(k, _data(), 11, 0), ValueError, "must not exceed"),
        (lambda k: batching.num_batches(-1, 2), ValueError, "num_examples must be >= 0"),
    ],
)
def test_rejects_bad_arguments(key, call, error, match):
    with pytest.raises(error, match=match):
        call(key)


def test_make_batch_fn_equals_batch_at_across_epochs_and_jumps():
    """The cached closure gives batch_at's batches for steps in any order (a resumed run
    jumps into the middle of an epoch; going back an epoch recomputes its permutation)."""
    key = jax.random.key(3)
    data = (jnp.arange(23), jnp.arange(23) * 10)
    batch_fn = make_batch_fn(key, data, 5)  # 4 steps per epoch
    for step in [0, 1, 2, 3, 4, 9, 5, 2, 14, 13, 0]:
        want = batch_at(key, data, 5, step)
        got = batch_fn(step)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="step"):
        batch_fn(-1)
    with pytest.raises(ValueError, match="step"):
        batch_fn(True)
