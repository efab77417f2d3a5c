"""Variational autoencoders as pure functions: ELBO, β-VAE, IWAE, likelihood evaluation.

The model is ``p(z) = N(0, I)``, ``p(x | z)`` a :class:`~dgm_jax.vae.likelihoods.Likelihood`
of the decoder output, and a diagonal Gaussian encoder ``q(z | x) = N(μ(x), diag σ(x)²)``
(Kingma & Welling, 2014; Rezende et al., 2014). Networks are passed as functions on a
batch, with parameters closed over by the caller:

* ``encoder_fn(x) -> (mean, log_scale)``: ``x`` of shape ``(batch, *event)``, both outputs
  ``(batch, latent)``;
* ``decoder_fn(z) -> out``: ``z`` of shape ``(batch, latent)``, ``out`` what the likelihood
  reads (an array or a pair of arrays of shape ``(batch, *event)``).

Objectives return ``(loss, metrics)`` for ``dgm_jax.train.make_step``: :func:`vae_loss`
(ELBO, with ``beta`` for the β-VAE of Higgins et al. 2017), :func:`capacity_vae_loss`
(``γ |KL − C(t)|`` of Burgess et al. 2018 with :func:`capacity_schedule`) and
:func:`iwae_loss` (Burda et al. 2016). :func:`iwae_log_likelihood` estimates ``log p(x)``
with thousands of importance samples drawn in chunks, through
:func:`dgm_jax.metrics.iwae_log_likelihood`.

Nothing is jit-compiled for you; all functions compose with ``jit``, ``vmap`` and
``grad``. Losses validate static shapes and, when ``x`` is concrete, its support.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax.vae import bernoulli_likelihood
    >>> encoder_fn = lambda x: (jnp.zeros((x.shape[0], 2)), jnp.zeros((x.shape[0], 2)))
    >>> decoder_fn = lambda z: jnp.zeros((z.shape[0], 4))
    >>> x = jnp.array([[0.0, 1.0, 1.0, 0.0]])
    >>> loss, metrics = vae_loss(encoder_fn, decoder_fn, bernoulli_likelihood(),
    ...                          jax.random.key(0), x)
    >>> round(float(loss), 4)  # 4 log 2, KL = 0
    2.7726
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_key, check_number, check_positive
from dgm_jax.metrics.likelihood import IWAEEstimate, logmeanexp
from dgm_jax.metrics.likelihood import iwae_log_likelihood as _iwae_estimate
from dgm_jax.types import Array, ArrayLike, Float, Metrics, PRNGKeyArray, PyTree
from dgm_jax.vae.likelihoods import Likelihood

__all__ = [
    "ELBOTerms",
    "capacity_schedule",
    "capacity_vae_loss",
    "check_latent_dim",
    "decode",
    "decode_mean",
    "diagonal_gaussian_log_prob",
    "elbo_terms",
    "encode",
    "interpolate_latents",
    "iwae_log_likelihood",
    "iwae_log_weights",
    "iwae_loss",
    "kl_diagonal_gaussians",
    "kl_monte_carlo",
    "reconstruct",
    "reparameterize",
    "sample_images",
    "standard_normal_log_prob",
    "traverse_latents",
    "vae_loss",
]

_LOG_2PI = math.log(2.0 * math.pi)

EncoderFn = Callable[[Array], tuple[Array, Array]]
DecoderFn = Callable[[Array], PyTree]


class ELBOTerms(NamedTuple):
    """Per-example terms of the evidence lower bound, each of shape ``(batch,)``."""

    elbo: Float[Array, " batch"]  # reconstruction − kl (a one-sample estimate)
    reconstruction: Float[Array, " batch"]  # log p(x | z), z ~ q(z | x)
    kl: Float[Array, " batch"]  # KL(q(z | x) || p(z)): analytic, or log q(z|x) − log p(z)


# --------------------------------------------------------------------------------------
# Gaussians
# --------------------------------------------------------------------------------------


def check_latent_dim(latent_dim: Any) -> None:
    """Raise unless ``latent_dim`` is an int ``>= 1``."""
    check_int("latent_dim", latent_dim)
    if latent_dim <= 0:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")


def reparameterize(
    key: PRNGKeyArray,
    mean: Float[Array, "*batch latent"],
    log_scale: Float[Array, "*batch latent"],
    num_samples: int | None = None,
) -> Float[Array, "*samples_batch latent"]:
    """``z = μ + σ ⊙ ε`` with ``ε ~ N(0, I)``: a sample differentiable in ``(μ, log σ)``.

    Args:
        key: PRNG key.
        mean: ``μ``, shape ``(*batch, latent)``.
        log_scale: ``log σ``, same shape.
        num_samples: ``None`` for one sample of ``mean``'s shape, or ``k`` for
            ``(k, *batch, latent)``.

    Examples:
        >>> z = reparameterize(jax.random.key(0), jnp.zeros((3, 2)), jnp.zeros((3, 2)), 5)
        >>> z.shape
        (5, 3, 2)
    """
    check_key("key", key)
    mean, log_scale = jnp.asarray(mean), jnp.asarray(log_scale)
    if mean.shape != log_scale.shape:
        raise ValueError(
            f"mean and log_scale must have the same shape, got {mean.shape} and {log_scale.shape}"
        )
    shape = mean.shape
    if num_samples is not None:
        check_int("num_samples", num_samples, minimum=1)
        shape = (num_samples, *shape)
        mean, log_scale = mean[None], log_scale[None]
    eps = jax.random.normal(key, shape, mean.dtype)
    return mean + jnp.exp(log_scale) * eps


def diagonal_gaussian_log_prob(
    z: Float[Array, "*batch latent"],
    mean: Float[Array, "*batch latent"],
    log_scale: Float[Array, "*batch latent"],
) -> Float[Array, "*batch"]:
    """``log N(z; μ, diag σ²)`` summed over the last axis.

    Examples:
        >>> round(float(diagonal_gaussian_log_prob(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))), 4)
        -1.8379
    """
    u = (z - mean) * jnp.exp(-log_scale)
    return jnp.sum(-0.5 * _LOG_2PI - log_scale - 0.5 * u**2, axis=-1)


def standard_normal_log_prob(z: Float[Array, "*batch latent"]) -> Float[Array, "*batch"]:
    """``log N(z; 0, I)`` summed over the last axis.

    Examples:
        >>> round(float(standard_normal_log_prob(jnp.zeros(2))), 4)
        -1.8379
    """
    return jnp.sum(-0.5 * _LOG_2PI - 0.5 * z**2, axis=-1)


def kl_diagonal_gaussians(
    mean: Float[Array, "*batch latent"],
    log_scale: Float[Array, "*batch latent"],
    prior_mean: ArrayLike = 0.0,
    prior_log_scale: ArrayLike = 0.0,
) -> Float[Array, "*batch"]:
    """Analytic ``KL(N(μ, diag σ²) || N(m, diag s²))`` summed over the last axis.

    ``Σ_j log(s_j/σ_j) + (σ_j² + (μ_j − m_j)²) / (2 s_j²) − ½``; with the default standard
    normal prior, ``½ Σ_j (μ_j² + σ_j² − 1 − 2 log σ_j)`` (Kingma & Welling 2014, app. B).

    Examples:
        >>> float(kl_diagonal_gaussians(jnp.zeros(3), jnp.zeros(3)))
        0.0
        >>> float(kl_diagonal_gaussians(jnp.array([1.0]), jnp.zeros(1)))
        0.5
    """
    mean, log_scale = jnp.asarray(mean), jnp.asarray(log_scale)
    prior_mean, prior_log_scale = jnp.asarray(prior_mean), jnp.asarray(prior_log_scale)
    var_ratio = jnp.exp(2.0 * (log_scale - prior_log_scale))
    sq = ((mean - prior_mean) * jnp.exp(-prior_log_scale)) ** 2
    return jnp.sum(prior_log_scale - log_scale + 0.5 * (var_ratio + sq - 1.0), axis=-1)


def kl_monte_carlo(
    key: PRNGKeyArray,
    mean: Float[Array, "*batch latent"],
    log_scale: Float[Array, "*batch latent"],
    *,
    num_samples: int = 1,
    prior_mean: ArrayLike = 0.0,
    prior_log_scale: ArrayLike = 0.0,
) -> Float[Array, "*batch"]:
    """Monte Carlo KL: the mean of ``log q(z) − log p(z)`` over ``num_samples`` ``z ~ q``.

    Unbiased for :func:`kl_diagonal_gaussians`; use it when ``q`` or ``p`` has no closed
    form.

    Examples:
        >>> kl = kl_monte_carlo(jax.random.key(0), jnp.ones(2), jnp.zeros(2), num_samples=20_000)
        >>> abs(float(kl) - 1.0) < 0.05
        True
    """
    check_int("num_samples", num_samples, minimum=1)
    z = reparameterize(key, mean, log_scale, num_samples)
    prior_mean = jnp.broadcast_to(jnp.asarray(prior_mean), mean.shape)
    prior_log_scale = jnp.broadcast_to(jnp.asarray(prior_log_scale), mean.shape)
    log_q = diagonal_gaussian_log_prob(z, mean[None], log_scale[None])
    log_p = diagonal_gaussian_log_prob(z, prior_mean[None], prior_log_scale[None])
    return jnp.mean(log_q - log_p, axis=0)


# --------------------------------------------------------------------------------------
# Encoder / decoder plumbing
# --------------------------------------------------------------------------------------


def _check_batch(x: Any, likelihood: Likelihood) -> Array:
    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a Likelihood, got {type(likelihood).__name__}")
    if jnp.ndim(x) < 2:
        raise ValueError(f"x must have shape (batch, *event), got shape {jnp.shape(x)}")
    likelihood.check_data(x)
    return jnp.asarray(x)


def encode(encoder_fn: EncoderFn, x: Float[Array, " batch *event"]) -> tuple[Array, Array]:
    """Call ``encoder_fn`` and check it returns ``(mean, log_scale)`` of shape ``(batch, latent)``.

    Raises:
        ValueError: the latent dimension is ``<= 0`` or the shapes disagree.

    Examples:
        >>> m, s = encode(lambda x: (x[:, :2], x[:, :2]), jnp.ones((3, 5)))
        >>> m.shape
        (3, 2)
    """
    out = encoder_fn(x)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"encoder_fn must return a pair (mean, log_scale), got {type(out)}")
    mean, log_scale = out
    batch = jnp.shape(x)[0]
    if (
        jnp.ndim(mean) != 2
        or jnp.shape(mean)[0] != batch
        or jnp.shape(mean) != jnp.shape(log_scale)
    ):
        raise ValueError(
            f"encoder_fn must return mean and log_scale of shape ({batch}, latent), got "
            f"{jnp.shape(mean)} and {jnp.shape(log_scale)}"
        )
    if jnp.shape(mean)[1] <= 0:
        raise ValueError(f"the latent dimension must be >= 1, got {jnp.shape(mean)[1]}")
    return mean, log_scale


def decode(decoder_fn: DecoderFn, z: Float[Array, "*lead latent"]) -> PyTree:
    """``decoder_fn`` on ``z`` with any leading axes: flattened to ``(n, latent)`` and back.

    Examples:
        >>> out = decode(lambda z: jnp.tile(z, (1, 2)), jnp.zeros((4, 3, 2)))
        >>> out.shape
        (4, 3, 4)
    """
    z = jnp.asarray(z)
    if z.ndim < 1 or z.shape[-1] <= 0:
        raise ValueError(f"z must have shape (..., latent) with latent >= 1, got {z.shape}")
    lead = z.shape[:-1]
    out = decoder_fn(z.reshape(-1, z.shape[-1]))
    return jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), out)


def decode_mean(
    decoder_fn: DecoderFn, likelihood: Likelihood, z: Float[Array, "*lead latent"]
) -> Float[Array, "*lead *event"]:
    """``E[x | z]``: the decoder's output through ``likelihood.mean``.

    Examples:
        >>> from dgm_jax.vae import bernoulli_likelihood
        >>> decode_mean(lambda z: jnp.zeros((z.shape[0], 2)), bernoulli_likelihood(),
        ...             jnp.zeros((1, 3)))
        Array([[0.5, 0.5]], dtype=float32)
    """
    return likelihood.mean(decode(decoder_fn, z))


def _log_likelihood(likelihood: Likelihood, out: PyTree, x: Array, num_lead: int) -> Array:
    """``log p(x | z)`` summed over the event axes (those after ``num_lead`` leading axes)."""
    elementwise = likelihood.log_prob(out, x)
    return jnp.sum(elementwise, axis=tuple(range(num_lead, elementwise.ndim)))


# --------------------------------------------------------------------------------------
# ELBO, β-VAE and capacity
# --------------------------------------------------------------------------------------


def elbo_terms(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Float[Array, " batch *event"],
    *,
    analytic_kl: bool = True,
) -> ELBOTerms:
    """One-sample ELBO ``log p(x | z) − KL(q(z | x) || p(z))`` per example, ``z ~ q``.

    With ``analytic_kl`` the KL is :func:`kl_diagonal_gaussians` (lower variance); without,
    it is ``log q(z | x) − log p(z)`` at the same ``z``, so ``elbo = log p(x, z) − log q(z|x)``
    and an exact posterior gives ``log p(x)`` with zero variance.

    Args:
        encoder_fn: ``x -> (mean, log_scale)``, each ``(batch, latent)``.
        decoder_fn: ``z -> out`` for the likelihood.
        likelihood: the decoder likelihood.
        key: PRNG key.
        x: data, shape ``(batch, *event)``, inside the likelihood's support.
        analytic_kl: closed-form KL (``True``) or the one-sample Monte Carlo estimate.

    Returns:
        :class:`ELBOTerms`, fields of shape ``(batch,)``.

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> enc = lambda x: (jnp.zeros((x.shape[0], 1)), jnp.zeros((x.shape[0], 1)))
        >>> t = elbo_terms(enc, lambda z: z, gaussian_likelihood(1.0), jax.random.key(0),
        ...                jnp.zeros((2, 1)))
        >>> t.kl
        Array([0., 0.], dtype=float32)
    """
    check_key("key", key)
    x = _check_batch(x, likelihood)
    mean, log_scale = encode(encoder_fn, x)
    z = reparameterize(key, mean, log_scale)
    recon = _log_likelihood(likelihood, decoder_fn(z), x, 1)
    if analytic_kl:
        kl = kl_diagonal_gaussians(mean, log_scale)
    else:
        kl = diagonal_gaussian_log_prob(z, mean, log_scale) - standard_normal_log_prob(z)
    return ELBOTerms(recon - kl, recon, kl)


def _metrics(terms: ELBOTerms) -> Metrics:
    return {
        "elbo": jnp.mean(terms.elbo),
        "reconstruction": jnp.mean(terms.reconstruction),
        "kl": jnp.mean(terms.kl),
    }


def vae_loss(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Float[Array, " batch *event"],
    *,
    beta: float = 1.0,
    analytic_kl: bool = True,
) -> tuple[Float[Array, ""], Metrics]:
    """Negative (β-)ELBO averaged over the batch: ``−E[log p(x | z)] + β KL``.

    ``beta = 1`` is the VAE; ``beta > 1`` the β-VAE of Higgins et al. (2017), which trades
    reconstruction for a more factorised posterior.

    Returns:
        ``(loss, metrics)`` with metrics ``elbo``, ``reconstruction`` and ``kl`` (batch
        means, in nats; ``elbo`` is the β = 1 bound).

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> enc = lambda x: (x, jnp.zeros_like(x))
        >>> loss, m = vae_loss(enc, lambda z: z, gaussian_likelihood(1.0), jax.random.key(0),
        ...                    jnp.ones((4, 1)), beta=2.0)
        >>> float(m["kl"])
        0.5
    """
    check_positive("beta", beta, allow_zero=True)
    terms = elbo_terms(encoder_fn, decoder_fn, likelihood, key, x, analytic_kl=analytic_kl)
    loss = jnp.mean(beta * terms.kl - terms.reconstruction)
    return loss, _metrics(terms)


def capacity_schedule(step: ArrayLike, *, max_capacity: float, num_steps: int) -> Float[Array, ""]:
    """Linearly increasing KL capacity ``C(t) = C_max · min(t / num_steps, 1)`` (Burgess 2018).

    Args:
        step: training step ``t`` (may be traced).
        max_capacity: ``C_max`` in nats, ``>= 0``.
        num_steps: steps over which ``C`` rises from 0 to ``C_max``, ``>= 1``.

    Examples:
        >>> [float(capacity_schedule(t, max_capacity=25.0, num_steps=100)) for t in (0, 50, 200)]
        [0.0, 12.5, 25.0]
    """
    check_positive("max_capacity", max_capacity, allow_zero=True)
    check_int("num_steps", num_steps, minimum=1)
    check_number("step", step)
    t = jnp.asarray(step, jnp.float32)
    return max_capacity * jnp.clip(t / num_steps, 0.0, 1.0)


def capacity_vae_loss(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Float[Array, " batch *event"],
    capacity: ArrayLike,
    *,
    gamma: float = 1000.0,
    analytic_kl: bool = True,
) -> tuple[Float[Array, ""], Metrics]:
    """β-VAE with controlled capacity: ``−E[log p(x | z)] + γ |KL − C|`` (Burgess et al., 2018).

    ``KL`` is the batch mean; ``capacity`` is ``C`` (e.g. :func:`capacity_schedule` of the
    step, passed in the batch so the loss stays a function of ``(params, key, batch)``).
    The penalty pulls the KL towards ``C`` from either side.

    Returns:
        ``(loss, metrics)``: metrics ``elbo``, ``reconstruction``, ``kl`` and ``capacity``.

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> enc = lambda x: (x, jnp.zeros_like(x))  # KL = ½ x²
        >>> x = jnp.full((4, 1), 2.0)  # KL = 2
        >>> _, m = capacity_vae_loss(enc, lambda z: z, gaussian_likelihood(1.0),
        ...                          jax.random.key(0), x, 5.0, gamma=10.0)
        >>> float(m["kl"]), float(m["capacity"])
        (2.0, 5.0)
    """
    check_positive("gamma", gamma, allow_zero=True)
    check_number("capacity", capacity)
    terms = elbo_terms(encoder_fn, decoder_fn, likelihood, key, x, analytic_kl=analytic_kl)
    kl = jnp.mean(terms.kl)
    capacity = jnp.asarray(capacity, kl.dtype)
    loss = -jnp.mean(terms.reconstruction) + gamma * jnp.abs(kl - capacity)
    return loss, _metrics(terms) | {"capacity": capacity}


# --------------------------------------------------------------------------------------
# IWAE
# --------------------------------------------------------------------------------------


def _log_weights(
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Array,
    mean: Array,
    log_scale: Array,
    num_samples: int,
) -> Float[Array, "k batch"]:
    """``log p(x, z_i) − log q(z_i | x)`` for ``num_samples`` draws ``z_i ~ q``."""
    z = reparameterize(key, mean, log_scale, num_samples)  # (k, batch, latent)
    log_px_z = _log_likelihood(likelihood, decode(decoder_fn, z), x[None], 2)
    log_q = diagonal_gaussian_log_prob(z, mean[None], log_scale[None])
    return log_px_z + standard_normal_log_prob(z) - log_q


def iwae_log_weights(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Float[Array, " batch *event"],
    num_samples: int,
) -> Float[Array, "k batch"]:
    """Log importance weights ``log w_i = log p(x, z_i) − log q(z_i | x)``, ``z_i ~ q(z | x)``.

    Args:
        encoder_fn, decoder_fn, likelihood: the model.
        key: PRNG key.
        x: data, shape ``(batch, *event)``.
        num_samples: ``k >= 1`` (the decoder sees ``k · batch`` latents at once).

    Returns:
        shape ``(k, batch)``.

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> enc = lambda x: (jnp.zeros_like(x), jnp.zeros_like(x))
        >>> iwae_log_weights(enc, lambda z: z, gaussian_likelihood(1.0), jax.random.key(0),
        ...                  jnp.zeros((3, 1)), 7).shape
        (7, 3)
    """
    check_key("key", key)
    check_int("num_samples", num_samples, minimum=1)
    x = _check_batch(x, likelihood)
    mean, log_scale = encode(encoder_fn, x)
    return _log_weights(decoder_fn, likelihood, key, x, mean, log_scale, num_samples)


def iwae_loss(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Float[Array, " batch *event"],
    *,
    num_samples: int,
) -> tuple[Float[Array, ""], Metrics]:
    """Negative IWAE bound ``−log (1/k) Σ_i w_i`` averaged over the batch (Burda et al., 2016).

    ``k = 1`` is the VAE objective with a Monte Carlo KL; the bound tightens as ``k`` grows.

    Returns:
        ``(loss, metrics)``: metrics ``iwae_bound`` (``−loss``) and ``elbo`` (the mean of
        the ``log w_i``, the one-sample ELBO at the same draws).

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> enc = lambda x: (jnp.zeros_like(x), jnp.zeros_like(x))
        >>> loss, m = iwae_loss(enc, lambda z: z, gaussian_likelihood(1.0), jax.random.key(0),
        ...                     jnp.zeros((8, 1)), num_samples=5)
        >>> sorted(m)
        ['elbo', 'iwae_bound']
    """
    lw = iwae_log_weights(encoder_fn, decoder_fn, likelihood, key, x, num_samples)
    bound = jnp.mean(logmeanexp(lw, axis=0))
    return -bound, {"iwae_bound": bound, "elbo": jnp.mean(lw)}


def iwae_log_likelihood(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    x: Float[Array, " batch *event"],
    *,
    num_samples: int = 5000,
    chunk_size: int = 500,
) -> IWAEEstimate:
    """Importance-sampled ``log p(x)`` per example with ``k = num_samples`` draws from ``q``.

    The standard test-set likelihood of VAEs (Burda et al. 2016 use ``k = 5000``). The
    encoder runs once; the ``k`` weights are computed ``chunk_size`` at a time in a
    ``lax.map`` (the decoder sees ``chunk_size · batch`` latents at once, so ``k = 5000``
    fits in memory), then :func:`dgm_jax.metrics.iwae_log_likelihood` gives the estimate
    and its delta-method standard error. The estimate is a stochastic lower bound:
    ``E[estimate] <= log p(x)``.

    Args:
        encoder_fn, decoder_fn, likelihood: the model.
        key: PRNG key.
        x: data, shape ``(batch, *event)``.
        num_samples: ``k >= 1``.
        chunk_size: samples per decoder call, ``>= 1``.

    Returns:
        :class:`~dgm_jax.metrics.IWAEEstimate` with ``log_likelihood`` and ``stderr`` of
        shape ``(batch,)``; the NLL in nats is ``-log_likelihood``.

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> enc = lambda x: (x / 2, jnp.full_like(x, 0.5 * jnp.log(0.5)))  # exact posterior
        >>> est = iwae_log_likelihood(enc, lambda z: z, gaussian_likelihood(1.0),
        ...                           jax.random.key(0), jnp.ones((1, 1)), num_samples=10,
        ...                           chunk_size=4)
        >>> round(float(est.log_likelihood[0]), 4)  # log N(1; 0, 2)
        -1.5155
    """
    check_key("key", key)
    check_int("num_samples", num_samples, minimum=1)
    check_int("chunk_size", chunk_size, minimum=1)
    x = _check_batch(x, likelihood)
    mean, log_scale = encode(encoder_fn, x)
    chunk = min(chunk_size, num_samples)
    num_chunks, remainder = divmod(num_samples, chunk)
    key_chunks, key_rest = jax.random.split(key)

    def weights(k, n):
        return _log_weights(decoder_fn, likelihood, k, x, mean, log_scale, n)

    lw = jax.lax.map(lambda k: weights(k, chunk), jax.random.split(key_chunks, num_chunks))
    lw = lw.reshape(num_chunks * chunk, x.shape[0])
    if remainder:
        lw = jnp.concatenate([lw, weights(key_rest, remainder)], axis=0)
    return _iwae_estimate(lw.T)


# --------------------------------------------------------------------------------------
# Reconstructions, samples, traversals, interpolations
# --------------------------------------------------------------------------------------


def reconstruct(
    encoder_fn: EncoderFn,
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    x: Float[Array, " batch *event"],
) -> Float[Array, " batch *event"]:
    """``E[x | z = μ(x)]``: the mean image decoded from the posterior mean.

    Examples:
        >>> from dgm_jax.vae import gaussian_likelihood
        >>> reconstruct(lambda x: (x, x), lambda z: 2 * z, gaussian_likelihood(1.0),
        ...             jnp.ones((1, 2)))
        Array([[2., 2.]], dtype=float32)
    """
    x = _check_batch(x, likelihood)
    mean, _ = encode(encoder_fn, x)
    return decode_mean(decoder_fn, likelihood, mean)


def sample_images(
    decoder_fn: DecoderFn,
    likelihood: Likelihood,
    key: PRNGKeyArray,
    num_samples: int,
    latent_dim: int,
    *,
    mean: bool = True,
) -> Float[Array, " num *event"]:
    """Decode ``z ~ N(0, I)``: the mean images (``mean=True``) or draws from ``p(x | z)``.

    Examples:
        >>> from dgm_jax.vae import bernoulli_likelihood
        >>> x = sample_images(lambda z: jnp.zeros((z.shape[0], 4)), bernoulli_likelihood(),
        ...                   jax.random.key(0), 3, 2)
        >>> x.shape
        (3, 4)
    """
    check_key("key", key)
    check_int("num_samples", num_samples, minimum=1)
    check_latent_dim(latent_dim)
    key_z, key_x = jax.random.split(key)
    z = jax.random.normal(key_z, (num_samples, latent_dim))
    out = decode(decoder_fn, z)
    return likelihood.mean(out) if mean else likelihood.sample(key_x, out)


def interpolate_latents(
    z0: Float[Array, " latent"],
    z1: Float[Array, " latent"],
    num_steps: int,
    *,
    spherical: bool = False,
) -> Float[Array, "num_steps latent"]:
    """Points from ``z0`` to ``z1``: linear, or spherical (slerp, White 2016).

    Slerp keeps the norm typical of a Gaussian prior sample along the path; it falls back to
    linear interpolation when the two directions nearly coincide.

    Examples:
        >>> interpolate_latents(jnp.zeros(2), jnp.ones(2), 3)
        Array([[0. , 0. ],
               [0.5, 0.5],
               [1. , 1. ]], dtype=float32)
    """
    check_int("num_steps", num_steps, minimum=2)
    z0, z1 = jnp.asarray(z0), jnp.asarray(z1)
    if z0.ndim != 1 or z0.shape != z1.shape or z0.shape[0] <= 0:
        raise ValueError(
            f"z0 and z1 must have the same shape (latent,) with latent >= 1, got "
            f"{z0.shape} and {z1.shape}"
        )
    t = jnp.linspace(0.0, 1.0, num_steps, dtype=z0.dtype)[:, None]
    linear = (1.0 - t) * z0[None] + t * z1[None]
    if not spherical:
        return linear
    norms = jnp.linalg.norm(z0) * jnp.linalg.norm(z1)
    cos = jnp.clip(jnp.dot(z0, z1) / jnp.maximum(norms, 1e-12), -1.0, 1.0)
    omega = jnp.arccos(cos)
    sin = jnp.sin(omega)
    safe = sin > 1e-4
    sin_safe = jnp.where(safe, sin, 1.0)
    slerp = (jnp.sin((1.0 - t) * omega) * z0[None] + jnp.sin(t * omega) * z1[None]) / sin_safe
    return jnp.where(safe, slerp, linear)


def traverse_latents(
    z: Float[Array, " latent"], dims: Sequence[int], values: ArrayLike
) -> Float[Array, "num_dims num_values latent"]:
    """Latent traversals: copies of ``z`` with coordinate ``dims[i]`` set to each value.

    Decode the result with :func:`decode_mean` for the usual traversal grid (one row per
    latent dimension, Higgins et al. 2017).

    Args:
        z: base latent, shape ``(latent,)``.
        dims: coordinates to vary, each in ``[0, latent)``.
        values: the values, shape ``(num_values,)``.

    Returns:
        shape ``(len(dims), num_values, latent)``.

    Examples:
        >>> traverse_latents(jnp.zeros(3), [2], jnp.array([-1.0, 1.0]))
        Array([[[ 0.,  0., -1.],
                [ 0.,  0.,  1.]]], dtype=float32)
    """
    z = jnp.asarray(z)
    if z.ndim != 1 or z.shape[0] <= 0:
        raise ValueError(f"z must have shape (latent,) with latent >= 1, got {z.shape}")
    values = jnp.asarray(values, z.dtype)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (num_values,), got {values.shape}")
    dims = [int(d) for d in dims]
    if not dims or any(d < 0 or d >= z.shape[0] for d in dims):
        raise ValueError(
            f"dims must be a non-empty list of indices in [0, {z.shape[0]}), got {dims}"
        )
    grid = jnp.broadcast_to(z, (len(dims), values.shape[0], z.shape[0]))
    onehot = jax.nn.one_hot(jnp.array(dims), z.shape[0], dtype=z.dtype)[:, None, :]
    return grid * (1.0 - onehot) + values[None, :, None] * onehot
