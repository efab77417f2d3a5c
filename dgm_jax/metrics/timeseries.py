"""Time-series metrics: discriminative score, predictive score, Fréchet distance of an encoder.

The first two follow TimeGAN (Yoon, Jarrett & van der Schaar, 2019, §5):

* :func:`discriminative_score` — train a small GRU classifier (post hoc) to tell real
  from synthetic sequences; report ``|accuracy - 0.5|`` on held-out sequences
  (0 = indistinguishable, 0.5 = perfectly separable).
* :func:`predictive_score` — "train on synthetic, test on real": a GRU trained on the
  synthetic sequences to predict each next step; report its mean absolute error on the
  real sequences (lower is better; compare with the same model trained on real data).
* :func:`frechet_ts_distance` — train the same GRU as a next-step predictor on the *real*
  sequences, then take the Fréchet distance between Gaussians fitted to its final hidden
  states on real and synthetic sequences (the sequence analogue of FID).

Each trains its network inside the function, for ``num_steps`` Adam steps with
minibatches drawn from ``key`` in one ``lax.scan``: a pure function of the key,
jit-compatible with the keyword settings static. Keep the networks tiny; these are
relative scores, comparable only at equal settings.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dgm_jax._validate import check_floating, check_int, check_key, check_ndim, check_positive
from dgm_jax.metrics.features import frechet_distance_from_features
from dgm_jax.types import Array, Float, PRNGKeyArray, Scalar

__all__ = ["GRUHead", "discriminative_score", "frechet_ts_distance", "predictive_score"]


class GRUHead(nn.Module):
    """A GRU over ``(batch, time, channels)`` and a linear head on every step's state."""

    hidden: int  # GRU state size
    out: int  # head outputs per step

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        states = nn.RNN(nn.GRUCell(features=self.hidden))(x)  # (batch, time, hidden)
        return nn.Dense(self.out)(states), states


def _check_sequences(real: Any, fake: Any) -> None:
    for name, a in (("real", real), ("fake", fake)):
        check_ndim(name, a, 3)
        check_floating(name, a)
        if a.shape[0] < 2 or a.shape[1] < 2:
            raise ValueError(
                f"{name} must have shape (num >= 2, time >= 2, channels), got {tuple(a.shape)}"
            )
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            "real and fake must have the same (time, channels), got shapes "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )


def _check_settings(key, hidden, num_steps, batch_size, learning_rate) -> None:
    check_key("key", key)
    check_int("hidden", hidden, minimum=1)
    check_int("num_steps", num_steps, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_positive("learning_rate", learning_rate)


def _train(key, model, loss_fn, data, num_steps, batch_size, learning_rate):
    """Adam on minibatches of the pytree ``data`` (leading axis = examples)."""
    n = jax.tree.leaves(data)[0].shape[0]
    init_key, loop_key = jax.random.split(key)
    sample = jax.tree.map(lambda a: a[:1], data)
    params = model.init(init_key, sample[0] if isinstance(sample, tuple) else sample)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (min(batch_size, n),), 0, n)
        batch = jax.tree.map(lambda a: a[idx], data)
        loss, grads = jax.value_and_grad(loss_fn)(p, batch)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), _ = jax.lax.scan(step, (params, opt_state), jax.random.split(loop_key, num_steps))
    return params


def discriminative_score(
    key: PRNGKeyArray,
    real: Float[Array, "n time channels"],
    fake: Float[Array, "m time channels"],
    *,
    hidden: int = 16,
    num_steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    train_fraction: float = 0.8,
) -> Scalar:
    """``|accuracy - 0.5|`` of a post-hoc GRU classifier of real vs synthetic (TimeGAN).

    ``min(n, m)`` sequences of each kind are used (balanced classes), shuffled, and split
    into ``train_fraction`` for training and the rest for the held-out accuracy.

    Args:
        key: PRNG key (shuffle, initialisation, minibatches).
        real: ``(n, time, channels)`` real sequences.
        fake: ``(m, time, channels)`` synthetic sequences.
        hidden: GRU state size.
        num_steps: Adam steps.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.
        train_fraction: share of sequences used for training, in (0, 1).

    Returns:
        Scalar in [0, 0.5].

    Examples:
        >>> import jax
        >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        >>> real = jax.random.normal(k1, (64, 8, 1))
        >>> fake = jax.random.normal(k2, (64, 8, 1)) + 3.0
        >>> float(discriminative_score(k3, real, fake, num_steps=50)) > 0.4
        True
    """
    _check_settings(key, hidden, num_steps, batch_size, learning_rate)
    _check_sequences(real, fake)
    check_positive("train_fraction", train_fraction)
    if train_fraction >= 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    num = min(real.shape[0], fake.shape[0])
    num_train = round(train_fraction * 2 * num)
    if num_train < 1 or num_train >= 2 * num:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split of {2 * num}")
    kperm, ktrain = jax.random.split(key)
    x = jnp.concatenate([real[:num], fake[:num]], axis=0)
    y = jnp.concatenate([jnp.ones((num,)), jnp.zeros((num,))])
    perm = jax.random.permutation(kperm, 2 * num)
    x, y = x[perm], y[perm]
    model = GRUHead(hidden=hidden, out=1)

    def loss_fn(p, batch):
        xb, yb = batch
        logits = model.apply(p, xb)[0][:, -1, 0]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, yb))

    params = _train(
        ktrain,
        model,
        loss_fn,
        (x[:num_train], y[:num_train]),
        num_steps,
        batch_size,
        learning_rate,
    )
    logits = model.apply(params, x[num_train:])[0][:, -1, 0]
    accuracy = jnp.mean((logits > 0).astype(y.dtype) == y[num_train:])
    return jnp.abs(accuracy - 0.5)


def _next_step_model(key, train_seqs, hidden, num_steps, batch_size, learning_rate):
    channels = train_seqs.shape[-1]
    model = GRUHead(hidden=hidden, out=channels)

    def loss_fn(p, xb):
        pred = model.apply(p, xb[:, :-1])[0]
        return jnp.mean(jnp.abs(pred - xb[:, 1:]))

    params = _train(key, model, loss_fn, train_seqs, num_steps, batch_size, learning_rate)
    return model, params


def predictive_score(
    key: PRNGKeyArray,
    real: Float[Array, "n time channels"],
    fake: Float[Array, "m time channels"],
    *,
    hidden: int = 16,
    num_steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
) -> Scalar:
    """Train-on-synthetic, test-on-real next-step mean absolute error (TimeGAN).

    A GRU reads ``x[:t]`` and predicts ``x[t]`` (all channels) for ``t = 1 … T-1``; it
    is trained on ``fake`` and evaluated on all of ``real``.

    Args:
        key: PRNG key.
        real: ``(n, time, channels)`` real sequences (test set).
        fake: ``(m, time, channels)`` synthetic sequences (training set).
        hidden: GRU state size.
        num_steps: Adam steps.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.

    Returns:
        Scalar mean absolute error on ``real``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> t = jnp.linspace(0, 6, 16)
        >>> waves = jnp.sin(t[None, :, None] + jnp.linspace(0, 3, 32)[:, None, None])
        >>> float(predictive_score(jax.random.key(0), waves, waves, num_steps=200)) < 0.2
        True
    """
    _check_settings(key, hidden, num_steps, batch_size, learning_rate)
    _check_sequences(real, fake)
    model, params = _next_step_model(key, fake, hidden, num_steps, batch_size, learning_rate)
    pred = model.apply(params, real[:, :-1])[0]
    return jnp.mean(jnp.abs(pred - real[:, 1:]))


def frechet_ts_distance(
    key: PRNGKeyArray,
    real: Float[Array, "n time channels"],
    fake: Float[Array, "m time channels"],
    *,
    hidden: int = 16,
    num_steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
) -> Scalar:
    """Fréchet distance between real and synthetic sequences in a trained GRU's features.

    The GRU is trained as a next-step predictor on ``real`` only (as in
    :func:`predictive_score`); the features of a sequence are its final ``hidden``-d
    state. Needs ``n, m >= 2``; use many more sequences than ``hidden`` for a stable
    covariance.

    Args:
        key: PRNG key.
        real: ``(n, time, channels)`` real sequences.
        fake: ``(m, time, channels)`` synthetic sequences.
        hidden: GRU state size (the feature dimension).
        num_steps: Adam steps.
        batch_size: minibatch size.
        learning_rate: Adam learning rate.

    Returns:
        Scalar Fréchet distance (0 for identical sets).

    Examples:
        >>> import jax
        >>> x = jax.random.normal(jax.random.key(1), (64, 8, 2))
        >>> abs(float(frechet_ts_distance(jax.random.key(0), x, x, num_steps=20))) < 1e-3
        True
    """
    _check_settings(key, hidden, num_steps, batch_size, learning_rate)
    _check_sequences(real, fake)
    model, params = _next_step_model(key, real, hidden, num_steps, batch_size, learning_rate)
    fr = model.apply(params, real)[1][:, -1]
    ff = model.apply(params, fake)[1][:, -1]
    return frechet_distance_from_features(fr, ff)
