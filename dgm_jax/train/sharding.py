"""Data parallelism over the local devices with ``jax.sharding`` (GSPMD).

The batch is split along its leading axis over a one-axis mesh named ``"data"``; the
training state is replicated. ``jax.jit`` with these shardings inserts the gradient
all-reduce itself: there is no ``pmap`` and no hand-written collective.

Examples:
    >>> import jax.numpy as jnp
    >>> mesh = data_mesh()
    >>> n = mesh.shape["data"]
    >>> batch = shard_batch({"x": jnp.zeros((4 * n, 3))}, mesh)
    >>> batch["x"].shape
    (4, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dgm_jax.types import PyTree

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "data_sharding",
    "replicate",
    "replicated_sharding",
    "shard_batch",
]

DATA_AXIS = "data"


def data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A one-dimensional mesh with axis ``"data"`` over ``devices``.

    Args:
        devices: the devices to use; defaults to ``jax.local_devices()``.

    Returns:
        ``Mesh(devices, ("data",))``.
    """
    if devices is None:
        devices = jax.local_devices()
    if isinstance(devices, (str, bytes)) or not isinstance(devices, (Sequence, np.ndarray)):
        raise TypeError(f"devices must be a sequence of jax devices, got {type(devices).__name__}")
    devices = list(np.asarray(devices, dtype=object).reshape(-1))
    if not devices:
        raise ValueError("devices must not be empty")
    for d in devices:
        if not isinstance(d, jax.Device):
            raise TypeError(f"devices must contain jax devices, got {type(d).__name__} {d!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must be distinct, got {devices}")
    return Mesh(np.array(devices, dtype=object), (DATA_AXIS,))


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {DATA_AXIS!r}, got axis names {mesh.axis_names}"
        )


def data_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that splits an array's leading axis over the mesh's ``"data"`` axis."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy of an array on every device of the mesh."""
    _check_mesh(mesh)
    return NamedSharding(mesh, P())


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Place ``batch`` on the mesh, each leaf split along its leading (example) axis.

    Args:
        batch: a pytree of arrays that all share the leading batch size.
        mesh: a mesh with a ``"data"`` axis (see ``data_mesh``).

    Returns:
        The same pytree with ``NamedSharding(mesh, P("data"))`` leaves.

    Raises:
        ValueError: a leaf is a scalar, the leaves disagree on the batch size, or the batch
            size is not divisible by the number of devices on the ``"data"`` axis.
    """
    sharding = data_sharding(mesh)
    num_devices = mesh.shape[DATA_AXIS]
    leaves, _ = jax.tree_util.tree_flatten_with_path(batch)
    if not leaves:
        raise ValueError("batch must contain at least one array, got an empty pytree")
    sizes = set()
    for path, leaf in leaves:
        shape = np.shape(leaf)
        name = "batch" + jax.tree_util.keystr(path)
        if len(shape) == 0:
            raise ValueError(f"{name} must have a leading batch axis, got a scalar")
        if shape[0] % num_devices:
            raise ValueError(
                f"{name} has batch size {shape[0]}, which is not divisible by the "
                f"{num_devices} devices of the mesh's {DATA_AXIS!r} axis"
            )
        sizes.add(shape[0])
    if len(sizes) > 1:
        raise ValueError(
            f"batch leaves must share the leading batch size, got sizes {sorted(sizes)}"
        )
    return jax.device_put(batch, sharding)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place a full copy of every leaf of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, replicated_sharding(mesh))
