"""Data parallelism: the 8-device sharded step equals the 1-device step.

The multi-device part runs in a subprocess because
XLA_FLAGS=--xla_force_host_platform_device_count=8 only takes effect if set before jax is
imported, and the test process has imported jax already.

Why a tolerance and not bitwise equality: on one device the batch mean in the loss is one
reduction over 32 examples; sharded over 8 devices, each device sums its 4 examples and an
all-reduce adds the 8 partial sums. Float addition is not associative, so the two orders
round differently: each reduction may differ by a few float32 ulps (~1e-7 relative), and a
handful of Adam steps keep the parameter difference at that order. We allow 1e-6 relative.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from dgm_jax.train import data_mesh, replicate, shard_batch

WORKER = Path(__file__).with_name("_sharded_worker.py")


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_step_matches_single_device(eight_devices):
    r = eight_devices
    assert r["num_devices"] == 8
    assert r["batch_shard_shape"] == [4, 3]
    assert r["state_replicated"]
    assert r["step_places_batch"]
    assert r["loss_rel_diff"] < 1e-6
    assert r["params_rel_diff"] < 1e-6
    assert r["fit_vs_single_rel_diff"] < 1e-6


def test_sharded_fit_resumes_bitwise(eight_devices):
    assert eight_devices["fit_resume_bitwise"]
    assert eight_devices["fit_resume_replicated"]


def test_shard_batch_divisibility_message(eight_devices):
    msg = eight_devices["divisibility_error"]
    assert msg is not None
    assert "batch size 60" in msg and "not divisible by the 8 devices" in msg
    assert "not divisible by the 8 devices" in eight_devices["step_divisibility_error"]


def test_one_device_mesh_in_process():
    mesh = data_mesh()
    n = mesh.shape["data"]
    assert mesh.axis_names == ("data",)
    batch = {"x": jnp.ones((2 * n, 3)), "y": jnp.zeros(2 * n)}
    placed = shard_batch(batch, mesh)
    np.testing.assert_array_equal(placed["x"], batch["x"])
    tree = replicate({"w": jnp.arange(3.0)}, mesh)
    assert tree["w"].sharding.is_fully_replicated


def test_sharding_rejects_bad_input():
    mesh = data_mesh()
    with pytest.raises(ValueError, match="devices must not be empty"):
        data_mesh([])
    with pytest.raises(TypeError, match="devices must contain jax devices"):
        data_mesh(["cpu"])
    with pytest.raises(TypeError, match="devices must be a sequence"):
        data_mesh("cpu")
    with pytest.raises(ValueError, match="devices must be distinct"):
        data_mesh([jax.devices()[0], jax.devices()[0]])
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        shard_batch({"x": jnp.ones(2)}, "data")
    with pytest.raises(ValueError, match="axis named 'data'"):
        replicate({"x": jnp.ones(2)}, Mesh(np.array(jax.devices()[:1]), ("batch",)))
    with pytest.raises(ValueError, match=r"batch\['x'\] must have a leading batch axis"):
        shard_batch({"x": jnp.ones(())}, mesh)
    with pytest.raises(ValueError, match="share the leading batch size"):
        shard_batch({"x": jnp.ones(2), "y": jnp.ones(4)}, mesh)
    with pytest.raises(ValueError, match="empty pytree"):
        shard_batch({}, mesh)
