"""Run by test_sharding.py in a subprocess with 8 fake CPU devices; prints one JSON line.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax is imported,
which is why this runs in its own process.
"""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

assert "--xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

from dgm_jax.train import (  # noqa: E402
    data_mesh,
    fit,
    init_train_state,
    make_step,
    replicate,
    shard_batch,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train._helpers import minibatch_fn, mlp_params, noisy_mlp_loss, regression_data  # noqa: E402


def max_rel_diff(a, b):
    """max |a - b| / max |b| over the leaves of two pytrees."""
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / max(np.max(np.abs(y)), 1e-30))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def main():
    out = {"num_devices": len(jax.devices())}
    mesh = data_mesh()
    x, y = regression_data()
    batch_fn = minibatch_fn(x, y, batch_size=32)  # 4 examples per device
    opt = optax.adam(1e-2)
    key = jax.random.key(0)

    step1 = make_step(noisy_mlp_loss, opt)
    step8 = make_step(noisy_mlp_loss, opt, mesh=mesh)
    state1 = init_train_state(mlp_params(), opt)
    state8 = replicate(init_train_state(mlp_params(), opt), mesh)
    loss_diffs = []
    for i in range(5):
        k = jax.random.fold_in(key, i)
        state1, m1 = step1(state1, k, batch_fn(i))
        state8, m8 = step8(state8, k, shard_batch(batch_fn(i), mesh))
        loss_diffs.append(abs(float(m8["loss"]) - float(m1["loss"])) / abs(float(m1["loss"])))
    out["loss_rel_diff"] = max(loss_diffs)
    out["params_rel_diff"] = max_rel_diff(state8.params, state1.params)
    out["params_bitwise_equal"] = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(state8.params), jax.tree.leaves(state1.params))
    )
    out["state_replicated"] = all(
        leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
        for leaf in jax.tree.leaves(state8)
    )
    sharded = shard_batch(batch_fn(0), mesh)
    out["batch_shard_shape"] = list(sharded[0].addressable_shards[0].data.shape)

    # An unsharded batch is placed by the step itself.
    state8b = replicate(init_train_state(mlp_params(), opt), mesh)
    state8b, _ = step8(state8b, jax.random.fold_in(key, 0), batch_fn(0))
    out["step_places_batch"] = int(state8b.step) == 1

    try:
        shard_batch((x[:60], y[:60]), mesh)
        out["divisibility_error"] = None
    except ValueError as err:
        out["divisibility_error"] = str(err)

    try:  # the step validates unsharded batches too, before jit sees them
        step8(state8b, jax.random.fold_in(key, 1), (jnp.asarray(x[:60]), jnp.asarray(y[:60])))
        out["step_divisibility_error"] = None
    except ValueError as err:
        out["step_divisibility_error"] = str(err)

    # fit with the sharded step: a resumed run equals the uninterrupted one (restored onto the
    # mesh), and both match the one-device fit to reduction-order tolerance.
    with tempfile.TemporaryDirectory() as tmp:

        def run(run_dir, batches, step_fn=step8, place=True):
            state = init_train_state(mlp_params(), opt)
            state = replicate(state, mesh) if place else state
            return fit(step_fn, state, key, batches, 6, run_dir=run_dir, log_every=1,
                       checkpoint_every=3, progress=False)  # fmt: skip

        full = run(Path(tmp) / "full", batch_fn)

        def crashing(step):
            if step == 4:
                raise RuntimeError("crash")
            return batch_fn(step)

        with contextlib.suppress(RuntimeError):
            run(Path(tmp) / "resumed", crashing)
        resumed = run(Path(tmp) / "resumed", batch_fn)
        single = run(Path(tmp) / "single", batch_fn, step_fn=step1, place=False)
        out["fit_resume_bitwise"] = all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state))
        ) and (full.history == resumed.history)
        out["fit_resume_replicated"] = all(
            len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(resumed.state)
        )
        out["fit_vs_single_rel_diff"] = max_rel_diff(full.state.params, single.state.params)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
