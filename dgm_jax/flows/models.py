"""Normalizing-flow models: a chain of bijectors on a Gaussian, and RealNVP/Glow multi-scale.

``log p(x) = log N(f(x); 0, I) + Σ_k log|det ∂f_k/∂h_{k-1}|`` with ``f = f_K ∘ … ∘ f_1``
the bijectors' ``forward`` maps (data → latent); sampling runs their inverses from
Gaussian noise.

* :class:`Flow` — any sequence of bijectors on ``(batch, *event_shape)``;
  :func:`realnvp_2d` and :func:`maf_2d` build the 2-D models of the experiments.
* :class:`MultiScaleFlow` — RealNVP's multi-scale architecture for images (Dinh et al.
  2017, §3.6): at each scale, checkerboard couplings, a squeeze, channel couplings, then
  half the channels are factored out to the latent; with ``actnorm`` and ``invconv`` each
  step is Glow's ActNorm → 1×1 convolution → coupling (Kingma & Dhariwal 2018).
* :func:`build_nll_loss` and :func:`build_dequantized_nll_loss` — ``loss_fn(params, key,
  batch)`` for :func:`dgm_jax.train.make_step`; the second dequantizes 8-bit images and
  reports bits/dim.

Nothing is jitted here.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> flow = realnvp_2d(num_layers=4, hidden_sizes=(16,))
    >>> x = jax.random.normal(jax.random.key(0), (8, 2))
    >>> params = flow.init(jax.random.key(1), x)
    >>> flow.apply(params, x, method="log_prob").shape
    (8,)
    >>> flow.apply(params, jax.random.key(2), 5, method="sample").shape
    (5, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dgm_jax._validate import check_in, check_int, check_key, check_positive
from dgm_jax.flows.bijectors import (
    SCALE_FNS,
    ActNorm,
    AffineCoupling,
    ConvConditioner,
    InvertibleConv1x1,
    LogitTransform,
    MaskedAutoregressive,
    MLPConditioner,
    squeeze,
    unsqueeze,
)
from dgm_jax.metrics.likelihood import nats_to_bits_per_dim, uniform_dequantize
from dgm_jax.types import Array, Float, PRNGKeyArray

__all__ = [
    "INVCONVS",
    "Flow",
    "FlowStep",
    "MultiScaleFlow",
    "build_dequantized_nll_loss",
    "build_nll_loss",
    "maf_2d",
    "realnvp_2d",
    "standard_normal_logpdf",
]

INVCONVS = (None, "plain", "lu")


def standard_normal_logpdf(z: Float[Array, " batch *event"]) -> Float[Array, " batch"]:
    """``log N(z; 0, I)`` summed over the event axes.

    Examples:
        >>> round(float(standard_normal_logpdf(jnp.zeros((1, 2)))[0]), 4)  # -log 2π
        -1.8379
    """
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * jnp.sum(flat**2, axis=1) - 0.5 * flat.shape[1] * math.log(2.0 * math.pi)


def _check_event(name: str, x: Any, event_shape: tuple[int, ...]) -> None:
    shape = tuple(jnp.shape(x))
    if len(shape) != len(event_shape) + 1 or shape[1:] != tuple(event_shape):
        raise ValueError(
            f"{name} must have shape (batch, {', '.join(map(str, event_shape))}), got {shape}"
        )


class Flow(nn.Module):
    """A normalizing flow: ``bijectors`` applied in order (data → latent) on ``N(0, I)``.

    Methods (call through ``apply(params, ..., method=...)``):
    ``forward(x) -> (z, log_det)``, ``inverse(z) -> (x, log_det)``, ``log_prob(x)`` (the
    default ``__call__``) and ``sample(key, num, temperature=1.0)``.

    Attributes:
        bijectors: modules with ``forward``/``inverse`` (see :mod:`dgm_jax.flows.bijectors`).
        event_shape: shape of one example, e.g. ``(2,)``.

    Examples:
        >>> from dgm_jax.flows.bijectors import ActNorm
        >>> flow = Flow((ActNorm(init_scale=2.0),), (2,))
        >>> params = flow.init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> round(float(flow.apply(params, jnp.zeros((1, 2)))[0]), 4)  # log N(0; 0, I/4)
        -0.4516
    """

    bijectors: Sequence[nn.Module]
    event_shape: tuple[int, ...] = (2,)

    def forward(self, x: Float[Array, " batch *event"]):
        """Data → latent: ``(z, log|det ∂z/∂x|)``, shapes ``(batch, *event)`` and ``(batch,)``."""
        _check_event("x", x, self.event_shape)
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        for b in self.bijectors:
            x, ld = b.forward(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Float[Array, " batch *event"]):
        """Latent → data: ``(x, log|det ∂x/∂z|)``."""
        _check_event("z", z, self.event_shape)
        log_det = jnp.zeros(z.shape[:1], z.dtype)
        for b in reversed(self.bijectors):
            z, ld = b.inverse(z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x: Float[Array, " batch *event"]) -> Float[Array, " batch"]:
        """``log p(x)`` in nats per example, shape ``(batch,)``."""
        z, log_det = self.forward(x)
        return standard_normal_logpdf(z) + log_det

    def __call__(self, x: Float[Array, " batch *event"]) -> Float[Array, " batch"]:
        return self.log_prob(x)

    def sample(self, key: PRNGKeyArray, num: int, temperature: float = 1.0):
        """``num`` samples ``(num, *event)`` from noise of standard deviation ``temperature``."""
        check_key("key", key)
        check_int("num", num, minimum=1)
        check_positive("temperature", temperature)
        z = temperature * jax.random.normal(key, (num, *self.event_shape))
        return self.inverse(z)[0]


def realnvp_2d(
    num_layers: int = 8,
    hidden_sizes: Sequence[int] = (64, 64),
    *,
    scale_fn: str = "tanh",
    actnorm: bool = True,
    dim: int = 2,
) -> Flow:
    """RealNVP for vectors: ``num_layers`` half-mask couplings of alternating parity.

    With ``actnorm`` an :class:`ActNorm` precedes each coupling.

    Examples:
        >>> len(realnvp_2d(num_layers=3, actnorm=False).bijectors)
        3
    """
    check_int("num_layers", num_layers, minimum=1)
    check_in("scale_fn", scale_fn, SCALE_FNS)
    layers: list[nn.Module] = []
    for i in range(num_layers):
        if actnorm:
            layers.append(ActNorm())
        layers.append(AffineCoupling(MLPConditioner(tuple(hidden_sizes)), "half", i % 2, scale_fn))
    return Flow(tuple(layers), (dim,))


def maf_2d(num_layers: int = 5, hidden_sizes: Sequence[int] = (64, 64), *, dim: int = 2) -> Flow:
    """MAF for vectors: ``num_layers`` MADE layers, alternating autoregressive order.

    Examples:
        >>> [b.reverse_order for b in maf_2d(num_layers=3).bijectors]
        [False, True, False]
    """
    check_int("num_layers", num_layers, minimum=1)
    layers = tuple(
        MaskedAutoregressive(tuple(hidden_sizes), reverse_order=bool(i % 2))
        for i in range(num_layers)
    )
    return Flow(layers, (dim,))


class FlowStep(nn.Module):
    """One step of a multi-scale flow: optional ActNorm, optional 1×1 conv, then a coupling.

    Attributes:
        mask: ``"checkerboard"`` or ``"channel"``.
        parity: 0 or 1.
        hidden_channels: width of the coupling's :class:`ConvConditioner`.
        num_blocks: residual blocks in the conditioner.
        scale_fn: ``"tanh"`` or ``"sigmoid"``.
        actnorm: prepend :class:`ActNorm`.
        invconv: ``None``, ``"plain"`` or ``"lu"`` (:class:`InvertibleConv1x1`).
        seed: seed of the 1×1 convolution's initial rotation.
    """

    mask: str
    parity: int
    hidden_channels: int = 64
    num_blocks: int = 2
    scale_fn: str = "tanh"
    actnorm: bool = True
    invconv: str | None = None
    seed: int = 0

    def setup(self):
        layers: list[nn.Module] = []
        if self.actnorm:
            layers.append(ActNorm())
        if self.invconv is not None:
            layers.append(InvertibleConv1x1(lu=self.invconv == "lu", seed=self.seed))
        conditioner = ConvConditioner(self.hidden_channels, self.num_blocks)
        layers.append(AffineCoupling(conditioner, self.mask, self.parity, self.scale_fn))
        self.layers = layers

    def __call__(self, x, inverse: bool = False):
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        for layer in reversed(self.layers) if inverse else self.layers:
            x, ld = layer(x, inverse=inverse)
            log_det = log_det + ld
        return x, log_det

    def forward(self, x):
        """``x -> (y, log_det)``."""
        return self(x, inverse=False)

    def inverse(self, y):
        """``y -> (x, log_det)``."""
        return self(y, inverse=True)


class MultiScaleFlow(nn.Module):
    """RealNVP/Glow multi-scale flow for images ``(batch, H, W, C)`` with values in ``[0, 1]``.

    Data pass through :class:`LogitTransform` (if ``logit_alpha`` is set), then for each of
    the first ``num_scales - 1`` scales: ``num_steps`` checkerboard steps, a squeeze,
    ``num_steps`` channel steps and a split that sends half the channels to the latent;
    the last scale has ``num_steps + 1`` checkerboard steps. For 28×28×1 and
    ``num_scales=3``: 28×28×1 → 14×14×4 (2 out) → 7×7×8 (4 out) → 7×7×4. The latent is the
    flat concatenation of the factored-out parts, shape ``(batch, H·W·C)``.

    ``log_prob(x)`` is a density over ``[0, 1]^D`` (the logit's Jacobian is included): for
    pixels dequantized as ``(k + u)/256`` use :func:`build_dequantized_nll_loss` or
    :func:`dgm_jax.metrics.nats_to_bits_per_dim` with ``data_scale=1/256``.

    Attributes:
        image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2^(num_scales-1)``.
        num_scales: number of scales, ``>= 1``.
        num_steps: flow steps per stage.
        hidden_channels: conditioner width.
        num_blocks: residual blocks per conditioner.
        scale_fn: coupling scale parameterisation.
        actnorm: ActNorm before each coupling (Glow).
        invconv: ``None``, ``"plain"`` or ``"lu"``: 1×1 convolution before each coupling.
        logit_alpha: ``α`` of the logit preprocessing, or ``None`` to model ``x`` directly.

    Examples:
        >>> flow = MultiScaleFlow((4, 4, 1), num_scales=2, num_steps=1, hidden_channels=4,
        ...                       num_blocks=1)
        >>> x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 1))
        >>> params = flow.init(jax.random.key(1), x)
        >>> z, log_det = flow.apply(params, x, method="forward")
        >>> z.shape, flow.apply(params, z, method="inverse")[0].shape
        ((2, 16), (2, 4, 4, 1))
    """

    image_shape: tuple[int, int, int] = (28, 28, 1)
    num_scales: int = 3
    num_steps: int = 3
    hidden_channels: int = 64
    num_blocks: int = 4
    scale_fn: str = "tanh"
    actnorm: bool = True
    invconv: str | None = "lu"
    logit_alpha: float | None = 0.05

    def _check(self) -> None:
        check_int("num_scales", self.num_scales, minimum=1)
        check_int("num_steps", self.num_steps, minimum=1)
        check_int("hidden_channels", self.hidden_channels, minimum=1)
        check_int("num_blocks", self.num_blocks, minimum=0)
        check_in("scale_fn", self.scale_fn, SCALE_FNS)
        check_in("invconv", self.invconv, INVCONVS)
        if len(self.image_shape) != 3 or any(
            not isinstance(s, int) or s < 1 for s in self.image_shape
        ):
            raise ValueError(f"image_shape must be (H, W, C) of ints >= 1, got {self.image_shape}")
        h, w, _ = self.image_shape
        f = 2 ** (self.num_scales - 1)
        if h % f or w % f:
            raise ValueError(
                f"image_shape {self.image_shape}: height and width must be divisible by "
                f"2^(num_scales-1) = {f}"
            )

    def setup(self):
        self._check()
        settings = dict(
            hidden_channels=self.hidden_channels,
            num_blocks=self.num_blocks,
            scale_fn=self.scale_fn,
            actnorm=self.actnorm,
            invconv=self.invconv,
        )
        pre, post, seed = [], [], 0
        for s in range(self.num_scales):
            count = self.num_steps + (s == self.num_scales - 1)
            for k in range(count):
                pre.append(FlowStep("checkerboard", k % 2, seed=seed, **settings))
                seed += 1
            if s < self.num_scales - 1:
                for k in range(self.num_steps):
                    post.append(FlowStep("channel", k % 2, seed=seed, **settings))
                    seed += 1
        self.pre_steps = pre
        self.post_steps = post
        if self.logit_alpha is not None:
            self.logit = LogitTransform(self.logit_alpha)

    def _pre(self, s: int):
        return self.pre_steps[
            s * self.num_steps : (s + 1) * self.num_steps + (s == self.num_scales - 1)
        ]

    def _post(self, s: int):
        return self.post_steps[s * self.num_steps : (s + 1) * self.num_steps]

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Shapes ``(h, w, c)`` of the factored-out latents, in order (last: the final scale)."""
        h, w, c = self.image_shape
        shapes = []
        for _ in range(self.num_scales - 1):
            h, w, c = h // 2, w // 2, 4 * c
            shapes.append((h, w, c // 2))
            c = c - c // 2
        shapes.append((h, w, c))
        return shapes

    def forward(self, x: Float[Array, " batch h w c"]):
        """Images → flat latent: ``(z, log_det)``, shapes ``(batch, H·W·C)``, ``(batch,)``."""
        _check_event("x", x, tuple(self.image_shape))
        log_det = jnp.zeros(x.shape[:1], x.dtype)
        if self.logit_alpha is not None:
            x, log_det = self.logit(x)
        zs = []
        for s in range(self.num_scales):
            for step in self._pre(s):
                x, ld = step(x)
                log_det = log_det + ld
            if s < self.num_scales - 1:
                x = squeeze(x)
                for step in self._post(s):
                    x, ld = step(x)
                    log_det = log_det + ld
                half = x.shape[-1] // 2
                zs.append(x[..., :half])
                x = x[..., half:]
        zs.append(x)
        z = jnp.concatenate([v.reshape(v.shape[0], -1) for v in zs], axis=1)
        return z, log_det

    def inverse(self, z: Float[Array, " batch dim"]):
        """Flat latent → images: ``(x, log|det ∂x/∂z|)``."""
        _check_event("z", z, (math.prod(self.image_shape),))
        shapes = self.latent_shapes()
        parts, start = [], 0
        for shape in shapes:
            size = math.prod(shape)
            parts.append(z[:, start : start + size].reshape(z.shape[0], *shape))
            start += size
        log_det = jnp.zeros(z.shape[:1], z.dtype)
        x = parts[-1]
        for s in reversed(range(self.num_scales)):
            if s < self.num_scales - 1:
                x = jnp.concatenate([parts[s], x], axis=-1)
                for step in reversed(self._post(s)):
                    x, ld = step(x, inverse=True)
                    log_det = log_det + ld
                x = unsqueeze(x)
            for step in reversed(self._pre(s)):
                x, ld = step(x, inverse=True)
                log_det = log_det + ld
        if self.logit_alpha is not None:
            x, ld = self.logit(x, inverse=True)
            log_det = log_det + ld
        return x, log_det

    def log_prob(self, x: Float[Array, " batch h w c"]) -> Float[Array, " batch"]:
        """``log p(x)`` in nats per example over ``[0, 1]^D``."""
        z, log_det = self.forward(x)
        return standard_normal_logpdf(z) + log_det

    def __call__(self, x: Float[Array, " batch h w c"]) -> Float[Array, " batch"]:
        return self.log_prob(x)

    def sample(self, key: PRNGKeyArray, num: int, temperature: float = 1.0):
        """``num`` images ``(num, H, W, C)`` from noise of standard deviation ``temperature``."""
        check_key("key", key)
        check_int("num", num, minimum=1)
        check_positive("temperature", temperature)
        z = temperature * jax.random.normal(key, (num, math.prod(self.image_shape)))
        return self.inverse(z)[0]


def build_nll_loss(flow: nn.Module) -> Callable:
    """``loss_fn(params, key, batch) -> (mean NLL in nats, {"nll": ...})`` for continuous data.

    Examples:
        >>> flow = realnvp_2d(num_layers=2, hidden_sizes=(8,), actnorm=False)
        >>> x = jnp.zeros((4, 2))
        >>> loss, metrics = build_nll_loss(flow)(flow.init(jax.random.key(0), x), None, x)
        >>> round(float(loss), 4)  # an untrained flow starts at the identity: log 2π
        1.8379
    """
    if not isinstance(flow, nn.Module):
        raise TypeError(f"flow must be a flax Module, got {type(flow).__name__}")

    def loss_fn(params, key, batch):
        del key
        nll = -jnp.mean(flow.apply(params, batch, method="log_prob"))
        return nll, {"nll": nll}

    return loss_fn


def build_dequantized_nll_loss(flow: nn.Module, *, num_bins: int = 256) -> Callable:
    """Loss on integer images: dequantize ``(k + u)/num_bins``, return bits/dim.

    ``loss_fn(params, key, batch)`` with ``batch`` integer pixels ``(batch, H, W, C)``
    returns ``(bits/dim, {"bits_per_dim", "nll_nats"})``; the bits/dim upper-bound the
    discrete model's (Theis et al. 2016) and are the numbers image-flow papers report.

    Examples:
        >>> flow = MultiScaleFlow((4, 4, 1), num_scales=1, num_steps=1, hidden_channels=4,
        ...                       num_blocks=0)
        >>> x = jnp.zeros((2, 4, 4, 1), jnp.uint8)
        >>> params = flow.init(jax.random.key(0), x / 256.0)
        >>> bpd, m = build_dequantized_nll_loss(flow)(params, jax.random.key(1), x)
        >>> bpd.shape, sorted(m)
        ((), ['bits_per_dim', 'nll_nats'])
    """
    if not isinstance(flow, nn.Module):
        raise TypeError(f"flow must be a flax Module, got {type(flow).__name__}")
    check_int("num_bins", num_bins, minimum=2)

    def loss_fn(params, key, batch):
        y = uniform_dequantize(key, batch, num_bins=num_bins)
        nll = -jnp.mean(flow.apply(params, y, method="log_prob"))
        num_dims = math.prod(batch.shape[1:])
        bpd = nats_to_bits_per_dim(nll, num_dims, data_scale=1.0 / num_bins)
        return bpd, {"bits_per_dim": bpd, "nll_nats": nll}

    return loss_fn
