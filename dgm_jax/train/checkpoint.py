"""Orbax checkpoints of any pytree of arrays, numbered by step.

Small wrappers over ``orbax.checkpoint.CheckpointManager`` used by ``fit`` and by the
MCMC driver. Saves are synchronous (the files are complete when ``save_checkpoint``
returns), so a crash never leaves a half-written "latest" checkpoint, and the arrays
may be donated or overwritten right after.

Typed PRNG keys (``jax.random.key``) are stored as their raw ``uint32`` key data and
rebuilt from the target's key type on restore, so checkpoints do not depend on how a
given orbax version handles extended dtypes.

Examples:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> d = tempfile.mkdtemp()
    >>> tree = {"x": jnp.arange(3.0), "key": jax.random.key(0)}
    >>> _ = save_checkpoint(d, 10, tree)
    >>> latest_step(d)
    10
    >>> restored = restore_checkpoint(d, tree)
    >>> restored["x"].tolist()
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dgm_jax.types import PyTree

__all__ = [
    "all_steps",
    "checkpoint_manager",
    "latest_step",
    "restore_checkpoint",
    "save_checkpoint",
]


def _check_directory(directory: Any) -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a str or os.PathLike, got {type(directory).__name__}")
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"directory must be a folder, got the file {str(path)!r}")
    return path.resolve()


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return int(step)


def checkpoint_manager(
    directory: str | os.PathLike, *, max_to_keep: int | None = None, create: bool = True
) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` on ``directory`` with synchronous saves.

    Args:
        directory: the checkpoint folder (one sub-folder per step).
        max_to_keep: keep only the newest this many checkpoints (``None``: keep all).
        create: create the folder if missing.
    """
    path = _check_directory(directory)
    if max_to_keep is not None:
        if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, (int, np.integer)):
            raise TypeError(f"max_to_keep must be an int or None, got {max_to_keep!r}")
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if max_to_keep is None else int(max_to_keep),
        create=create,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(path, options=options)


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _check_tree(tree: PyTree) -> None:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("pytree must contain at least one array, got an empty pytree")
    for leaf in leaves:
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            raise TypeError(
                f"pytree leaves must be arrays, got a leaf of type {type(leaf).__name__}: {leaf!r}"
            )


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    pytree: PyTree,
    *,
    max_to_keep: int | None = None,
) -> Path:
    """Save ``pytree`` as the checkpoint numbered ``step`` under ``directory``.

    Args:
        directory: the checkpoint folder (created if missing).
        step: the checkpoint number, an int >= 0 not already saved there.
        pytree: a pytree of arrays (typed PRNG keys allowed).
        max_to_keep: if given, delete older checkpoints so that at most this many remain.

    Returns:
        The folder of the new checkpoint.
    """
    step = _check_step(step)
    _check_tree(pytree)
    manager = checkpoint_manager(directory, max_to_keep=max_to_keep)
    try:
        if step in manager.all_steps():
            raise ValueError(
                f"a checkpoint for step {step} already exists in {str(directory)!r}; "
                "checkpoints are never overwritten"
            )
        _save(manager, step, pytree)
    finally:
        manager.close()
    return Path(directory).resolve() / str(step)


def all_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of all complete checkpoints in ``directory``, ascending ([] if none)."""
    path = _check_directory(directory)
    if not path.exists():
        return []
    manager = checkpoint_manager(path, create=False)
    try:
        return sorted(int(s) for s in manager.all_steps())
    finally:
        manager.close()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest checkpoint step in ``directory``, or ``None`` if it holds none."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def restore_checkpoint(
    directory: str | os.PathLike,
    target_pytree: PyTree | None,
    step: int | None = None,
) -> PyTree:
    """Restore a checkpoint with the structure, dtypes and shardings of ``target_pytree``.

    Args:
        directory: the checkpoint folder.
        target_pytree: a pytree like the saved one (arrays or ``jax.ShapeDtypeStruct``
            leaves with the wanted sharding); typed key leaves get their key type back.
            ``None`` restores the raw saved tree (nested dicts/lists, keys as key data).
        step: which checkpoint; ``None`` for the newest.

    Returns:
        The restored pytree.

    Raises:
        FileNotFoundError: no checkpoint (or not that step) in ``directory``.
        ValueError: the saved tree does not match ``target_pytree``.
    """
    path = _check_directory(directory)
    steps = all_steps(path)
    if step is None:
        if not steps:
            raise FileNotFoundError(f"no checkpoint found in {str(path)!r}")
        step = steps[-1]
    else:
        step = _check_step(step)
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {str(path)!r}; available steps: {steps}"
            )
    manager = checkpoint_manager(path, create=False)
    try:
        return _restore(manager, step, target_pytree)
    finally:
        manager.close()


def _save(manager: ocp.CheckpointManager, step: int, pytree: PyTree) -> None:
    """Save through an open manager and wait until the files are complete."""
    manager.save(step, args=ocp.args.StandardSave(_keys_to_data(pytree)))
    manager.wait_until_finished()


def _restore(manager: ocp.CheckpointManager, step: int, target_pytree: PyTree | None) -> PyTree:
    """Restore ``step`` through an open manager, rebuilding typed keys from the target."""
    if target_pytree is None:
        return manager.restore(step, args=ocp.args.StandardRestore())
    _check_tree(target_pytree)
    target = jax.tree.map(
        lambda x: (
            (
                jax.random.key_data(x)
                if isinstance(x, jax.Array)
                else jax.eval_shape(jax.random.key_data, x)
            )
            if _is_key(x)
            else x
        ),
        target_pytree,
    )
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"checkpoint {step} in {str(manager.directory)!r} does not match target_pytree: {err}"
        ) from err
    return jax.tree.map(
        lambda t, x: jax.random.wrap_key_data(x, impl=_key_impl(t)) if _is_key(t) else x,
        target_pytree,
        restored,
    )


def _key_impl(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return jax.random.key_impl(x)
    return x.dtype._impl  # a jax.ShapeDtypeStruct of key dtype: its dtype knows the impl
