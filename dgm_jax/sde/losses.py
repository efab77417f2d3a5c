"""Denoising score matching for score SDEs, and the noise-to-score conversion.

Training a score model ``s_θ(x, t) ≈ ∇ log p_t(x)`` on any :class:`~dgm_jax.sde.SDE`
with a Gaussian kernel ``p_0t(x_t | x_0) = N(m(t) x_0, s(t)² I)`` (Song et al. 2021,
"Score-based generative modeling through SDEs", eq. 7): with ``x_t = m x_0 + s ε`` the
kernel's score is ``−ε / s``, so

    λ(t) ‖s_θ(x_t, t) + ε / s(t)‖²

is minimised by the true score. Two weightings are offered:

* ``"noise"``: ``λ = s(t)²`` (Song et al.'s default). For a noise-predicting network
  ``ε̂_θ = −s(t) s_θ`` this is the plain ``‖ε̂_θ − ε‖²`` of DDPM (Ho et al. 2020).
* ``"likelihood"``: ``λ = g(t)²``, which makes the loss an upper bound on the negative
  log-likelihood up to a constant (Song et al. 2021, "Maximum likelihood training of
  score-based diffusion models", thm. 1).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from dgm_jax import sde
    >>> vp = sde.vp_sde()
    >>> zero_noise = lambda x, t: jnp.zeros_like(x)
    >>> loss, _ = sde.dsm_loss(zero_noise, vp, jax.random.key(0), jnp.ones((8, 2)))
    >>> score_fn = sde.score_from_noise_prediction(zero_noise, vp)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from dgm_jax._validate import check_in, check_key
from dgm_jax.sde.sdes import SDE, ScoreFn, _per_example, check_sde

__all__ = ["DSM_PREDICTIONS", "DSM_WEIGHTINGS", "dsm_loss", "score_from_noise_prediction"]

DSM_PREDICTIONS = ("epsilon", "score")
DSM_WEIGHTINGS = ("noise", "likelihood")


def score_from_noise_prediction(noise_fn: Callable[[Array, Array], Array], sde: SDE) -> ScoreFn:
    """Turn a noise predictor ``ε̂(x_t, t)`` into a score function ``−ε̂(x_t, t) / s(t)``.

    Args:
        noise_fn: ``(x (batch, *event), t (batch,)) -> ε̂ (batch, *event)``.
        sde: the SDE the network was trained on (its ``s(t)`` is used).

    Returns:
        ``score_fn(x, t)`` for the samplers and likelihoods of :mod:`dgm_jax.sde`.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> vp = vp_sde()
        >>> score_fn = score_from_noise_prediction(lambda x, t: x, vp)
        >>> score_fn(jnp.ones((2, 3)), jnp.full((2,), 0.5)).shape
        (2, 3)
    """
    check_sde(sde)
    if not callable(noise_fn):
        raise TypeError(f"noise_fn must be callable, got {type(noise_fn).__name__}")

    def score_fn(x, t):
        _, std = sde.marginal_fn(t)
        return -noise_fn(x, t) / _per_example(std, x)

    return score_fn


def dsm_loss(
    model_fn: Callable[[Array, Array], Array],
    sde: SDE,
    key: PRNGKeyArray,
    x0: Float[Array, " batch *event"],
    *,
    prediction: str = "epsilon",
    weighting: str = "noise",
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """Continuous-time denoising score matching, one draw of ``(t, ε)`` per example.

    ``t ~ U(sde.eps, sde.T)``, ``ε ~ N(0, I)``, ``x_t = m(t) x_0 + s(t) ε``; the loss is
    the mean over batch and event of ``λ(t) ‖s_θ(x_t, t) + ε / s(t)‖²``, written for the
    chosen network output without dividing by a small ``s(t)``.

    Args:
        model_fn: network ``(x_t (batch, *event), t (batch,)) -> (batch, *event)``.
        sde: forward SDE with a Gaussian kernel.
        key: PRNG key.
        x0: clean data, shape ``(batch, *event)``.
        prediction: what the network outputs: ``"epsilon"`` (the noise; turn it into a
            score with :func:`score_from_noise_prediction`) or ``"score"``.
        weighting: ``"noise"`` (``λ = s²``) or ``"likelihood"`` (``λ = g²``).

    Returns:
        ``(loss, metrics)`` with metrics ``"noise_mse"``: the unweighted mean of
        ``‖ε̂ − ε‖²``, comparable across weightings (the loss itself under ``"noise"``).

    Raises:
        ValueError: bad ``prediction``/``weighting``, ``x0`` without a batch axis, or a
            network output of the wrong shape.

    Examples:
        >>> from dgm_jax.sde import vp_sde
        >>> loss, metrics = dsm_loss(lambda x, t: jnp.zeros_like(x), vp_sde(),
        ...                          jax.random.key(0), jnp.ones((4096, 2)))
        >>> round(float(metrics["noise_mse"]), 1)  # E[ε²] = 1 for a zero prediction
        1.0
    """
    check_sde(sde)
    check_key("key", key)
    check_in("prediction", prediction, DSM_PREDICTIONS)
    check_in("weighting", weighting, DSM_WEIGHTINGS)
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must have shape (batch, *event), got shape {jnp.shape(x0)}")
    key_t, key_noise = jax.random.split(key)
    batch = x0.shape[0]
    dtype = jnp.result_type(x0)
    t = jax.random.uniform(key_t, (batch,), dtype, minval=sde.eps, maxval=sde.T)
    noise = jax.random.normal(key_noise, x0.shape, dtype)
    mean_coeff, std = sde.marginal_fn(t)
    std = _per_example(std, x0)
    x_t = _per_example(mean_coeff, x0) * x0 + std * noise
    output = model_fn(x_t, t)
    if jnp.shape(output) != x0.shape:
        raise ValueError(f"model_fn output shape {jnp.shape(output)} must equal x0's {x0.shape}")
    # s² ‖s_θ + ε/s‖² = ‖ε̂ − ε‖² with ε̂ = −s s_θ: the same residual for both outputs.
    noise_hat = output if prediction == "epsilon" else -std * output
    squared = (noise_hat - noise) ** 2
    if weighting == "likelihood":
        squared = squared * _per_example(sde.diffusion_fn(t), x0) ** 2 / std**2
    loss = jnp.mean(squared)
    return loss, {"noise_mse": jnp.mean((noise_hat - noise) ** 2)}
