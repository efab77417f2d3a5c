"""MNIST VQ-VAE: reconstructions, code usage, perplexity over training, test reconstruction error.

Trains a VQ-VAE (van den Oord et al. 2017) with the convolutional
:class:`dgm_jax.nn.VQEncoder` / :class:`dgm_jax.nn.VQDecoder` (28×28 → 7×7×D latents) and an
EMA codebook (decay 0.99, Laplace smoothing; Razavi et al. 2019) with dead-code restarts
(codes unused for ``dead_after`` consecutive steps jump to random encoder outputs), on
MNIST intensities in [0, 1] with a mean-squared reconstruction loss, β = 0.25 and Adam.

Evaluation: every ``eval_every`` steps and at the end, the test-set reconstruction MSE,
the perplexity of the code histogram over the test set (``exp`` of its entropy: K when
every code is used equally, 1 for a single code) and the fraction of codes used.

Outputs in the run folder: ``config.json``, ``metrics.json``, ``metrics.jsonl``,
``reconstructions.png`` (test digits above their reconstructions), ``code_usage.png``
(test-set code histogram, sorted), ``perplexity.png`` (batch and test perplexity over
training), ``loss.png`` and ``checkpoints/``. Running again with the same ``--workdir``
resumes (or, when finished, just re-evaluates).

Expected time: the default config (20,000 steps of batch 128, a 0.5M-parameter network) is
sized for a GPU; it has not been timed here. On 2 CPU cores use ``--smoke`` or far fewer
steps.

Example:
    python -m experiments run mnist_vqvae
    python -m experiments run mnist_vqvae --set num_train_steps=2000 --set num_codes=128
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import optax

from dgm_jax import train, viz
from dgm_jax.data import make_batch_fn
from dgm_jax.nn import VQDecoder, VQEncoder
from dgm_jax.vae import vq
from dgm_jax.vae.vqvae import VQVAE, build_vqvae, init_vqvae_train_state, make_vqvae_step

NAME = "mnist_vqvae"
DATASETS = ("mnist", "synthetic")
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the MNIST VQ-VAE run (defaults sized for one GPU)."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" (dgm_jax.data.load_mnist) or "synthetic" (random, tests)
    code_dim: int = 64  # D of the 7×7×D latents
    num_codes: int = 512  # K
    hidden: int = 128  # encoder/decoder width
    num_res_blocks: int = 2
    res_hidden: int = 32
    beta: float = 0.25  # commitment weight
    decay: float = 0.99  # EMA codebook decay (the codebook is not trained by gradient)
    dead_after: int = 200  # restart codes unused for this many consecutive steps (0: never)
    batch_size: int = 128
    num_train_steps: int = 20_000
    learning_rate: float = 2e-4  # Adam, as in the paper
    log_every: int = 200
    eval_every: int = 2000  # test MSE and perplexity during training (0: only at the end)
    checkpoint_every: int = 2000
    eval_batch_size: int = 1000
    num_shown: int = 16  # test digits in the reconstruction figure
    progress: bool = True


SMOKE = Config(
    dataset="synthetic",
    code_dim=4,
    num_codes=16,
    hidden=8,
    num_res_blocks=1,
    res_hidden=4,
    dead_after=1,
    batch_size=8,
    num_train_steps=2,
    log_every=1,
    eval_every=1,
    checkpoint_every=1,
    eval_batch_size=16,
    num_shown=4,
    progress=False,
)


class Trained(NamedTuple):
    """What :func:`train_vqvae` returns."""

    model: VQVAE  # the pure functions
    state: Any  # VQVAETrainState after training
    history: list  # logged records of fit
    train_seconds: float  # wall time of this call's training (0 when it only loaded)


def validate_config(config: Config) -> None:
    """Raise ``ValueError`` naming the first bad field of ``config``."""
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {config.dataset!r}")
    for name in ("code_dim", "num_codes", "hidden", "res_hidden", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("num_res_blocks", "dead_after", "num_train_steps", "log_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in ("eval_every", "checkpoint_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.beta < 0:
        raise ValueError(f"beta must be >= 0, got {config.beta}")
    if not 0.0 <= config.decay < 1.0:
        raise ValueError(f"decay must lie in [0, 1), got {config.decay}")
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")
    if config.eval_batch_size < 1 or config.num_shown < 1:
        raise ValueError("eval_batch_size and num_shown must be >= 1")


# ----------------------------------------------------------------------------------------
# Data and figures (shared with mnist_latent_diffusion)
# ----------------------------------------------------------------------------------------


def load_images(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and test images, uint8 ``(n, 28, 28, 1)``.

    ``"synthetic"`` gives random blobs (64 train, 32 test) so that smoke tests need no
    MNIST files and no network.
    """
    if dataset == "mnist":
        from dgm_jax.data import load_mnist

        return load_mnist("train").images, load_mnist("test").images
    if dataset != "synthetic":
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(28), np.arange(28), indexing="ij"), -1)

    def blobs(n):
        centres = rng.uniform(6, 22, (n, 1, 1, 2))
        d2 = np.sum((grid[None] - centres) ** 2, -1, keepdims=True)
        return (255 * np.exp(-d2 / 18.0)).astype(np.uint8)

    return blobs(64), blobs(32)


def image_grid(rows: dict[str, np.ndarray], path, *, title: str | None = None) -> None:
    """Save a figure with one row of images (values in [0, 1]) per entry of ``rows``."""
    num_rows = len(rows)
    num_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(
        num_rows, num_cols, figsize=(0.9 * num_cols + 1.2, 0.95 * num_rows), squeeze=False
    )
    for r, (label, images) in enumerate(rows.items()):
        for c in range(num_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(np.clip(np.asarray(images[c])[..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    viz.save_figure(fig, path)


def code_usage_figure(counts: np.ndarray, path, *, title: str) -> None:
    """Histogram of code counts, sorted from most to least used."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ordered = np.sort(np.asarray(counts))[::-1]
    ax.bar(np.arange(len(ordered)), ordered, width=1.0)
    ax.set(xlabel="code (sorted by use)", ylabel="test vectors", title=title)
    if ordered.max() > 0:
        ax.set_yscale("log")
    fig.tight_layout()
    viz.save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------


def build_model(config: Config) -> VQVAE:
    """The VQ-VAE of a config."""
    encoder = VQEncoder(config.code_dim, config.hidden, config.num_res_blocks, config.res_hidden)
    decoder = VQDecoder(1, config.hidden, config.num_res_blocks, config.res_hidden)
    return build_vqvae(
        encoder,
        decoder,
        num_codes=config.num_codes,
        beta=config.beta,
        decay=config.decay,
        dead_after=config.dead_after,
    )


@jax.jit
def _to_float(images):
    return images.astype(jnp.float32) / 255.0


def train_vqvae(config: Config, run_dir, train_images: np.ndarray, evaluate=None) -> Trained:
    """Train (or resume, or load when finished) the VQ-VAE in ``run_dir``; see the module.

    ``evaluate(params) -> dict`` (from :func:`make_evaluator`) is called every
    ``config.eval_every`` steps when given.
    """
    validate_config(config)
    model = build_model(config)
    key = jax.random.key(config.seed)
    key_init, key_train, key_data = jax.random.split(key, 3)
    images = jnp.asarray(train_images)
    params, vq_state = jax.jit(model.init)(key_init, _to_float(images[: config.batch_size]))
    optimizer = optax.adam(config.learning_rate)
    state = init_vqvae_train_state(params, vq_state, optimizer)
    step_fn = make_vqvae_step(model, optimizer)
    raw_batch = make_batch_fn(key_data, images, config.batch_size)
    to_unit = jax.jit(_to_float)
    eval_fn = None
    if evaluate is not None and config.eval_every > 0:

        def eval_fn(state, step):
            out = evaluate(state.params)
            return {k: out[k] for k in ("recon_mse", "perplexity", "code_usage")}

    started = time.perf_counter()
    result = train.fit(
        step_fn,
        state,
        key_train,
        lambda s: to_unit(raw_batch(s)),
        config.num_train_steps,
        run_dir=run_dir,
        eval_fn=eval_fn,
        eval_every=config.eval_every if eval_fn is not None else 0,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=NAME,
    )
    return Trained(model, result.state, result.history, time.perf_counter() - started)


def make_evaluator(model: VQVAE, test_images: np.ndarray, batch_size: int):
    """``evaluate(params) -> dict`` of test reconstruction MSE, code counts and perplexity."""
    images = jnp.asarray(test_images)
    n = images.shape[0]
    b = min(batch_size, n)
    num_batches = -(-n // b)
    pad = num_batches * b - n
    padded = jnp.concatenate([images, images[:pad]]).reshape(num_batches, b, *images.shape[1:])
    mask = (jnp.arange(num_batches * b) < n).reshape(num_batches, b)

    @jax.jit
    def evaluate(params):
        def one(args):
            xb, mb = args
            x = xb.astype(jnp.float32) / 255.0
            z = model.encode(params, x)
            z_q, idx = model.quantize(params, z)
            err = jnp.mean((model.decode(params, z_q) - x) ** 2, axis=(1, 2, 3))
            weights = jnp.broadcast_to(mb[:, None, None], idx.shape).astype(jnp.float32)
            counts = jnp.zeros(model.num_codes).at[idx.ravel()].add(weights.ravel())
            return jnp.sum(err * mb), counts

        errs, counts = jax.lax.map(one, (padded, mask))
        counts = jnp.sum(counts, axis=0)
        return {
            "recon_mse": jnp.sum(errs) / n,
            "perplexity": vq.perplexity(counts),
            "code_usage": vq.code_usage(counts),
            "counts": counts,
        }

    return evaluate


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train, evaluate on the test set, write the run folder; return the metrics."""
    validate_config(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()
    train_images, test_images = load_images(config.dataset, config.seed)
    evaluate = make_evaluator(build_model(config), test_images, config.eval_batch_size)
    trained = train_vqvae(config, run_dir, train_images, evaluate)
    params = trained.state.params
    evaluation = evaluate(params)
    counts = np.asarray(evaluation["counts"])

    shown = _to_float(jnp.asarray(test_images[: config.num_shown]))
    recon = jax.jit(trained.model.reconstruct)(params, shown)
    image_grid(
        {"test": np.asarray(shown), "reconstruction": np.asarray(recon)},
        run_dir / "reconstructions.png",
        title=f"VQ-VAE, K={config.num_codes}, test MSE {float(evaluation['recon_mse']):.4f}",
    )
    code_usage_figure(
        counts,
        run_dir / "code_usage.png",
        title=f"test code usage: perplexity {float(evaluation['perplexity']):.1f} "
        f"of K={config.num_codes}",
    )
    keys = ["perplexity"] + (["eval/perplexity"] if config.eval_every > 0 else [])
    viz.save_figure(
        viz.plot_history(trained.history, keys, log_scale=False), run_dir / "perplexity.png"
    )
    viz.save_figure(viz.plot_history(trained.history, ["loss", "recon_mse"]), run_dir / "loss.png")
    last = trained.history[-1] if trained.history else {}
    results = {
        "test_recon_mse": float(evaluation["recon_mse"]),
        "test_perplexity": float(evaluation["perplexity"]),
        "test_code_usage": float(evaluation["code_usage"]),
        "test_unused_codes": int(np.sum(counts == 0)),
        "num_codes": config.num_codes,
        "final_train_loss": last.get("loss"),
        "final_train_perplexity": last.get("perplexity"),
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "train_seconds": trained.train_seconds,
        "total_seconds": time.perf_counter() - started,
        "device": jax.devices()[0].device_kind,
    }
    train.save_metrics(run_dir, results)
    return results
