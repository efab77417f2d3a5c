"""The fused many-chain backend: a whole MCMC run inside one Pallas kernel per block of chains.

With ``lax.scan`` over a vmapped kernel, every integration step reads and writes all
chain states in device memory; for low-dimensional targets that traffic, not the
arithmetic, bounds the throughput on a GPU. Here one Pallas program takes a block of
``block_size`` chains, loads their state once into registers, runs every MCMC step
and every integration step of the segment, and writes only the kept draws and the
final state. Positions are laid out ``(d, num_chains)`` so a block's loads and stores
of one coordinate are contiguous (coalesced).

Random numbers (``FusedBackend.rng``):

* ``"counter"`` (default): generated in the kernel by Threefry-2x32
  (:mod:`dgm_jax.mcmc.counter_rng`) with the counter ``(chain, step * calls + call)``,
  Box–Muller for normals. Nothing is stored; same key, same draws; a resumed or
  segmented run gives bitwise the same chains.
* ``"predrawn"``: drawn beforehand with :mod:`jax.random` from the same per-step,
  per-chain keys as the ordinary driver (``fold_in(key, step)``, split per chain, then
  as the kernel's own ``step`` does), in one pass per launch, and read by the kernel.
  The chains then equal those of ``sample(..., backend=None)`` up to float rounding.
  Costs device memory (``noise_bytes`` per launch) and a read of it.

On a CPU the kernels run in Pallas interpret mode (the default there), which is how
the tests check them; it is not a fast path.

Where it pays: low-dimensional targets (up to about 16 dimensions, see
:mod:`dgm_jax.mcmc.fused.lanes`) and many chains (tens of thousands and more), where
the state of all chains does not fit in cache. The log density is unrolled over its
coordinates, so code size grows with the dimension (quadratically for dense
matrix–vector products and dense mass matrices), and register pressure with
``block_size`` times the dimension; beyond a few tens of dimensions, or for log
densities over large data sets, use the ordinary driver.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from dgm_jax.mcmc.counter_rng import normal_pair_from_words, threefry2x32, uniform_from_words
from dgm_jax.mcmc.fused.algorithms import (
    ACCEPTED,
    DIVERGENT,
    FusedAlgorithm,
    LaneInfo,
    LaneState,
    build_algorithm,
    counter_calls,
    noise_slots,
)

__all__ = ["FusedBackend", "build_fused_runner"]

_RNG_MODES = ("counter", "predrawn")


@dataclasses.dataclass(frozen=True)
class FusedBackend:
    """Settings of the fused backend; pass one as ``sample(..., backend=FusedBackend())``.

    Attributes:
        rng: ``"counter"`` (in-kernel Threefry, nothing stored) or ``"predrawn"`` (the
            ordinary driver's random numbers, drawn beforehand; same chains as
            ``backend=None`` up to float rounding).
        block_size: chains per Pallas program, a power of two; ``None`` picks one from
            the number of chains (more programs than a GPU has multiprocessors when
            possible; one big block in interpret mode).
        interpret: run the kernel in Pallas interpret mode; ``None`` interprets when the
            default backend is a CPU.
        num_warps: Triton warps per program (``None``: ``block_size / 32``, at most 4).
        noise_bytes: ``"predrawn"`` only: at most this many bytes of noise per launch
            (longer runs are cut into several launches).
        max_ops: limit on the number of lane operations of the unrolled log density.

    The fused path pays for many chains (tens of thousands and more) of low-dimensional
    targets (up to about 16 dimensions) on a GPU. Beyond a few tens of dimensions, for
    dense mass matrices or log densities over large data, or for a few chains, the
    ordinary driver (``backend=None``) is the better choice.

    Examples:
        >>> FusedBackend(rng="predrawn", block_size=128)
        FusedBackend(rng='predrawn', block_size=128, interpret=None, num_warps=None, ...)
    """

    rng: str = "counter"
    block_size: int | None = None
    interpret: bool | None = None
    num_warps: int | None = None
    noise_bytes: int = 1 << 30
    max_ops: int = 50_000

    def __post_init__(self) -> None:
        if self.rng not in _RNG_MODES:
            raise ValueError(f"rng must be one of {_RNG_MODES}, got {self.rng!r}")
        bs = self.block_size
        if bs is not None and (
            not isinstance(bs, int) or isinstance(bs, bool) or bs < 1 or bs & (bs - 1)
        ):
            raise ValueError(f"block_size must be a power of two >= 1 or None, got {bs!r}")
        if self.interpret is not None and not isinstance(self.interpret, bool):
            raise TypeError(f"interpret must be a bool or None, got {self.interpret!r}")
        nw = self.num_warps
        if nw is not None and (not isinstance(nw, int) or nw < 1 or nw & (nw - 1)):
            raise ValueError(f"num_warps must be a power of two >= 1 or None, got {nw!r}")
        for name in ("noise_bytes", "max_ops"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def __repr__(self) -> str:
        return (
            f"FusedBackend(rng={self.rng!r}, block_size={self.block_size}, "
            f"interpret={self.interpret}, num_warps={self.num_warps}, ...)"
        )


def _next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def _block_size(options: FusedBackend, chains_per_device: int, interpret: bool) -> int:
    if options.block_size is not None:
        return options.block_size
    if interpret:  # the interpreter loops over programs one by one: few, wide blocks
        return min(1024, _next_pow2(chains_per_device))
    # Aim for at least ~2 programs per multiprocessor of a large GPU (132 on an H100).
    return int(min(256, max(32, _next_pow2(math.ceil(chains_per_device / 264)))))


def _use_interpret(options: FusedBackend) -> bool:
    if options.interpret is not None:
        return options.interpret
    return jax.default_backend() == "cpu"


def _compiler_params(options: FusedBackend, block: int, interpret: bool) -> Any:
    if interpret:
        return None
    from jax.experimental.pallas import triton as plt

    warps = options.num_warps or int(min(4, max(1, block // 32)))
    return plt.CompilerParams(num_warps=warps, num_stages=1)


def _counter_noise(alg: FusedAlgorithm, key_words: tuple, chain: Any, step: Any) -> tuple:
    """Normals and uniform of one transition from Threefry counters ``(chain, step)``."""
    calls = counter_calls(alg)
    first = step.astype(jnp.uint32) * jnp.uint32(calls)
    normals = []
    for call in range(math.ceil(alg.num_normals / 2)):
        words = threefry2x32(key_words, chain, first + jnp.uint32(call))
        normals.extend(normal_pair_from_words(words, jnp.float32))
    uniform = None
    if alg.uses_uniform:
        words = threefry2x32(key_words, chain, first + jnp.uint32(calls - 1))
        uniform = uniform_from_words(words, jnp.float32)
    return tuple(normals[: alg.num_normals]), uniform


def _strong(tree: Any, like: Any) -> Any:
    """Cast ``tree``'s leaves to ``like``'s dtypes (loop carries must keep their types)."""
    return jax.tree_util.tree_map(lambda x, y: jnp.asarray(x).astype(y.dtype), tree, like)


def _make_kernel(
    alg: FusedAlgorithm, block: int, num_draws: int, thin: int, write: bool, rng: str
) -> Callable:
    d, grad = alg.num_dims, alg.uses_grad
    slots = noise_slots(alg)

    def kernel(*refs):
        refs = list(refs)
        meta_ref, rng_ref, pos_ref, lp_ref = refs[:4]
        rest = refs[4:]
        grad_ref = rest.pop(0) if grad else None
        out_pos, out_lp = rest[0], rest[1]
        rest = rest[2:]
        out_grad = rest.pop(0) if grad else None
        pid = pl.program_id(0)
        cols = pl.ds(pid * block, block)
        position = tuple(pos_ref[j, cols] for j in range(d))
        gradient = tuple(grad_ref[j, cols] for j in range(d)) if grad else None
        state = LaneState(position, lp_ref[0, cols], gradient)
        zeros = jnp.zeros((block,), jnp.float32)
        info = LaneInfo(zeros, zeros, jnp.zeros((block,), jnp.int32))
        first_step = meta_ref[0]
        if rng == "counter":
            key_words = (rng_ref[0], rng_ref[1])
            lane = jax.lax.broadcasted_iota(jnp.int32, (block,), 0)
            chain = (pid * block + meta_ref[1] + lane).astype(jnp.uint32)

        def noise(t):
            if rng == "counter":
                return _counter_noise(alg, key_words, chain, first_step + t)
            rows = [rng_ref[t, s, cols] for s in range(slots)]
            return tuple(rows[:d]), (rows[d] if alg.uses_uniform else None)

        def one_step(t, carry):
            normals, uniform = noise(t)
            return _strong(alg.step(carry[0], normals, uniform), carry)

        def one_draw(i, carry):
            carry = jax.lax.fori_loop(i * thin, (i + 1) * thin, one_step, carry)
            if write:
                samples_ref, acc_ref, error_ref, flags_ref = rest
                st, inf = carry
                for j in range(d):
                    samples_ref[i, j, cols] = st.position[j]
                acc_ref[i, cols] = inf.acceptance_rate
                error_ref[i, cols] = inf.energy_error
                flags_ref[i, cols] = inf.flags
            return carry

        state, _ = jax.lax.fori_loop(0, num_draws, one_draw, (state, info))
        for j in range(d):
            out_pos[j, cols] = state.position[j]
            if grad:
                out_grad[j, cols] = state.logdensity_grad[j]
        out_lp[0, cols] = state.logdensity

    return kernel


def _launch(
    alg: FusedAlgorithm,
    options: FusedBackend,
    block: int,
    interpret: bool,
    num_draws: int,
    thin: int,
    write: bool,
    meta: Any,
    rng_input: Any,
    pos: Any,
    lp: Any,
    grad: Any,
) -> tuple:
    """One ``pallas_call`` over the (local) chains: ``num_draws * thin`` transitions."""
    d, chains = pos.shape
    if chains % block:
        raise AssertionError("chains must be padded to a multiple of the block size")
    f32 = jnp.float32
    out_shape = [jax.ShapeDtypeStruct((d, chains), f32), jax.ShapeDtypeStruct((1, chains), f32)]
    if alg.uses_grad:
        out_shape.append(jax.ShapeDtypeStruct((d, chains), f32))
    if write:
        out_shape += [
            jax.ShapeDtypeStruct((num_draws, d, chains), f32),
            jax.ShapeDtypeStruct((num_draws, chains), f32),
            jax.ShapeDtypeStruct((num_draws, chains), f32),
            jax.ShapeDtypeStruct((num_draws, chains), jnp.int32),
        ]
    call = pl.pallas_call(
        _make_kernel(alg, block, num_draws, thin, write, options.rng),
        out_shape=out_shape,
        grid=(chains // block,),
        interpret=interpret,
        compiler_params=_compiler_params(options, block, interpret),
        name=f"dgm_jax_fused_{alg.name}",
    )
    inputs = [meta, rng_input, pos, lp] + ([grad] if alg.uses_grad else [])
    return tuple(call(*inputs))


def build_fused_runner(
    kernel: Any,
    num_chains: int,
    thin: int,
    mesh: Mesh | None,
    options: FusedBackend,
) -> tuple[Callable, Callable]:
    """Jitted ``warmup(key, states, first_step, num_steps)`` and ``draws(...)`` of the driver.

    The same contract as the ordinary runner of :mod:`dgm_jax.mcmc.driver`: ``states``
    is the kernel's State with a leading chain axis; ``draws`` returns
    ``(states, positions (C, n, ...), infos (C, n))`` with the kernel's own Info type.
    """
    spec = kernel.fusion
    if spec is None or spec.unsupported is not None:
        build_algorithm(spec, jnp.zeros(1))  # raises the FusionError that says why
    interpret = _use_interpret(options)
    num_devices = 1 if mesh is None else mesh.shape["chains"]
    local = num_chains // num_devices
    block = _block_size(options, local, interpret)
    local_padded = -(-local // block) * block
    padded = local_padded * num_devices

    def to_columns(tree: Any) -> Any:
        """``(C, *event)`` pytree -> ``(d, padded)`` columns (padding repeats chain 0)."""
        flat = jax.vmap(lambda x: ravel_pytree(x)[0])(tree)
        if padded > num_chains:
            flat = jnp.concatenate([flat, jnp.repeat(flat[:1], padded - num_chains, 0)])
        return flat.T

    def pad_chains(x: Any, fill: Any) -> Any:  # (..., C) -> (..., padded)
        width = [(0, 0)] * (x.ndim - 1) + [(0, padded - num_chains)]
        return jnp.pad(x, width, constant_values=fill)

    def predraw(alg, key, first_step, num_steps):
        """``(num_steps, slots, padded)`` noise as the ordinary driver's kernel draws it."""

        def one_step(step):
            keys = jax.random.split(jax.random.fold_in(key, step), num_chains)
            return jax.vmap(alg.draw_noise)(keys)

        normals, uniform = jax.vmap(one_step)(first_step + jnp.arange(num_steps))
        rows = [jnp.swapaxes(normals, 1, 2)]
        if alg.uses_uniform:
            rows.append(uniform[:, None, :])
        noise = pad_chains(jnp.concatenate(rows, axis=1), 0.5)
        return noise

    def run_local(meta, rng_input, pos, lp, grad, *, alg, num_draws, thin, write):
        if mesh is not None:  # global chain index of this device's first column
            offset = jax.lax.axis_index("chains") * local_padded
            meta = meta.at[1].set(offset.astype(jnp.int32))
        return _launch(
            alg, options, block, interpret, num_draws, thin, write, meta, rng_input, pos, lp, grad
        )

    def launch(alg, key, first_step, cols, num_draws, thin, write):
        pos, lp, grad = cols
        meta = jnp.stack([jnp.asarray(first_step, jnp.int32), jnp.int32(0)])
        if options.rng == "counter":
            rng_input = jax.random.bits(key, (2,), jnp.uint32)
        else:
            rng_input = predraw(alg, key, first_step, num_draws * thin)
        fn = functools.partial(run_local, alg=alg, num_draws=num_draws, thin=thin, write=write)
        if mesh is not None:
            col, cube = P(None, "chains"), P(None, None, "chains")
            out_specs = [col, col] + [col] * alg.uses_grad + [cube, col, col, col] * write
            fn = jax.shard_map(
                fn,
                mesh=mesh,
                in_specs=(
                    P(),
                    P() if options.rng == "counter" else cube,
                    col,
                    col,
                    col if alg.uses_grad else P(),
                ),
                out_specs=tuple(out_specs),
                check_vma=False,
            )
        return fn(meta, rng_input, pos, lp, grad)

    def draws_per_launch(alg, num_draws, thin):
        # Element offsets inside a kernel are 32-bit: keep each output (draws, d, chains)
        # and each noise array (steps, slots, chains) below 2**31 elements.
        limit = (2**31 - 1) // (alg.num_dims * padded)
        if options.rng == "predrawn":
            per_step = noise_slots(alg) * padded
            limit = min(limit, options.noise_bytes // (4 * per_step * thin))
            limit = min(limit, (2**31 - 1) // (per_step * thin))
        return int(max(1, min(num_draws, limit)))

    def advance(key, states, first_step, num_draws, thin, write):
        positions = states.position
        example = jax.tree_util.tree_map(lambda x: x[0], positions)
        _, unravel = ravel_pytree(example)
        alg = build_algorithm(spec, example, max_ops=options.max_ops)  # cached
        pos = to_columns(positions)
        lp = to_columns(states.logdensity[:, None])
        grad = to_columns(states.logdensity_grad) if alg.uses_grad else jnp.zeros((1,))
        cols = (pos, lp, grad)
        per_launch = draws_per_launch(alg, num_draws, thin)
        num_full, rest = divmod(num_draws, per_launch)

        def one_launch(cols, start, n):
            out = launch(alg, key, start, cols, n, thin, write)
            state_cols = (out[0], out[1], out[2] if alg.uses_grad else grad)
            return state_cols, out[2 + int(alg.uses_grad) :]  # draws and Info, if written

        outputs = []
        if num_full == 1:
            cols, out = one_launch(cols, first_step, per_launch)
            outputs.append(out)
        elif num_full > 1:  # predrawn: equal launches with bounded noise, in a scan
            starts = first_step + thin * per_launch * jnp.arange(num_full)
            cols, out = jax.lax.scan(lambda c, t: one_launch(c, t, per_launch), cols, starts)
            outputs.append(tuple(o.reshape(-1, *o.shape[2:]) for o in out))
        if rest:
            start = first_step + thin * per_launch * num_full
            cols, out = one_launch(cols, start, rest)
            outputs.append(out)
        pos, lp, grad = cols
        unflatten = jax.vmap(unravel)
        fields = [unflatten(pos[:, :num_chains].T), lp[0, :num_chains]]
        if alg.uses_grad:
            fields.append(unflatten(grad[:, :num_chains].T))
        new_states = spec.state_type(*fields)
        if not write:
            return new_states
        samples, acc, error, flags = (
            jnp.concatenate([o[k] for o in outputs], axis=0)[..., :num_chains] for k in range(4)
        )
        samples = jax.vmap(unflatten)(jnp.transpose(samples, (2, 0, 1)))
        chains_first = lambda x: x.T  # noqa: E731  (draws, chains) -> (chains, draws)
        infos = spec.info_type(
            acceptance_rate=chains_first(acc),
            is_accepted=chains_first((flags & ACCEPTED) != 0),
            is_divergent=chains_first((flags & DIVERGENT) != 0),
            energy_error=chains_first(error),
            num_integration_steps=jnp.full((num_chains, num_draws), alg.num_grad_evals, jnp.int32),
        )
        return new_states, samples, infos

    def warmup(key, states, first_step, num_steps):
        return advance(key, states, first_step, num_steps, 1, write=False)

    def draws(key, states, first_step, num_draws):
        return advance(key, states, first_step, num_draws, thin, write=True)

    return (
        jax.jit(warmup, static_argnames="num_steps"),
        jax.jit(draws, static_argnames="num_draws"),
    )
