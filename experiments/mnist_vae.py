"""VAE, β-VAE, capacity-annealed β-VAE and IWAE on dynamically binarized MNIST.

Each model has the one-stochastic-layer architecture of Burda et al. (2016): an MLP encoder
784-200-200-(50 × 2) and decoder 50-200-200-784 with tanh units and Bernoulli pixels
(``architecture="conv"`` swaps in :class:`~dgm_jax.nn.ConvEncoder` /
:class:`~dgm_jax.nn.ConvDecoder`). Training images are binarized afresh at every step
(pixel ~ Bernoulli(intensity), Salakhutdinov & Murray 2008); the test set is binarized
once with a fixed key. Models (``models``):

* ``vae``: the ELBO with an analytic KL (Kingma & Welling, 2014);
* ``beta_vae``: ``β`` times the KL (Higgins et al., 2017);
* ``capacity_vae``: ``γ |KL − C(t)|`` with ``C`` rising linearly to ``max_capacity``
  (Burgess et al., 2018);
* ``iwae``: the importance-weighted bound with ``iwae_k`` samples (Burda et al., 2016).

Evaluation on the test set: the ELBO (one sample per image, analytic KL) and the negative
log-likelihood estimated with ``eval_k = 5000`` importance samples
(:func:`dgm_jax.vae.iwae_log_likelihood`, drawn in chunks), in nats.

Outputs in the run folder: ``config.json``, ``metrics.json``, ``results.md`` (the table),
and per model ``<model>/metrics.jsonl``, ``<model>/checkpoints/``,
``<model>_reconstructions.png`` (test images over their reconstructions),
``<model>_samples.png`` (decoder means of prior samples), ``<model>_interpolations.png``
(decoded slerps between posterior means of test pairs), ``<model>_traversals.png`` (one row
per latent coordinate with the largest average KL, values from −3 to 3) and
``<model>_loss.png``. Running again with the same ``--workdir`` resumes each model.

The default configuration is sized for the quality goal of the project (IWAE-5000 NLL
≤ 86.8 nats for the VAE, ≤ 84.8 for the IWAE with k = 50, the numbers of Burda et al.
2016, who trained for 3,280 epochs) on one GPU: 1,000,000 steps of batch 100 (about 1,670
epochs) with Adam and a cosine-decayed learning rate. That budget has not been run yet;
``metrics.json`` records what a run reaches. ``dataset="synthetic"`` (the smoke config)
uses random images so the smoke test needs no MNIST files.

Example:
    python -m experiments run mnist_vae
    python -m experiments run mnist_vae --set num_train_steps=50000 --set models='["vae"]'
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import optax

from dgm_jax import train, viz
from dgm_jax.data import binarize, make_batch_fn, to_float
from dgm_jax.nn import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from dgm_jax.vae import (
    bernoulli_likelihood,
    capacity_schedule,
    capacity_vae_loss,
    decode_mean,
    elbo_terms,
    encode,
    interpolate_latents,
    iwae_log_likelihood,
    iwae_loss,
    kl_diagonal_gaussians,
    reconstruct,
    sample_images,
    vae_loss,
)

NAME = "mnist_vae"
MODELS = ("vae", "beta_vae", "capacity_vae", "iwae")
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the MNIST VAE runs (defaults: the GPU quality run, see the module doc)."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" (dgm_jax.data.load_mnist) or "synthetic" (smoke tests)
    models: tuple[str, ...] = ("vae", "beta_vae", "iwae")
    architecture: str = "mlp"  # "mlp" (Burda et al. 2016) or "conv"
    latent_dim: int = 50
    hidden_sizes: tuple[int, ...] = (200, 200)  # MLP widths (encoder and decoder)
    conv_features: tuple[int, int] = (32, 64)
    conv_hidden: int = 256
    beta: float = 4.0  # β of beta_vae
    max_capacity: float = 25.0  # C_max of capacity_vae, nats
    capacity_steps: int = 100_000  # steps over which C rises to C_max
    gamma: float = 1000.0  # γ of capacity_vae
    iwae_k: int = 50  # samples of the IWAE training objective
    batch_size: int = 100
    num_train_steps: int = 1_000_000
    learning_rate: float = 1e-3
    final_lr_fraction: float = 0.01  # cosine decay to this fraction of the peak rate
    num_train: int = 60_000  # training images used (first num_train)
    num_test: int = 10_000  # test images evaluated
    eval_k: int = 5000  # importance samples of the test log-likelihood
    eval_chunk: int = 500  # samples per decoder call in the evaluation
    eval_batch_size: int = 100  # test images per evaluation call
    log_every: int = 5000
    checkpoint_every: int = 50_000
    num_traversal_dims: int = 8
    progress: bool = True


SMOKE = Config(
    dataset="synthetic",
    models=("capacity_vae", "iwae"),  # vae and beta_vae share capacity_vae's code path
    latent_dim=4,
    hidden_sizes=(16,),
    capacity_steps=2,
    iwae_k=3,
    batch_size=16,
    num_train_steps=2,
    num_train=64,
    num_test=16,
    eval_k=10,
    eval_chunk=4,
    eval_batch_size=8,
    log_every=1,
    checkpoint_every=1,
    num_traversal_dims=2,
    progress=False,
)


def _validate(config: Config) -> None:
    bad = [m for m in config.models if m not in MODELS]
    if bad or not config.models:
        raise ValueError(f"models must be a non-empty subset of {MODELS}, got {config.models}")
    if config.dataset not in ("mnist", "synthetic"):
        raise ValueError(f"dataset must be 'mnist' or 'synthetic', got {config.dataset!r}")
    if config.architecture not in ("mlp", "conv"):
        raise ValueError(f"architecture must be 'mlp' or 'conv', got {config.architecture!r}")
    if config.latent_dim <= 0:
        raise ValueError(f"latent_dim must be >= 1, got {config.latent_dim}")
    for name in ("iwae_k", "eval_k", "eval_chunk", "batch_size", "num_train_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.num_test % config.eval_batch_size:
        raise ValueError(
            f"num_test ({config.num_test}) must be a multiple of eval_batch_size "
            f"({config.eval_batch_size})"
        )
    if config.batch_size > config.num_train:
        raise ValueError(f"batch_size {config.batch_size} exceeds num_train {config.num_train}")


def _load(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """uint8 training and test images ``(num, 28, 28, 1)``."""
    if config.dataset == "mnist":
        from dgm_jax.data import load_mnist

        return (
            load_mnist("train").images[: config.num_train],
            load_mnist("test").images[: config.num_test],
        )
    rng = np.random.default_rng(config.seed)
    shape = (config.num_train + config.num_test, *IMAGE_SHAPE)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    return images[: config.num_train], images[config.num_train :]


def _networks(config: Config):
    if config.architecture == "mlp":
        return (
            MLPEncoder(config.latent_dim, config.hidden_sizes),
            MLPDecoder(IMAGE_SHAPE, config.hidden_sizes),
        )
    return (
        ConvEncoder(config.latent_dim, config.conv_features, config.conv_hidden),
        ConvDecoder(IMAGE_SHAPE, config.conv_features, config.conv_hidden),
    )


def _model_fns(encoder, decoder, params):
    def encoder_fn(x):
        return encoder.apply(params["encoder"], x)

    def decoder_fn(z):
        return decoder.apply(params["decoder"], z)

    return encoder_fn, decoder_fn


def _loss_fn(model: str, config: Config, encoder, decoder):
    """``loss(params, key, (images, step)) -> (loss, metrics)`` with dynamic binarization."""
    likelihood = bernoulli_likelihood()

    def loss_fn(params, key, batch):
        images, step = batch
        key_bin, key_loss = jax.random.split(key)
        x = binarize(key_bin, images)
        enc, dec = _model_fns(encoder, decoder, params)
        if model == "vae":
            return vae_loss(enc, dec, likelihood, key_loss, x)
        if model == "beta_vae":
            return vae_loss(enc, dec, likelihood, key_loss, x, beta=config.beta)
        if model == "capacity_vae":
            capacity = capacity_schedule(
                step, max_capacity=config.max_capacity, num_steps=config.capacity_steps
            )
            return capacity_vae_loss(
                enc, dec, likelihood, key_loss, x, capacity, gamma=config.gamma
            )
        return iwae_loss(enc, dec, likelihood, key_loss, x, num_samples=config.iwae_k)

    return loss_fn


@functools.lru_cache(maxsize=4)
def _batch_eval_fn(config: Config, encoder, decoder):
    """A jit-compiled ``(params, key, x) -> per-image terms``, shared by every model."""
    likelihood = bernoulli_likelihood()

    @jax.jit
    def batch_eval(params, key, x):
        enc, dec = _model_fns(encoder, decoder, params)
        key_elbo, key_iwae = jax.random.split(key)
        terms = elbo_terms(enc, dec, likelihood, key_elbo, x)
        est = iwae_log_likelihood(
            enc,
            dec,
            likelihood,
            key_iwae,
            x,
            num_samples=config.eval_k,
            chunk_size=config.eval_chunk,
        )
        kl_per_dim = kl_diagonal_gaussians(*[a[..., None] for a in encode(enc, x)])
        return terms.elbo, terms.kl, est.log_likelihood, est.stderr, jnp.sum(kl_per_dim, 0)

    return batch_eval


def _evaluate(config: Config, encoder, decoder, params, key, x_test) -> dict[str, Any]:
    """Test-set ELBO and IWAE-``eval_k`` NLL in nats, averaged over images."""
    batch_eval = _batch_eval_fn(config, encoder, decoder)
    elbo, kl, ll, se = [], [], [], []
    kl_dims = jnp.zeros(config.latent_dim)
    for i in range(0, x_test.shape[0], config.eval_batch_size):
        xb = x_test[i : i + config.eval_batch_size]
        e, k, l_, s, kd = batch_eval(params, jax.random.fold_in(key, i), xb)
        elbo.append(np.asarray(e))
        kl.append(np.asarray(k))
        ll.append(np.asarray(l_))
        se.append(np.asarray(s))
        kl_dims = kl_dims + kd
    elbo, kl, ll, se = map(np.concatenate, (elbo, kl, ll, se))
    n = ll.shape[0]
    return {
        "test_elbo": float(elbo.mean()),
        "test_elbo_se": float(elbo.std() / np.sqrt(n)),
        "test_kl": float(kl.mean()),
        f"test_nll_iwae{config.eval_k}": float(-ll.mean()),
        # Spread over images (the estimator's own error, mean stderr, is much smaller).
        f"test_nll_iwae{config.eval_k}_se": float(ll.std() / np.sqrt(n)),
        f"test_nll_iwae{config.eval_k}_mean_estimator_stderr": float(se.mean()),
        "kl_per_latent_dim": np.asarray(kl_dims / n).tolist(),
    }


def _image_grid(rows: np.ndarray, row_labels: list[str] | None = None) -> plt.Figure:
    """``rows`` of shape ``(R, C, 28, 28, 1)`` drawn as a grid of gray images."""
    num_rows, num_cols = rows.shape[:2]
    fig, axes = plt.subplots(
        num_rows, num_cols, figsize=(0.9 * num_cols, 0.9 * num_rows), squeeze=False
    )
    for r in range(num_rows):
        for c in range(num_cols):
            ax = axes[r, c]
            ax.imshow(np.asarray(rows[r, c, ..., 0]), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.tight_layout(pad=0.2)
    return fig


@functools.lru_cache(maxsize=4)
def _figure_arrays_fn(config: Config, encoder, decoder):
    """A jit-compiled ``(params, key, x, dims) -> images`` for the figures, shared by models."""
    likelihood = bernoulli_likelihood()

    @jax.jit
    def arrays(params, key, x, dims):
        enc, dec = _model_fns(encoder, decoder, params)
        num = x.shape[0]
        recon = reconstruct(enc, dec, likelihood, x)
        samples = sample_images(dec, likelihood, key, 64, config.latent_dim)
        means, _ = encode(enc, x)
        paths = jnp.stack(
            [
                interpolate_latents(means[2 * i], means[2 * i + 1], 10, spherical=True)
                for i in range(num // 2)
            ]
        )
        onehot = jax.nn.one_hot(dims, config.latent_dim, dtype=means.dtype)[:, None, :]
        values = jnp.linspace(-3.0, 3.0, 9)
        grid = means[0][None, None] * (1.0 - onehot) + values[None, :, None] * onehot
        return (
            recon,
            samples,
            decode_mean(dec, likelihood, paths),
            decode_mean(dec, likelihood, grid),
        )

    return arrays


def _figures(config, model, encoder, decoder, params, key, x_test, kl_dims, run_dir: Path):
    num = 2 * max(1, min(4, x_test.shape[0] // 2))
    x = x_test[:num]
    dims = np.argsort(-np.asarray(kl_dims))[: config.num_traversal_dims]
    arrays = _figure_arrays_fn(config, encoder, decoder)
    recon, samples, interpolations, traversals = arrays(params, key, x, jnp.asarray(dims))
    images = np.stack([np.asarray(x), np.asarray(recon)])
    viz.save_figure(
        _image_grid(images, ["data", "recon"]), run_dir / f"{model}_reconstructions.png"
    )
    grid = np.asarray(samples).reshape(8, 8, *IMAGE_SHAPE)
    viz.save_figure(_image_grid(grid), run_dir / f"{model}_samples.png")
    viz.save_figure(
        _image_grid(np.asarray(interpolations)), run_dir / f"{model}_interpolations.png"
    )
    labels = [f"z{d}" for d in dims]
    viz.save_figure(
        _image_grid(np.asarray(traversals), labels), run_dir / f"{model}_traversals.png"
    )


def _train_model(config, model, x_train, key, run_dir: Path):
    encoder, decoder = _networks(config)
    key_init_e, key_init_d, key_train, key_data = jax.random.split(key, 4)
    params = {
        "encoder": jax.jit(encoder.init)(key_init_e, jnp.zeros((1, *IMAGE_SHAPE))),
        "decoder": jax.jit(decoder.init)(key_init_d, jnp.zeros((1, config.latent_dim))),
    }
    schedule = optax.cosine_decay_schedule(
        config.learning_rate, config.num_train_steps, alpha=config.final_lr_fraction
    )
    optimizer = optax.adam(schedule)
    state = train.init_train_state(params, optimizer)
    step_fn = train.make_step(_loss_fn(model, config, encoder, decoder), optimizer)
    get_batch = make_batch_fn(key_data, x_train, config.batch_size)

    def batch_fn(step: int):
        return get_batch(step), jnp.asarray(step, jnp.int32)

    result = train.fit(
        step_fn,
        state,
        key_train,
        batch_fn,
        config.num_train_steps,
        run_dir=run_dir / model,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=f"{NAME}/{model}",
    )
    return encoder, decoder, result


def _table(config: Config, results: dict[str, Any]) -> str:
    nll = f"test_nll_iwae{config.eval_k}"
    lines = [
        f"| model | test ELBO (nats) | test NLL, IWAE k={config.eval_k} (nats) | test KL | steps |",
        "|---|---|---|---|---|",
    ]
    for m in config.models:
        lines.append(
            f"| {m} | {results[f'{m}/test_elbo']:.2f} | {results[f'{m}/{nll}']:.2f} "
            f"± {results[f'{m}/{nll}_se']:.2f} | {results[f'{m}/test_kl']:.2f} "
            f"| {config.num_train_steps} |"
        )
    return "\n".join(lines) + "\n"


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train each model, evaluate on the test set, write figures and tables; return metrics."""
    _validate(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()
    train_u8, test_u8 = _load(config)
    x_train = to_float(train_u8)
    key = jax.random.key(config.seed)
    key_test_bin, key_models = jax.random.split(key)
    x_test = binarize(key_test_bin, to_float(test_u8))  # binarized once, fixed key
    results: dict[str, Any] = {"device": jax.devices()[0].device_kind}
    for i, model in enumerate(config.models):
        key_model = jax.random.fold_in(key_models, i)
        key_train, key_eval, key_fig = jax.random.split(key_model, 3)
        t0 = time.perf_counter()
        encoder, decoder, result = _train_model(config, model, x_train, key_train, run_dir)
        results[f"{model}/train_seconds"] = time.perf_counter() - t0
        results[f"{model}/final_loss"] = result.history[-1]["loss"] if result.history else None
        t0 = time.perf_counter()
        ev = _evaluate(config, encoder, decoder, result.state.params, key_eval, x_test)
        results[f"{model}/eval_seconds"] = time.perf_counter() - t0
        kl_dims = ev.pop("kl_per_latent_dim")
        results.update({f"{model}/{k}": v for k, v in ev.items()})
        results[f"{model}/dims_with_kl_over_0.01"] = int(np.sum(np.asarray(kl_dims) > 0.01))
        params = result.state.params
        _figures(config, model, encoder, decoder, params, key_fig, x_test, kl_dims, run_dir)
        viz.save_figure(
            viz.plot_history(result.history, ["loss"], log_scale=False),
            run_dir / f"{model}_loss.png",
        )
    (run_dir / "results.md").write_text(_table(config, results))
    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
