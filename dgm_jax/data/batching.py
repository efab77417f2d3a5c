"""Shuffled mini-batches of a pytree of arrays, deterministic per key.

``data`` is any pytree (an array, a tuple ``(images, labels)``, a dict, an
:class:`~dgm_jax.data.mnist.MNIST`) whose leaves share the leading axis of ``num_examples``.

* :func:`epoch_batches`: one epoch as a pytree with leading ``(num_batches, batch_size)`` axes;
  pure and jit-compatible (``batch_size`` and ``drop_remainder`` static), e.g. to ``lax.scan``
  over the batches of an epoch.
* :func:`iterate_batches`: a Python generator over epochs, epoch ``e`` shuffled with
  ``jax.random.fold_in(key, e)``.
* :func:`batch_at`: the batch for a global step number, ``step`` may be traced; epoch
  ``step // steps_per_epoch`` is shuffled with ``fold_in(key, epoch)``, so a resumed training
  run sees exactly the batches it would have seen (``batch_fn = lambda step: batch_at(key,
  data, batch_size, step)``).

The three agree: with ``drop_remainder=True``, batch ``i`` of epoch ``e`` of
:func:`iterate_batches` equals ``epoch_batches(fold_in(key, e), ...)[i]`` and
``batch_at(key, ..., step=e * steps_per_epoch + i)``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.arange(10.0)
    >>> epoch_batches(jax.random.key(0), x, 4).shape
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_int, check_key
from dgm_jax.types import Array, Bool, Int, PRNGKeyArray, PyTree

__all__ = [
    "batch_at",
    "epoch_batches",
    "iterate_batches",
    "make_batch_fn",
    "num_batches",
    "steps_per_epoch",
]


def _num_examples(data: PyTree) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data must be a pytree with at least one array leaf, got no leaves")
    sizes = set()
    for leaf in leaves:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"data leaves must be arrays, got {type(leaf).__name__}")
        if len(leaf.shape) < 1:
            raise ValueError(
                "data leaves must have a leading examples axis, got a scalar leaf of shape ()"
            )
        sizes.add(leaf.shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"data leaves must share the leading (examples) axis size, got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _check_common(key: Any, data: PyTree, batch_size: int) -> int:
    check_key("key", key)
    check_int("batch_size", batch_size, minimum=1)
    num_examples = _num_examples(data)
    if num_examples == 0:
        raise ValueError("data must hold at least one example, got 0")
    return num_examples


def _check_drop(drop_remainder: Any) -> None:
    if not isinstance(drop_remainder, bool):
        raise TypeError(f"drop_remainder must be a bool, got {type(drop_remainder).__name__}")


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """Batches per epoch: ``num_examples // batch_size``, rounded up without dropping.

    Examples:
        >>> num_batches(10, 4), num_batches(10, 4, drop_remainder=False)
        (2, 3)
    """
    check_int("num_examples", num_examples, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    _check_drop(drop_remainder)
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def steps_per_epoch(data: PyTree, batch_size: int) -> int:
    """Full batches per epoch of ``data`` (the remainder is dropped), as used by :func:`batch_at`.

    Examples:
        >>> steps_per_epoch(jnp.zeros((10, 3)), 4)
        2
    """
    check_int("batch_size", batch_size, minimum=1)
    num_examples = _num_examples(data)
    if num_examples < batch_size:
        raise ValueError(
            f"batch_size ({batch_size}) must not exceed the number of examples ({num_examples})"
        )
    return num_examples // batch_size


def _gather(data: PyTree, idx: Array) -> PyTree:
    return jax.tree.map(lambda leaf: jnp.take(jnp.asarray(leaf), idx, axis=0), data)


def epoch_batches(
    key: PRNGKeyArray,
    data: PyTree,
    batch_size: int,
    *,
    drop_remainder: bool = True,
) -> PyTree | tuple[PyTree, Bool[Array, "num_batches batch_size"]]:
    """Shuffle ``data`` with ``key`` and cut it into batches.

    Pure and jit-compatible with ``batch_size`` and ``drop_remainder`` static.

    With ``drop_remainder=True`` (default) the last ``num_examples % batch_size`` examples of
    the permutation are dropped and the result is a pytree whose leaves have shape
    ``(num_batches, batch_size, ...)`` with ``num_batches = num_examples // batch_size``.

    With ``drop_remainder=False`` every example appears once: the last batch is padded up to
    ``batch_size`` with repeats of the first examples of the permutation, and the result is
    ``(batches, mask)`` where ``mask`` is bool ``(num_batches, batch_size)``, ``True`` for real
    examples and ``False`` for padding (weight per-example losses by it).

    Args:
        key: PRNG key for the permutation.
        data: pytree of arrays sharing the leading axis ``num_examples``.
        batch_size: examples per batch, an int >= 1.
        drop_remainder: drop the incomplete last batch (``True``) or pad it and return a
            mask (``False``).

    Returns:
        ``batches`` or ``(batches, mask)`` as described above.

    Raises:
        ValueError: ``batch_size > num_examples`` with ``drop_remainder=True`` (no batch).

    Examples:
        >>> b, mask = epoch_batches(jax.random.key(0), jnp.arange(10), 4, drop_remainder=False)
        >>> b.shape, int(mask.sum())
        ((3, 4), 10)
    """
    num_examples = _check_common(key, data, batch_size)
    _check_drop(drop_remainder)
    nb = num_batches(num_examples, batch_size, drop_remainder=drop_remainder)
    if nb == 0:
        raise ValueError(
            f"batch_size ({batch_size}) exceeds the number of examples ({num_examples}) with "
            "drop_remainder=True: no batch would be produced"
        )
    perm = jax.random.permutation(key, num_examples)
    if drop_remainder:
        return _gather(data, perm[: nb * batch_size].reshape(nb, batch_size))
    pad = nb * batch_size - num_examples
    # Padding repeats the first `pad` entries of the permutation (pad < batch_size <= ...).
    idx = jnp.concatenate([perm, jnp.resize(perm, (pad,))]).reshape(nb, batch_size)
    mask = (jnp.arange(nb * batch_size) < num_examples).reshape(nb, batch_size)
    return _gather(data, idx), mask


def iterate_batches(
    key: PRNGKeyArray,
    data: PyTree,
    batch_size: int,
    *,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
) -> Iterator[PyTree | tuple[PyTree, Bool[Array, " batch_size"]]]:
    """Yield shuffled batches epoch after epoch (a Python generator; not traceable).

    Epoch ``e`` (from 0) uses the permutation of ``jax.random.fold_in(key, e)``, identical to
    :func:`epoch_batches` with that key. Each batch is a pytree with leaves
    ``(batch_size, ...)``; with ``drop_remainder=False`` each item is ``(batch, mask)`` with a
    bool ``(batch_size,)`` mask (``False`` marks padding, only in the last batch of an epoch).

    Args:
        key: PRNG key.
        data: pytree of arrays sharing the leading axis ``num_examples``.
        batch_size: examples per batch, an int >= 1.
        num_epochs: number of epochs, an int >= 1, or ``None`` to iterate forever.
        drop_remainder: as in :func:`epoch_batches`.

    Yields:
        ``batch`` or ``(batch, mask)``.

    Examples:
        >>> it = iterate_batches(jax.random.key(0), jnp.arange(10), 5, num_epochs=2)
        >>> len(list(it))
        4
    """
    num_examples = _check_common(key, data, batch_size)
    _check_drop(drop_remainder)
    if num_epochs is not None:
        check_int("num_epochs", num_epochs, minimum=1)
    if drop_remainder and batch_size > num_examples:
        raise ValueError(
            f"batch_size ({batch_size}) exceeds the number of examples ({num_examples}) with "
            "drop_remainder=True: no batch would be produced"
        )
    return _iterate(key, data, batch_size, num_epochs, drop_remainder, num_examples)


def _iterate(key, data, batch_size, num_epochs, drop_remainder, num_examples):
    # Split from iterate_batches so that argument errors are raised at the call, not at the
    # first next().
    nb = num_batches(num_examples, batch_size, drop_remainder=drop_remainder)
    arrays = jax.tree.map(jnp.asarray, data)
    epoch = 0
    while num_epochs is None or epoch < num_epochs:
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
        if not drop_remainder:
            perm = jnp.concatenate([perm, jnp.resize(perm, (nb * batch_size - num_examples,))])
        for i in range(nb):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            batch = _gather(arrays, idx)
            if drop_remainder:
                yield batch
            else:
                yield batch, jnp.arange(i * batch_size, (i + 1) * batch_size) < num_examples
        epoch += 1


def batch_at(
    key: PRNGKeyArray,
    data: PyTree,
    batch_size: int,
    step: int | Int[Array, ""],
) -> PyTree:
    """The batch for global training step ``step``; pure, jit-compatible, ``step`` may be traced.

    With ``spe = num_examples // batch_size`` full batches per epoch (the remainder is
    dropped), ``step`` falls in epoch ``step // spe`` at position ``step % spe``; the epoch is
    shuffled with ``jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)``.
    So the batch depends only on ``(key, step)``: a run resumed at step ``s`` sees the same
    batches as an uninterrupted one, and batches agree with :func:`iterate_batches`. Each call
    recomputes the epoch's permutation (a sort of ``num_examples`` keys).

    Args:
        key: PRNG key shared by the whole run.
        data: pytree of arrays sharing the leading axis ``num_examples``.
        batch_size: examples per batch, an int in ``[1, num_examples]``.
        step: global step number, an int >= 0 or an integer scalar array.

    Returns:
        pytree with leaves ``(batch_size, ...)``.

    Examples:
        >>> batch_fn = lambda step: batch_at(jax.random.key(0), jnp.arange(10), 5, step)
        >>> batch_fn(0).shape
        (5,)
    """
    num_examples = _check_common(key, data, batch_size)
    spe = steps_per_epoch(data, batch_size)
    if isinstance(step, bool):
        raise TypeError("step must be an int or an integer scalar array, got bool")
    if isinstance(step, (int, np.integer)):
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
    elif hasattr(step, "dtype") and hasattr(step, "shape"):
        if step.shape != () or not jnp.issubdtype(step.dtype, jnp.integer):
            raise TypeError(
                f"step must be an integer scalar, got shape {step.shape} and dtype {step.dtype}"
            )
    else:
        raise TypeError(f"step must be an int or an integer scalar array, got {type(step)}")
    step = jnp.asarray(step)
    epoch = step // spe
    position = step % spe
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    idx = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)
    return _gather(data, idx)


def make_batch_fn(key: PRNGKeyArray, data: PyTree, batch_size: int) -> Callable[[int], PyTree]:
    """``batch_fn(step)`` for :func:`dgm_jax.train.fit`, equal to :func:`batch_at` step by step.

    :func:`batch_at` is pure, so it sorts the whole epoch's permutation at every step (about
    25 ms for 60,000 examples on a CPU, more than a small model's update). This host-side
    closure computes each epoch's permutation once, keeps it on the device while the steps
    stay in that epoch, and gathers each batch with one compiled call; the batches are
    those of ``batch_at(key, data, batch_size, step)``, so resumed runs are unchanged.

    Args:
        key: PRNG key shared by the whole run.
        data: pytree of arrays sharing the leading axis ``num_examples``.
        batch_size: examples per batch, an int in ``[1, num_examples]``.

    Returns:
        ``batch_fn(step)`` for Python int steps ``>= 0``, returning leaves ``(batch_size, ...)``.

    Examples:
        >>> batch_fn = make_batch_fn(jax.random.key(0), jnp.arange(10), 5)
        >>> bool(jnp.all(batch_fn(3) == batch_at(jax.random.key(0), jnp.arange(10), 5, 3)))
        True
    """
    num_examples = _check_common(key, data, batch_size)
    spe = steps_per_epoch(data, batch_size)
    permute = jax.jit(
        lambda epoch: jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
    )

    @jax.jit
    def gather(data, perm, position):
        return _gather(data, jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size))

    current: dict[str, Any] = {"epoch": None, "perm": None}

    def batch_fn(step: int) -> PyTree:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        epoch, position = divmod(int(step), spe)
        if current["epoch"] != epoch:
            current["epoch"], current["perm"] = epoch, permute(jnp.int32(epoch))
        return gather(data, current["perm"], jnp.int32(position))

    return batch_fn
