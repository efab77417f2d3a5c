"""Checkpoint wrappers: exact round trips of any pytree (typed keys included), clear errors."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.train import latest_step, restore_checkpoint, save_checkpoint
from dgm_jax.train.checkpoint import all_steps


class ChainState(NamedTuple):
    position: jax.Array  # (num_chains, dim)
    logdensity: jax.Array  # (num_chains,)
    key: jax.Array  # typed keys, one per chain
    count: jax.Array  # int32 scalar


def _chain_state(seed: int) -> ChainState:
    rng = np.random.default_rng(seed)
    return ChainState(
        position=jnp.asarray(rng.standard_normal((4, 2)), jnp.float32),
        logdensity=jnp.asarray(rng.standard_normal(4), jnp.float32),
        key=jax.random.split(jax.random.key(seed), 4),
        count=jnp.int32(seed),
    )


def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_with_typed_keys(tmp_path):
    assert latest_step(tmp_path / "missing") is None
    states = {step: _chain_state(step) for step in (3, 10)}
    for step, state in states.items():
        path = save_checkpoint(tmp_path, step, state)
        assert path.is_dir()
    assert latest_step(tmp_path) == 10
    assert all_steps(tmp_path) == [3, 10]
    target = _chain_state(0)
    _assert_same(restore_checkpoint(tmp_path, target), states[10])
    _assert_same(restore_checkpoint(tmp_path, target, step=3), states[3])
    # Abstract targets work too, and keep the key implementation.
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    _assert_same(restore_checkpoint(tmp_path, abstract, step=3), states[3])
    raw = restore_checkpoint(tmp_path, None, step=3)
    np.testing.assert_array_equal(raw["key"], jax.random.key_data(states[3].key))


def test_rbg_keys_and_legacy_keys(tmp_path):
    tree = {
        "rbg": jax.random.split(jax.random.key(1, impl="rbg"), 2),
        "legacy": jax.random.PRNGKey(2),
    }
    save_checkpoint(tmp_path, 0, tree)
    restored = restore_checkpoint(tmp_path, tree)
    _assert_same(restored, tree)
    assert jax.random.key_impl(restored["rbg"]) == jax.random.key_impl(tree["rbg"])


def test_max_to_keep(tmp_path):
    for step in range(5):
        save_checkpoint(tmp_path, step, {"x": jnp.full(2, float(step))}, max_to_keep=2)
    assert all_steps(tmp_path) == [3, 4]


def test_checkpoint_rejects_bad_input(tmp_path):
    tree = {"x": jnp.ones(2)}
    save_checkpoint(tmp_path, 1, tree)
    with pytest.raises(ValueError, match="checkpoint for step 1 already exists"):
        save_checkpoint(tmp_path, 1, tree)
    with pytest.raises(ValueError, match="step must be >= 0"):
        save_checkpoint(tmp_path, -1, tree)
    with pytest.raises(TypeError, match="step must be an int"):
        save_checkpoint(tmp_path, 1.0, tree)
    with pytest.raises(TypeError, match=r"directory must be a str or os\.PathLike"):
        save_checkpoint(3, 1, tree)
    with pytest.raises(ValueError, match="empty pytree"):
        save_checkpoint(tmp_path, 2, {})
    with pytest.raises(TypeError, match="leaves must be arrays"):
        save_checkpoint(tmp_path, 2, {"x": "text"})
    with pytest.raises(ValueError, match="max_to_keep must be >= 1"):
        save_checkpoint(tmp_path, 2, tree, max_to_keep=0)
    with pytest.raises(
        FileNotFoundError, match=r"no checkpoint for step 7 .* available steps: \[1\]"
    ):
        restore_checkpoint(tmp_path, tree, step=7)
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        restore_checkpoint(tmp_path / "empty", tree)
    with pytest.raises(ValueError, match="does not match target_pytree"):
        restore_checkpoint(tmp_path, {"y": jnp.ones(2)})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="must be a folder"):
        latest_step(tmp_path / "file")
