"""Latent diffusion against a Gaussian whose exact denoiser is known.

Data ``x ~ N(μ, Σ)`` pass through a frozen affine encoder ``z = A x + b``; the scaled
latents ``z' = (z - shift) · scale`` are then ``N(m, C)`` with ``m = (A μ + b - shift) ·
scale`` and ``C = scale² A Σ Aᵀ``, whose Bayes-optimal noise prediction is
``E[ε | z_t] = sqrt(1-ᾱ) (ᾱ C + (1-ᾱ) I)⁻¹ (z_t - sqrt(ᾱ) m)``. Sampling latents with it and
decoding must give back ``N(μ, Σ)``, and its loss is the exact minimum
``E_t tr(I - (1-ᾱ_t) (ᾱ_t C + (1-ᾱ_t) I)⁻¹) / d``.
"""

import doctest
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import diffusion
from dgm_jax.vae import latent_diffusion as ld
from dgm_jax.vae.vqvae import build_vqvae, vqvae_latent_fns

MU = jnp.array([1.0, -2.0])
SIGMA = jnp.array([[1.0, 0.6], [0.6, 2.0]])
A = jnp.array([[3.0, 1.0], [-1.0, 2.0]])  # invertible "encoder"
B = jnp.array([0.5, 4.0])


def encode_fn(x):
    return x @ A.T + B[None, :]


def decode_fn(z):
    return jnp.linalg.solve(A, (z - B[None, :]).T).T


def draw_data(key, n):
    return MU[None, :] + jax.random.normal(key, (n, 2)) @ jnp.linalg.cholesky(SIGMA).T


def latent_law(scaling):
    m = (A @ MU + B - scaling.shift) * scaling.scale
    return m, scaling.scale**2 * A @ SIGMA @ A.T


def exact_eps_model(schedule, m, c):
    def model_fn(z_t, t):
        ab = schedule.alpha_bars[t.astype(jnp.int32)][:, None, None]
        cov_t = ab * c[None] + (1.0 - ab) * jnp.eye(2)[None]
        centred = z_t - jnp.sqrt(ab[:, :, 0]) * m[None, :]
        return jnp.sqrt(1.0 - ab[:, :, 0]) * jnp.linalg.solve(cov_t, centred[..., None])[..., 0]

    return model_fn


@pytest.fixture(scope="module")
def scaling():
    latents = ld.encode_in_batches(encode_fn, draw_data(jax.random.key(0), 5000), batch_size=512)
    return ld.fit_latent_scaling(latents)


@pytest.mark.parametrize("center", [False, True])
def test_scaled_latents_have_unit_variance_and_decode_back(center):
    x = draw_data(jax.random.key(1), 3000)
    latents = encode_fn(x)
    scaling = ld.fit_latent_scaling(latents, center=center)
    z = ld.encode_latents(encode_fn, scaling, x)
    assert float(jnp.std(z)) == pytest.approx(1.0, rel=1e-5)
    if center:
        assert abs(float(jnp.mean(z))) < 1e-5
    else:
        assert float(scaling.shift) == 0.0
    np.testing.assert_allclose(ld.decode_latents(decode_fn, scaling, z), x, atol=1e-4)


def test_encode_in_batches_equals_one_call_with_a_ragged_last_batch():
    x = draw_data(jax.random.key(2), 103)
    np.testing.assert_allclose(
        ld.encode_in_batches(encode_fn, x, batch_size=25), encode_fn(x), rtol=1e-6
    )


def test_sampling_latents_with_the_exact_model_and_decoding_recovers_the_data_law(scaling):
    schedule = diffusion.linear_schedule(1000)
    model_fn = exact_eps_model(schedule, *latent_law(scaling))
    n = 20_000
    sample = jax.jit(
        lambda k: ld.latent_diffusion_sample(
            k, model_fn, schedule, decode_fn, scaling, (n, 2), return_latents=True
        )
    )
    x, z = sample(jax.random.key(3))
    assert x.shape == z.shape == (n, 2)
    np.testing.assert_allclose(ld.decode_latents(decode_fn, scaling, z), x, atol=1e-4)
    # Standard errors of the sample mean sqrt(Σ_ii / n) and of the sample covariance
    # sqrt((Σ_ii Σ_jj + Σ_ij²) / n); 4.5 of each. The sampler's own bias (posterior β̃
    # instead of the exact reverse variance) is O(1e-3) relative, far below.
    x = np.asarray(x, np.float64)
    sigma = np.asarray(SIGMA, np.float64)
    se_mean = np.sqrt(np.diag(sigma) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - np.asarray(MU)), 4.5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - sigma), 4.5 * se_cov)


def test_loss_of_the_exact_model_is_the_exact_minimum_and_the_encoder_is_frozen(scaling):
    schedule = diffusion.linear_schedule(1000)
    m, c = latent_law(scaling)
    model_fn = exact_eps_model(schedule, m, c)
    ab = schedule.alpha_bars[:, None, None]
    cov_t = ab * c[None] + (1.0 - ab) * jnp.eye(2)[None]
    residual = jnp.eye(2)[None] - (1.0 - ab) * jnp.linalg.inv(cov_t)  # Cov(ε | z_t)
    expected = float(jnp.mean(jnp.trace(residual, axis1=1, axis2=2)) / 2)

    @jax.jit
    def loss(key):
        # split, not fold_in(key, 1): that equals split(key)[1], ddpm_loss's noise key
        key_data, key_loss = jax.random.split(key)
        x = draw_data(key_data, 2000)
        value, metrics = ld.latent_diffusion_loss(
            model_fn, schedule, encode_fn, scaling, key_loss, x
        )
        return value, metrics["latent_std"]

    losses, stds = map(np.asarray, jax.vmap(loss)(jax.random.split(jax.random.key(4), 40)))
    # Each loss is an independent batch mean: 4 standard errors of their average.
    assert abs(losses.mean() - expected) < 4 * losses.std(ddof=1) / np.sqrt(len(losses))
    assert abs(stds.mean() - 1.0) < 0.05  # scaled latents have unit variance

    # Gradients reach the denoiser but not the frozen encoder.
    def loss_of(a, w):
        enc = lambda x: x @ a.T + B[None, :]  # noqa: E731
        x = draw_data(jax.random.key(5), 64)
        return ld.latent_diffusion_loss(
            lambda z, t: w * model_fn(z, t), schedule, enc, scaling, jax.random.key(6), x
        )[0]

    g_a, g_w = jax.grad(loss_of, argnums=(0, 1))(A, 1.0)
    np.testing.assert_array_equal(g_a, 0.0)
    assert abs(float(g_w)) > 0.0


def test_vqvae_latents_sample_and_decode_to_image_shapes():
    x = jax.random.uniform(jax.random.key(7), (8, 4, 4, 1))
    model = build_vqvae(nn.Dense(3), nn.Dense(1), num_codes=8)
    params, _ = model.init(jax.random.key(8), x)
    enc, dec = vqvae_latent_fns(model, params)
    latents = enc(x)
    assert latents.shape == (8, 4, 4, 3)
    assert dec(latents).shape == x.shape
    # decoding quantises: the decoded latents are those of the nearest codes
    np.testing.assert_allclose(
        dec(latents), model.decode(params, model.quantize(params, latents)[0])
    )
    scaling = ld.fit_latent_scaling(latents)
    schedule = diffusion.linear_schedule(20, 1e-3, 0.3)
    zero_fn = lambda z, t: jnp.zeros_like(z)  # noqa: E731
    sampler = functools.partial(diffusion.ddim_sample, num_steps=5)
    samples, z = ld.latent_diffusion_sample(
        jax.random.key(9), zero_fn, schedule, dec, scaling, (5, 4, 4, 3), sampler=sampler,
        return_latents=True,
    )  # fmt: skip
    assert samples.shape == (5, 4, 4, 1)
    assert z.shape == (5, 4, 4, 3)


def test_bad_input_is_rejected_naming_the_argument(scaling):
    schedule = diffusion.linear_schedule(10)
    zero_fn = lambda z, t: jnp.zeros_like(z)  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="scaling"):
        ld.encode_latents(encode_fn, (1.0, 2.0), jnp.ones((4, 2)))
    with pytest.raises(TypeError, match="encode_fn"):
        ld.latent_diffusion_loss(zero_fn, schedule, "encoder", scaling, key, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="latent_shape"):
        ld.latent_diffusion_sample(key, zero_fn, schedule, decode_fn, scaling, (4,))
    with pytest.raises(ValueError, match="latent_shape"):
        ld.latent_diffusion_sample(key, zero_fn, schedule, decode_fn, scaling, (0, 2))
    with pytest.raises(ValueError, match="batch_size"):
        ld.encode_in_batches(encode_fn, jnp.ones((4, 2)), batch_size=0)
    with pytest.raises(ValueError, match="latents"):
        ld.fit_latent_scaling(jnp.ones(1))
    with pytest.raises(TypeError, match="center"):
        ld.fit_latent_scaling(jnp.ones((4, 2)), center="yes")
    with pytest.raises(ValueError, match="prediction"):
        ld.latent_diffusion_loss(
            zero_fn, schedule, encode_fn, scaling, key, jnp.ones((4, 2)), prediction="score"
        )


def test_docstring_examples():
    result = doctest.testmod(ld, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
