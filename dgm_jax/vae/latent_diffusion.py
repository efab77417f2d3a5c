"""Latent diffusion: a DDPM trained on the latents of a frozen autoencoder, sampled and decoded.

Rombach et al. (2022), "High-Resolution Image Synthesis with Latent Diffusion Models": an
autoencoder is trained first and frozen; a diffusion model learns the distribution of its
latents ``z = E(x)``; samples are drawn in latent space and decoded, ``x = D(z)``. The
latents are rescaled to unit variance by a stored factor (the paper's ``1/σ̂``, estimated
once from a batch of training latents) so that the noise schedule of
:mod:`dgm_jax.diffusion`, built for unit-variance data, fits them. For a VQ-regularised
autoencoder the diffusion runs on the *pre-quantisation* latents and the decoder quantises
(the paper's choice); see :func:`dgm_jax.vae.vqvae_latent_fns`.

Everything here is a pure function of ``encode_fn(x) -> z`` and ``decode_fn(z) -> x``
(closing over frozen parameters), composes with ``jax.jit``, and is never jitted for you.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax import diffusion
    >>> encode_fn = lambda x: 3.0 * x  # any frozen encoder
    >>> decode_fn = lambda z: z / 3.0
    >>> x = jax.random.normal(jax.random.key(0), (512, 2))
    >>> scaling = fit_latent_scaling(encode_in_batches(encode_fn, x, batch_size=128))
    >>> schedule = diffusion.linear_schedule(100, 1e-3, 0.2)
    >>> zero_fn = lambda z, t: jnp.zeros_like(z)  # a trained network goes here
    >>> loss, metrics = latent_diffusion_loss(zero_fn, schedule, encode_fn, scaling,
    ...                                       jax.random.key(1), x)
    >>> samples = latent_diffusion_sample(jax.random.key(2), zero_fn, schedule, decode_fn,
    ...                                   scaling, (16, 2))
    >>> samples.shape
    (16, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_key
from dgm_jax.diffusion.ddpm import ancestral_sample, ddpm_loss
from dgm_jax.diffusion.schedules import DiscreteSchedule
from dgm_jax.types import Array, Float, Metrics, PRNGKeyArray

__all__ = [
    "LatentScaling",
    "decode_latents",
    "encode_in_batches",
    "encode_latents",
    "fit_latent_scaling",
    "latent_diffusion_loss",
    "latent_diffusion_sample",
]

EncodeFn = Callable[[Array], Array]
DecodeFn = Callable[[Array], Array]
SamplerFn = Callable[..., Array]  # (key, model_fn, schedule, shape) -> latents


class LatentScaling(NamedTuple):
    """Map from autoencoder latents to diffusion space: ``(z - shift) * scale``."""

    shift: Float[Array, ""]  # subtracted first (0 unless fitted with center=True)
    scale: Float[Array, ""]  # 1 / standard deviation of the shifted latents


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _check_scaling(scaling) -> None:
    if not isinstance(scaling, LatentScaling):
        raise TypeError(
            f"scaling must be a LatentScaling (see fit_latent_scaling), got "
            f"{type(scaling).__name__}"
        )


def fit_latent_scaling(
    latents: Float[Array, " num *event"], *, center: bool = False
) -> LatentScaling:
    """The scale factor ``1/σ̂`` (and optionally the shift ``μ̂``) of a set of latents.

    Rombach et al. (2022, §4.3.2 and App. G) rescale by one scalar, the inverse standard
    deviation over all latent entries of a training batch, without centring
    (``center=False``); ``center=True`` also subtracts the scalar mean.

    Args:
        latents: ``(num, *event)`` latents of training data, ``num * prod(event) >= 2``.
        center: subtract the mean before scaling.

    Returns:
        :class:`LatentScaling` with scalar ``shift`` and ``scale``.

    Examples:
        >>> s = fit_latent_scaling(jnp.array([[2.0], [-2.0]]))
        >>> float(s.scale)
        0.5
    """
    if not isinstance(center, bool):
        raise TypeError(f"center must be a bool, got {type(center).__name__}")
    latents = jnp.asarray(latents)
    if latents.ndim < 1 or latents.size < 2:
        raise ValueError(f"latents must hold at least 2 values, got shape {latents.shape}")
    if not jnp.issubdtype(latents.dtype, jnp.floating):
        raise TypeError(f"latents must have a floating dtype, got {latents.dtype}")
    shift = jnp.mean(latents) if center else jnp.zeros((), latents.dtype)
    second_moment = jnp.mean((latents - shift) ** 2)
    if not center:  # the standard deviation about the mean, as in the paper's 1/σ̂
        second_moment = second_moment - jnp.mean(latents) ** 2
    return LatentScaling(shift=shift, scale=jax.lax.rsqrt(jnp.maximum(second_moment, 1e-12)))


def encode_latents(
    encode_fn: EncodeFn, scaling: LatentScaling, x: Float[Array, " batch *data"]
) -> Float[Array, " batch *latent"]:
    """``(encode_fn(x) - shift) * scale`` with no gradient into the frozen encoder.

    Examples:
        >>> s = LatentScaling(jnp.array(1.0), jnp.array(2.0))
        >>> encode_latents(lambda x: x, s, jnp.array([[3.0]])).tolist()
        [[4.0]]
    """
    _check_callable("encode_fn", encode_fn)
    _check_scaling(scaling)
    z = jax.lax.stop_gradient(encode_fn(x))
    return (z - scaling.shift) * scaling.scale


def decode_latents(
    decode_fn: DecodeFn, scaling: LatentScaling, z: Float[Array, " batch *latent"]
) -> Float[Array, " batch *data"]:
    """``decode_fn(z / scale + shift)``, the inverse map of :func:`encode_latents`.

    Examples:
        >>> s = LatentScaling(jnp.array(1.0), jnp.array(2.0))
        >>> decode_latents(lambda z: z, s, jnp.array([[4.0]])).tolist()
        [[3.0]]
    """
    _check_callable("decode_fn", decode_fn)
    _check_scaling(scaling)
    return decode_fn(z / scaling.scale + scaling.shift)


def encode_in_batches(
    encode_fn: EncodeFn, x: Float[Array, " num *data"], *, batch_size: int
) -> Float[Array, " num *latent"]:
    """``encode_fn`` over a whole data set in fixed-size chunks (``lax.map``), e.g. to fit
    :func:`fit_latent_scaling`. The last chunk is padded with copies of the first example
    and the padding is dropped.

    Examples:
        >>> encode_in_batches(lambda x: 2 * x, jnp.arange(5.0)[:, None], batch_size=2).ravel()
        Array([0., 2., 4., 6., 8.], dtype=float32)
    """
    _check_callable("encode_fn", encode_fn)
    check_int("batch_size", batch_size, minimum=1)
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (num, ...) with num >= 1, got {x.shape}")
    num = x.shape[0]
    b = min(batch_size, num)
    chunks = -(-num // b)
    pad = chunks * b - num
    padded = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, *x.shape[1:]))], axis=0)
    z = jax.lax.map(encode_fn, padded.reshape(chunks, b, *x.shape[1:]))
    return z.reshape(chunks * b, *z.shape[2:])[:num]


def latent_diffusion_loss(
    model_fn: Callable[[Array, Array], Array],
    schedule: DiscreteSchedule,
    encode_fn: EncodeFn,
    scaling: LatentScaling,
    key: PRNGKeyArray,
    x: Float[Array, " batch *data"],
    *,
    prediction: str = "epsilon",
) -> tuple[Float[Array, ""], Metrics]:
    """The DDPM loss (:func:`dgm_jax.diffusion.ddpm_loss`) on the scaled latents of ``x``.

    The encoder is frozen (``stop_gradient``): only ``model_fn``'s parameters get gradients.
    ``metrics`` adds ``latent_std``, the standard deviation of the scaled batch latents
    (about 1 when the scaling fits).

    Args:
        model_fn: denoiser ``(z_t, t) -> output`` on latent batches.
        schedule: discrete schedule.
        encode_fn: frozen encoder ``x -> z``.
        scaling: from :func:`fit_latent_scaling`.
        key: PRNG key.
        x: data batch ``(batch, *data)``.
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.

    Returns:
        ``(loss, metrics)``, compatible with :func:`dgm_jax.train.make_step` once the
        parameters are closed over.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = LatentScaling(jnp.array(0.0), jnp.array(1.0))
        >>> loss, m = latent_diffusion_loss(lambda z, t: jnp.zeros_like(z), linear_schedule(10),
        ...                                 lambda x: x, s, jax.random.key(0), jnp.ones((4, 3)))
        >>> sorted(m)
        ['latent_std', 'mse']
    """
    _check_callable("model_fn", model_fn)
    check_key("key", key)
    z = encode_latents(encode_fn, scaling, x)
    loss, metrics = ddpm_loss(model_fn, schedule, key, z, prediction=prediction)
    return loss, {**metrics, "latent_std": jnp.std(z)}


def latent_diffusion_sample(
    key: PRNGKeyArray,
    model_fn: Callable[[Array, Array], Array],
    schedule: DiscreteSchedule,
    decode_fn: DecodeFn,
    scaling: LatentScaling,
    latent_shape: tuple[int, ...],
    *,
    sampler: SamplerFn = ancestral_sample,
    return_latents: bool = False,
) -> Array | tuple[Array, Array]:
    """Sample latents with a diffusion sampler, unscale them and decode.

    Args:
        key: PRNG key.
        model_fn: the latent denoiser ``(z_t, t) -> output``.
        schedule: the schedule it was trained with.
        decode_fn: frozen decoder ``z -> x``.
        scaling: the :class:`LatentScaling` used in training.
        latent_shape: ``(num_samples, *latent_event)``.
        sampler: ``sampler(key, model_fn, schedule, shape) -> latents``; the default is
            ancestral DDPM sampling, ``functools.partial(diffusion.ddim_sample,
            num_steps=50)`` gives DDIM; pass ``prediction=`` through a partial too.
        return_latents: also return the scaled latents.

    Returns:
        Decoded samples ``decode_fn(z / scale + shift)``, and the latents ``z`` if asked.

    Examples:
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = LatentScaling(jnp.array(0.0), jnp.array(1.0))
        >>> x = latent_diffusion_sample(jax.random.key(0), lambda z, t: jnp.zeros_like(z),
        ...                             linear_schedule(10), lambda z: z[:, :1], s, (3, 2))
        >>> x.shape
        (3, 1)
    """
    check_key("key", key)
    _check_callable("model_fn", model_fn)
    _check_callable("sampler", sampler)
    _check_scaling(scaling)
    shape = tuple(latent_shape)
    if len(shape) < 2 or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(
            f"latent_shape must be (num_samples, *event) of positive ints, got {latent_shape}"
        )
    z = sampler(key, model_fn, schedule, shape)
    x = decode_latents(decode_fn, scaling, z)
    return (x, z) if return_latents else x
