"""Run many MCMC chains: ``vmap`` over chains, ``lax.scan`` over steps, resumable.

:func:`sample` is the driver that turns a kernel ``(init, step)`` into draws. It is the
one place in :mod:`dgm_jax.mcmc` that compiles (``jax.jit``), writes files
(checkpoints through :mod:`dgm_jax.train.checkpoint`) and reports progress (a
``tqdm`` bar fed from inside the compiled loop by ``jax.debug.callback``); the kernels
themselves stay pure.

Randomness does not depend on how the run is cut: the key of global step ``t``
(warm-up steps included) is ``jax.random.fold_in(key, t)``, split once per chain.
So a run cut into checkpoint segments, stopped and resumed, or extended to more draws
produces bitwise the same draws as one uninterrupted call.

Examples:
    Tune with window adaptation, then sample 4 chains::

        import jax, jax.numpy as jnp
        from dgm_jax.mcmc import adaptation, driver, hmc, nuts
        logdensity_fn = lambda x: -0.5 * jnp.sum(x**2)
        positions = jnp.zeros((4, 3))
        warmup = adaptation.window_adaptation(nuts, logdensity_fn)
        states, params, _ = warmup.run(jax.random.key(1), positions, 500)
        kernel = nuts(logdensity_fn, **params)
        result = driver.sample(jax.random.key(2), kernel, states.position, 1000)
        result.samples.shape  # (4, 1000, 3)

    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax.mcmc.driver import sample
    >>> from dgm_jax.mcmc.rwm import rwm
    >>> kernel = rwm(lambda x: -0.5 * jnp.sum(x**2), scale=1.0)
    >>> result = sample(jax.random.key(0), kernel, jnp.zeros((4, 2)), 100, num_warmup=50)
    >>> result.samples.shape, result.infos.acceptance_rate.shape
    ((4, 100, 2), (4, 100))
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dgm_jax._validate import check_int, check_key
from dgm_jax.mcmc.fused.algorithms import build_algorithm, counter_calls
from dgm_jax.mcmc.fused.backend import FusedBackend, build_fused_runner
from dgm_jax.mcmc.fused.lanes import FusionError
from dgm_jax.train import checkpoint as ckpt

__all__ = ["CHAIN_AXIS", "SampleResult", "chain_mesh", "sample"]

CHAIN_AXIS = "chains"


class SampleResult(NamedTuple):
    """What :func:`sample` returns."""

    samples: Any  # position pytree, leaves (num_chains, num_samples, *event)
    infos: Any  # Info pytree of the kept steps, leaves (num_chains, num_samples)
    final_state: Any  # State pytree after the last step, leaves (num_chains, ...)


def chain_mesh(devices: Any = None) -> Mesh:
    """A one-axis mesh named ``"chains"`` over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.array(devices, dtype=object), (CHAIN_AXIS,))


def _check_kernel(kernel: Any) -> None:
    if not (callable(getattr(kernel, "init", None)) and callable(getattr(kernel, "step", None))):
        raise TypeError(
            "kernel must be a SamplingAlgorithm with callables init(position) and "
            f"step(key, state), got {type(kernel).__name__}"
        )


def _check_positions(initial_positions: Any) -> int:
    leaves = jax.tree_util.tree_leaves(initial_positions)
    if not leaves:
        raise ValueError("initial_positions must be a non-empty pytree of arrays")
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) < 1:
            raise ValueError(
                "initial_positions must have a leading chain axis (num_chains, *event); "
                f"got a leaf of shape {tuple(shape)}. For one chain use x[None]"
            )
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"initial_positions must have a floating dtype, got {dtype}")
        if not isinstance(leaf, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(leaf))):
            bad = ~np.isfinite(np.asarray(leaf)).reshape(shape[0], -1).all(axis=1)
            raise ValueError(
                "initial_positions contains NaN or infinite values in chains "
                f"{np.flatnonzero(bad).tolist()[:10]}; start every chain from a finite point"
            )
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"all leaves of initial_positions must share the chain axis size, got {sorted(sizes)}"
        )
    num_chains = sizes.pop()
    if num_chains < 1:
        raise ValueError("initial_positions must hold at least one chain")
    return num_chains


def _is_state(tree: Any) -> bool:
    return hasattr(tree, "position") and hasattr(tree, "logdensity")


def _resolve_mesh(mesh: Any, num_chains: int) -> Mesh | None:
    if mesh is None:
        if jax.device_count() == 1:
            return None
        mesh = chain_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    if CHAIN_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh must have an axis named {CHAIN_AXIS!r} (see chain_mesh()), "
            f"got axes {mesh.axis_names}"
        )
    num_devices = mesh.shape[CHAIN_AXIS]
    if num_chains % num_devices:
        raise ValueError(
            f"the number of chains ({num_chains}) must be divisible by the number of devices "
            f"on the mesh axis {CHAIN_AXIS!r} ({num_devices}) to shard chains across them"
        )
    return mesh


class _Progress:
    """A tqdm bar that the compiled loop moves forward from a host callback."""

    def __init__(self, total: int, initial: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc="sampling", unit="step")

    def update(self, step: Any) -> None:
        # Idempotent: with chains sharded over devices the callback may fire per device.
        n = int(np.max(np.asarray(step)))
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()


@functools.lru_cache(maxsize=32)
def _build_runner(
    kernel: Any,
    num_chains: int,
    thin: int,
    sharding: NamedSharding | None,
    progress_fn: Callable[[Any], None] | None,
    progress_every: int,
) -> tuple[Callable, Callable]:
    """Return jitted ``warmup(key, states, first_step, num_steps)`` and ``draws(...)``.

    Cached on the (hashable) arguments, so calling :func:`sample` again with the same
    kernel object and settings reuses the compiled loop instead of compiling again.
    """

    def constrain(tree: Any) -> Any:
        if sharding is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, sharding)

    def one_step(key: Any, states: Any, step: Any) -> tuple[Any, Any]:
        keys = constrain(jax.random.split(jax.random.fold_in(key, step), num_chains))
        states, infos = jax.vmap(kernel.step)(keys, states)
        if progress_fn is not None:
            done = step + 1
            jax.lax.cond(
                done % progress_every == 0,
                lambda: jax.debug.callback(progress_fn, done, ordered=False),
                lambda: None,
            )
        return constrain(states), infos

    def warmup(key: Any, states: Any, first_step: Any, num_steps: int) -> Any:
        def body(s, step):
            return one_step(key, s, step)[0], None

        states, _ = jax.lax.scan(body, states, first_step + jnp.arange(num_steps))
        return states

    def draws(key: Any, states: Any, first_step: Any, num_draws: int) -> tuple[Any, Any, Any]:
        def one_draw(s, start):
            def body(s2, step):
                return one_step(key, s2, step)

            s, infos = jax.lax.scan(body, s, start + jnp.arange(thin))
            last = jax.tree_util.tree_map(lambda x: x[-1], infos)
            return s, (s.position, last)

        starts = first_step + thin * jnp.arange(num_draws)
        states, (positions, infos) = jax.lax.scan(one_draw, states, starts)
        swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731  (draws, chains) -> (chains, draws)
        return states, jax.tree_util.tree_map(swap, positions), jax.tree_util.tree_map(swap, infos)

    return (
        jax.jit(warmup, static_argnames="num_steps"),
        jax.jit(draws, static_argnames="num_draws"),
    )


_cached_fused_runner = functools.lru_cache(maxsize=32)(build_fused_runner)


def _fused_runner(
    kernel: Any,
    positions: Any,
    num_chains: int,
    thin: int,
    total_steps: int,
    mesh: Mesh | None,
    backend: FusedBackend,
    fallback: bool,
) -> tuple[Callable, Callable] | None:
    """The fused runner, or ``None`` (with a warning) when it cannot fuse and ``fallback``."""
    one_chain = lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], jnp.result_type(x))  # noqa: E731
    example = jax.tree_util.tree_map(one_chain, positions)
    try:
        # Build the lane program now (not at the first trace) so errors surface here.
        alg = build_algorithm(kernel.fusion, example, max_ops=backend.max_ops)
    except FusionError as err:
        if not fallback:
            raise
        warnings.warn(
            f"the fused backend cannot run this kernel ({err}); falling back to the "
            "ordinary backend as fallback=True asks",
            stacklevel=3,
        )
        return None
    if backend.rng == "counter" and total_steps * counter_calls(alg) >= 2**32:
        raise ValueError(
            f"{total_steps} steps exceed the counter space of the fused backend's generator "
            f"({math.floor(2**32 / counter_calls(alg))} steps for this kernel); "
            "run fewer steps per call"
        )
    args = (kernel, num_chains, thin, mesh, backend)
    try:
        hash(args)
    except TypeError:
        return build_fused_runner(*args)
    return _cached_fused_runner(*args)


def _meta(num_chains: int, thin: int, num_warmup: int, key: Any) -> np.ndarray:
    data = np.asarray(jax.random.key_data(key) if _is_typed_key(key) else key).reshape(-1)
    return np.concatenate([[num_chains, thin, num_warmup], data.astype(np.int64)]).astype(np.int64)


def _is_typed_key(key: Any) -> bool:
    return jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _save(directory: Any, step: int, tree: Any) -> None:
    """Write one checkpoint (kept as a function so tests can simulate a crash)."""
    ckpt.save_checkpoint(directory, step, tree, max_to_keep=2)


def _concat(parts: list[Any]) -> Any:
    if len(parts) == 1:
        return parts[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)


def sample(
    key: Any,
    kernel: Any,
    initial_positions: Any,
    num_samples: int,
    *,
    num_warmup: int = 0,
    thin: int = 1,
    progress: bool = False,
    progress_every: int | None = None,
    mesh: Mesh | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    backend: FusedBackend | None = None,
    fallback: bool = False,
) -> SampleResult:
    """Run ``num_chains`` chains of ``kernel`` and return the draws.

    The step loop is ``lax.scan`` over ``jax.vmap(kernel.step)`` and is jit-compiled
    here; the compiled loop is cached per kernel object, chain count and segment length,
    so a second call with the same kernel does not compile again (a checkpointed run
    compiles one segment length and possibly a shorter last one). ``num_warmup`` steps
    of the *same* kernel run first and are discarded; tune step size and mass matrix beforehand with
    ``dgm_jax.mcmc.adaptation.window_adaptation`` (see the module example). Then
    ``num_samples * thin`` steps run and every ``thin``-th state is kept.

    When more than one device exists (or ``mesh`` is given) the chain axis of the
    states is placed on ``NamedSharding(mesh, P("chains"))`` and the compiled loop
    keeps it there, so each device runs its share of the chains.

    With ``checkpoint_dir`` the run is cut into segments of ``checkpoint_every``
    draws (one segment if 0); after the warm-up and after each segment the chain
    states and all draws so far are saved. Calling ``sample`` again with the same
    key, chains, ``num_warmup``, ``thin`` and folder resumes from the newest
    checkpoint, and the result equals that of an uninterrupted run bit for bit. A
    larger ``num_samples`` extends a finished run; a smaller one returns its prefix.

    Args:
        key: a JAX PRNG key.
        kernel: a ``SamplingAlgorithm`` (``init(position)``, ``step(key, state)``).
        initial_positions: pytree whose leaves have a leading chain axis
            ``(num_chains, *event)``; finite values. Kernel states with a leading chain
            axis (anything with ``position`` and ``logdensity`` fields, e.g. the states
            returned by window adaptation) are accepted too and used as they are.
        num_samples: draws to keep per chain, ``>= 1``.
        num_warmup: steps to run and discard first, ``>= 0``.
        thin: keep every ``thin``-th step, ``>= 1``.
        progress: show a tqdm progress bar updated from inside the compiled loop.
        progress_every: update the bar every this many steps (default: about 100
            updates per run).
        mesh: a ``jax.sharding.Mesh`` with an axis named ``"chains"``; ``None`` uses
            all local devices when there are several.
        checkpoint_dir: folder for resumable checkpoints, or ``None``.
        checkpoint_every: draws per checkpoint segment (0: one segment).
        backend: ``None`` for the ``lax.scan`` loop above, or a
            :class:`~dgm_jax.mcmc.fused.FusedBackend` to run the whole segment inside
            one Pallas kernel per block of chains (HMC, MALA, ULA and random-walk
            Metropolis with float32 positions; see :mod:`dgm_jax.mcmc.fused`).
            Checkpointing, resuming and sharding over a mesh work the same way; the
            progress bar moves once per segment.
        fallback: with a fused ``backend``, run the ordinary loop (with a warning)
            instead of raising when the kernel or its log density cannot be fused.

    Returns:
        ``SampleResult(samples, infos, final_state)``: ``samples`` has leaves
        ``(num_chains, num_samples, *event)``; ``infos`` holds the Info of each kept
        step with leaves ``(num_chains, num_samples)``; ``final_state`` is the state
        after the last step.

    Raises:
        ValueError: missing chain axis, NaN/infinite start or non-finite initial log
            density, bad counts, chains not divisible by the devices, or a checkpoint
            folder that holds a different run.
        TypeError: a kernel without ``init``/``step``, a non-key ``key``.
        FusionError: (a ``ValueError``) a fused ``backend`` that cannot run this kernel
            or log density, unless ``fallback``.
    """
    check_key("key", key)
    _check_kernel(kernel)
    check_int("num_samples", num_samples, minimum=1)
    check_int("num_warmup", num_warmup, minimum=0)
    check_int("thin", thin, minimum=1)
    check_int("checkpoint_every", checkpoint_every, minimum=0)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    if backend is not None and not isinstance(backend, FusedBackend):
        raise TypeError(
            f"backend must be None or a dgm_jax.mcmc.FusedBackend, got {type(backend).__name__}"
        )
    if not isinstance(fallback, bool):
        raise TypeError(f"fallback must be a bool, got {fallback!r}")
    total_steps = num_warmup + num_samples * thin
    if progress_every is None:
        progress_every = max(1, total_steps // 100)
    check_int("progress_every", progress_every, minimum=1)
    if checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every > 0 needs a checkpoint_dir to write to")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(
            "checkpoint_dir must be a str, os.PathLike or None, "
            f"got {type(checkpoint_dir).__name__}"
        )
    given_states = _is_state(initial_positions)
    positions = initial_positions.position if given_states else initial_positions
    num_chains = _check_positions(positions)
    mesh = _resolve_mesh(mesh, num_chains)
    sharding = None if mesh is None else NamedSharding(mesh, P(CHAIN_AXIS))

    if given_states:
        states = initial_positions
    else:
        states = jax.jit(jax.vmap(kernel.init))(initial_positions)
    logdensity = np.asarray(states.logdensity)
    if not np.all(np.isfinite(logdensity)):
        raise ValueError(
            "the log density is not finite at the initial positions of chains "
            f"{np.flatnonzero(~np.isfinite(logdensity)).tolist()[:10]}; "
            "start every chain where the target has positive density"
        )
    if sharding is not None:
        states = jax.device_put(states, sharding)

    # -- resume ------------------------------------------------------------------
    meta = _meta(num_chains, thin, num_warmup, key)
    step_done = 0
    parts_samples: list[Any] = []
    parts_infos: list[Any] = []
    if checkpoint_dir is not None:
        latest = ckpt.latest_step(checkpoint_dir)
        if latest is not None:
            states, saved_samples, saved_infos, step_done = _restore(
                checkpoint_dir, latest, kernel, states, meta, num_warmup, thin, sharding
            )
            if saved_samples is not None:
                parts_samples.append(saved_samples)
                parts_infos.append(saved_infos)
    draws_done = max(0, (step_done - num_warmup) // thin)
    if draws_done >= num_samples:
        cut = lambda x: x[:, :num_samples]  # noqa: E731
        return SampleResult(
            jax.tree_util.tree_map(cut, _concat(parts_samples)),
            jax.tree_util.tree_map(cut, _concat(parts_infos)),
            states,
        )

    bar = _Progress(total_steps, step_done) if progress else None
    fused = None
    if backend is not None:
        fused = _fused_runner(
            kernel, positions, num_chains, thin, total_steps, mesh, backend, fallback
        )
    if fused is not None:
        run_warmup, run_draws = fused
    else:
        runner_args = (
            kernel,
            num_chains,
            thin,
            sharding,
            bar.update if bar else None,
            progress_every,
        )
        try:
            hash(runner_args)
        except TypeError:  # a kernel holding arrays: build without the cache
            run_warmup, run_draws = _build_runner.__wrapped__(*runner_args)
        else:
            run_warmup, run_draws = _build_runner(*runner_args)

    def save(step: int) -> None:
        if checkpoint_dir is None:
            return
        tree: dict[str, Any] = {"state": states, "meta": meta}
        if parts_samples:
            tree["samples"] = _concat(parts_samples)
            tree["infos"] = _concat(parts_infos)
        _save(checkpoint_dir, step, tree)

    try:
        if step_done < num_warmup:
            states = run_warmup(key, states, step_done, num_steps=num_warmup - step_done)
            step_done = num_warmup
            save(step_done)
            if bar is not None and fused is not None:
                bar.update(step_done)
        segment = checkpoint_every if checkpoint_every else num_samples
        while draws_done < num_samples:
            n = min(segment, num_samples - draws_done)
            states, positions, infos = run_draws(key, states, step_done, num_draws=n)
            parts_samples.append(positions)
            parts_infos.append(infos)
            if len(parts_samples) > 1:  # keep one buffer so each save writes one array
                parts_samples[:] = [_concat(parts_samples)]
                parts_infos[:] = [_concat(parts_infos)]
            draws_done += n
            step_done += n * thin
            save(step_done)
            if bar is not None and fused is not None:
                bar.update(step_done)
    finally:
        if bar is not None:
            bar.close()
    return SampleResult(_concat(parts_samples), _concat(parts_infos), states)


def _restore(
    directory: Any,
    step: int,
    kernel: Any,
    states: Any,
    meta: np.ndarray,
    num_warmup: int,
    thin: int,
    sharding: NamedSharding | None,
) -> tuple[Any, Any, Any, int]:
    """Load the newest checkpoint and check that it belongs to this run."""
    draws = max(0, (step - num_warmup) // thin)
    target: dict[str, Any] = {"state": states, "meta": meta}
    if draws > 0:
        info_shape = jax.eval_shape(
            lambda s: jax.vmap(kernel.step)(jax.random.split(jax.random.key(0), meta[0]), s)[1],
            states,
        )

        def with_draws(x: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct((x.shape[0], draws, *x.shape[1:]), x.dtype)

        target["samples"] = jax.tree_util.tree_map(with_draws, states.position)
        target["infos"] = jax.tree_util.tree_map(with_draws, info_shape)
    try:
        restored = ckpt.restore_checkpoint(directory, target, step)
    except ValueError as err:
        raise ValueError(
            f"checkpoint_dir {str(directory)!r} holds a run that does not match this one "
            f"(different kernel, chains, thin or num_warmup): {err}"
        ) from err
    saved_meta = np.asarray(restored["meta"])
    if saved_meta.shape != meta.shape or not np.array_equal(saved_meta, meta):
        raise ValueError(
            f"checkpoint_dir {str(directory)!r} holds a run with a different key, number of "
            "chains, thin or num_warmup; use a new folder or the same arguments to resume"
        )
    states = restored["state"]
    if sharding is not None:
        states = jax.device_put(states, sharding)
    return states, restored.get("samples"), restored.get("infos"), step
