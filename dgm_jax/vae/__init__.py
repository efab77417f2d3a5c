"""Latent-variable models: Gaussian mixtures by EM, VAEs, β-VAE and IWAE.

* :mod:`dgm_jax.vae.gmm`: Gaussian mixtures fitted by EM (full, diagonal, spherical
  covariances) with k-means++ initialisation and a monotone log-likelihood history.
* :mod:`dgm_jax.vae.likelihoods`: decoder likelihoods as values (Bernoulli, Gaussian,
  discretized logistic) with support checks.
* :mod:`dgm_jax.vae.vae`: reparameterisation, analytic and Monte Carlo KL, the ELBO,
  β-VAE with a capacity schedule, the IWAE objective, chunked IWAE log-likelihoods,
  traversals and interpolations.
* :mod:`dgm_jax.vae.vq`: vector quantisation (nearest codes, straight-through, codebook
  and commitment losses, EMA codebooks, dead-code restarts, perplexity).
* :mod:`dgm_jax.vae.vqvae`: the VQ-VAE as pure functions and its jit-compiled step.
* :mod:`dgm_jax.vae.latent_diffusion`: DDPM on a frozen autoencoder's scaled latents.

Networks live in :mod:`dgm_jax.nn.vae_nets`. Each submodule lists its names in
``__all__``; this package re-exports them, one import line and one ``__all__`` entry per
submodule.

Examples:
    >>> import jax
    >>> from dgm_jax import vae
    >>> x = jax.random.normal(jax.random.key(0), (300, 2))
    >>> fit = vae.fit_gmm(jax.random.key(1), x, 2, covariance_type="diag")
    >>> fit.params.means.shape
    (2, 2)
"""

from dgm_jax.vae import gmm, latent_diffusion, likelihoods, vae, vq, vqvae
from dgm_jax.vae.gmm import *  # noqa: F403
from dgm_jax.vae.latent_diffusion import *  # noqa: F403
from dgm_jax.vae.likelihoods import *  # noqa: F403
from dgm_jax.vae.vae import *  # noqa: F403
from dgm_jax.vae.vq import *  # noqa: F403
from dgm_jax.vae.vqvae import *  # noqa: F403

__all__ = [
    *gmm.__all__,
    *likelihoods.__all__,
    *vae.__all__,
    *vq.__all__,
    *vqvae.__all__,
    *latent_diffusion.__all__,
]
