"""One-chain functions unrolled into elementwise code on lanes of chains.

The fused backend runs a block of ``B`` chains in one Pallas (Triton) program, with every
chain quantity held as a ``(B,)`` vector, one lane per chain. The user's ``logdensity_fn``
is written for one chain, a function of a flat position of shape ``(d,)``. Running it with
``jax.vmap`` over a ``(d, B)`` block does not lower in Pallas Triton: Triton cannot slice or
index 2-D register values ("axis 1 is out of bounds"). This module therefore unrolls the
one-chain function over its event dimensions at trace time. Every array of shape ``S`` in
the one-chain jaxpr becomes a numpy object array of shape ``S`` whose entries are either
lane values (``(B,)`` arrays that depend on the chain) or constants (numpy scalars, folded
at trace time). The kernel then only ever sees elementwise operations on ``(B,)`` vectors,
which Triton lowers.

The unrolling happens once, in :func:`lane_program`, into a straight-line *tape* of lane
operations: constants are folded (with ``jax.ensure_compile_time_eval``, so this also works
inside ``jit`` or a Pallas trace), common subexpressions are shared and operations that no
output needs are dropped. Calling the program replays the tape on ``(B,)`` arrays; only
Python scalars appear beside them, so Pallas kernels never capture array constants.

Supported, on position-dependent (lane) values:

* elementwise arithmetic, comparisons, logic and special functions (the set in
  ``_ELEMENTWISE``; ``select_n``/``jnp.where``, ``clamp``, ``convert_element_type``);
* structure: ``slice``, ``squeeze``, ``reshape``, ``broadcast_in_dim``, ``transpose``,
  ``rev``, ``concatenate``, ``stack``, ``unstack``, ``split``, ``pad``, and ``gather``,
  ``scatter``, ``dynamic_slice``, ``dynamic_update_slice`` with constant indices;
* linear maps: ``dot_general`` (any operands, as explicit sums of products),
  ``scatter-add``, ``conv_general_dilated``, ``reduce_window_sum``, and
  ``custom_linear_solve`` / ``triangular_solve`` (``jnp.linalg.solve``,
  ``solve_triangular``) with a constant matrix;
* reductions ``reduce_{sum,max,min,prod,and,or,xor}`` (pairwise trees) and cumulative
  ``cum{sum,prod,max,min}``;
* calls (``jit``, ``closed_call``, ``core_call``, ``checkpoint``, ``custom_jvp_call``,
  ``custom_vjp_call``, whose primal is used), ``scan`` (unrolled, at most 1,000 steps),
  ``cond`` (one branch for a constant index; every branch and a lane select otherwise) and
  ``while_loop`` whose condition does not depend on the position.

Anything else applied to lane values (factorizations such as ``cholesky`` of a
position-dependent matrix, ``sort``, ``argmax``, random bits, callbacks, data-dependent
indexing, a ``while_loop`` whose trip count depends on the position) raises
:class:`FusionError` naming the primitive and where it was called; the ordinary driver
(``backend=None``) runs such targets. Everything is allowed on constants, which are folded away.

Numerics follow the one-chain jaxpr op by op, in its dtypes; sums (reductions, dot products)
are pairwise trees in another order than XLA's, so results agree to rounding. Linear maps
skip zero coefficients, so a non-finite entry does not spread ``0 · inf = nan`` to outputs
that do not depend on it.

Not every emitted primitive has a Pallas Triton lowering rule: in jax 0.10.2 ``lgamma``,
``digamma``, ``igamma`` and ``round`` have none (``erf_inv`` does), so a log density using
them on lane values unrolls here but fails when the kernel is lowered for the GPU;
interpret mode runs it. ``erf`` and ``erfc`` have none either; on float32 lanes they are
replayed as elementwise formulas (relative error about 1e-7, see ``_FLOAT32_FORMULAS``),
so probit and normal-CDF models (``jax.scipy.stats.norm.logcdf``) fuse.

Cost: every entry of every array becomes its own lane operation, so a program grows with the
dimension ``d`` (and as ``d²`` for dense matrix-vector products, where every coefficient is a
multiply-add, zeros skipped). Past about 16 to 32 dimensions the unrolled code outgrows the
registers and the compile time, and the XLA path (a ``vmap`` over chains) is faster.

Examples:
    >>> import jax.numpy as jnp
    >>> from dgm_jax.mcmc.fused.lanes import lane_value_and_grad
    >>> fn, num_ops = lane_value_and_grad(lambda x: -0.5 * jnp.sum(x**2), 2)
    >>> value, grad = fn([jnp.ones(4), 2.0 * jnp.ones(4)])
    >>> value.tolist(), grad[1].tolist()
    ([-2.5, -2.5, -2.5, -2.5], [-2.0, -2.0, -2.0, -2.0])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import source_info_util  # summarize(eqn.source_info) for error messages
from jax.extend import core as jex_core

from dgm_jax._validate import check_int

__all__ = ["FusionError", "LaneProgram", "lane_program", "lane_value", "lane_value_and_grad"]

MAX_UNROLL = 1_000  # longest scan (or constant-condition while loop) that is unrolled

_TOO_LARGE_HINT = (
    "the fused backend is meant for low-dimensional targets (about <= 16 dimensions); "
    "use backend=None (the ordinary driver)"
)


class FusionError(ValueError):
    """A log density (or a setting) that the fused backend cannot compile."""


class LaneProgram(NamedTuple):
    """A one-chain function unrolled into elementwise code on ``(B,)`` lanes."""

    fn: Callable[[Sequence[jax.Array]], Any]  # num_inputs (B,) arrays -> pytree of object arrays
    num_ops: int  # lane (B,)-vector operations emitted per call (for FLOP estimates)
    out_shapes: Any  # pytree of the one-chain output shapes (tuples)


# --------------------------------------------------------------------------------------
# Values: numpy arrays, typed when constant, object arrays of _Lane / numpy scalars when not
# --------------------------------------------------------------------------------------


class _Lane:
    """A lane value: slot ``index`` of the tape (inputs first), of numpy ``dtype``."""

    __slots__ = ("dtype", "index")

    def __init__(self, index: int, dtype: np.dtype):
        self.index = index
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"_Lane({self.index}, {self.dtype})"


def _is_lane(entry: Any) -> bool:
    return isinstance(entry, _Lane)


def _is_const(value: np.ndarray) -> bool:
    """True for a fully constant value (a typed numpy array)."""
    return value.dtype != object


def _to_obj(value: np.ndarray) -> np.ndarray:
    """The value as an object array whose constant entries are numpy scalars."""
    if value.dtype == object:
        return value
    flat = value.reshape(-1)
    out = np.empty(flat.size, object)
    for i in range(flat.size):
        out[i] = flat[i]  # a numpy scalar of the array's dtype
    return out.reshape(value.shape)


def _normalize(value: np.ndarray, dtype: Any) -> np.ndarray:
    """An object array without lanes becomes a typed array of ``dtype``."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return value  # a constant PRNG key (a jax array)
    value = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if value.dtype != object:
        return np.asarray(value, dtype=dtype)
    flat = value.reshape(-1)
    if any(_is_lane(e) for e in flat):
        return value
    return np.array([np.asarray(e, dtype) for e in flat], dtype=dtype).reshape(value.shape)


def _same_entry(a: Any, b: Any) -> bool:
    """Whether two entries are certainly equal (the same lane or bitwise equal constants)."""
    if _is_lane(a) or _is_lane(b):
        return _is_lane(a) and _is_lane(b) and a.index == b.index
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _is_value(entry: Any, value: float) -> bool:
    """Whether ``entry`` is a constant equal to ``value``."""
    return not _is_lane(entry) and bool(np.asarray(entry) == value)


# --------------------------------------------------------------------------------------
# Primitive tables
# --------------------------------------------------------------------------------------

# fmt: off
_ELEMENTWISE = frozenset([
    "add", "add_any", "sub", "mul", "div", "rem", "neg", "sign", "abs", "max", "min", "pow",
    "integer_pow", "square", "sqrt", "rsqrt", "cbrt", "exp", "exp2", "expm1", "log", "log1p",
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh",
    "acosh", "atanh", "logistic", "erf", "erfc", "erf_inv", "lgamma", "digamma", "igamma",
    "igammac", "polygamma", "zeta", "bessel_i0e", "bessel_i1e", "floor", "ceil", "round",
    "is_finite", "nextafter", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor",
    "shift_left", "shift_right_arithmetic", "shift_right_logical", "population_count", "clz",
    "select_n", "clamp", "convert_element_type", "bitcast_convert_type", "reduce_precision",
])
_IDENTITY = frozenset([
    "copy", "copy_p", "stop_gradient", "optimization_barrier", "sharding_constraint", "pvary",
])
_CALLS = frozenset([
    "jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint",
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
])
# fmt: on
# Selections with constant indices: which operands carry data (the others must be constant).
_SELECTIONS = {
    "pad": (0, 1),
    "gather": (0,),
    "dynamic_slice": (0,),
    "dynamic_update_slice": (0, 1),
    "scatter": (0, 2),
}
# Maps linear in the listed operands jointly (the others must be constant); "bilinear" ones
# are linear in each of them separately, so at most one may depend on the position.
_LINEAR = {
    "scatter-add": (0, 2),
    "scatter_add": (0, 2),
    "reduce_window_sum": (0,),
    "triangular_solve": (1,),  # with a constant triangular matrix
}
_BILINEAR = {"conv_general_dilated": (0, 1)}
# Reductions and cumulative ops by their binary operation.
_REDUCTIONS = {
    "reduce_sum": "add",
    "reduce_max": "max",
    "reduce_min": "min",
    "reduce_prod": "mul",
    "reduce_and": "and",
    "reduce_or": "or",
    "reduce_xor": "xor",
}
_CUMULATIVE = {"cumsum": "add", "cumprod": "mul", "cummax": "max", "cummin": "min"}
_BINARY_PRIMS = {
    "add": lax.add_p,
    "sub": lax.sub_p,
    "mul": lax.mul_p,
    "max": lax.max_p,
    "min": lax.min_p,
    "and": lax.and_p,
    "or": lax.or_p,
    "xor": lax.xor_p,
    "ne": lax.ne_p,
    "le": lax.le_p,
}
# Exact numpy twins used to fold constants without an XLA compile per op.
_NUMPY_FOLD = {
    "add": np.add,
    "add_any": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "neg": np.negative,
    "max": np.maximum,
    "min": np.minimum,
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
    "not": np.invert,
}


def _fold(prim: Any, params: dict, args: Sequence[np.ndarray], out_dtypes: Sequence[Any]):
    """Evaluate ``prim`` on constant arrays at trace time; returns a list of numpy arrays."""
    name = prim.name
    if name in _NUMPY_FOLD and len({a.dtype for a in args}) == 1:
        with np.errstate(all="ignore"):
            return [np.asarray(_NUMPY_FOLD[name](*args), out_dtypes[0])]
    if name == "select_n" and np.asarray(args[0]).dtype == np.bool_ and len(args) == 3:
        return [np.asarray(np.where(args[0], args[2], args[1]), out_dtypes[0])]
    bind_params = prim.get_bind_params(params)
    with jax.ensure_compile_time_eval():
        out = prim.bind(*[jnp.asarray(a) for a in args], **bind_params)
    outs = out if prim.multiple_results else [out]
    return [_as_const(o, d) for o, d in zip(outs, out_dtypes, strict=True)]


def _as_const(value: Any, dtype: Any) -> Any:
    """A constant as a numpy array, or as a jax array for extended dtypes such as PRNG keys."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return value
    return np.asarray(value, dtype)


# --------------------------------------------------------------------------------------
# The unroller: interprets a jaxpr on object arrays and records lane operations
# --------------------------------------------------------------------------------------


class _Unroller:
    """Walks jaxprs on object arrays, folding constants and recording a tape of lane ops."""

    def __init__(self, num_inputs: int, dtype: Any, fn_name: str, op_limit: int):
        self.num_inputs = num_inputs
        self.fn_name = fn_name
        self.op_limit = op_limit
        self.inputs = [_Lane(j, dtype) for j in range(num_inputs)]
        self.ops: list[tuple] = []  # (primitive, args, params, out dtype); args: _Lane | scalar
        self.cse: dict = {}
        self.call_sites: list[str] = []  # user locations of the enclosing calls

    def where(self, eqn: Any) -> str:
        """The user's source location of ``eqn``, else of the innermost call that has one."""
        here = source_info_util.summarize(eqn.source_info)
        return here or next((s for s in reversed(self.call_sites) if s), "unknown location")

    # ---- errors ----------------------------------------------------------------------

    def unsupported(self, eqn: Any, why: str = "") -> FusionError:
        why = why or "is not supported by the fused backend on position-dependent values"
        return FusionError(
            f"{self.fn_name} cannot be fused: primitive '{eqn.primitive.name}' "
            f"(at {self.where(eqn)}) {why}; use backend=None (the ordinary driver) for this target"
        )

    def require_const(
        self,
        eqn: Any,
        invals: Sequence[np.ndarray],
        skip: Sequence[int],
        why: str = "(data-dependent indexing or shapes cannot be unrolled)",
    ) -> None:
        for k, v in enumerate(invals):
            if k not in skip and not _is_const(v):
                raise self.unsupported(eqn, f"has operand {k} depending on the position {why}")

    # ---- emitting lane operations ------------------------------------------------------

    def emit(self, prim: Any, args: Sequence[Any], params: dict, dtype: Any) -> _Lane:
        """Record ``prim.bind(*args, **params)`` on lanes; constants are broadcast at replay."""
        args = tuple(a if _is_lane(a) else np.asarray(a)[()] for a in args)
        try:
            key = (
                prim,
                tuple(
                    a.index if _is_lane(a) else (a.dtype.str, np.asarray(a).tobytes()) for a in args
                ),
                tuple(sorted(params.items())),
            )
            hash(key)
        except TypeError:
            key = None
        if key is not None and key in self.cse:
            return self.cse[key]
        if len(self.ops) >= self.op_limit:
            raise FusionError(
                f"{self.fn_name} is too large to fuse: after unrolling over its "
                f"{self.num_inputs} dimensions it needs more than {self.op_limit} lane "
                f"operations; {_TOO_LARGE_HINT}"
            )
        lane = _Lane(self.num_inputs + len(self.ops), dtype)
        self.ops.append((prim, args, dict(params), np.dtype(dtype)))
        if key is not None:
            self.cse[key] = lane
        return lane

    def apply(self, prim: Any, entries: Sequence[Any], params: dict, dtype: Any) -> Any:
        """One elementwise op on entries (at least one a lane), with exact simplifications."""
        name = prim.name
        dtype = np.dtype(dtype)
        if name == "select_n":
            return self.select(entries[0], entries[1:], dtype)
        if name in ("convert_element_type", "reduce_precision") and _is_lane(entries[0]):
            x = entries[0]
            if name == "convert_element_type" and x.dtype == dtype:
                return x
            if name == "reduce_precision" and jnp.issubdtype(dtype, jnp.floating):
                info = jnp.finfo(dtype)
                if (params["exponent_bits"], params["mantissa_bits"]) == (info.nexp, info.nmant):
                    return x
        if name in ("add", "add_any", "sub", "mul", "div", "max", "min", "and", "or"):
            name = "add" if name == "add_any" else name
            return self.binary(name, entries[0], entries[1], dtype, params)
        return self.emit(prim, entries, params, dtype)

    def binary(self, name: str, a: Any, b: Any, dtype: Any, params: dict | None = None) -> Any:
        """``a <name> b`` with constant folding and the exact identities ``x+0``, ``x*1``, ..."""
        dtype = np.dtype(dtype)
        if not _is_lane(a) and not _is_lane(b):
            prim = lax.div_p if name == "div" else _BINARY_PRIMS[name]
            args = [np.asarray(a, dtype), np.asarray(b, dtype)]
            return _fold(prim, params or {}, args, [dtype])[0][()]
        floating = jnp.issubdtype(dtype, jnp.inexact)
        if name == "add":
            if _is_value(b, 0):
                return a
            if _is_value(a, 0):
                return b
        elif name == "sub":
            if _is_value(b, 0):
                return a
            if _is_value(a, 0) and floating:
                return self.emit(lax.neg_p, [b], {}, dtype)
        elif name == "mul":
            if _is_value(b, 1):
                return a
            if _is_value(a, 1):
                return b
            if _is_value(b, -1) and floating:
                return self.emit(lax.neg_p, [a], {}, dtype)
            if _is_value(a, -1) and floating:
                return self.emit(lax.neg_p, [b], {}, dtype)
        elif name == "div":
            if _is_value(b, 1):
                return a
        elif name in ("max", "min") and floating:
            identity = -np.inf if name == "max" else np.inf
            if _is_value(b, identity):
                return a
            if _is_value(a, identity):
                return b
        elif name in ("and", "or") and dtype == np.bool_:
            identity = name == "and"
            if _is_value(b, identity):
                return a
            if _is_value(a, identity):
                return b
        prim = lax.div_p if name == "div" else _BINARY_PRIMS[name]
        return self.emit(prim, [a, b], params or {}, dtype)

    def select(self, pred: Any, cases: Sequence[Any], dtype: Any) -> Any:
        """``cases[pred]`` entrywise; the predicate is a bool or an integer in range."""
        if not _is_lane(pred):
            return cases[int(np.clip(int(np.asarray(pred)), 0, len(cases) - 1))]
        if all(_same_entry(c, cases[0]) for c in cases[1:]):
            return cases[0]
        if pred.dtype == np.bool_:
            return self.emit(lax.select_n_p, [pred, cases[0], cases[1]], {}, dtype)
        # An integer predicate: Triton selects on booleans only, so chain ``pred <= k`` tests.
        pred = self.unconvert_bool(pred)
        if pred.dtype == np.bool_:
            return self.select(pred, cases[:2], dtype)
        result = cases[-1]
        for k in range(len(cases) - 2, -1, -1):
            if _same_entry(result, cases[k]):
                continue
            at_most_k = self.emit(lax.le_p, [pred, np.asarray(k, pred.dtype)], {}, np.bool_)
            result = self.emit(lax.select_n_p, [at_most_k, result, cases[k]], {}, dtype)
        return result

    def unconvert_bool(self, lane: _Lane) -> _Lane:
        """The boolean behind ``convert_element_type(bool)`` if that made ``lane``."""
        if lane.index >= self.num_inputs:
            prim, args, _, _ = self.ops[lane.index - self.num_inputs]
            source = args[0]
            if prim is lax.convert_element_type_p and _is_lane(source):
                return source if source.dtype == np.bool_ else lane
        return lane

    def tree(self, name: str, entries: Sequence[Any], dtype: Any) -> Any:
        """Pairwise reduction of entries with a binary op, constants folded first."""
        dtype = np.dtype(dtype)
        lanes = [e for e in entries if _is_lane(e)]
        consts = [e for e in entries if not _is_lane(e)]
        if consts:
            acc = consts[0]
            for c in consts[1:]:
                acc = self.binary(name, acc, c, dtype)
            lanes.append(acc)
        while len(lanes) > 1:
            pairs = [
                self.binary(name, lanes[i], lanes[i + 1], dtype)
                for i in range(0, len(lanes) - 1, 2)
            ]
            lanes = pairs + ([lanes[-1]] if len(lanes) % 2 else [])
        return lanes[0]

    def sum_of_products(self, pairs: Sequence[tuple[Any, Any]], dtype: Any) -> Any:
        """``Σ a·b`` over pairs, constants folded, zero coefficients skipped."""
        dtype = np.dtype(dtype)
        const = np.zeros((), dtype)[()]
        terms = []
        for a, b in pairs:
            if not _is_lane(a) and not _is_lane(b):
                const = self.binary("add", const, self.binary("mul", a, b, dtype), dtype)
            elif _is_value(a, 0) or _is_value(b, 0):
                continue
            else:
                terms.append(self.binary("mul", a, b, dtype))
        if not terms:
            return const
        return self.tree("add", [*terms, const], dtype)

    def convert(self, entry: Any, dtype: Any) -> Any:
        dtype = np.dtype(dtype)
        if not _is_lane(entry):
            return np.asarray(entry).astype(dtype)[()]
        if entry.dtype == dtype:
            return entry
        params = {"new_dtype": dtype, "weak_type": False, "sharding": None}
        return self.emit(lax.convert_element_type_p, [entry], params, dtype)

    # ---- jaxpr evaluation -----------------------------------------------------------

    def const_array(self, c: Any) -> np.ndarray:
        if isinstance(c, jax.core.Tracer):
            raise FusionError(
                f"{self.fn_name} cannot be fused: it closes over a traced value of shape "
                f"{c.shape}; close over concrete arrays (not jit arguments) or use "
                "backend=None (the ordinary driver)"
            )
        try:
            return _as_const(c, c.dtype) if hasattr(c, "dtype") else np.asarray(c)
        except TypeError as err:
            raise FusionError(
                f"{self.fn_name} cannot be fused: it closes over a {type(c).__name__}, which "
                "is not a numeric array; use backend=None (the ordinary driver)"
            ) from err

    def eval_jaxpr(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[np.ndarray]):
        """Evaluate an open jaxpr on values; returns the list of output values."""
        env: dict = {}

        def read(atom: Any) -> np.ndarray:
            if isinstance(atom, jex_core.Literal):
                return np.asarray(atom.val, dtype=atom.aval.dtype)
            return env[atom]

        def write(var: Any, value: np.ndarray) -> None:
            if not isinstance(var, jex_core.DropVar):
                env[var] = _normalize(value, var.aval.dtype)

        for var, c in zip(jaxpr.constvars, consts, strict=True):
            write(var, self.const_array(c))
        for var, a in zip(jaxpr.invars, args, strict=True):
            write(var, a)
        for eqn in jaxpr.eqns:
            outs = self.eval_eqn(eqn, [read(a) for a in eqn.invars])
            for var, out in zip(eqn.outvars, outs, strict=True):
                write(var, out)
        return [read(a) for a in jaxpr.outvars]

    def eval_closed(self, closed: Any, args: Sequence[np.ndarray]) -> list:
        if isinstance(closed, jex_core.ClosedJaxpr):
            return self.eval_jaxpr(closed.jaxpr, closed.consts, args)
        return self.eval_jaxpr(closed, [], args)

    def eval_eqn(self, eqn: Any, invals: list[np.ndarray]) -> list:
        name = eqn.primitive.name
        out_dtypes = [v.aval.dtype for v in eqn.outvars]
        if all(_is_const(v) for v in invals) and not eqn.effects:
            return _fold(eqn.primitive, eqn.params, invals, out_dtypes)
        if eqn.effects:
            raise self.unsupported(eqn, "has side effects")
        if name in _ELEMENTWISE:
            return [self.elementwise(eqn, invals)]
        if name in _IDENTITY:
            return list(invals)
        handler = getattr(self, "do_" + name.replace("-", "_"), None)
        if name in _CALLS or name in ("cond", "scan", "while"):
            self.call_sites.append(source_info_util.summarize(eqn.source_info))
            try:
                return (handler or self.do_call)(eqn, invals)
            finally:
                self.call_sites.pop()
        if handler is not None:
            return handler(eqn, invals)
        if name in _SELECTIONS:
            return self.selection(eqn, invals, _SELECTIONS[name])
        if name in _LINEAR:
            return self.linear(eqn, invals, _LINEAR[name], bilinear=False)
        if name in _BILINEAR:
            return self.linear(eqn, invals, _BILINEAR[name], bilinear=True)
        if name in _REDUCTIONS:
            return self.reduction(eqn, invals, _REDUCTIONS[name])
        if name in _CUMULATIVE:
            return self.cumulative(eqn, invals, _CUMULATIVE[name])
        raise self.unsupported(eqn)

    # ---- elementwise ----------------------------------------------------------------

    def elementwise(self, eqn: Any, invals: list[np.ndarray]) -> np.ndarray:
        prim, params = eqn.primitive, eqn.params
        out_dtype = np.dtype(eqn.outvars[0].aval.dtype)
        in_dtypes = [np.dtype(atom.aval.dtype) for atom in eqn.invars]
        objs = np.broadcast_arrays(*[_to_obj(v) for v in invals])
        shape = objs[0].shape
        if shape != eqn.outvars[0].aval.shape:  # e.g. a bitcast between widths
            raise self.unsupported(eqn, "changes the shape of position-dependent values")
        flats = [o.reshape(-1) for o in objs]
        out = np.empty(int(np.prod(shape, dtype=int)), object)
        folded = []
        for i in range(out.size):
            entries = [f[i] for f in flats]
            if any(_is_lane(e) for e in entries):
                out[i] = self.apply(prim, entries, params, out_dtype)
            else:
                folded.append(i)
        if folded:  # all-constant entries of a partly-constant op: one fold for all of them
            cols = [
                np.array([np.asarray(f[i], d) for i in folded], d)
                for f, d in zip(flats, in_dtypes, strict=True)
            ]
            values = _fold(prim, params, cols, [out_dtype])[0]
            for j, i in enumerate(folded):
                out[i] = values[j]
        return out.reshape(shape)

    # ---- structure ------------------------------------------------------------------

    def do_slice(self, eqn: Any, invals: list[np.ndarray]) -> list:
        p = eqn.params
        strides = p["strides"] or (1,) * len(p["start_indices"])
        index = tuple(
            slice(s, e, st)
            for s, e, st in zip(p["start_indices"], p["limit_indices"], strides, strict=True)
        )
        return [invals[0][index]]

    def do_squeeze(self, eqn: Any, invals: list[np.ndarray]) -> list:
        return [invals[0].reshape(eqn.outvars[0].aval.shape)]

    def do_reshape(self, eqn: Any, invals: list[np.ndarray]) -> list:
        self.require_const(eqn, invals, skip=(0,))
        x = invals[0]
        if eqn.params.get("dimensions") is not None:
            x = np.transpose(x, eqn.params["dimensions"])
        return [x.reshape(eqn.outvars[0].aval.shape)]

    def do_broadcast_in_dim(self, eqn: Any, invals: list[np.ndarray]) -> list:
        self.require_const(eqn, invals, skip=(0,))
        shape = eqn.params["shape"]
        dims = list(eqn.params["broadcast_dimensions"])
        x = invals[0]
        expanded = x.reshape(
            [x.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))]
        )
        return [np.broadcast_to(expanded, shape).copy()]

    def do_transpose(self, eqn: Any, invals: list[np.ndarray]) -> list:
        return [np.transpose(invals[0], eqn.params["permutation"])]

    def do_rev(self, eqn: Any, invals: list[np.ndarray]) -> list:
        return [np.flip(invals[0], axis=tuple(eqn.params["dimensions"]))]

    def do_concatenate(self, eqn: Any, invals: list[np.ndarray]) -> list:
        return [np.concatenate([_to_obj(v) for v in invals], axis=eqn.params["dimension"])]

    def do_stack(self, eqn: Any, invals: list[np.ndarray]) -> list:
        return [np.stack([_to_obj(v) for v in invals], axis=eqn.params["axis"])]

    def do_unstack(self, eqn: Any, invals: list[np.ndarray]) -> list:
        x = np.moveaxis(invals[0], eqn.params["axis"], 0)
        return [x[i, ...] for i in range(x.shape[0])]

    def do_split(self, eqn: Any, invals: list[np.ndarray]) -> list:
        bounds = np.cumsum(eqn.params["sizes"])[:-1]
        return list(np.split(invals[0], bounds, axis=eqn.params["axis"]))

    def selection(self, eqn: Any, invals: list[np.ndarray], data: Sequence[int]) -> list:
        """A primitive that only moves entries: run it on integer ids of the data operands."""
        self.require_const(eqn, invals, skip=data)
        pool: list = []
        id_args = []
        for k, v in enumerate(invals):
            if k in data:
                ids = np.arange(len(pool), len(pool) + v.size, dtype=np.int32)
                id_args.append(ids.reshape(v.shape))
                pool.extend(_to_obj(v).reshape(-1))
            else:
                id_args.append(v)
        out_dtypes = [np.int32] * len(eqn.outvars)
        id_outs = _fold(eqn.primitive, eqn.params, id_args, out_dtypes)
        results = []
        for m, (ids, var) in enumerate(zip(id_outs, eqn.outvars, strict=True)):
            flat = ids.reshape(-1)
            out = np.empty(flat.size, object)
            bad = (flat < 0) | (flat >= len(pool))
            for i, j in enumerate(flat):
                if not bad[i]:
                    out[i] = pool[j]
            if bad.any():  # fill values (out-of-bounds gathers): evaluate with lanes zeroed
                zeroed = [
                    np.asarray(_normalize(_zero_lanes(v), a.aval.dtype))
                    for v, a in zip(invals, eqn.invars, strict=True)
                ]
                real = _fold(eqn.primitive, eqn.params, zeroed, [v.aval.dtype for v in eqn.outvars])
                real_flat = real[m].reshape(-1)
                for i in np.flatnonzero(bad):
                    out[i] = real_flat[i]
            results.append(out.reshape(var.aval.shape))
        return results

    # ---- linear maps ----------------------------------------------------------------

    def linear(self, eqn: Any, invals: list[np.ndarray], lin: Sequence[int], bilinear: bool):
        """A map linear in operands ``lin``: its Jacobian gives every output entry."""
        self.require_const(eqn, invals, skip=lin, why="must be constant for this linear map")
        lanes = [k for k in lin if not _is_const(invals[k])]
        if bilinear and len(lanes) > 1:
            raise self.unsupported(eqn, "has more than one operand depending on the position")
        base = [
            np.asarray(_normalize(_zero_lanes(v), a.aval.dtype))
            for v, a in zip(invals, eqn.invars, strict=True)
        ]
        out_avals = [v.aval for v in eqn.outvars]
        if not all(jnp.issubdtype(a.dtype, jnp.inexact) for a in out_avals) or not all(
            jnp.issubdtype(base[k].dtype, jnp.inexact) for k in lanes
        ):
            raise self.unsupported(eqn, "is applied to integer lane values")
        prim, params = eqn.primitive, eqn.params

        def f(*xs: Any) -> jax.Array:  # every output, flattened into one vector
            args = [jnp.asarray(b) for b in base]
            for k, x in zip(lanes, xs, strict=True):
                args[k] = x
            out = prim.bind(*args, **prim.get_bind_params(params))
            outs = out if prim.multiple_results else [out]
            return jnp.concatenate([jnp.ravel(o) for o in outs])

        with jax.ensure_compile_time_eval():
            primal = [jnp.asarray(base[k]) for k in lanes]
            offset = np.asarray(f(*primal))
            jacobians = jax.jacobian(f, argnums=tuple(range(len(lanes))))(*primal)
        jacobians = [np.asarray(j).reshape(offset.size, -1) for j in jacobians]
        flats = [_to_obj(invals[k]).reshape(-1) for k in lanes]
        results, start = [], 0
        for aval in out_avals:
            dtype = np.dtype(aval.dtype)
            out = np.empty(math.prod(aval.shape), object)
            for o in range(out.size):
                row = start + o
                pairs = [
                    (jac[row, i].astype(dtype), flat[i])
                    for jac, flat in zip(jacobians, flats, strict=True)
                    for i in np.flatnonzero(jac[row])
                    if _is_lane(flat[i])
                ]
                pairs.append((offset[row].astype(dtype), np.ones((), dtype)[()]))
                out[o] = self.sum_of_products(pairs, dtype)
            results.append(out.reshape(aval.shape))
            start += out.size
        return results

    def do_custom_linear_solve(self, eqn: Any, invals: list[np.ndarray]) -> list:
        # Solving with a constant matrix is linear in the right-hand side (the last operands).
        num_consts = sum(eqn.params["const_lengths"])
        return self.linear(eqn, invals, range(num_consts, len(invals)), bilinear=False)

    def do_dot_general(self, eqn: Any, invals: list[np.ndarray]) -> list:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        dtype = np.dtype(eqn.outvars[0].aval.dtype)
        lhs, rhs = (_to_obj(v) for v in invals)
        lf = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
        rf = [i for i in range(rhs.ndim) if i not in rc and i not in rb]
        lhs = np.transpose(lhs, [*lb, *lf, *lc])
        rhs = np.transpose(rhs, [*rb, *rf, *rc])
        nb = math.prod(lhs.shape[: len(lb)])
        nc = math.prod(lhs.shape[len(lb) + len(lf) :])
        lhs = lhs.reshape(nb, -1, nc)
        rhs = rhs.reshape(nb, -1, nc)
        out = np.empty((nb, lhs.shape[1], rhs.shape[1]), object)
        for b, i, j in np.ndindex(*out.shape):
            pairs = [
                (self.convert(lhs[b, i, c], dtype), self.convert(rhs[b, j, c], dtype))
                for c in range(nc)
            ]
            out[b, i, j] = self.sum_of_products(pairs, dtype)
        return [out.reshape(eqn.outvars[0].aval.shape)]

    # ---- reductions -----------------------------------------------------------------

    def reduction(self, eqn: Any, invals: list[np.ndarray], op: str) -> list:
        axes = tuple(eqn.params["axes"])
        x = _to_obj(invals[0])
        keep = [i for i in range(x.ndim) if i not in axes]
        x = np.transpose(x, [*keep, *axes])
        out_shape = eqn.outvars[0].aval.shape
        rows = x.reshape(math.prod(out_shape), -1)
        dtype = eqn.outvars[0].aval.dtype
        out = np.empty(rows.shape[0], object)
        for i, row in enumerate(rows):
            out[i] = self.tree(op, list(row), dtype)
        return [out.reshape(out_shape)]

    def cumulative(self, eqn: Any, invals: list[np.ndarray], op: str) -> list:
        axis, reverse = eqn.params["axis"], eqn.params["reverse"]
        dtype = eqn.outvars[0].aval.dtype
        x = np.moveaxis(_to_obj(invals[0]), axis, 0)
        rows = x.reshape(x.shape[0], -1)
        out = np.empty(rows.shape, object)
        order = range(len(rows) - 1, -1, -1) if reverse else range(len(rows))
        acc = None
        for t in order:
            if acc is None:
                acc = list(rows[t])
            else:
                acc = [self.binary(op, a, e, dtype) for a, e in zip(acc, rows[t], strict=True)]
            out[t] = acc
        return [np.moveaxis(out.reshape(x.shape), 0, axis)]

    def do_argmax(self, eqn: Any, invals: list[np.ndarray]) -> list:
        raise self.unsupported(eqn, "of position-dependent values is not supported")

    do_argmin = do_argmax

    # ---- calls and control flow -------------------------------------------------------

    def do_call(self, eqn: Any, invals: list[np.ndarray]) -> list:
        for field in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            if field in eqn.params:
                return self.eval_closed(eqn.params[field], invals)
        raise self.unsupported(eqn, "has no jaxpr to inline")

    def do_cond(self, eqn: Any, invals: list[np.ndarray]) -> list:
        index, operands = invals[0], invals[1:]
        branches = eqn.params["branches"]
        if _is_const(index):
            k = int(np.clip(int(index), 0, len(branches) - 1))
            return self.eval_closed(branches[k], operands)
        results = [self.eval_closed(br, operands) for br in branches]
        pred = index[()]
        outs = []
        for m, var in enumerate(eqn.outvars):
            dtype = var.aval.dtype
            cases = [_to_obj(r[m]).reshape(-1) for r in results]
            out = np.empty(cases[0].size, object)
            for i in range(out.size):
                out[i] = self.select(pred, [c[i] for c in cases], dtype)
            outs.append(out.reshape(var.aval.shape))
        return outs

    def do_scan(self, eqn: Any, invals: list[np.ndarray]) -> list:
        p = eqn.params
        length, num_consts, num_carry = p["length"], p["num_consts"], p["num_carry"]
        if length > MAX_UNROLL:
            raise self.unsupported(
                eqn, f"of length {length} is longer than the {MAX_UNROLL} steps that are unrolled"
            )
        consts = invals[:num_consts]
        carry = invals[num_consts : num_consts + num_carry]
        xs = invals[num_consts + num_carry :]
        ys_vars = eqn.outvars[num_carry:]
        ys = [np.empty(v.aval.shape, object) for v in ys_vars]
        for t in range(length - 1, -1, -1) if p["reverse"] else range(length):
            outs = self.eval_closed(p["jaxpr"], [*consts, *carry, *(x[t] for x in xs)])
            carry = outs[:num_carry]
            for y, out in zip(ys, outs[num_carry:], strict=True):
                y[t, ...] = _to_obj(out)
        return [*carry, *ys]

    def do_while(self, eqn: Any, invals: list[np.ndarray]) -> list:
        p = eqn.params
        cond_consts = invals[: p["cond_nconsts"]]
        body_consts = invals[p["cond_nconsts"] : p["cond_nconsts"] + p["body_nconsts"]]
        carry = invals[p["cond_nconsts"] + p["body_nconsts"] :]
        for _ in range(MAX_UNROLL + 1):
            (pred,) = self.eval_closed(p["cond_jaxpr"], [*cond_consts, *carry])
            if not _is_const(pred):
                raise self.unsupported(
                    eqn,
                    "has a loop condition that depends on the position (a while_loop "
                    "with a data-dependent trip count cannot be unrolled)",
                )
            if not bool(pred):
                return carry
            carry = self.eval_closed(p["body_jaxpr"], [*body_consts, *carry])
            carry = [_normalize(c, v.aval.dtype) for c, v in zip(carry, eqn.outvars, strict=True)]
        raise self.unsupported(eqn, f"runs more than {MAX_UNROLL} iterations when unrolled")


def _zero_lanes(value: np.ndarray) -> np.ndarray:
    """The value with lane entries replaced by zeros (constants kept)."""
    if _is_const(value):
        return value
    out = value.copy()
    for i, e in enumerate(out.reshape(-1)):
        if _is_lane(e):
            out.reshape(-1)[i] = np.zeros((), e.dtype)[()]
    return out


# --------------------------------------------------------------------------------------
# Tape clean-up and replay
# --------------------------------------------------------------------------------------


def _live_tape(unroller: _Unroller, out_leaves: Sequence[np.ndarray]):
    """Drop operations that no output needs; returns (ops, outputs) renumbered."""
    n_in = unroller.num_inputs
    live = np.zeros(len(unroller.ops), bool)
    stack = [e.index for leaf in out_leaves for e in leaf.reshape(-1) if _is_lane(e)]
    while stack:
        s = stack.pop() - n_in
        if s < 0 or live[s]:
            continue
        live[s] = True
        stack.extend(a.index for a in unroller.ops[s][1] if _is_lane(a))
    new_index = {j: j for j in range(n_in)}
    ops = []
    for s in np.flatnonzero(live):
        prim, args, params, _ = unroller.ops[s]
        new_index[n_in + int(s)] = n_in + len(ops)
        ops.append((prim, tuple(new_index[a.index] if _is_lane(a) else a for a in args), params))
    outs = []
    for leaf in out_leaves:
        flat = leaf.reshape(-1)
        out = np.empty(flat.size, object)
        for i, e in enumerate(flat):
            out[i] = new_index[e.index] if _is_lane(e) else e
        outs.append(out.reshape(leaf.shape))
    return ops, outs


# erf and erfc have no Pallas Triton lowering (jax 0.10.2): in float32 the tape replays
# them as elementwise formulas. erfc: the Chebyshev fit of Press et al. (Numerical
# Recipes, 2nd ed., §6.2, "erfcc"), fractional error < 1.2e-7 for x >= 0, and
# erfc(-x) = 2 - erfc(x). erf: its Maclaurin series x·(2/√π)·Σ (-x²)^n / (n! (2n+1)) for
# |x| < 1/2 (6 terms: the next is < 3e-8 relative), else sign(x)·(1 - erfc(|x|)).
_ERFC_FIT = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip
_ERF_SERIES = tuple(
    2.0 / math.sqrt(math.pi) * (-1.0) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(6)
)


def _horner(coefficients: Sequence[float], t: jax.Array) -> jax.Array:
    """``c0 + c1 t + c2 t² + ...`` by Horner's rule."""
    acc = jnp.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = acc * t + c
    return acc


def _erfc_nonnegative(z: jax.Array) -> jax.Array:
    t = 1.0 / (1.0 + 0.5 * z)
    return t * jnp.exp(-z * z + _horner(_ERFC_FIT, t))


def _erfc_lanes(x: jax.Array) -> jax.Array:
    r = _erfc_nonnegative(jnp.abs(x))
    return jnp.where(x >= 0, r, 2.0 - r)


def _erf_lanes(x: jax.Array) -> jax.Array:
    z = jnp.abs(x)
    series = x * _horner(_ERF_SERIES, x * x)
    tail = jnp.where(x >= 0, 1.0, -1.0) * (1.0 - _erfc_nonnegative(z))
    return jnp.where(z < 0.5, series, tail)


_FLOAT32_FORMULAS = {"erf": _erf_lanes, "erfc": _erfc_lanes}


def _bind_fn(prim: Any, args: Sequence[Any]) -> Callable:
    """``prim.bind``, or the elementwise formula replacing it on float32 lanes."""
    formula = _FLOAT32_FORMULAS.get(prim.name)
    if formula is not None and all(jnp.result_type(a) == jnp.float32 for a in args):
        return lambda x, **_: formula(x)
    return prim.bind


def _replay(ops: Sequence[tuple], num_inputs: int, dtype: Any, out_leaves, out_dtypes, tree):
    """The function ``xs -> outputs`` that emits the tape on ``(B,)`` arrays."""

    def fn(xs: Sequence[jax.Array]) -> Any:
        xs = list(xs)
        if len(xs) != num_inputs:
            raise ValueError(f"xs must hold {num_inputs} lane arrays, got {len(xs)}")
        shapes = {tuple(jnp.shape(x)) for x in xs}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"xs must be (B,) arrays of one shape, got shapes {sorted(shapes)}")
        (num_lanes,) = next(iter(shapes))
        broadcasts: dict = {}

        def const(c: Any) -> jax.Array:
            key = (c.dtype.str, c.tobytes())
            if key not in broadcasts:  # a Python scalar: a literal, never a captured array
                broadcasts[key] = lax.full((num_lanes,), c.item(), c.dtype)
            return broadcasts[key]

        vals = [x if x.dtype == dtype else x.astype(dtype) for x in map(jnp.asarray, xs)]
        for prim, args, params in ops:
            operands = [vals[a] if isinstance(a, int) else const(a) for a in args]
            vals.append(_bind_fn(prim, operands)(*operands, **params))
        leaves = []
        for leaf, out_dtype in zip(out_leaves, out_dtypes, strict=True):
            flat = leaf.reshape(-1)
            out = np.empty(flat.size, object)
            for i, e in enumerate(flat):
                out[i] = vals[e] if isinstance(e, int) else const(np.asarray(e, out_dtype)[()])
            leaves.append(out.reshape(leaf.shape))
        return jax.tree.unflatten(tree, leaves)

    return fn


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _build(fn: Callable, num_inputs: int, dtype: Any, max_ops: int, fn_name: str) -> LaneProgram:
    if not callable(fn):
        raise TypeError(f"{fn_name} must be callable, got {type(fn).__name__}")
    check_int("num_inputs" if fn_name == "fn" else "num_dims", num_inputs, minimum=1)
    check_int("max_ops", max_ops, minimum=1)
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    spec = jax.ShapeDtypeStruct((num_inputs,), dtype)
    closed, out_struct = jax.make_jaxpr(fn, return_shape=True)(spec)
    out_tree = jax.tree.structure(out_struct)
    unroller = _Unroller(num_inputs, dtype, fn_name, op_limit=4 * max_ops + 1_000)
    x = np.empty(num_inputs, object)
    for j, lane in enumerate(unroller.inputs):
        x[j] = lane
    leaves = unroller.eval_closed(closed, [x])
    out_dtypes = [np.dtype(v.aval.dtype) for v in closed.jaxpr.outvars]
    ops, leaves = _live_tape(unroller, [_to_obj(v) for v in leaves])
    if len(ops) > max_ops:
        raise FusionError(
            f"{fn_name} is too large to fuse: after unrolling over its {num_inputs} dimensions "
            f"it needs {len(ops)} lane operations (max_ops={max_ops}); {_TOO_LARGE_HINT}"
        )
    out_shapes = jax.tree.unflatten(out_tree, [tuple(v.aval.shape) for v in closed.jaxpr.outvars])
    replay = _replay(ops, num_inputs, dtype, leaves, out_dtypes, out_tree)
    return LaneProgram(replay, len(ops), out_shapes)


def lane_program(
    fn: Callable[[jax.Array], Any],
    num_inputs: int,
    dtype: Any = jnp.float32,
    *,
    max_ops: int = 50_000,
) -> LaneProgram:
    """Unroll a function of one ``(num_inputs,)`` array into elementwise code on lanes.

    ``fn`` is traced once, here, on a ``(num_inputs,)`` array of ``dtype``; every entry of
    every intermediate array becomes a lane value or a folded constant (see the module
    docstring for what is supported).

    Args:
        fn: function of one array of shape ``(num_inputs,)`` returning a pytree of arrays.
        num_inputs: length ``d`` of the input, ``>= 1``.
        dtype: floating dtype of the input.
        max_ops: most lane operations the program may emit before :class:`FusionError`.

    Returns:
        A :class:`LaneProgram`. Its ``fn(xs)`` takes ``num_inputs`` arrays of shape ``(B,)``
        (entry ``j`` of the input for ``B`` chains; cast to ``dtype``) and returns the
        outputs as a pytree of numpy object arrays, each of its leaf's one-chain shape,
        whose entries are ``(B,)`` arrays (constants broadcast). ``fn`` emits only
        elementwise ``(B,)`` operations, so it can run inside a Pallas kernel, ``jit`` or
        eagerly. ``num_ops`` counts those operations (constant broadcasts excluded).

    Raises:
        FusionError: an unsupported primitive on position-dependent values (the message
            names it and where it was called), or more than ``max_ops`` operations.

    Examples:
        >>> import jax.numpy as jnp
        >>> prog = lane_program(lambda x: x[::-1] * 2.0, 2)
        >>> out = prog.fn([jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])])
        >>> out.shape, out[0].tolist(), prog.num_ops
        ((2,), [6.0, 8.0], 2)
    """
    return _build(fn, num_inputs, dtype, max_ops, "fn")


def _check_scalar_logdensity(logdensity_fn: Callable, num_dims: int, dtype: Any) -> None:
    if not callable(logdensity_fn):
        raise TypeError(f"logdensity_fn must be callable, got {type(logdensity_fn).__name__}")
    check_int("num_dims", num_dims, minimum=1)
    out = jax.eval_shape(logdensity_fn, jax.ShapeDtypeStruct((num_dims,), dtype))
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(
            f"logdensity_fn must return one scalar array, got {jax.tree.structure(out)}"
        )
    if out.shape != ():
        raise ValueError(
            f"logdensity_fn must return a scalar for one position of shape ({num_dims},), "
            f"got shape {out.shape}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"logdensity_fn must return a floating scalar, got dtype {out.dtype}")


def lane_value_and_grad(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_dims: int,
    dtype: Any = jnp.float32,
    *,
    max_ops: int = 50_000,
) -> tuple[Callable[[Sequence[jax.Array]], tuple[jax.Array, list[jax.Array]]], int]:
    """A log density and its gradient on lanes, unrolled from ``jax.value_and_grad``.

    Args:
        logdensity_fn: one-chain log density, ``(num_dims,) -> scalar``.
        num_dims: length ``d`` of a position, ``>= 1``.
        dtype: floating dtype of positions.
        max_ops: most lane operations before :class:`FusionError`.

    Returns:
        ``(fn, num_ops)``: ``fn(xs)`` maps ``d`` arrays of shape ``(B,)`` to
        ``(value (B,), [grad_j (B,) for j in range(d)])``; ``num_ops`` counts the lane
        operations it emits per call.

    Raises:
        TypeError / ValueError: ``logdensity_fn`` does not return one floating scalar.
        FusionError: see :func:`lane_program`.

    Examples:
        >>> import jax.numpy as jnp
        >>> fn, num_ops = lane_value_and_grad(lambda x: -0.5 * jnp.sum(x**2), 2)
        >>> value, grad = fn([jnp.ones(3), jnp.zeros(3)])
        >>> value.tolist(), grad[0].tolist()
        ([-0.5, -0.5, -0.5], [-1.0, -1.0, -1.0])
    """
    _check_scalar_logdensity(logdensity_fn, num_dims, dtype)
    prog = _build(jax.value_and_grad(logdensity_fn), num_dims, dtype, max_ops, "logdensity_fn")

    def fn(xs: Sequence[jax.Array]) -> tuple[jax.Array, list[jax.Array]]:
        value, grad = prog.fn(xs)
        return value[()], list(grad)

    return fn, prog.num_ops


def lane_value(
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_dims: int,
    dtype: Any = jnp.float32,
    *,
    max_ops: int = 50_000,
) -> tuple[Callable[[Sequence[jax.Array]], jax.Array], int]:
    """A log density on lanes, without its gradient (for random-walk Metropolis).

    Args:
        logdensity_fn: one-chain log density, ``(num_dims,) -> scalar``.
        num_dims: length ``d`` of a position, ``>= 1``.
        dtype: floating dtype of positions.
        max_ops: most lane operations before :class:`FusionError`.

    Returns:
        ``(fn, num_ops)`` with ``fn(xs) -> value (B,)`` for ``d`` arrays ``xs`` of shape
        ``(B,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> fn, num_ops = lane_value(lambda x: -0.5 * jnp.sum(x**2), 2)
        >>> fn([jnp.ones(2), jnp.ones(2)]).tolist(), num_ops
        ([-1.0, -1.0], 4)
    """
    _check_scalar_logdensity(logdensity_fn, num_dims, dtype)
    prog = _build(logdensity_fn, num_dims, dtype, max_ops, "logdensity_fn")

    def fn(xs: Sequence[jax.Array]) -> jax.Array:
        return prog.fn(xs)[()]

    return fn, prog.num_ops
