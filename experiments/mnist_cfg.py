"""Class-conditional MNIST DDPM with classifier-free guidance: a grid and metrics per scale.

The run trains a class-conditional :class:`dgm_jax.nn.UNet` (ε-prediction, the DDPM of
``mnist_diffusion``: linear β over T = 1000 steps, data dequantized to [-1, 1)) with
condition dropout (Ho & Salimans 2022): each label is replaced by the null label 10
with probability ``p_uncond``, so one network learns both the conditional model
``ε(x, t, y)`` and the unconditional one ``ε(x, t, ∅)``. Sampling uses
:func:`dgm_jax.diffusion.classifier_free_guidance`,
``ε̃ = ε(x, t, ∅) + w (ε(x, t, y) − ε(x, t, ∅))``: ``w = 0`` is the unconditional model,
``w = 1`` the conditional one and ``w > 1`` trades diversity for fidelity. The scale is
passed to one compiled sampler as a traced value, so every scale evaluates both halves
(2 network evaluations per step) and all scales start from the same noise.

Per guidance scale, on ``num_eval_samples`` samples with balanced intended classes
(``i mod 10``), with the EMA weights:

* ``fid_lenet``: :func:`dgm_jax.metrics.fid_mnist`'s Fréchet distance in the features
  of the shipped MNIST LeNet-style classifier (**not an Inception-v3 FID**) against the
  10,000 test images, next to the same distance for as many training images (floor);
* ``accuracy``: how often that classifier assigns the intended class (how well guidance
  hits the label; 0.1 is chance, and the classifier itself scores 99.35 % on the real
  test set), and ``inception_score`` from its logits.

Outputs in the run folder: ``config.json``, ``metrics.json`` (with a ``per_scale``
table), ``metrics.jsonl``, ``samples_w<scale>.png`` (one row per class),
``guidance.png`` (FID and accuracy against the scale), ``loss.png`` and
``checkpoints/``. Running again with the same ``--workdir`` resumes training.

Expected time (default config, estimated, not yet measured on a GPU): training as in
``mnist_diffusion`` (40,000 steps of batch 128, 6–10 minutes on one H100), then
4 scales × 5,000 samples × 100 DDIM steps × 2 evaluations = 4·10⁶ image evaluations,
2–3 minutes. Use ``--smoke`` on a CPU.

Example:
    python -m experiments run mnist_cfg
    python -m experiments run mnist_cfg --set guidance_scales=0,1,2,4,8
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from dgm_jax import diffusion, metrics, train, viz
from dgm_jax.metrics import mnist_net
from experiments import mnist_diffusion as base

NAME = "mnist_cfg"
NUM_CLASSES = 10
NULL_LABEL = NUM_CLASSES  # the U-Net's null label: "no class"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the classifier-free guidance run (the defaults are sized for one GPU)."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" or "synthetic" (random images, for tests)
    num_diffusion_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    channels: tuple[int, ...] = (64, 128, 128)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (7,)
    norm_groups: int = 32
    dropout: float = 0.1
    p_uncond: float = 0.1  # probability of replacing a training label by the null label
    batch_size: int = 128
    num_train_steps: int = 40_000
    learning_rate: float = 2e-4
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    log_every: int = 500
    checkpoint_every: int = 5000
    guidance_scales: tuple[float, ...] = (0.0, 1.0, 3.0, 7.0)
    sampler: str = "ddim"  # ddpm, ddim (η = 0) or dpm_solver_pp
    sample_steps: int = 100  # sampler steps (2 network evaluations each with guidance)
    clip_x0: float = 1.0  # clip x̂_0 to [-clip_x0, clip_x0] (0: no clipping)
    num_eval_samples: int = 5000  # per scale, intended classes i mod 10
    sample_batch_size: int = 1000
    num_grid: int = 8  # samples per class in each grid
    progress: bool = True


SMOKE = Config(
    dataset="synthetic",
    num_diffusion_steps=20,
    beta_start=1e-3,
    beta_end=0.3,
    channels=(4,),
    num_res_blocks=1,
    attention_resolutions=(),
    # Two channels per group: with one, GroupNorm would cancel the per-channel shift by
    # which the time and class embeddings enter each residual block.
    norm_groups=2,
    dropout=0.0,
    p_uncond=0.5,
    batch_size=8,
    num_train_steps=2,
    warmup_steps=1,
    log_every=1,
    checkpoint_every=0,  # only at the end
    sample_steps=2,
    num_eval_samples=20,
    sample_batch_size=20,
    num_grid=2,
    progress=False,
)


def validate_config(config: Config) -> None:
    """Raise ``ValueError`` naming the first bad field of ``config``."""
    if config.dataset not in base.DATASETS:
        raise ValueError(f"dataset must be one of {list(base.DATASETS)}, got {config.dataset!r}")
    for name in (
        "num_diffusion_steps",
        "num_res_blocks",
        "norm_groups",
        "batch_size",
        "num_train_steps",
        "sample_batch_size",
        "num_grid",
    ):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name in ("log_every", "checkpoint_every", "warmup_steps"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    if not config.channels or any(c < 1 for c in config.channels):
        raise ValueError(f"channels must be non-empty widths >= 1, got {config.channels}")
    if 28 % 2 ** (len(config.channels) - 1):
        raise ValueError(
            f"channels: 28 must be divisible by 2**(levels - 1), got {len(config.channels)} levels"
        )
    if not 0.0 < config.beta_start <= config.beta_end < 1.0:
        raise ValueError(
            "beta_start and beta_end must satisfy 0 < beta_start <= beta_end < 1, got "
            f"{config.beta_start} and {config.beta_end}"
        )
    if not 0.0 < config.p_uncond < 1.0:
        raise ValueError(
            f"p_uncond must lie in (0, 1) so that both the conditional and the unconditional "
            f"model are trained, got {config.p_uncond}"
        )
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {config.dropout}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {config.ema_decay}")
    for name in ("learning_rate", "grad_clip"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    if not config.guidance_scales or any(not w >= 0 for w in config.guidance_scales):
        raise ValueError(f"guidance_scales must be a non-empty tuple of w >= 0, got "
                         f"{config.guidance_scales}")  # fmt: skip
    if config.sampler not in base.SAMPLERS:
        raise ValueError(f"sampler must be one of {list(base.SAMPLERS)}, got {config.sampler!r}")
    if not 1 <= config.sample_steps <= config.num_diffusion_steps:
        raise ValueError(
            f"sample_steps must lie in [1, num_diffusion_steps={config.num_diffusion_steps}], "
            f"got {config.sample_steps}"
        )
    if config.clip_x0 < 0:
        raise ValueError(f"clip_x0 must be >= 0 (0 disables clipping), got {config.clip_x0}")
    if config.num_eval_samples < 2:
        raise ValueError(f"num_eval_samples must be >= 2, got {config.num_eval_samples}")


def guided_nfe(sampler: str, num_steps: int) -> int:
    """Network evaluations of one guided draw: two (conditional + null) per sampler step."""
    return 2 * base.sampler_nfe(sampler, num_steps)


@functools.partial(jax.jit, static_argnames=("net", "sampler", "num_steps", "clip_x0"))
def _draw_guided(params, key, betas, labels, scale, *, net, sampler, num_steps, clip_x0):
    schedule = base._schedule_from_betas(betas)

    def cond_model_fn(x, t, y):
        return net.apply(params, x, t, y)

    guided_fn = diffusion.classifier_free_guidance(cond_model_fn, scale, null_label=NULL_LABEL)

    def model_fn(x, t):
        return guided_fn(x, t, labels)

    shape = (labels.shape[0], *base.IMAGE_SHAPE)
    return base.sample(sampler, key, model_fn, schedule, shape, num_steps, clip_x0=clip_x0)


def draw_guided(params, key, schedule, net, labels, scale, *, sampler, num_steps, clip_x0=None):
    """Samples (model space) for the intended ``labels`` at guidance scale ``scale``.

    One compiled sampler serves every scale (``scale`` is traced), so each step evaluates
    the conditional and the unconditional network on a doubled batch.

    Args:
        params: parameters of the class-conditional ``net``.
        key: PRNG key (equal keys give equal starting noise at every scale).
        schedule: the training schedule.
        net: the class-conditional :class:`~dgm_jax.nn.UNet` (``num_classes=10``).
        labels: intended classes, int32 ``(batch,)``.
        scale: guidance scale ``w >= 0``.
        sampler: ``"ddpm"``, ``"ddim"`` or ``"dpm_solver_pp"``.
        num_steps: sampler steps.
        clip_x0: optional clipping of x̂_0.

    Returns:
        ``(batch, 28, 28, 1)`` samples in [-1, 1] (model space).

    Examples:
        >>> net = base.build_unet(SMOKE, num_classes=NUM_CLASSES)
        >>> args = (jnp.zeros((1, 28, 28, 1)), jnp.zeros(1), jnp.zeros(1, jnp.int32))
        >>> params = base.init_params(jax.random.key(0), net, *args)
        >>> s = diffusion.linear_schedule(20, 1e-3, 0.3)
        >>> x = draw_guided(params, jax.random.key(1), s, net, jnp.arange(4), 3.0,
        ...                 sampler="ddim", num_steps=2)
        >>> x.shape
        (4, 28, 28, 1)
    """
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    return _draw_guided(
        params,
        key,
        schedule.betas,
        jnp.asarray(labels, jnp.int32),
        jnp.asarray(scale, jnp.float32),
        net=net,
        sampler=sampler,
        num_steps=num_steps,
        clip_x0=clip_x0 or None,
    )


def _plot_tradeoff(rows, fid_floor, test_accuracy):
    scales = [r["guidance_scale"] for r in rows]
    fig, (ax_f, ax_a) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    ax_f.plot(scales, [r["fid_lenet"] for r in rows], "o-")
    ax_f.axhline(fid_floor, color="k", ls=":", label="training images (floor)")
    ax_f.set_xlabel("guidance scale w")
    ax_f.set_ylabel("Fréchet LeNet-style distance (not Inception FID)", fontsize=8)
    ax_f.legend(fontsize=8)
    ax_a.plot(scales, [r["accuracy"] for r in rows], "o-", color="tab:green")
    ax_a.axhline(test_accuracy, color="k", ls=":", label="classifier on test images")
    ax_a.axhline(0.1, color="0.6", ls="--", label="chance")
    ax_a.set_ylim(0.0, 1.02)
    ax_a.set_xlabel("guidance scale w")
    ax_a.set_ylabel("classifier accuracy on the intended class", fontsize=8)
    ax_a.legend(fontsize=8)
    fig.suptitle("MNIST classifier-free guidance", fontsize=9)
    fig.tight_layout()
    return fig


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train with condition dropout, sample at each guidance scale, score, write the run folder."""
    validate_config(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()

    data = base.load_data(config)
    n = config.num_eval_samples
    if n > data["train_images"].shape[0]:
        raise ValueError(
            f"num_eval_samples must be <= the {data['train_images'].shape[0]} training images "
            f"(the FID floor uses as many), got {n}"
        )
    key = jax.random.key(config.seed)
    key_init, key_train, key_sample, key_floor = jax.random.split(key, 4)
    schedule = diffusion.linear_schedule(
        config.num_diffusion_steps, config.beta_start, config.beta_end
    )
    net = base.build_unet(config, num_classes=NUM_CLASSES)
    example = (jnp.zeros((1, *base.IMAGE_SHAPE)), jnp.zeros(1), jnp.zeros(1, jnp.int32))
    params = base.init_params(key_init, net, *example)

    def loss_fn(params, key, batch):
        x, labels = batch
        key_drop, key_loss, key_dropout = jax.random.split(key, 3)
        labels = diffusion.drop_labels(key_drop, labels, config.p_uncond, NULL_LABEL)

        def model_fn(x_t, t):
            return net.apply(params, x_t, t, labels, train=True, rngs={"dropout": key_dropout})

        return diffusion.ddpm_loss(model_fn, schedule, key_loss, x)

    result = base.train_model(config, run_dir, data, net, loss_fn, params, key_train, NAME)
    # Host round trip, as in mnist_diffusion: resumed and fresh runs share compilations.
    params = jax.tree.map(jnp.asarray, jax.device_get(base.ema_params(result.state)))
    train_seconds = time.perf_counter() - started

    # ---- per-scale evaluation -----------------------------------------------------------
    classifier = mnist_net.load_mnist_classifier()
    test_logits, test_features = base.classify(data["test_images"], classifier)
    test_accuracy = float(jnp.mean(jnp.argmax(test_logits, -1) == data["test_labels"]))
    floor_idx = jax.random.choice(key_floor, data["train_images"].shape[0], (n,), replace=False)
    _, floor_features = base.classify(data["train_images"][np.asarray(floor_idx)], classifier)
    fid_floor = base.fid_from_features(floor_features, test_features)

    labels = np.arange(n, dtype=np.int32) % NUM_CLASSES
    b = config.sample_batch_size
    rows, grids = [], {}
    for w in config.guidance_scales:
        tic = time.perf_counter()
        chunks = [
            draw_guided(
                params,
                jax.random.fold_in(key_sample, i),  # the same noise at every scale
                schedule,
                net,
                labels[i * b : (i + 1) * b],
                w,
                sampler=config.sampler,
                num_steps=config.sample_steps,
                clip_x0=config.clip_x0,
            )
            for i in range(-(-n // b))
        ]
        x = jax.block_until_ready(jnp.concatenate(chunks))
        seconds = time.perf_counter() - tic
        images = base.to_unit_interval(x)
        logits, feats = base.classify(images, classifier)
        row = {
            "guidance_scale": float(w),
            "fid_lenet": base.fid_from_features(feats, test_features),
            "accuracy": float(jnp.mean(jnp.argmax(logits, -1) == labels)),
            "inception_score": float(metrics.inception_score(logits).mean),
            "nfe": guided_nfe(config.sampler, config.sample_steps),
            "seconds": seconds,
            "finite": bool(jnp.all(jnp.isfinite(x))),
        }
        rows.append(row)
        grid = {}
        for c in range(NUM_CLASSES):
            grid[str(c)] = np.asarray(images[labels == c][: config.num_grid])
        grids[w] = {k: v for k, v in grid.items() if v.shape[0]}

    results: dict[str, Any] = {
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "train_seconds": train_seconds,
        "device": jax.devices()[0].device_kind,
        "num_eval_samples": n,
        "fid_lenet_floor": fid_floor,
        "test_set_accuracy": test_accuracy,
        "metric_note": "fid_lenet is fid_mnist's Fréchet LeNet-style distance, not Inception FID",
        "per_scale": rows,
    }
    for row in rows:
        for field in ("fid_lenet", "accuracy", "inception_score"):
            results[f"w{row['guidance_scale']:g}/{field}"] = row[field]

    # ---- figures ------------------------------------------------------------------------
    for w, grid in grids.items():
        title = (
            f"classifier-free guidance w = {w:g} ({config.sampler}, {config.sample_steps} steps)"
        )
        viz.save_figure(base.plot_image_rows(grid, title), run_dir / f"samples_w{w:g}.png")
    viz.save_figure(_plot_tradeoff(rows, fid_floor, test_accuracy), run_dir / "guidance.png")
    if result.history:
        viz.save_figure(viz.plot_history(result.history, ["loss"]), run_dir / "loss.png")

    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
