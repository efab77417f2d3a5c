"""Guidance against two Gaussian classes, whose noisy scores and classifier are exact.

Class k has prior π_k and data ``N(M_k, diag(S_k²))``. At step t the noisy class
density is ``p_t(x | k) = N(sqrt(ᾱ) M_k, ᾱ S_k² + 1 - ᾱ)``, the exact ε-prediction is
``-sqrt(1 - ᾱ) ∇ log p_t``, the unconditional one uses the mixture
``Σ_k π_k p_t(x | k)``, and the exact noisy classifier has logits
``log π_k + log p_t(x | k)``. Bayes' rule makes classifier guidance with scale 1 and
this classifier *equal* to the conditional model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from dgm_jax import diffusion

MEANS = jnp.array([[2.0, -1.0], [-1.0, 1.5]])
STDS = jnp.array([[0.5, 1.0], [1.5, 0.3]])
LOG_PRIOR = jnp.log(jnp.array([0.3, 0.7]))
NULL = 2
SCHEDULE = diffusion.linear_schedule(1000)


def class_log_densities(x, t):
    """log p_t(x | k) for each class, shape (batch, 2)."""
    ab = SCHEDULE.alpha_bars[t.astype(jnp.int32)][:, None, None]
    mean = jnp.sqrt(ab) * MEANS[None]
    var = ab * STDS[None] ** 2 + 1.0 - ab
    z = (x[:, None, :] - mean) ** 2 / var
    return -0.5 * jnp.sum(z + jnp.log(2 * jnp.pi * var), axis=-1)


def classifier_fn(x, t):
    return LOG_PRIOR[None] + class_log_densities(x, t)


def eps_from_log_density(log_density_fn, x, t):
    ab = SCHEDULE.alpha_bars[t.astype(jnp.int32)][:, None]
    score = jax.grad(lambda x_: jnp.sum(log_density_fn(x_)))(x)
    return -jnp.sqrt(1.0 - ab) * score


def cond_model_fn(x, t, labels):
    """Exact ε for class ``labels`` (0 or 1), or the unconditional mixture for NULL."""

    def log_density(x_):
        per_class = class_log_densities(x_, t)
        conditional = jnp.take_along_axis(per_class, jnp.minimum(labels, 1)[:, None], axis=-1)
        mixture = logsumexp(per_class + LOG_PRIOR[None], axis=-1, keepdims=True)
        return jnp.where((labels == NULL)[:, None], mixture, conditional)[:, 0]

    return eps_from_log_density(log_density, x, t)


def uncond_model_fn(x, t):
    return cond_model_fn(x, t, jnp.full(x.shape[:1], NULL))


def to_prediction(eps_fn, prediction):
    """Wrap an ε-network as an x̂_0- or v-network for the same data."""

    def model_fn(x, t, *labels):
        eps = eps_fn(x, t, *labels)
        ab = SCHEDULE.alpha_bars[t.astype(jnp.int32)][:, None]
        x0 = (x - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
        if prediction == "epsilon":
            return eps
        if prediction == "x0":
            return x0
        return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0

    return model_fn


def inputs(batch=64):
    x = 2.0 * jax.random.normal(jax.random.key(1), (batch, 2))
    t = jax.random.randint(jax.random.key(2), (batch,), 0, 1000).astype(jnp.float32)
    labels = jax.random.randint(jax.random.key(3), (batch,), 0, 2)
    return x, t, labels


def test_classifier_free_guidance_scales_zero_and_one_are_the_two_models():
    x, t, labels = inputs()
    cond = jax.jit(cond_model_fn)(x, t, labels)
    uncond = jax.jit(uncond_model_fn)(x, t)
    assert not np.allclose(cond, uncond)
    g0 = diffusion.classifier_free_guidance(cond_model_fn, 0.0, null_label=NULL)
    g1 = diffusion.classifier_free_guidance(cond_model_fn, 1.0, null_label=NULL)
    np.testing.assert_array_equal(jax.jit(g0)(x, t, labels), uncond)
    np.testing.assert_array_equal(jax.jit(g1)(x, t, labels), cond)

    # A traced scale takes the doubled-batch path: same values up to round-off.
    @jax.jit
    def guided(scale):
        return diffusion.classifier_free_guidance(cond_model_fn, scale, null_label=NULL)(
            x, t, labels
        )

    np.testing.assert_allclose(guided(0.0), uncond, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(guided(1.0), cond, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(guided(3.0), uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
def test_classifier_guidance_with_exact_classifier_is_the_conditional_model(prediction):
    # ∇ log p(x|y) = ∇ log p(x) + ∇ log p(y|x): scale 1 gives the exact conditional model.
    x, t, labels = inputs()
    model = to_prediction(lambda x_, t_: uncond_model_fn(x_, t_), prediction)
    conditional = jax.jit(to_prediction(cond_model_fn, prediction))(x, t, labels)
    guided = jax.jit(
        diffusion.classifier_guidance(model, classifier_fn, 1.0, SCHEDULE, prediction=prediction)
    )
    # float32 gradients of log-densities: relative round-off ~1e-5 of outputs of size ~1-10.
    np.testing.assert_allclose(guided(x, t, labels), conditional, rtol=1e-4, atol=2e-4)
    unguided = diffusion.classifier_guidance(
        model, classifier_fn, 0.0, SCHEDULE, prediction=prediction
    )
    np.testing.assert_allclose(
        jax.jit(unguided)(x, t, labels), jax.jit(model)(x, t), rtol=1e-6, atol=1e-6
    )


def test_guided_sampling_hits_the_class_mean():
    # CFG with scale 1 is the exact class-1 model, a Gaussian one: DPM-Solver++ with 25
    # quadratic steps then maps noise affinely onto (nearly) N(M_1, S_1²); the sample mean
    # of 4096 draws is within 4 standard errors S_1/√n plus the solver's ~1e-3 bias.
    n = 4096
    labels = jnp.ones(n, jnp.int32)
    guided = diffusion.classifier_free_guidance(cond_model_fn, 1.0, null_label=NULL)
    steps = np.round(np.linspace(1.0, 0.0, 25) ** 2 * 999).astype(np.int32)
    x = jax.jit(
        lambda k: diffusion.dpm_solver_pp_sample(
            k, lambda x_, t_: guided(x_, t_, labels), SCHEDULE, (n, 2), timesteps=steps
        )
    )(jax.random.key(5))
    np.testing.assert_array_less(jnp.abs(x.mean(0) - MEANS[1]), 4 * STDS[1] / np.sqrt(n) + 2e-3)


def test_drop_labels_rate():
    labels = jnp.zeros(20_000, jnp.int32)
    dropped = diffusion.drop_labels(jax.random.key(0), labels, 0.2, 10)
    assert dropped.dtype == labels.dtype
    assert set(np.unique(np.asarray(dropped)).tolist()) == {0, 10}
    # Binomial: the fraction has standard error sqrt(p(1-p)/n) ≈ 0.0028; allow 4.
    assert abs(float(jnp.mean(dropped == 10)) - 0.2) < 4 * np.sqrt(0.2 * 0.8 / 20_000)
    np.testing.assert_array_equal(diffusion.drop_labels(jax.random.key(1), labels, 0.0, 10), 0)


def test_bad_input_is_rejected():
    x, t, labels = inputs(4)
    with pytest.raises(TypeError, match="class-conditional"):
        diffusion.classifier_free_guidance(uncond_model_fn, 2.0, null_label=NULL)
    with pytest.raises(ValueError, match="guidance_scale"):
        diffusion.classifier_free_guidance(cond_model_fn, -1.0, null_label=NULL)
    with pytest.raises(TypeError, match="null_label"):
        diffusion.classifier_free_guidance(cond_model_fn, 2.0, null_label=None)
    guided = diffusion.classifier_free_guidance(cond_model_fn, 2.0, null_label=NULL)
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        guided(x, t, labels[:3])
    with pytest.raises(ValueError, match="labels must be integers of shape"):
        guided(x, t, labels.astype(jnp.float32))
    with pytest.raises(ValueError, match="guidance_scale"):
        diffusion.classifier_guidance(uncond_model_fn, classifier_fn, -1.0, SCHEDULE)
    with pytest.raises(TypeError, match="classifier_fn"):
        diffusion.classifier_guidance(uncond_model_fn, None, 1.0, SCHEDULE)
    with pytest.raises(TypeError, match="schedule"):
        diffusion.classifier_guidance(uncond_model_fn, classifier_fn, 1.0, None)
    bad_clf = diffusion.classifier_guidance(uncond_model_fn, lambda x_, t_: x_[:, 0], 1.0, SCHEDULE)
    with pytest.raises(ValueError, match="logits of shape"):
        bad_clf(x, t, labels)
    with pytest.raises(ValueError, match="p_uncond"):
        diffusion.drop_labels(jax.random.key(0), labels, 1.5, NULL)
    with pytest.raises(ValueError, match="labels must be a 1-D integer"):
        diffusion.drop_labels(jax.random.key(0), x, 0.1, NULL)
