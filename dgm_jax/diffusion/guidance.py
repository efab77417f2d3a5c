"""Classifier-free and classifier guidance for class-conditional diffusion models.

A class-conditional network is ``cond_model_fn(x_t, t, labels) -> output`` on a batch,
with ``labels`` integer classes of shape ``(batch,)`` and one reserved *null label*
(by convention ``num_classes``) meaning "no class": the unconditional model. Train it
with :func:`drop_labels` (condition dropout) and sample with
:func:`classifier_free_guidance`, which returns a guided network with the same
signature; bind the labels to get a ``model_fn(x_t, t)`` for any sampler::

    guided_fn = classifier_free_guidance(cond_model_fn, 3.0, null_label=10)
    x = ddim_sample(key, lambda x, t: guided_fn(x, t, labels), schedule, shape, num_steps=50)

Guidance-scale convention (used by both guidance kinds here): ``w = 0`` is the
unconditional model, ``w = 1`` the conditional one, ``w > 1`` extrapolates beyond it
(Ho & Salimans 2022 write ``(1 + w')`` with ``w' = w - 1``). Because ε, x̂_0 and v are
affine in each other for a fixed ``x_t`` with the same coefficients, guiding any
parameterisation's output is the same as guiding ε.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_in, check_int, check_key, check_positive, check_probability
from dgm_jax.diffusion.ddpm import PREDICTIONS, ModelFn, _check_schedule, _expand
from dgm_jax.diffusion.schedules import DiscreteSchedule
from dgm_jax.types import Array, Int, PRNGKeyArray

__all__ = [
    "CondModelFn",
    "classifier_free_guidance",
    "classifier_guidance",
    "drop_labels",
]

CondModelFn = Callable[[Array, Array, Array], Array]


def _num_positional(fn: Callable) -> int | None:
    """The number of positional parameters ``fn`` accepts, or None if unbounded/unknown."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds for p in params)


def _check_conditional(name: str, fn: Callable) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    n = _num_positional(fn)
    if n is not None and n < 3:
        raise TypeError(
            f"{name} must be a class-conditional model (x_t, t, labels) -> output, but it "
            f"takes {n} positional arguments: guidance needs a model trained with class "
            "labels (and a null label for classifier-free guidance)"
        )


def _check_labels(labels: Array, batch: int) -> None:
    if jnp.shape(labels) != (batch,) or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"labels must be integers of shape ({batch},), got shape {jnp.shape(labels)} "
            f"and dtype {jnp.result_type(labels)}"
        )


def drop_labels(
    key: PRNGKeyArray, labels: Int[Array, " batch"], p_uncond: float, null_label: int
) -> Int[Array, " batch"]:
    """Replace each label by ``null_label`` with probability ``p_uncond`` (condition dropout).

    Training on the result teaches one network both the conditional and the
    unconditional model (Ho & Salimans 2022, Alg. 1; ``p_uncond`` of 0.1-0.2 is usual).

    Args:
        key: PRNG key.
        labels: integer classes, shape ``(batch,)``.
        p_uncond: probability of dropping each label, in ``[0, 1]``.
        null_label: the reserved "no class" label (conventionally ``num_classes``).

    Returns:
        Labels of the same shape and dtype.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> drop_labels(jax.random.key(0), jnp.arange(4), 1.0, 10).tolist()
        [10, 10, 10, 10]
    """
    check_key("key", key)
    check_probability("p_uncond", p_uncond)
    check_int("null_label", null_label, minimum=0)
    if jnp.ndim(labels) != 1 or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got shape {jnp.shape(labels)} "
            f"and dtype {jnp.result_type(labels)}"
        )
    drop = jax.random.bernoulli(key, p_uncond, jnp.shape(labels))
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)


def classifier_free_guidance(
    cond_model_fn: CondModelFn, guidance_scale: float, *, null_label: int
) -> CondModelFn:
    """Classifier-free guidance (Ho & Salimans 2022): ``out_u + w (out_c - out_u)``.

    ``out_c = cond_model_fn(x_t, t, labels)`` and ``out_u = cond_model_fn(x_t, t, null)``
    are computed in one call on a doubled batch. ``w = 0`` gives the unconditional
    model and ``w = 1`` the conditional one exactly (those two cases skip the other
    evaluation); larger ``w`` trades diversity for fidelity.

    Args:
        cond_model_fn: class-conditional network ``(x_t, t, labels) -> output`` that
            was trained with condition dropout to ``null_label``.
        guidance_scale: ``w >= 0``; may be a traced value (then both halves are
            always evaluated).
        null_label: the label meaning "unconditional" (conventionally ``num_classes``).

    Returns:
        ``guided_fn(x_t, t, labels) -> output`` of the same parameterisation.

    Raises:
        TypeError: if ``cond_model_fn`` does not take labels (an unconditional model).

    Examples:
        >>> import jax.numpy as jnp
        >>> cond_fn = lambda x, t, y: x * (1.0 + (y == 1)[:, None])
        >>> guided = classifier_free_guidance(cond_fn, 2.0, null_label=2)
        >>> guided(jnp.ones((2, 3)), jnp.zeros(2), jnp.array([0, 1]))[:, 0].tolist()
        [1.0, 3.0]
    """
    _check_conditional("cond_model_fn", cond_model_fn)
    check_positive("guidance_scale", guidance_scale, allow_zero=True)
    check_int("null_label", null_label, minimum=0)
    static_scale = None if not isinstance(guidance_scale, (int, float)) else float(guidance_scale)

    def guided_fn(x_t: Array, t: Array, labels: Array) -> Array:
        batch = x_t.shape[0]
        _check_labels(labels, batch)
        null = jnp.full((batch,), null_label, jnp.result_type(labels))
        if static_scale == 0.0:
            return cond_model_fn(x_t, t, null)
        if static_scale == 1.0:
            return cond_model_fn(x_t, t, labels)
        both = cond_model_fn(
            jnp.concatenate([x_t, x_t]),
            jnp.concatenate([t, t]),
            jnp.concatenate([labels, null]),
        )
        out_c, out_u = both[:batch], both[batch:]
        return out_u + guidance_scale * (out_c - out_u)

    return guided_fn


def classifier_guidance(
    model_fn: ModelFn,
    classifier_fn: Callable[[Array, Array], Array],
    guidance_scale: float,
    schedule: DiscreteSchedule,
    *,
    prediction: str = "epsilon",
) -> CondModelFn:
    """Classifier guidance (Dhariwal & Nichol 2021, Alg. 2): shift ε by the classifier's gradient.

    ``ε̃ = ε̂(x_t) - sqrt(1 - ᾱ_t) w ∇_{x_t} log p_φ(y | x_t, t)``, i.e. the score of
    ``p(x_t) p_φ(y | x_t)^w``. With ``w = 1`` and the exact noisy classifier this is the
    exact conditional model, by Bayes' rule ``∇ log p(x_t | y) = ∇ log p(x_t) +
    ∇ log p(y | x_t)``; ``w = 0`` is the unconditional model. For ``"x0"`` and ``"v"``
    networks the output is converted to ε, shifted and converted back.

    Args:
        model_fn: unconditional network ``(x_t, t) -> output`` on a batch.
        classifier_fn: noise-conditional classifier ``(x_t, t) -> logits`` of shape
            ``(batch, num_classes)``, trained on noisy inputs at the same steps.
        guidance_scale: ``w >= 0``.
        schedule: the discrete schedule both networks were trained with.
        prediction: ``"epsilon"``, ``"x0"`` or ``"v"``.

    Returns:
        ``guided_fn(x_t, t, labels) -> output`` of the same parameterisation as ``model_fn``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from dgm_jax.diffusion import linear_schedule
        >>> s = linear_schedule(100)
        >>> eps_fn = lambda x, t: jnp.zeros_like(x)
        >>> clf = lambda x, t: jnp.stack([x[:, 0], -x[:, 0]], axis=-1)
        >>> guided = classifier_guidance(eps_fn, clf, 1.0, s)
        >>> guided(jnp.ones((2, 2)), jnp.full(2, 99.0), jnp.array([0, 1])).shape
        (2, 2)
    """
    for name, fn in (("model_fn", model_fn), ("classifier_fn", classifier_fn)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    check_positive("guidance_scale", guidance_scale, allow_zero=True)
    _check_schedule(schedule)
    check_in("prediction", prediction, PREDICTIONS)

    def guided_fn(x_t: Array, t: Array, labels: Array) -> Array:
        batch = x_t.shape[0]
        _check_labels(labels, batch)

        def log_prob_sum(x):
            logits = classifier_fn(x, t)
            if logits.ndim != 2 or logits.shape[0] != batch:
                raise ValueError(
                    f"classifier_fn must return logits of shape ({batch}, num_classes), "
                    f"got {logits.shape}"
                )
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            return jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))

        # Examples are independent, so the gradient of the sum is per-example.
        grad = jax.grad(log_prob_sum)(x_t)
        output = model_fn(x_t, t)
        ab = _expand(schedule.alpha_bars[t.astype(jnp.int32)], x_t)
        sa, s1a = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
        shift = -s1a * guidance_scale * grad  # change of ε
        if prediction == "epsilon":
            return output + shift
        if prediction == "x0":  # x̂_0 = (x_t - s1a ε)/sa
            return output - s1a / sa * shift
        return output + shift / sa  # v = (ε - s1a x_t)/sa at fixed x_t

    return guided_fn
