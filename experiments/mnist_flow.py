"""RealNVP/Glow-style multi-scale flow on uniformly dequantized MNIST: test bits/dim and samples.

The model is :class:`dgm_jax.flows.MultiScaleFlow`: logit preprocessing (α = 0.05, its
Jacobian counted), three scales of affine couplings with checkerboard and channel masks,
squeezes and factored-out halves (Dinh et al. 2017), each coupling preceded by ActNorm and
an LU-parameterised invertible 1×1 convolution (Kingma & Dhariwal 2018). Training
maximises the likelihood of ``(k + u)/256`` with ``u ~ U[0, 1)`` (Theis et al. 2016);
the reported test bits/dim is ``E[-log p((k + u)/256)]/(D log 2) + 8``, an upper bound on
the discrete model's, averaged over the whole test split with a fresh ``u``.

The default config is GPU-sized (about 60 epochs of batch 64; RealNVP's reported MNIST
figure is 1.06 bits/dim, the issue's goal); it has not been run to completion on this
project's machines yet, so no number is claimed here. ``dataset="synthetic"`` (the smoke
config) trains on random 8-bit images so the smoke test needs no MNIST files or network;
``dataset="mnist"`` reads :func:`dgm_jax.data.load_mnist` (offline from the cache, see
``dgm_jax/data/mnist.py``).

Outputs: ``config.json``, ``metrics.json`` (``test_bits_per_dim`` and its standard error,
training time), ``samples.png`` (temperature 1.0 and 0.7), ``loss.png`` and
``checkpoints/`` (resumable with the same ``--workdir``).

Example:
    python -m experiments run mnist_flow
    python -m experiments run mnist_flow --set num_train_steps=2000 --set hidden_channels=32
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgm_jax import flows, metrics, train, viz

NAME = "mnist_flow"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings; the defaults are sized for one GPU (hours), not for the 2-core CPU."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" or "synthetic" (random images; smoke tests)
    num_train: int = 60_000
    num_test: int = 10_000
    num_scales: int = 3  # 28x28x1 -> 14x14x4 -> 7x7x8
    num_steps: int = 4  # flow steps per stage
    hidden_channels: int = 64
    num_blocks: int = 4  # residual blocks per coupling network
    scale_fn: str = "tanh"
    invconv: str | None = "lu"
    logit_alpha: float = 0.05
    batch_size: int = 64
    num_train_steps: int = 60_000
    learning_rate: float = 1e-3
    warmup_steps: int = 1000
    weight_decay: float = 5e-5  # RealNVP used L2 5e-5
    eval_batch_size: int = 500
    log_every: int = 500
    checkpoint_every: int = 5000
    num_samples: int = 64
    progress: bool = True


SMOKE = Config(
    dataset="synthetic",
    num_train=64,
    num_test=32,
    num_scales=2,
    num_steps=1,
    hidden_channels=4,
    num_blocks=1,
    batch_size=8,
    num_train_steps=2,
    warmup_steps=1,
    eval_batch_size=16,
    log_every=1,
    checkpoint_every=1,
    num_samples=4,
    progress=False,
)


def _load(config: Config) -> tuple[np.ndarray, np.ndarray]:
    if config.dataset == "mnist":
        from dgm_jax.data import load_mnist

        return (
            load_mnist("train").images[: config.num_train],
            load_mnist("test").images[: config.num_test],
        )
    if config.dataset == "synthetic":
        rng = np.random.default_rng(config.seed)
        shape = (28, 28, 1)
        return (
            rng.integers(0, 256, (config.num_train, *shape), dtype=np.uint8),
            rng.integers(0, 256, (config.num_test, *shape), dtype=np.uint8),
        )
    raise ValueError(f"dataset must be 'mnist' or 'synthetic', got {config.dataset!r}")


def _validate(config: Config) -> None:
    for name in ("num_train", "num_test", "batch_size", "num_train_steps", "eval_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.batch_size > config.num_train:
        raise ValueError(f"batch_size {config.batch_size} exceeds num_train {config.num_train}")


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train, evaluate test bits/dim, draw samples, write the run folder; return metrics."""
    _validate(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()
    x_train, x_test = _load(config)
    flow = flows.MultiScaleFlow(
        image_shape=tuple(int(s) for s in x_train.shape[1:]),
        num_scales=config.num_scales,
        num_steps=config.num_steps,
        hidden_channels=config.hidden_channels,
        num_blocks=config.num_blocks,
        scale_fn=config.scale_fn,
        invconv=config.invconv,
        logit_alpha=config.logit_alpha,
    )
    key = jax.random.key(config.seed)
    k_init, k_fit, k_batch, k_eval, k_sample = jax.random.split(key, 5)
    train_images = jnp.asarray(x_train)
    init_batch = metrics.uniform_dequantize(k_init, train_images[: min(512, len(x_train))])
    params = jax.jit(flow.init)(k_init, init_batch)  # ActNorm initialises from this batch

    lr = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        min(config.warmup_steps, max(config.num_train_steps - 1, 1)),
        config.num_train_steps,
        end_value=0.01 * config.learning_rate,
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(50.0), optax.adamw(lr, weight_decay=config.weight_decay)
    )
    step_fn = train.make_step(flows.build_dequantized_nll_loss(flow), optimizer)
    num_train = train_images.shape[0]
    take = jax.jit(
        lambda k: train_images[jax.random.randint(k, (config.batch_size,), 0, num_train)]
    )

    result = train.fit(
        step_fn,
        train.init_train_state(params, optimizer),
        k_fit,
        lambda s: take(jax.random.fold_in(k_batch, s)),
        config.num_train_steps,
        run_dir=run_dir,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=NAME,
    )
    params = result.state.params
    train_seconds = time.perf_counter() - started

    # ---- test bits/dim over the whole test split (fresh dequantization noise) ----------
    num_dims = math.prod(x_test.shape[1:])

    @jax.jit
    def per_example_bpd(params, key, images):
        y = metrics.uniform_dequantize(key, images)
        lp = flow.apply(params, y, method="log_prob")
        return metrics.nats_to_bits_per_dim(-lp, num_dims, data_scale=1.0 / 256)

    bpds = []
    for i, start in enumerate(range(0, len(x_test), config.eval_batch_size)):
        chunk = jnp.asarray(x_test[start : start + config.eval_batch_size])
        bpds.append(np.asarray(per_example_bpd(params, jax.random.fold_in(k_eval, i), chunk)))
    bpd = np.concatenate(bpds)

    # ---- samples -------------------------------------------------------------------------
    panels = {}
    for temperature in (1.0, 0.7):
        x = jax.jit(
            lambda p, k, t=temperature: flow.apply(p, k, config.num_samples, t, method="sample")
        )(params, k_sample)
        panels[f"T={temperature}"] = np.clip(np.asarray(x), 0.0, 1.0)
    viz.save_figure(_image_grid(panels), run_dir / "samples.png")
    viz.save_figure(
        viz.plot_history(result.history, ["loss"], log_scale=False), run_dir / "loss.png"
    )

    results = {
        "test_bits_per_dim": float(np.mean(bpd)),
        "test_bits_per_dim_stderr": float(np.std(bpd) / math.sqrt(bpd.size)),
        "num_test": int(bpd.size),
        "final_train_bits_per_dim": result.history[-1]["loss"] if result.history else None,
        "num_params": int(sum(p.size for p in jax.tree_util.tree_leaves(params))),
        "train_seconds": train_seconds,
        "device": str(jax.devices()[0].device_kind),
        "total_seconds": time.perf_counter() - started,
    }
    train.save_metrics(run_dir, results)
    return results


def _image_grid(panels: dict[str, np.ndarray]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 4.0))
    axes = np.atleast_1d(axes)
    for ax, (title, images) in zip(axes, panels.items()):
        n = images.shape[0]
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        h, w = images.shape[1:3]
        canvas = np.ones((rows * (h + 1), cols * (w + 1)))
        for i in range(n):
            r, c = divmod(i, cols)
            canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i, ..., 0]
        ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig
