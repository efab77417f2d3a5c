"""Vector quantisation: nearest-code lookup, straight-through gradients, VQ losses, EMA codebooks.

The pieces of the VQ-VAE bottleneck (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural
Discrete Representation Learning") as small pure functions, plus a Flax module that holds
the codebook as a parameter:

* :func:`nearest_code` / :func:`quantize`: ``k(z) = argmin_k |z - e_k|²`` for encoder
  outputs ``z`` of any leading shape ``(*lead, D)`` against a codebook ``(K, D)``;
* :func:`straight_through`: ``z + sg(z_q - z)``, whose value is ``z_q`` and whose gradient
  is the identity into ``z`` (the paper's straight-through estimator, eq. 3);
* :func:`codebook_loss` ``|sg(z) - e|²`` and :func:`commitment_loss` ``|z - sg(e)|²``; the
  VQ-VAE objective is ``reconstruction + codebook + β · commitment`` (eq. 3, β = 0.25);
* :func:`ema_update`: the codebook as an exponential moving average of the cluster sizes
  ``N_k`` and sums ``m_k`` with Laplace smoothing of the sizes (the paper's appendix A.1;
  Razavi, van den Oord & Vinyals 2019, "VQ-VAE-2"), replacing the codebook loss;
* :func:`restart_dead_codes`: codes unused for ``dead_after`` consecutive updates are
  re-initialised to random encoder outputs of the current batch (as in Dhariwal et al.
  2020, "Jukebox", and Zeghidour et al. 2021);
* :func:`code_counts`, :func:`perplexity`, :func:`code_usage`: how evenly the codes are used.

The EMA statistics live in an explicit :class:`VQState` NamedTuple, never in a hidden Flax
collection: ``codebook, state = ema_update(state, z, indices, decay=0.99)``. Everything is
pure and composes with ``jax.jit``/``jax.vmap``/``jax.grad``; nothing is jit-compiled here.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> z = jnp.array([[[0.1, -0.1], [0.9, 1.2]]])  # (1, 2, 2): any leading shape
    >>> z_q, idx = quantize(codebook, z)
    >>> idx.tolist()
    [[0, 1]]
    >>> state = init_vq_state(codebook)
    >>> codebook, state = ema_update(state, z, idx, decay=0.5)
    >>> float(perplexity(code_counts(idx, 2)))
    2.0
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_key, check_number, check_positive, is_traced
from dgm_jax.types import Array, Float, Int, PRNGKeyArray

__all__ = [
    "VQOutput",
    "VQState",
    "VectorQuantizer",
    "code_counts",
    "code_usage",
    "codebook_loss",
    "commitment_loss",
    "ema_update",
    "init_vq_state",
    "nearest_code",
    "perplexity",
    "quantize",
    "restart_dead_codes",
    "straight_through",
]

_HI = jax.lax.Precision.HIGHEST


class VQState(NamedTuple):
    """Statistics of an EMA codebook; the codebook itself is ``ema_sums / smoothed sizes``."""

    ema_counts: Float[Array, " num_codes"]  # EMA of the cluster sizes N_k
    ema_sums: Float[Array, "num_codes code_dim"]  # EMA of the sums m_k of the assigned z
    steps_unused: Int[Array, " num_codes"]  # consecutive updates in which code k got no z


class VQOutput(NamedTuple):
    """What :class:`VectorQuantizer` returns."""

    quantized: Array  # (*lead, D): z_q with straight-through gradients into z
    indices: Array  # (*lead,) int32: the chosen code of each vector
    loss: Array  # scalar: codebook_loss (if learned by gradient) + beta * commitment_loss
    codebook_loss: Array  # scalar: mean |sg(z) - z_q|²
    commitment_loss: Array  # scalar: mean |z - sg(z_q)|²
    perplexity: Array  # scalar: exp(entropy of the code histogram), 1..K


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_codebook(codebook: Array) -> None:
    if not hasattr(codebook, "shape") or len(codebook.shape) != 2:
        shape = getattr(codebook, "shape", None)
        raise ValueError(f"codebook must have shape (num_codes, code_dim), got {shape}")
    if codebook.shape[0] < 1:
        raise ValueError(f"num_codes (codebook rows) must be >= 1, got {codebook.shape[0]}")
    if not jnp.issubdtype(codebook.dtype, jnp.floating):
        raise TypeError(f"codebook must have a floating dtype, got {codebook.dtype}")


def _check_z(z: Array, code_dim: int, name: str = "z") -> None:
    shape = jnp.shape(z)
    if len(shape) < 1 or shape[-1] != code_dim:
        raise ValueError(
            f"{name} must have shape (..., code_dim) with code_dim={code_dim} (the codebook's "
            f"dimension), got {tuple(shape)}"
        )


def _check_decay(decay) -> None:
    check_number("decay", decay)
    if not is_traced(decay) and not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"decay must lie in [0, 1), got {decay!r}")


# --------------------------------------------------------------------------------------
# Lookup and straight-through
# --------------------------------------------------------------------------------------


def nearest_code(
    codebook: Float[Array, "num_codes code_dim"], z: Float[Array, "*lead code_dim"]
) -> Int[Array, "*lead"]:
    """Index of the nearest code (squared Euclidean distance) for every vector of ``z``.

    Distances are ``|z|² - 2 z·e + |e|²`` with a full-precision matrix product, so the
    result equals a brute-force search except at exact ties (the lowest index wins).

    Args:
        codebook: ``(K, D)`` code vectors.
        z: ``(*lead, D)`` vectors, any number of leading axes (``(B, H, W, D)`` maps).

    Returns:
        int32 indices of shape ``lead``.

    Examples:
        >>> nearest_code(jnp.array([[0.0], [5.0]]), jnp.array([[1.0], [4.0]])).tolist()
        [0, 1]
    """
    _check_codebook(codebook)
    _check_z(z, codebook.shape[1])
    flat = z.reshape(-1, codebook.shape[1])
    distances = (
        jnp.sum(flat * flat, axis=1, keepdims=True)
        - 2.0 * jnp.matmul(flat, codebook.T, precision=_HI)
        + jnp.sum(codebook * codebook, axis=1)[None, :]
    )
    return jnp.argmin(distances, axis=1).astype(jnp.int32).reshape(z.shape[:-1])


def quantize(
    codebook: Float[Array, "num_codes code_dim"], z: Float[Array, "*lead code_dim"]
) -> tuple[Float[Array, "*lead code_dim"], Int[Array, "*lead"]]:
    """Replace every vector of ``z`` by its nearest code: ``(z_q, indices)``.

    No gradient flows through the lookup; combine with :func:`straight_through`.

    Examples:
        >>> z_q, idx = quantize(jnp.array([[0.0], [5.0]]), jnp.array([[1.0], [4.0]]))
        >>> z_q.ravel().tolist(), idx.tolist()
        ([0.0, 5.0], [0, 1])
    """
    indices = nearest_code(codebook, z)
    return jnp.take(codebook, indices, axis=0), indices


def straight_through(z: Array, z_q: Array) -> Array:
    """``z + sg(z_q - z)``: the value of ``z_q``, the gradient of the identity in ``z``.

    Examples:
        >>> g = jax.grad(lambda z: jnp.sum(3.0 * straight_through(z, jnp.round(z))))(
        ...     jnp.array([0.2, 0.7]))
        >>> g.tolist()
        [3.0, 3.0]
    """
    if jnp.shape(z) != jnp.shape(z_q):
        raise ValueError(f"z and z_q must have the same shape, got {jnp.shape(z)} and {z_q.shape}")
    return z + jax.lax.stop_gradient(z_q - z)


def codebook_loss(z: Array, z_q: Array) -> Float[Array, ""]:
    """``mean |sg(z) - z_q|²``: moves the codes towards the encoder outputs (eq. 3, term 2)."""
    return jnp.mean((jax.lax.stop_gradient(z) - z_q) ** 2)


def commitment_loss(z: Array, z_q: Array) -> Float[Array, ""]:
    """``mean |z - sg(z_q)|²``: keeps the encoder outputs near their codes (eq. 3, term 3)."""
    return jnp.mean((z - jax.lax.stop_gradient(z_q)) ** 2)


# --------------------------------------------------------------------------------------
# Usage statistics
# --------------------------------------------------------------------------------------


def code_counts(indices: Int[Array, "*lead"], num_codes: int) -> Float[Array, " num_codes"]:
    """How many vectors chose each code: a float32 histogram of length ``num_codes``.

    Examples:
        >>> code_counts(jnp.array([[0, 2], [2, 2]]), 4).tolist()
        [1.0, 0.0, 3.0, 0.0]
    """
    check_int("num_codes", num_codes, minimum=1)
    flat = jnp.ravel(indices)
    return jnp.zeros(num_codes, jnp.float32).at[flat].add(1.0)


def perplexity(counts: Float[Array, " num_codes"]) -> Float[Array, ""]:
    """``exp(-Σ p_k log p_k)`` of the normalised histogram: K for uniform use, 1 for one code.

    Examples:
        >>> round(float(perplexity(jnp.array([5.0, 5.0, 5.0, 5.0]))), 4)
        4.0
    """
    p = counts / jnp.maximum(jnp.sum(counts), 1e-12)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy)


def code_usage(counts: Float[Array, " num_codes"]) -> Float[Array, ""]:
    """Fraction of the codes used at least once.

    Examples:
        >>> float(code_usage(jnp.array([3.0, 0.0, 1.0, 0.0])))
        0.5
    """
    return jnp.mean((counts > 0).astype(jnp.float32))


# --------------------------------------------------------------------------------------
# EMA codebook and dead-code restarts
# --------------------------------------------------------------------------------------


def init_vq_state(codebook: Float[Array, "num_codes code_dim"]) -> VQState:
    """EMA statistics consistent with ``codebook``: sizes 1, sums equal to the codes.

    Examples:
        >>> init_vq_state(jnp.zeros((3, 2))).ema_counts.tolist()
        [1.0, 1.0, 1.0]
    """
    _check_codebook(codebook)
    num_codes = codebook.shape[0]
    return VQState(
        ema_counts=jnp.ones(num_codes, codebook.dtype),
        ema_sums=jnp.array(codebook, copy=True),  # its own buffer: states may be donated
        steps_unused=jnp.zeros(num_codes, jnp.int32),
    )


def _check_state(state: VQState) -> tuple[int, int]:
    if not isinstance(state, VQState):
        raise TypeError(f"state must be a VQState (see init_vq_state), got {type(state).__name__}")
    _check_codebook(state.ema_sums)
    return state.ema_sums.shape


def ema_update(
    state: VQState,
    z: Float[Array, "*lead code_dim"],
    indices: Int[Array, "*lead"],
    *,
    decay: float = 0.99,
    epsilon: float = 1e-5,
) -> tuple[Float[Array, "num_codes code_dim"], VQState]:
    """One EMA codebook update from a batch of encoder outputs and their codes.

    With ``n_k`` the number of vectors assigned to code k and ``s_k`` their sum (appendix
    A.1 of van den Oord et al. 2017):
    ``N_k ← γ N_k + (1-γ) n_k``, ``m_k ← γ m_k + (1-γ) s_k``; the sizes are Laplace-smoothed,
    ``Ñ_k = (N_k + ε) / (Σ N + K ε) · Σ N``, so that an empty cluster never divides by zero,
    and the new code is ``e_k = m_k / Ñ_k``. ``steps_unused`` counts, per code, the updates
    since it last received a vector. Gradients do not flow through the update.

    Args:
        state: the current :class:`VQState`.
        z: encoder outputs ``(*lead, D)``.
        indices: their codes ``lead`` (from :func:`nearest_code`).
        decay: γ in ``[0, 1)``; 0 sets each code to its cluster mean in this batch.
        epsilon: Laplace smoothing ε > 0.

    Returns:
        ``(codebook, state)``: the new ``(K, D)`` codebook and statistics.

    Examples:
        >>> state = init_vq_state(jnp.zeros((2, 1)))
        >>> z, idx = jnp.array([[1.0], [3.0], [-2.0]]), jnp.array([0, 0, 1])
        >>> codebook, state = ema_update(state, z, idx, decay=0.0, epsilon=1e-9)
        >>> [round(v, 4) for v in codebook.ravel().tolist()]
        [2.0, -2.0]
    """
    num_codes, code_dim = _check_state(state)
    _check_z(z, code_dim)
    if jnp.shape(indices) != jnp.shape(z)[:-1]:
        raise ValueError(
            f"indices must have z's leading shape {jnp.shape(z)[:-1]}, got {jnp.shape(indices)}"
        )
    _check_decay(decay)
    check_positive("epsilon", epsilon)
    z = jax.lax.stop_gradient(z).reshape(-1, code_dim)
    flat = jnp.ravel(indices)
    counts = jnp.zeros(num_codes, z.dtype).at[flat].add(1.0)
    sums = jnp.zeros((num_codes, code_dim), z.dtype).at[flat].add(z)
    ema_counts = decay * state.ema_counts + (1.0 - decay) * counts
    ema_sums = decay * state.ema_sums + (1.0 - decay) * sums
    total = jnp.sum(ema_counts)
    smoothed = (ema_counts + epsilon) / (total + num_codes * epsilon) * total
    codebook = ema_sums / smoothed[:, None]
    steps_unused = jnp.where(counts > 0, 0, state.steps_unused + 1).astype(jnp.int32)
    return codebook, VQState(ema_counts, ema_sums, steps_unused)


def restart_dead_codes(
    key: PRNGKeyArray,
    codebook: Float[Array, "num_codes code_dim"],
    state: VQState,
    z: Float[Array, "*lead code_dim"],
    *,
    dead_after: int,
) -> tuple[Float[Array, "num_codes code_dim"], VQState, Int[Array, ""]]:
    """Move codes unused for ``dead_after`` updates onto random encoder outputs.

    A code is dead when ``state.steps_unused >= dead_after``. Each dead code is replaced by
    a vector drawn uniformly (with replacement) from the rows of ``z``; its EMA size is
    reset to 1, its EMA sum to the new code and its counter to 0, so the next
    :func:`ema_update` starts from the new position. Live codes are left untouched.

    Args:
        key: PRNG key for the choice of replacement vectors.
        codebook: ``(K, D)`` current codes.
        state: the EMA statistics (updated by :func:`ema_update`, which counts the unused
            steps; in gradient-trained codebooks call ``ema_update`` for the counters only).
        z: encoder outputs of the current batch ``(*lead, D)``.
        dead_after: number of consecutive unused updates that marks a code as dead (>= 1).

    Returns:
        ``(codebook, state, num_restarted)``.

    Examples:
        >>> state = init_vq_state(jnp.zeros((2, 1)))._replace(steps_unused=jnp.array([0, 9]))
        >>> cb, state, n = restart_dead_codes(jax.random.key(0), jnp.array([[0.0], [99.0]]),
        ...                                   state, jnp.array([[1.0], [1.0]]), dead_after=5)
        >>> cb.ravel().tolist(), int(n)
        ([0.0, 1.0], 1)
    """
    check_key("key", key)
    _check_codebook(codebook)
    num_codes, code_dim = _check_state(state)
    if codebook.shape != (num_codes, code_dim):
        raise ValueError(
            f"codebook shape {codebook.shape} must match the state's {(num_codes, code_dim)}"
        )
    _check_z(z, code_dim)
    check_int("dead_after", dead_after, minimum=1)
    flat = jax.lax.stop_gradient(z).reshape(-1, code_dim)
    if flat.shape[0] < 1:
        raise ValueError("z must hold at least one vector to restart codes from")
    choice = jax.random.randint(key, (num_codes,), 0, flat.shape[0])
    candidates = jnp.take(flat, choice, axis=0)
    dead = state.steps_unused >= dead_after
    codebook = jnp.where(dead[:, None], candidates, codebook)
    new_state = VQState(
        ema_counts=jnp.where(dead, 1.0, state.ema_counts).astype(state.ema_counts.dtype),
        ema_sums=jnp.where(dead[:, None], candidates, state.ema_sums),
        steps_unused=jnp.where(dead, 0, state.steps_unused).astype(jnp.int32),
    )
    return codebook, new_state, jnp.sum(dead.astype(jnp.int32))


# --------------------------------------------------------------------------------------
# Flax module
# --------------------------------------------------------------------------------------


class VectorQuantizer(nn.Module):
    """A VQ bottleneck with the codebook as the Flax parameter ``"codebook"`` ``(K, D)``.

    ``__call__(z)`` quantises ``(*lead, D)`` inputs and returns a :class:`VQOutput` whose
    ``quantized`` carries straight-through gradients and whose ``loss`` is
    ``codebook_loss + beta * commitment_loss`` (or only ``beta * commitment_loss`` with
    ``learn_codebook=False``, when the codebook is trained by :func:`ema_update` and written
    back into the parameters by the caller).

    Attributes:
        num_codes: K >= 1.
        code_dim: D >= 1, the last axis of the inputs.
        beta: commitment weight β >= 0 (0.25 in the paper).
        learn_codebook: include the codebook loss (gradient-trained codebook).

    Examples:
        >>> vq = VectorQuantizer(num_codes=8, code_dim=4)
        >>> z = jnp.ones((2, 7, 7, 4))
        >>> params = vq.init(jax.random.key(0), z)
        >>> out = vq.apply(params, z)
        >>> out.quantized.shape, out.indices.shape
        ((2, 7, 7, 4), (2, 7, 7))
    """

    num_codes: int
    code_dim: int
    beta: float = 0.25
    learn_codebook: bool = True

    @nn.compact
    def __call__(self, z: Float[Array, "*lead code_dim"]) -> VQOutput:
        check_int("num_codes", self.num_codes, minimum=1)
        check_int("code_dim", self.code_dim, minimum=1)
        check_positive("beta", self.beta, allow_zero=True)
        _check_z(z, self.code_dim)
        codebook = self.param(
            "codebook",
            nn.initializers.variance_scaling(1.0, "fan_in", "uniform"),
            (self.num_codes, self.code_dim),
        )
        z_q, indices = quantize(codebook, z)
        cb_loss = codebook_loss(z, z_q)
        commit = commitment_loss(z, z_q)
        loss = self.beta * commit + (cb_loss if self.learn_codebook else 0.0)
        return VQOutput(
            quantized=straight_through(z, z_q),
            indices=indices,
            loss=loss,
            codebook_loss=cb_loss,
            commitment_loss=commit,
            perplexity=perplexity(code_counts(indices, self.num_codes)),
        )
