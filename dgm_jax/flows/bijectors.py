"""Bijectors for normalizing flows as Flax linen modules with ``forward`` and ``inverse``.

Every bijector maps a batch ``x`` of shape ``(batch, *event)`` to ``(y, log_det)`` with
``log_det = log |det ∂y/∂x|`` per example, shape ``(batch,)``; ``inverse(y)`` returns
``(x, log_det)`` with the log-determinant of the inverse map (the negative of the forward
one at the same point). ``forward`` is the *normalizing* direction (data → latent, the
``f`` of RealNVP), so a flow's density is ``log p(x) = log N(f(x)) + Σ log_det``.

* :class:`AffineCoupling` — RealNVP (Dinh et al. 2017) with ``"half"`` masks for vectors
  and ``"checkerboard"`` / ``"channel"`` masks for images; the log-scale is stabilised by
  ``tanh`` (RealNVP) or ``sigmoid`` (Glow) parameterisations.
* :class:`Squeeze` — ``(H, W, C) → (H/2, W/2, 4C)`` (RealNVP's multi-scale architecture).
* :class:`MaskedAutoregressive` — MAF (Papamakarios et al. 2017) with MADE masks (Germain
  et al. 2015): density evaluation in one pass, sampling in ``D`` sequential passes.
* :class:`ActNorm` — per-channel affine with data-dependent initialisation (Glow, Kingma &
  Dhariwal 2018).
* :class:`InvertibleConv1x1` — Glow's invertible 1×1 convolution, plain or LU-parameterised.
* :class:`Reverse` and :class:`LogitTransform` — a permutation and RealNVP's logit
  preprocessing of data in ``[0, 1]`` (its log-determinant counted, so bits/dim stay exact).

Why not distrax: distrax's ``MaskedCoupling``/``Chain`` are functional objects that take a
conditioner *function*; in a Flax model the conditioner's parameters must be shared between
``forward`` and ``inverse`` and created at ``init``, and ActNorm needs data-dependent
initialisation, which distrax bijectors have no notion of. distrax also pulls in
``tfp-nightly`` (seconds to import) and is not installed on the GPU machines this library
targets. The tests cross-check :class:`AffineCoupling` against ``distrax.MaskedCoupling``
when distrax is installed.

Each module's parameters are created by ``init`` through ``forward`` (call ``init`` on data
so ActNorm initialises from it). Nothing is jitted here.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> layer = AffineCoupling(MLPConditioner((16,)), mask="half")
    >>> x = jax.random.normal(jax.random.key(0), (5, 2))
    >>> params = layer.init(jax.random.key(1), x)
    >>> y, log_det = layer.apply(params, x)
    >>> x_back, _ = layer.apply(params, y, method="inverse")
    >>> bool(jnp.allclose(x, x_back, atol=1e-6)), log_det.shape
    (True, (5,))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from dgm_jax._validate import check_in, check_int, check_positive
from dgm_jax.types import Array, Float

__all__ = [
    "MASKS",
    "SCALE_FNS",
    "ActNorm",
    "AffineCoupling",
    "ConvConditioner",
    "InvertibleConv1x1",
    "LogitTransform",
    "MLPConditioner",
    "MaskedAutoregressive",
    "Reverse",
    "Squeeze",
    "channel_mask",
    "checkerboard_mask",
    "half_mask",
    "made_masks",
    "squeeze",
    "unsqueeze",
]

MASKS = ("half", "checkerboard", "channel")
SCALE_FNS = ("tanh", "sigmoid")

Batch = Float[Array, " batch *event"]
LogDet = Float[Array, " batch"]


def _sum_event(x: Array) -> Array:
    """Sum over every axis but the first: ``(batch, ...) -> (batch,)``."""
    return x.reshape(x.shape[0], -1).sum(axis=1)


def _lead(v: Array, x: Array) -> Array:
    """Reshape ``v`` with leading unit axes to ``x.ndim`` (explicit, rank-promotion safe)."""
    return jnp.reshape(v, (1,) * (x.ndim - jnp.ndim(v)) + jnp.shape(v))


def _check_batch(name: str, x: Array, ndim: int, what: str) -> None:
    if jnp.ndim(x) != ndim:
        raise ValueError(f"{name} must have shape {what}, got shape {tuple(jnp.shape(x))}")


# --------------------------------------------------------------------------------------
# Masks (static NumPy arrays: 1 = passed through and conditioned on, 0 = transformed)
# --------------------------------------------------------------------------------------


def half_mask(dim: int, parity: int = 0) -> np.ndarray:
    """Vector mask: the first half of ``dim`` coordinates (``parity=0``) or the second.

    Raises ``ValueError`` for odd ``dim`` (the halves would not be balanced).

    Examples:
        >>> half_mask(4).tolist(), half_mask(4, 1).tolist()
        ([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0])
    """
    check_int("dim", dim, minimum=2)
    check_in("parity", parity, (0, 1))
    if dim % 2:
        raise ValueError(f"a 'half' mask needs an even dimension, got dim={dim}")
    m = np.zeros(dim, np.float32)
    m[: dim // 2] = 1.0
    return m if parity == 0 else 1.0 - m


def checkerboard_mask(height: int, width: int, parity: int = 0) -> np.ndarray:
    """Image mask ``(height, width, 1)``: 1 where ``(i + j) % 2 == parity``.

    Examples:
        >>> checkerboard_mask(2, 2)[..., 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    check_int("height", height, minimum=1)
    check_int("width", width, minimum=1)
    check_in("parity", parity, (0, 1))
    if height * width < 2:
        raise ValueError(f"a checkerboard mask needs at least 2 pixels, got {height}x{width}")
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return ((i + j) % 2 == parity).astype(np.float32)[..., None]


def channel_mask(channels: int, parity: int = 0) -> np.ndarray:
    """Image mask over channels ``(channels,)``: the first half (``parity=0``) or the second.

    Raises ``ValueError`` for an odd number of channels.

    Examples:
        >>> channel_mask(4, 1).tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    check_int("channels", channels, minimum=1)
    if channels % 2:
        raise ValueError(f"a 'channel' mask needs an even number of channels, got {channels}")
    return half_mask(channels, parity)


def _coupling_mask(mask: str, parity: int, x: Array) -> np.ndarray:
    """The mask for ``x`` of shape ``(batch, *event)``, broadcastable to ``x.shape[1:]``."""
    if mask == "half":
        _check_batch("x", x, 2, "(batch, dim) for mask='half'")
        if x.shape[1] % 2:
            raise ValueError(
                f"x's dimension must be even for mask='half', got shape {tuple(x.shape)}"
            )
        return half_mask(x.shape[1], parity)
    _check_batch("x", x, 4, f"(batch, height, width, channels) for mask={mask!r}")
    _, h, w, c = x.shape
    if mask == "checkerboard":
        if h * w < 2:
            raise ValueError(f"x needs at least 2 pixels for a checkerboard mask, got {x.shape}")
        return checkerboard_mask(h, w, parity)
    if c % 2:
        raise ValueError(f"x's channel count must be even for mask='channel', got shape {x.shape}")
    return channel_mask(c, parity)


# --------------------------------------------------------------------------------------
# Conditioners (networks inside coupling layers); the last layer starts at zero so that a
# freshly initialised coupling is the identity (or a fixed scaling with "sigmoid").
# --------------------------------------------------------------------------------------


class MLPConditioner(nn.Module):
    """MLP ``(batch, dim) -> (batch, 2·dim)`` (shift and raw log-scale) for vector couplings.

    Attributes:
        hidden_sizes: widths of the hidden layers.
        activation: nonlinearity.

    Examples:
        >>> net = MLPConditioner((8,))
        >>> p = net.init(jax.random.key(0), jnp.zeros((3, 2)))
        >>> net.apply(p, jnp.ones((3, 2))).shape
        (3, 4)
    """

    hidden_sizes: Sequence[int] = (64, 64)
    activation: Callable[[Array], Array] = nn.silu

    @nn.compact
    def __call__(self, x: Float[Array, " batch dim"]) -> Float[Array, "batch two_dim"]:
        h = x
        for width in self.hidden_sizes:
            h = self.activation(nn.Dense(width)(h))
        return nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros)(h)


class ConvConditioner(nn.Module):
    """Residual CNN ``(batch, H, W, C) -> (batch, H, W, 2C)`` for image couplings.

    A 3×3 convolution to ``hidden_channels``, ``num_blocks`` residual blocks (3×3 conv,
    activation, 3×3 conv, skip) and a zero-initialised 3×3 output convolution, as in the
    ResNet conditioners of RealNVP (without batch normalisation, which would make the
    density depend on the batch).

    Attributes:
        hidden_channels: width of the residual stream.
        num_blocks: number of residual blocks.
        activation: nonlinearity.

    Examples:
        >>> net = ConvConditioner(8, 1)
        >>> p = net.init(jax.random.key(0), jnp.zeros((2, 4, 4, 3)))
        >>> net.apply(p, jnp.ones((2, 4, 4, 3))).shape
        (2, 4, 4, 6)
    """

    hidden_channels: int = 64
    num_blocks: int = 2
    activation: Callable[[Array], Array] = nn.relu

    @nn.compact
    def __call__(self, x: Float[Array, " batch h w c"]) -> Float[Array, "batch h w two_c"]:
        h = nn.Conv(self.hidden_channels, (3, 3))(x)
        for _ in range(self.num_blocks):
            r = nn.Conv(self.hidden_channels, (3, 3))(self.activation(h))
            r = nn.Conv(self.hidden_channels, (3, 3))(self.activation(r))
            h = h + r
        return nn.Conv(2 * x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(
            self.activation(h)
        )


# --------------------------------------------------------------------------------------
# Bijectors
# --------------------------------------------------------------------------------------


class _Bijector(nn.Module):
    """Shared ``forward``/``inverse`` wrappers around ``__call__(x, inverse)``."""

    def forward(self, x: Batch) -> tuple[Batch, LogDet]:
        """``x -> (y, log|det ∂y/∂x|)``, the normalizing direction."""
        return self(x, inverse=False)

    def inverse(self, y: Batch) -> tuple[Batch, LogDet]:
        """``y -> (x, log|det ∂x/∂y|)``, the generative direction."""
        return self(y, inverse=True)


class AffineCoupling(_Bijector):
    """RealNVP affine coupling: ``y = m ⊙ x + (1 - m) ⊙ (x ⊙ exp(s(m ⊙ x)) + t(m ⊙ x))``.

    ``log|det| = Σ (1 - m) ⊙ s``. The log-scale ``s`` comes from the conditioner's raw
    output ``r`` through ``"tanh"``: ``s = a ⊙ tanh(r)`` with a learned per-feature ``a``
    (initialised to 1; RealNVP) or ``"sigmoid"``: ``s = log σ(r + 2)`` (Glow), both bounded
    so a single step cannot blow up.

    Attributes:
        conditioner: module mapping ``m ⊙ x`` to ``2·C`` features on the last axis
            (``[shift, raw log-scale]``), e.g. :class:`MLPConditioner` or
            :class:`ConvConditioner`.
        mask: ``"half"`` (vectors ``(batch, D)``, ``D`` even), ``"checkerboard"`` or
            ``"channel"`` (images ``(batch, H, W, C)``; ``C`` even for ``"channel"``).
        parity: 0 or 1, which half is passed through.
        scale_fn: ``"tanh"`` or ``"sigmoid"``.

    Examples:
        >>> layer = AffineCoupling(ConvConditioner(8, 1), mask="checkerboard")
        >>> x = jnp.ones((2, 4, 4, 1))
        >>> y, ld = layer.apply(layer.init(jax.random.key(0), x), x)
        >>> y.shape, ld.shape
        ((2, 4, 4, 1), (2,))
    """

    conditioner: nn.Module
    mask: str = "half"
    parity: int = 0
    scale_fn: str = "tanh"

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        check_in("mask", self.mask, MASKS)
        check_in("parity", self.parity, (0, 1))
        check_in("scale_fn", self.scale_fn, SCALE_FNS)
        m = _lead(jnp.asarray(_coupling_mask(self.mask, self.parity, x), x.dtype), x)
        out = self.conditioner(x * m)
        c = x.shape[-1]
        if out.shape != (*x.shape[:-1], 2 * c):
            raise ValueError(
                f"conditioner must map shape {x.shape} to {(*x.shape[:-1], 2 * c)}, got {out.shape}"
            )
        shift, raw = out[..., :c], out[..., c:]
        if self.scale_fn == "tanh":
            a = self.param("scale", nn.initializers.ones, (c,))
            log_s = _lead(a, raw) * jnp.tanh(raw)
        else:
            log_s = jax.nn.log_sigmoid(raw + 2.0)
        log_s = log_s * (1.0 - m)
        shift = shift * (1.0 - m)
        log_det = _sum_event(log_s)
        if inverse:
            return (x - shift) * jnp.exp(-log_s), -log_det
        return x * jnp.exp(log_s) + shift, log_det


def squeeze(x: Float[Array, " batch h w c"]) -> Float[Array, "batch h2 w2 c4"]:
    """Space-to-depth ``(batch, H, W, C) -> (batch, H/2, W/2, 4C)`` (RealNVP's squeeze).

    Raises ``ValueError`` unless ``x`` is 4-D with even ``H`` and ``W``.

    Examples:
        >>> squeeze(jnp.arange(4.0).reshape(1, 2, 2, 1))[0, 0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    _check_batch("x", x, 4, "(batch, height, width, channels)")
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"x's height and width must be even to squeeze, got shape {x.shape}")
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(y: Float[Array, "batch h2 w2 c4"]) -> Float[Array, " batch h w c"]:
    """Inverse of :func:`squeeze`: ``(batch, H, W, 4C) -> (batch, 2H, 2W, C)``.

    Examples:
        >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)
        >>> bool(jnp.all(unsqueeze(squeeze(x)) == x))
        True
    """
    _check_batch("y", y, 4, "(batch, height, width, channels)")
    b, h, w, c4 = y.shape
    if c4 % 4:
        raise ValueError(f"y's channel count must be divisible by 4, got shape {y.shape}")
    c = c4 // 4
    y = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, c)


class Squeeze(_Bijector):
    """:func:`squeeze` as a bijector (volume preserving: ``log_det = 0``).

    Examples:
        >>> y, ld = Squeeze().apply({}, jnp.zeros((3, 4, 4, 1)))
        >>> y.shape, ld.tolist()
        ((3, 2, 2, 4), [0.0, 0.0, 0.0])
    """

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        y = unsqueeze(x) if inverse else squeeze(x)
        return y, jnp.zeros(x.shape[:1], x.dtype)


class Reverse(_Bijector):
    """Reverse the last axis (a permutation between coupling or MAF layers; ``log_det = 0``).

    Examples:
        >>> Reverse().apply({}, jnp.array([[1.0, 2.0]]))[0].tolist()
        [[2.0, 1.0]]
    """

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        if jnp.ndim(x) < 2:
            raise ValueError(f"x must have shape (batch, *event), got shape {jnp.shape(x)}")
        return jnp.flip(x, axis=-1), jnp.zeros(x.shape[:1], x.dtype)


class ActNorm(_Bijector):
    """Per-channel affine ``y = (x + b) ⊙ exp(log_s)`` with data-dependent init (Glow).

    At ``init`` (through ``forward``) the first batch sets ``b = -mean`` and
    ``s = 1 / (std + 1e-6)`` per channel (last axis), so the output has zero mean and
    unit variance; with ``init_scale`` given, ``s = init_scale`` and ``b = 0`` instead.
    ``log|det| = (number of positions) · Σ log_s``; the scale is stored as its logarithm,
    so it stays positive during training.

    Attributes:
        init_scale: ``None`` for data-dependent initialisation, else a scale ``> 0``.

    Examples:
        >>> x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (1000, 2))
        >>> layer = ActNorm()
        >>> y, _ = layer.apply(layer.init(jax.random.key(1), x), x)
        >>> [round(float(v), 3) for v in y.std(0)]
        [1.0, 1.0]
    """

    init_scale: float | None = None

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        if self.init_scale is not None:
            check_positive("init_scale", self.init_scale)
        if jnp.ndim(x) < 2:
            raise ValueError(f"x must have shape (batch, *event), got shape {jnp.shape(x)}")
        c = x.shape[-1]
        axes = tuple(range(x.ndim - 1))

        def init_bias(_key):
            if self.init_scale is not None:
                return jnp.zeros((c,), x.dtype)
            return -jnp.mean(x, axis=axes)

        def init_log_scale(_key):
            if self.init_scale is not None:
                return jnp.full((c,), math.log(self.init_scale), x.dtype)
            return -jnp.log(jnp.std(x, axis=axes) + 1e-6)

        bias = self.param("bias", init_bias)
        log_scale = self.param("log_scale", init_log_scale)
        b, ls = _lead(bias, x), _lead(log_scale, x)
        num_positions = math.prod(x.shape[1:-1])
        log_det = jnp.broadcast_to(num_positions * jnp.sum(log_scale), x.shape[:1])
        if inverse:
            return x * jnp.exp(-ls) - b, -log_det
        return (x + b) * jnp.exp(ls), log_det


def _random_rotation(channels: int, seed: int) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((channels, channels)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


class InvertibleConv1x1(_Bijector):
    """Glow's invertible 1×1 convolution ``y = x W`` over the last axis, at every position.

    ``log|det| = (number of positions) · log|det W|``. ``W`` starts as a random rotation
    (deterministic in ``seed``; give each layer its own). With ``lu=True``, ``W = P L (U +
    diag(sign ⊙ exp(log_s)))`` with ``P`` and ``sign`` fixed at their initial values
    (recomputed from ``seed``, so they are not parameters), ``L`` unit lower triangular and
    ``U`` strictly upper triangular: the log-determinant is ``Σ log_s``, ``O(C)`` instead
    of ``O(C³)``.

    Works for vectors ``(batch, D)`` (one position) and images ``(batch, H, W, C)``.

    Attributes:
        lu: use the LU parameterisation.
        seed: seed of the initial rotation.

    Examples:
        >>> layer = InvertibleConv1x1(lu=True)
        >>> x = jnp.ones((2, 4, 4, 3))
        >>> y, ld = layer.apply(layer.init(jax.random.key(0), x), x)
        >>> abs(float(ld[0])) < 1e-4  # a rotation keeps volume
        True
    """

    lu: bool = False
    seed: int = 0

    def _weight(self, c: int) -> tuple[Array, Array]:
        """``(W, log|det W|)`` from the parameters."""
        w0 = _random_rotation(c, self.seed)
        if not self.lu:
            w = self.param("kernel", lambda _key: jnp.asarray(w0))
            return w, jnp.linalg.slogdet(w)[1]
        p, low, up = scipy.linalg.lu(w0)
        s = np.diag(up)
        lower = self.param("lower", lambda _key: jnp.asarray(np.tril(low, -1), jnp.float32))
        upper = self.param("upper", lambda _key: jnp.asarray(np.triu(up, 1), jnp.float32))
        log_s = self.param("log_scale", lambda _key: jnp.asarray(np.log(np.abs(s)), jnp.float32))
        eye = jnp.eye(c, dtype=jnp.float32)
        lower_m = jnp.tril(lower, -1) + eye
        upper_m = jnp.triu(upper, 1) + jnp.diag(
            jnp.asarray(np.sign(s), jnp.float32) * jnp.exp(log_s)
        )
        return jnp.asarray(p, jnp.float32) @ lower_m @ upper_m, jnp.sum(log_s)

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        check_int("seed", self.seed)
        if jnp.ndim(x) < 2:
            raise ValueError(f"x must have shape (batch, *event), got shape {jnp.shape(x)}")
        c = x.shape[-1]
        w, logdet_w = self._weight(c)
        num_positions = math.prod(x.shape[1:-1])
        log_det = jnp.broadcast_to(num_positions * logdet_w, x.shape[:1]).astype(x.dtype)
        if inverse:
            return jnp.einsum("...c,cd->...d", x, jnp.linalg.inv(w)), -log_det
        return jnp.einsum("...c,cd->...d", x, w), log_det


class LogitTransform(_Bijector):
    """RealNVP's preprocessing ``y = logit(α + (1 - 2α) x)`` for data ``x ∈ [0, 1]``.

    Its log-determinant is part of the flow's density, so a density over ``y`` becomes an
    exact density over ``x`` (and bits/dim of dequantized pixels stay correct).
    ``log|det| = Σ [log(1 - 2α) - log p - log(1 - p)]`` with ``p = α + (1 - 2α) x``.

    Attributes:
        alpha: margin in ``[0, 0.5)`` keeping ``p`` away from 0 and 1 (RealNVP: 0.05).

    Examples:
        >>> y, ld = LogitTransform(0.0).apply({}, jnp.full((1, 2), 0.5))
        >>> y.tolist(), round(float(ld[0]), 4)  # 2 log 4
        ([[0.0, 0.0]], 2.7726)
    """

    alpha: float = 0.05

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        if not 0.0 <= self.alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {self.alpha!r}")
        if jnp.ndim(x) < 2:
            raise ValueError(f"x must have shape (batch, *event), got shape {jnp.shape(x)}")
        a = self.alpha
        if inverse:
            p = jax.nn.sigmoid(x)
            out = (p - a) / (1.0 - 2.0 * a)
        else:
            p = a + (1.0 - 2.0 * a) * x
            out = jnp.log(p) - jnp.log1p(-p)
        log_det = _sum_event(math.log(1.0 - 2.0 * a) - jnp.log(p) - jnp.log1p(-p))
        return out, (-log_det if inverse else log_det)


# --------------------------------------------------------------------------------------
# MAF
# --------------------------------------------------------------------------------------


def made_masks(dim: int, hidden_sizes: Sequence[int], *, reverse: bool = False) -> list[np.ndarray]:
    """MADE connectivity masks (Germain et al. 2015) for ``dim`` inputs and ``2·dim`` outputs.

    Inputs get degrees ``1..dim`` (or ``dim..1`` with ``reverse``), hidden units degrees in
    ``1..dim-1`` assigned cyclically; a hidden unit of degree ``k`` sees inputs of degree
    ``<= k`` and an output of degree ``d`` sees hidden units of degree ``< d``. So output
    ``d`` depends only on inputs of smaller degree. The output layer repeats the input
    degrees twice (shift and log-scale).

    Args:
        dim: number of inputs, ``>= 2``.
        hidden_sizes: widths of the hidden layers.
        reverse: reverse the autoregressive order.

    Returns:
        One ``(fan_in, fan_out)`` float mask per layer.

    Examples:
        >>> [m.shape for m in made_masks(3, (4,))]
        [(3, 4), (4, 6)]
        >>> made_masks(2, ())[0].tolist()  # output 2 sees input 1 only
        [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    """
    check_int("dim", dim, minimum=2)
    for h in hidden_sizes:
        check_int("hidden_sizes", h, minimum=1)
    deg_in = np.arange(1, dim + 1)
    if reverse:
        deg_in = deg_in[::-1].copy()
    masks, prev = [], deg_in
    for h in hidden_sizes:
        deg = np.arange(h) % (dim - 1) + 1
        masks.append((deg[None, :] >= prev[:, None]).astype(np.float32))
        prev = deg
    deg_out = np.concatenate([deg_in, deg_in])
    masks.append((deg_out[None, :] > prev[:, None]).astype(np.float32))
    return masks


def _made_apply(layers, masks, x, activation):
    """Masked MLP: ``x (batch, D) -> (batch, 2D)``."""
    h = x
    for i, ((w, b), m) in enumerate(zip(layers, masks)):
        h = h @ (w * m) + b[None, :]
        if i < len(layers) - 1:
            h = activation(h)
    return h


class MaskedAutoregressive(_Bijector):
    """MAF layer (Papamakarios et al. 2017): ``z_i = (x_i - μ_i(x_<i)) exp(-α_i(x_<i))``.

    ``μ`` and ``α`` come from one MADE network, so ``forward`` (data → latent, density
    evaluation) is one pass with ``log|det| = -Σ α``; ``inverse`` (sampling) solves for
    ``x`` one coordinate at a time, ``D`` passes in ``lax.fori_loop``. ``α`` is bounded
    softly, ``α = b tanh(raw / b)`` with ``b = max_log_scale``. The output layer starts at
    zero (the identity map).

    Attributes:
        hidden_sizes: MADE hidden widths.
        reverse_order: autoregressive order ``D..1`` instead of ``1..D`` (alternate it
            between layers, or put :class:`Reverse` between them).
        max_log_scale: the bound ``b`` on ``|α|``.
        activation: MADE nonlinearity.

    Examples:
        >>> layer = MaskedAutoregressive((16,))
        >>> x = jnp.ones((4, 3))
        >>> z, ld = layer.apply(layer.init(jax.random.key(0), x), x)
        >>> z.shape, ld.shape
        ((4, 3), (4,))
    """

    hidden_sizes: Sequence[int] = (64, 64)
    reverse_order: bool = False
    max_log_scale: float = 5.0
    activation: Callable[[Array], Array] = nn.relu

    @nn.compact
    def __call__(self, x: Batch, inverse: bool = False) -> tuple[Batch, LogDet]:
        check_positive("max_log_scale", self.max_log_scale)
        _check_batch("x", x, 2, "(batch, dim) for a MAF layer")
        d = x.shape[1]
        if d < 2:
            raise ValueError(f"x's dimension must be >= 2 for a MAF layer, got shape {x.shape}")
        masks = [
            jnp.asarray(m) for m in made_masks(d, self.hidden_sizes, reverse=self.reverse_order)
        ]
        layers = []
        for i, m in enumerate(masks):
            last = i == len(masks) - 1
            init = nn.initializers.zeros if last else nn.initializers.lecun_normal()
            w = self.param(f"kernel_{i}", init, m.shape)
            b = self.param(f"bias_{i}", nn.initializers.zeros, (m.shape[1],))
            layers.append((w, b))
        bound = self.max_log_scale

        def shift_and_log_scale(v):
            out = _made_apply(layers, masks, v, self.activation)
            return out[:, :d], bound * jnp.tanh(out[:, d:] / bound)

        if not inverse:
            mu, alpha = shift_and_log_scale(x)
            return (x - mu) * jnp.exp(-alpha), -alpha.sum(axis=1)

        z = x

        def body(_, v):
            mu, alpha = shift_and_log_scale(v)
            return z * jnp.exp(alpha) + mu

        # After pass k the first k coordinates (in autoregressive order) are exact.
        x_out = jax.lax.fori_loop(0, d, body, jnp.zeros_like(z))
        _, alpha = shift_and_log_scale(x_out)
        return x_out, alpha.sum(axis=1)
