"""VQ-VAE: an encoder, a vector-quantised bottleneck and a decoder, as pure functions.

:func:`build_vqvae` closes over the Flax encoder and decoder (any pair mapping images to
``(B, h, w, D)`` latents and back, e.g. :class:`dgm_jax.nn.VQEncoder` /
:class:`dgm_jax.nn.VQDecoder`) and returns a :class:`VQVAE` NamedTuple of pure functions
(van den Oord et al. 2017):

* ``loss(params, key, batch) -> (loss, metrics)``: ``mean (x̂ - x)² + codebook + β ·
  commitment``, compatible with :func:`dgm_jax.train.make_step`. With an EMA codebook
  (``decay`` set) the codebook term is dropped and the codebook gets no gradient; it is
  moved by ``update`` instead.
* ``update(key, params, vq_state, z, indices) -> (params, vq_state, num_restarted)``: the
  EMA codebook update (:func:`~dgm_jax.vae.vq.ema_update`) and dead-code restarts, written
  into ``params["codebook"]``.

Parameters are ``{"encoder": ..., "decoder": ..., "codebook": (K, D)}``, the EMA
statistics a separate :class:`~dgm_jax.vae.vq.VQState`. :func:`make_vqvae_step` fuses the
gradient step and the codebook update into one jit-compiled
``step(state, key, batch) -> (state, metrics)`` over a :class:`VQVAETrainState`, which
:func:`dgm_jax.train.fit` drives, checkpoints and resumes like any other state.

Examples:
    Any pair of modules works; per-pixel dense layers keep this example small (for MNIST use
    ``VQEncoder()``/``VQDecoder()``, 28×28 → 7×7 latents):

    >>> import jax, jax.numpy as jnp, optax, flax.linen as nn
    >>> model = build_vqvae(nn.Dense(4), nn.Dense(1), num_codes=16)
    >>> x = jax.random.uniform(jax.random.key(2), (2, 5, 5, 1))
    >>> params, vq_state = model.init(jax.random.key(0), x)
    >>> params["codebook"].shape
    (16, 4)
    >>> opt = optax.adam(1e-3)
    >>> step = make_vqvae_step(model, opt)
    >>> state, metrics = step(init_vqvae_train_state(params, vq_state, opt), jax.random.key(1), x)
    >>> sorted(metrics)[:3]
    ['code_usage', 'codebook_loss', 'commitment_loss']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dgm_jax._validate import check_int, check_key, check_number, check_positive, is_traced
from dgm_jax.types import Array, Float, Int, Metrics, Params, PRNGKeyArray
from dgm_jax.vae.vq import (
    VQState,
    code_counts,
    code_usage,
    codebook_loss,
    commitment_loss,
    ema_update,
    init_vq_state,
    perplexity,
    quantize,
    restart_dead_codes,
    straight_through,
)

__all__ = [
    "VQVAE",
    "VQVAETrainState",
    "build_vqvae",
    "encode_indices",
    "init_vqvae_train_state",
    "make_vqvae_step",
    "vqvae_latent_fns",
]


class VQVAE(NamedTuple):
    """The pure functions of a VQ-VAE (see the module docstring)."""

    init: Callable[[PRNGKeyArray, Array], tuple[Params, VQState]]  # (key, x) -> params, state
    encode: Callable[[Params, Array], Array]  # (params, x) -> pre-quantisation z_e (B,h,w,D)
    quantize: Callable[[Params, Array], tuple[Array, Array]]  # (params, z) -> (z_q, indices)
    decode: Callable[[Params, Array], Array]  # (params, z_q) -> reconstruction (B,H,W,C)
    reconstruct: Callable[[Params, Array], Array]  # (params, x) -> decode(quantize(encode(x)))
    loss: Callable[[Params, PRNGKeyArray, Array], tuple[Array, Metrics]]
    loss_and_codes: Callable  # (params, key, x) -> (loss, (metrics, z_e, indices))
    update: Callable  # (key, params, vq_state, z_e, indices) -> (params, vq_state, restarted)
    num_codes: int  # K
    beta: float  # commitment weight
    decay: float | None  # EMA decay, None for a gradient-trained codebook
    dead_after: int  # restart codes unused this many updates (0: never)


class VQVAETrainState(NamedTuple):
    """A :class:`~dgm_jax.train.TrainState` plus the EMA codebook statistics."""

    step: jax.Array  # int32 scalar: completed updates
    params: Params  # {"encoder", "decoder", "codebook"}
    opt_state: Any  # optax state of params
    vq_state: VQState  # EMA cluster sizes and sums, unused-step counters


def build_vqvae(
    encoder: nn.Module,
    decoder: nn.Module,
    *,
    num_codes: int,
    beta: float = 0.25,
    decay: float | None = 0.99,
    epsilon: float = 1e-5,
    dead_after: int = 0,
) -> VQVAE:
    """Build a VQ-VAE from a Flax encoder and decoder.

    Args:
        encoder: module ``x (B, H, W, C) -> z_e (B, h, w, D)``.
        decoder: module ``z_q (B, h, w, D) -> x̂ (B, H, W, C)``.
        num_codes: codebook size K >= 1.
        beta: commitment weight β >= 0 (0.25 in the paper).
        decay: EMA decay γ in ``[0, 1)`` for an EMA codebook (0.99 in the paper), or
            ``None`` to learn the codebook by the gradient of the codebook loss.
        epsilon: Laplace smoothing of the EMA cluster sizes.
        dead_after: restart codes unused for this many consecutive updates (0: never).

    Returns:
        A :class:`VQVAE`. ``init(key, x)`` draws the codebook from ``K`` random encoder
        outputs of ``x`` (plus small noise), a data-dependent start that avoids dead codes.

    Raises:
        ValueError: ``num_codes < 1``, ``beta < 0``, ``decay`` outside ``[0, 1)``, ...

    Examples:
        >>> from dgm_jax.nn import VQDecoder, VQEncoder
        >>> model = build_vqvae(VQEncoder(code_dim=8), VQDecoder(), num_codes=32)  # MNIST
        >>> model.decay
        0.99
    """
    for name, module in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name} must be a flax.linen Module, got {type(module).__name__}")
    check_int("num_codes", num_codes, minimum=1)
    check_positive("beta", beta, allow_zero=True)
    if decay is not None:
        check_number("decay", decay)
        if is_traced(decay) or not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"decay must lie in [0, 1) or be None, got {decay!r}")
    check_positive("epsilon", epsilon)
    check_int("dead_after", dead_after, minimum=0)
    use_ema = decay is not None

    def encode(params, x):
        return encoder.apply(params["encoder"], x)

    def decode(params, z_q):
        return decoder.apply(params["decoder"], z_q)

    def quantize_fn(params, z):
        return quantize(params["codebook"], z)

    def reconstruct(params, x):
        return decode(params, quantize_fn(params, encode(params, x))[0])

    def init(key, x):
        check_key("key", key)
        key_enc, key_dec, key_pick, key_noise = jax.random.split(key, 4)
        enc_params = encoder.init(key_enc, x)
        z = encoder.apply(enc_params, x)
        if z.ndim < 2:
            raise ValueError(f"the encoder must return (batch, ..., code_dim), got {z.shape}")
        flat = z.reshape(-1, z.shape[-1])
        pick = jax.random.randint(key_pick, (num_codes,), 0, flat.shape[0])
        spread = jnp.std(flat) + 1e-6
        noise = 0.01 * spread * jax.random.normal(key_noise, (num_codes, flat.shape[1]))
        codebook = jnp.take(flat, pick, axis=0) + noise
        params = {
            "encoder": enc_params,
            "decoder": decoder.init(key_dec, jnp.zeros_like(z)),
            "codebook": codebook,
        }
        return params, init_vq_state(codebook)

    def loss_and_codes(params, key, x):
        del key  # the VQ-VAE loss is deterministic
        codebook = params["codebook"]
        if use_ema:
            codebook = jax.lax.stop_gradient(codebook)
        z = encode(params, x)
        if z.shape[-1] != codebook.shape[1]:
            raise ValueError(
                f"the encoder's code_dim {z.shape[-1]} does not match the codebook's "
                f"{codebook.shape[1]}"
            )
        z_q, indices = quantize(codebook, z)
        x_hat = decode(params, straight_through(z, z_q))
        if x_hat.shape != x.shape:
            raise ValueError(f"the decoder returned shape {x_hat.shape}, expected {x.shape}")
        recon = jnp.mean((x_hat - x) ** 2)
        cb_loss = codebook_loss(z, z_q)
        commit = commitment_loss(z, z_q)
        loss = recon + beta * commit + (0.0 if use_ema else cb_loss)
        counts = code_counts(indices, num_codes)
        metrics = {
            "recon_mse": recon,
            "codebook_loss": cb_loss,
            "commitment_loss": commit,
            "perplexity": perplexity(counts),
            "code_usage": code_usage(counts),
        }
        return loss, (metrics, z, indices)

    def loss(params, key, x):
        value, (metrics, _, _) = loss_and_codes(params, key, x)
        return value, metrics

    def update(key, params, vq_state, z, indices):
        codebook = params["codebook"]
        new_codebook, vq_state = ema_update(
            vq_state, z, indices, decay=decay if use_ema else 0.0, epsilon=epsilon
        )
        if use_ema:
            codebook = new_codebook
        else:  # gradient-trained codebook: the state only tracks usage
            vq_state = vq_state._replace(ema_sums=codebook, ema_counts=jnp.ones(num_codes))
        restarted = jnp.zeros((), jnp.int32)
        if dead_after > 0:
            codebook, vq_state, restarted = restart_dead_codes(
                key, codebook, vq_state, z, dead_after=dead_after
            )
        return {**params, "codebook": codebook}, vq_state, restarted

    return VQVAE(
        init=init,
        encode=encode,
        quantize=quantize_fn,
        decode=decode,
        reconstruct=reconstruct,
        loss=loss,
        loss_and_codes=loss_and_codes,
        update=update,
        num_codes=num_codes,
        beta=float(beta),
        decay=None if decay is None else float(decay),
        dead_after=int(dead_after),
    )


def init_vqvae_train_state(
    params: Params, vq_state: VQState, optimizer: optax.GradientTransformation
) -> VQVAETrainState:
    """Step 0 of a VQ-VAE run: ``params``, a fresh optimizer state and ``vq_state``.

    Examples:
        >>> import optax
        >>> from dgm_jax.vae.vq import init_vq_state
        >>> cb = jnp.zeros((4, 2))
        >>> s = init_vqvae_train_state({"codebook": cb}, init_vq_state(cb), optax.sgd(0.1))
        >>> int(s.step)
        0
    """
    if not isinstance(vq_state, VQState):
        raise TypeError(f"vq_state must be a VQState, got {type(vq_state).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    return VQVAETrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        vq_state=vq_state,
    )


def make_vqvae_step(
    model: VQVAE, optimizer: optax.GradientTransformation, *, donate: bool = True
) -> Callable[[VQVAETrainState, PRNGKeyArray, Array], tuple[VQVAETrainState, Metrics]]:
    """A jit-compiled VQ-VAE step: gradient update, then EMA codebook update and restarts.

    The encoder outputs and codes of the gradient step's forward pass feed the codebook
    update, so each step runs the encoder once. Like :func:`dgm_jax.train.make_step` this
    factory jit-compiles (it builds the unit a training loop calls).

    Args:
        model: from :func:`build_vqvae`.
        optimizer: optax optimizer for ``params`` (with an EMA codebook its update of
            ``params["codebook"]`` is overwritten by the EMA codebook).
        donate: donate the input state's buffers.

    Returns:
        ``step(state, key, batch) -> (state, metrics)`` with metrics ``loss``,
        ``grad_norm``, ``recon_mse``, ``codebook_loss``, ``commitment_loss``,
        ``perplexity``, ``code_usage`` (batch statistics) and ``num_restarted``.
    """
    if not isinstance(model, VQVAE):
        raise TypeError(f"model must be a VQVAE (see build_vqvae), got {type(model).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )

    def train_step(state: VQVAETrainState, key: jax.Array, batch: Array):
        key_loss, key_restart = jax.random.split(key)
        grad_fn = jax.value_and_grad(model.loss_and_codes, has_aux=True)
        (loss, (metrics, z, indices)), grads = grad_fn(state.params, key_loss, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params, vq_state, restarted = model.update(key_restart, params, state.vq_state, z, indices)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            **metrics,
            "num_restarted": restarted.astype(jnp.float32),
        }
        new_state = VQVAETrainState(state.step + 1, params, opt_state, vq_state)
        return new_state, metrics

    jitted = jax.jit(train_step, donate_argnums=(0,) if donate else ())

    def step(state, key, batch):
        if not isinstance(state, VQVAETrainState):
            raise TypeError(
                f"state must be a VQVAETrainState (see init_vqvae_train_state), "
                f"got {type(state).__name__}"
            )
        return jitted(state, key, batch)

    step.jitted = jitted
    return step


def encode_indices(
    model: VQVAE, params: Params, x: Float[Array, "batch H W C"]
) -> Int[Array, "batch h w"]:
    """The code indices of a batch of images (for code-usage histograms)."""
    return model.quantize(params, model.encode(params, x))[1]


def vqvae_latent_fns(
    model: VQVAE, params: Params
) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """``(encode_fn, decode_fn)`` of a frozen VQ-VAE for latent diffusion.

    ``encode_fn`` returns the pre-quantisation latents ``z_e``; ``decode_fn`` quantises
    to the nearest codes and decodes (Rombach et al. 2022 put the quantiser in the decoder).

    Examples:
        >>> import flax.linen as nn
        >>> model = build_vqvae(nn.Dense(4), nn.Dense(1), num_codes=8)
        >>> params, _ = model.init(jax.random.key(0), jnp.ones((1, 5, 5, 1)))
        >>> encode_fn, decode_fn = vqvae_latent_fns(model, params)
        >>> decode_fn(encode_fn(jnp.zeros((2, 5, 5, 1)))).shape
        (2, 5, 5, 1)
    """
    if not isinstance(model, VQVAE):
        raise TypeError(f"model must be a VQVAE (see build_vqvae), got {type(model).__name__}")

    def encode_fn(x):
        return model.encode(params, x)

    def decode_fn(z):
        return model.decode(params, model.quantize(params, z)[0])

    return encode_fn, decode_fn
