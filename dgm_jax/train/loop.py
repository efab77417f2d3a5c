"""The training loop: progress bar, periodic eval, JSONL logs, NaN stop, resumable checkpoints."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dgm_jax._validate import check_int, check_key
from dgm_jax.train import checkpoint as ckpt
from dgm_jax.train.logging import JsonlWriter, truncate_jsonl
from dgm_jax.train.runs import to_jsonable

__all__ = ["FitResult", "NonFiniteError", "fit"]


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or an infinity; ``fit`` stopped before saving it.

    Attributes:
        step: the step (number of completed updates) where it was first seen.
        metric: the metric(s) or state leaf that went non-finite.
        last_checkpoint: the newest checkpoint step left on disk (``None`` if none).
    """

    def __init__(self, message: str, *, step: int, metric: str, last_checkpoint: int | None):
        super().__init__(message)
        self.step = step
        self.metric = metric
        self.last_checkpoint = last_checkpoint


class FitResult(NamedTuple):
    """What ``fit`` returns."""

    state: Any  # the training state after num_steps updates
    history: list[dict[str, Any]]  # logged records {"step": int, metric: float, "eval/...": ...}


@jax.jit
def _track(first_bad: dict[str, jax.Array], metrics: dict[str, jax.Array], step: int):
    # First step at which each tracked metric was non-finite (-1: not yet). Runs on device,
    # so the loop does not wait for the step to finish.
    return {
        k: jnp.where((b < 0) & ~jnp.isfinite(metrics[k]), step, b).astype(jnp.int32)
        for k, b in first_bad.items()
    }


@jax.jit
def _leaves_finite(leaves: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def _is_float_scalar(x: Any) -> bool:
    return hasattr(x, "shape") and x.shape == () and jnp.issubdtype(x.dtype, jnp.inexact)


def _check_every(name: str, value: Any) -> int:
    check_int(name, value, minimum=0)
    return int(value)


def _due(done: int, every: int, num_steps: int) -> bool:
    return done == num_steps or (every > 0 and done % every == 0)


def fit(
    step_fn: Callable[[Any, jax.Array, Any], tuple[Any, dict[str, jax.Array]]],
    state: Any,
    key: jax.Array,
    batch_fn: Callable[[int], Any],
    num_steps: int,
    *,
    run_dir: str | os.PathLike | None = None,
    eval_fn: Callable[[Any, int], dict[str, Any]] | None = None,
    eval_every: int = 0,
    log_every: int = 100,
    checkpoint_every: int = 0,
    max_to_keep: int | None = 2,
    resume: bool = True,
    progress: bool = True,
    desc: str | None = None,
    finite_metrics: Sequence[str] | None = None,
) -> FitResult:
    """Run ``step_fn`` until ``state.step == num_steps``, logging, evaluating and checkpointing.

    Update ``s`` (0-based; it takes the state from step ``s`` to ``s + 1``) uses
    ``batch_fn(s)`` and the key ``jax.random.fold_in(key, s)``, so a run is a deterministic
    function of ``(state, key, batch_fn)`` and a resumed run sees the same data and keys.
    Records, evals and checkpoints are numbered by the number of completed updates.

    At step ``n`` (after ``n`` updates):

    * every ``log_every`` steps and at the end: the step's metrics are appended to the
      history and to ``run_dir/metrics.jsonl``, and shown in the progress bar;
    * every ``eval_every`` steps and at the end: ``eval_fn(state, n)`` is called and its
      results added to the step's record with an ``"eval/"`` prefix;
    * every ``checkpoint_every`` steps and at the end (if ``run_dir``): the state is saved
      to ``run_dir/checkpoints/<n>`` (orbax, synchronous; the newest ``max_to_keep`` kept).

    Resuming: with ``resume=True`` and a checkpoint in ``run_dir``, the newest one is
    restored (into the structure and shardings of ``state``), ``metrics.jsonl`` is cut back
    to that step and the run continues to ``num_steps``. On CPU the result is bitwise equal
    to an uninterrupted run.

    NaN/Inf: each step's floating scalar metrics (or only ``finite_metrics``) are checked on
    device without a host synchronisation; the flags are read on the host at each log,
    eval and checkpoint point, and the state's floating leaves are checked before every
    save. A non-finite value raises ``NonFiniteError`` naming the first bad step and metric;
    no checkpoint is written after it, so the last good one stays on disk. The trade-off:
    the loop may run up to ``min(log_every, eval_every, checkpoint_every)`` steps past the
    NaN before it stops, in exchange for one host sync per log point instead of per step.

    Args:
        step_fn: ``step_fn(state, key, batch) -> (state, metrics)``, e.g. from ``make_step``
            (it may donate ``state``: the state passed to ``fit`` is consumed).
        state: the initial state, a pytree with an int ``step`` field (e.g. ``TrainState``).
        key: PRNG key of the run; step ``s`` uses ``fold_in(key, s)``.
        batch_fn: ``batch_fn(s) -> batch``, deterministic in the global step ``s``.
        num_steps: total number of updates (including those done before a resume).
        run_dir: folder for ``metrics.jsonl`` and ``checkpoints/``; ``None``: nothing written.
        eval_fn: ``eval_fn(state, step) -> dict`` of metrics.
        eval_every: eval period in steps (0: only at the end).
        log_every: log period in steps (0: only at the end).
        checkpoint_every: checkpoint period in steps (0: only at the end); needs ``run_dir``.
        max_to_keep: number of checkpoints kept (``None``: all).
        resume: continue from the newest checkpoint in ``run_dir``. With ``False`` a
            ``run_dir`` that already holds checkpoints is an error (nothing is deleted).
        progress: show a tqdm progress bar (on stderr) with the loss.
        desc: progress bar label.
        finite_metrics: the metric names checked for NaN/Inf (``None``: every floating
            scalar metric).

    Returns:
        ``FitResult(state, history)``; ``history`` is the list of logged records (host
        floats), including those restored from ``metrics.jsonl`` when resuming.

    Raises:
        NonFiniteError: a checked metric or the state became NaN/Inf.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from dgm_jax.train import init_train_state, make_step
        >>> def loss_fn(params, key, batch):
        ...     return jnp.mean((batch - params["mu"]) ** 2), {}
        >>> opt = optax.sgd(0.5)
        >>> result = fit(make_step(loss_fn, opt), init_train_state({"mu": jnp.zeros(())}, opt),
        ...              jax.random.key(0), lambda s: jnp.full(4, 3.0), 20, progress=False)
        >>> round(float(result.state.params["mu"]), 4), result.history[-1]["step"]
        (3.0, 20)
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    if not callable(batch_fn):
        raise TypeError(f"batch_fn must be callable, got {type(batch_fn).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable or None, got {type(eval_fn).__name__}")
    check_key("key", key)
    check_int("num_steps", num_steps, minimum=0)
    num_steps = int(num_steps)
    eval_every = _check_every("eval_every", eval_every)
    log_every = _check_every("log_every", log_every)
    checkpoint_every = _check_every("checkpoint_every", checkpoint_every)
    if eval_every > 0 and eval_fn is None:
        raise ValueError(f"eval_every={eval_every} needs an eval_fn, got eval_fn=None")
    if checkpoint_every > 0 and run_dir is None:
        raise ValueError(f"checkpoint_every={checkpoint_every} needs a run_dir, got run_dir=None")
    if run_dir is not None and not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be a str, os.PathLike or None, got {type(run_dir).__name__}")
    for name, flag in (("resume", resume), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"desc must be a str or None, got {type(desc).__name__}")
    if finite_metrics is not None:
        if isinstance(finite_metrics, str) or not all(isinstance(m, str) for m in finite_metrics):
            raise TypeError(
                f"finite_metrics must be a sequence of str or None, got {finite_metrics!r}"
            )
        finite_metrics = tuple(finite_metrics)
    if not hasattr(state, "step"):
        raise TypeError(
            f"state must have a 'step' field (like TrainState), got {type(state).__name__}"
        )

    manager = writer = None
    history: list[dict[str, Any]] = []
    try:
        if run_dir is not None:
            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            manager = ckpt.checkpoint_manager(run_dir / "checkpoints", max_to_keep=max_to_keep)
            latest = manager.latest_step()
            if latest is not None:
                if not resume:
                    raise ValueError(
                        f"run_dir {str(run_dir)!r} already holds checkpoints (latest step "
                        f"{latest}); pass resume=True to continue it or use a new run_dir"
                    )
                if latest > num_steps:
                    raise ValueError(
                        f"the checkpoint in {str(run_dir)!r} is at step {latest}, past "
                        f"num_steps={num_steps}"
                    )
                state = ckpt._restore(manager, latest, state)
        start = int(state.step)  # one host sync, before the loop
        if start > num_steps:
            raise ValueError(f"state.step={start} is past num_steps={num_steps}")
        if run_dir is not None:
            # Records after the restored step belong to the interrupted run: drop them so
            # the log equals that of an uninterrupted run.
            history = truncate_jsonl(run_dir / "metrics.jsonl", start)
            writer = JsonlWriter(run_dir / "metrics.jsonl")
        state = _run(
            step_fn, state, key, batch_fn, start, num_steps, manager, writer, history,
            eval_fn=eval_fn, eval_every=eval_every, log_every=log_every,
            checkpoint_every=checkpoint_every, progress=progress, desc=desc,
            finite_metrics=finite_metrics,
        )  # fmt: skip
    finally:
        if writer is not None:
            writer.close()
        if manager is not None:
            manager.close()
    return FitResult(state=state, history=history)


def _run(
    step_fn, state, key, batch_fn, start, num_steps, manager, writer, history, *,
    eval_fn, eval_every, log_every, checkpoint_every, progress, desc, finite_metrics,
):  # fmt: skip
    first_bad = None
    checked = []  # names of the metrics watched for NaN/Inf
    last_saved = None if manager is None else manager.latest_step()

    def stop(step: int, what: str) -> None:
        where = (
            f"the last good checkpoint is step {last_saved} in {str(manager.directory)!r}"
            if last_saved is not None
            else "no checkpoint was written"
        )
        raise NonFiniteError(
            f"non-finite {what} at step {step} (the update that used batch_fn({step - 1})); "
            f"training stopped and {where}",
            step=step,
            metric=what,
            last_checkpoint=last_saved,
        )

    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for s in range(start, num_steps):
            state, metrics = step_fn(state, jax.random.fold_in(key, s), batch_fn(s))
            done = s + 1
            if first_bad is None:
                if not isinstance(metrics, dict):
                    raise TypeError(
                        f"step_fn must return (state, metrics_dict), got metrics of type "
                        f"{type(metrics).__name__}"
                    )
                if finite_metrics is None:
                    checked = sorted(k for k, v in metrics.items() if _is_float_scalar(v))
                else:
                    missing = sorted(set(finite_metrics) - set(metrics))
                    if missing:
                        raise ValueError(
                            f"finite_metrics names {missing}, which step_fn does not return; "
                            f"its metrics are {sorted(metrics)}"
                        )
                    checked = list(finite_metrics)
                first_bad = {k: np.int32(-1) for k in checked}
            if checked:
                first_bad = _track(first_bad, {k: metrics[k] for k in checked}, done)
            bar.update(1)

            is_log = _due(done, log_every, num_steps)
            is_eval = eval_fn is not None and _due(done, eval_every, num_steps)
            is_ckpt = manager is not None and _due(done, checkpoint_every, num_steps)
            if not (is_log or is_eval or is_ckpt):
                continue
            bad = {k: int(v) for k, v in jax.device_get(first_bad).items() if int(v) >= 0}
            if bad:
                step = min(bad.values())
                stop(step, ", ".join(repr(k) for k in sorted(bad) if bad[k] == step))

            record: dict[str, Any] = {"step": done}
            if is_log:
                record.update(jax.device_get(metrics))
            if is_eval:
                results = eval_fn(state, done)
                if not isinstance(results, dict):
                    raise TypeError(
                        f"eval_fn must return a dict of metrics, got {type(results).__name__}"
                    )
                record.update({f"eval/{k}": v for k, v in jax.device_get(results).items()})
            if is_log or is_eval:
                record = to_jsonable(record)
                history.append(record)
                if writer is not None:
                    writer.write(record)
            if is_log and progress:
                shown = {k: record[k] for k in ("loss",) if isinstance(record.get(k), float)}
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

            if is_ckpt:
                paths_leaves = [
                    (path, leaf)
                    for path, leaf in jax.tree_util.tree_leaves_with_path(state)
                    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
                ]
                if paths_leaves:
                    finite = np.asarray(_leaves_finite([leaf for _, leaf in paths_leaves]))
                    if not finite.all():
                        path = paths_leaves[int(np.argmin(finite))][0]
                        stop(done, "value in state" + jax.tree_util.keystr(path))
                ckpt._save(manager, done, state)
                last_saved = done
    finally:
        bar.close()
    return state
