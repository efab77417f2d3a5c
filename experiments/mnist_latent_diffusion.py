"""MNIST latent diffusion on a frozen VQ-VAE against pixel-space diffusion at equal budget.

Three stages, each in its own sub-folder of the run folder (so each resumes on its own):

1. ``vqvae/``: the VQ-VAE of :mod:`experiments.mnist_vqvae` (28×28 → 7×7×D, EMA codebook),
   trained or, when that folder already holds its final checkpoint, just loaded. Its small
   code dimension (D = 4 by default: 196 latent numbers per digit) keeps the latent space
   smaller than pixel space, as latent diffusion intends (Rombach et al. 2022).
2. ``latent_ddpm/``: a DDPM (ε-prediction, linear β, T = 1000) with a one-level
   :class:`dgm_jax.nn.UNet` (7×7 has no factor 2) on the *pre-quantisation* latents of the
   frozen encoder, rescaled by one stored factor ``1/σ̂`` to unit variance
   (:func:`dgm_jax.vae.latent_diffusion.fit_latent_scaling`); sampling runs in latent space
   and the decoder quantises to the nearest codes and decodes.
3. ``pixel_ddpm/``: the pixel-space baseline, a small three-level U-Net DDPM on images in
   [-1, 1], trained with the **same number of steps, batch size, optimizer and schedule**
   ("equal training budget" means equal diffusion updates; the VQ-VAE's own training is
   extra and reported separately, as are wall times).

Both DDPMs are sampled with DDIM (η = 0, ``sample_steps`` network evaluations) and scored
with :func:`dgm_jax.metrics.fid_mnist`-style Fréchet distances in the MNIST LeNet-style
classifier's features (**not an Inception-v3 FID**) against the 10,000 test digits, next to
two references: the VQ-VAE's reconstructions (the best the latent model's decoder allows)
and as many real training digits (the floor at that sample size).

Outputs: ``config.json``, ``metrics.json``, ``samples.png`` (latent vs pixel samples),
``loss.png``, and the three stage folders with their ``metrics.jsonl`` and checkpoints.

Expected time: the default config is GPU-sized (20,000 VQ-VAE steps, then 40,000 steps of
each DDPM at batch 128, 10,000 samples per model); it has not been timed here. On 2 CPU
cores use ``--smoke`` (a few seconds of training on random images) or much smaller settings.

Example:
    python -m experiments run mnist_latent_diffusion
    python -m experiments run mnist_latent_diffusion --set num_train_steps=5000 \\
        --set train_pixel_baseline=false
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgm_jax import diffusion, train, viz
from dgm_jax.data import make_batch_fn
from dgm_jax.metrics import frechet_distance_from_features, mnist_net
from dgm_jax.nn import UNet, init_params
from dgm_jax.vae import latent_diffusion as ld
from dgm_jax.vae.vqvae import vqvae_latent_fns
from experiments import mnist_vqvae

NAME = "mnist_latent_diffusion"


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the latent-vs-pixel diffusion run (defaults sized for one GPU)."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" or "synthetic" (random blobs, for tests)
    # --- the autoencoder (see experiments.mnist_vqvae) ---
    ae_code_dim: int = 4
    ae_num_codes: int = 256
    ae_hidden: int = 128
    ae_num_res_blocks: int = 2
    ae_res_hidden: int = 32
    ae_dead_after: int = 200
    ae_batch_size: int = 128
    ae_train_steps: int = 20_000
    ae_learning_rate: float = 2e-4
    # --- both diffusion models: same schedule, optimizer, steps and batch size ---
    num_diffusion_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    batch_size: int = 128
    num_train_steps: int = 40_000
    learning_rate: float = 2e-4
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    latent_channels: tuple[int, ...] = (128,)  # one level: 7×7 latents
    latent_attention: tuple[int, ...] = (7,)
    pixel_channels: tuple[int, ...] = (32, 64, 64)  # 28 → 14 → 7
    pixel_attention: tuple[int, ...] = (7,)
    num_res_blocks: int = 2
    norm_groups: int = 32
    train_pixel_baseline: bool = True
    num_scaling_images: int = 10_000  # training images whose latents fix the scale factor
    # --- evaluation ---
    sample_steps: int = 100  # DDIM (η = 0) network evaluations for both models
    num_fid_samples: int = 10_000
    sample_batch_size: int = 1000
    num_grid: int = 10
    log_every: int = 500
    checkpoint_every: int = 5000
    progress: bool = True


SMOKE = Config(
    dataset="synthetic",
    ae_code_dim=2,
    ae_num_codes=8,
    ae_hidden=8,
    ae_num_res_blocks=1,
    ae_res_hidden=4,
    ae_dead_after=1,
    ae_batch_size=8,
    ae_train_steps=2,
    num_diffusion_steps=20,
    beta_start=1e-3,
    beta_end=0.3,
    batch_size=8,
    num_train_steps=2,
    warmup_steps=1,
    latent_channels=(8,),
    latent_attention=(),
    pixel_channels=(8,),
    pixel_attention=(),
    num_res_blocks=1,
    norm_groups=4,
    num_scaling_images=32,
    sample_steps=2,
    num_fid_samples=16,
    sample_batch_size=16,
    num_grid=4,
    log_every=1,
    checkpoint_every=1,
    progress=False,
)


def validate_config(config: Config) -> None:
    """Raise ``ValueError`` naming the first bad field of ``config``."""
    for name in (
        "num_diffusion_steps",
        "batch_size",
        "num_res_blocks",
        "norm_groups",
        "num_scaling_images",
        "sample_steps",
        "sample_batch_size",
        "num_grid",
    ):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("num_train_steps", "warmup_steps", "log_every", "checkpoint_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.num_fid_samples < 2:
        raise ValueError(f"num_fid_samples must be >= 2, got {config.num_fid_samples}")
    if config.sample_steps > config.num_diffusion_steps:
        raise ValueError(
            f"sample_steps must lie in [1, num_diffusion_steps={config.num_diffusion_steps}], "
            f"got {config.sample_steps}"
        )
    if not 0.0 < config.beta_start <= config.beta_end < 1.0:
        raise ValueError(
            f"beta_start and beta_end must satisfy 0 < beta_start <= beta_end < 1, got "
            f"{config.beta_start} and {config.beta_end}"
        )
    if len(config.latent_channels) != 1 or config.latent_channels[0] < 1:
        raise ValueError(
            f"latent_channels must be one width (7×7 latents allow one level), got "
            f"{config.latent_channels}"
        )
    if not config.pixel_channels or 28 % 2 ** (len(config.pixel_channels) - 1):
        raise ValueError(f"pixel_channels must have 1 to 3 levels, got {config.pixel_channels}")
    for name in ("learning_rate", "grad_clip"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    mnist_vqvae.validate_config(vqvae_config(config))


def vqvae_config(config: Config) -> mnist_vqvae.Config:
    """The :class:`experiments.mnist_vqvae.Config` of the autoencoder stage."""
    return mnist_vqvae.Config(
        seed=config.seed,
        dataset=config.dataset,
        code_dim=config.ae_code_dim,
        num_codes=config.ae_num_codes,
        hidden=config.ae_hidden,
        num_res_blocks=config.ae_num_res_blocks,
        res_hidden=config.ae_res_hidden,
        dead_after=config.ae_dead_after,
        batch_size=config.ae_batch_size,
        num_train_steps=config.ae_train_steps,
        learning_rate=config.ae_learning_rate,
        log_every=config.log_every,
        eval_every=0,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
    )


def _optimizer(config: Config) -> optax.GradientTransformation:
    warmup = min(config.warmup_steps, max(config.num_train_steps - 1, 1))
    learning_rate = optax.linear_schedule(0.0, config.learning_rate, max(warmup, 1))
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(learning_rate))


def _unet(channels, attention, config: Config) -> UNet:
    return UNet(
        channels=tuple(channels),
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=tuple(attention),
        norm_groups=config.norm_groups,
    )


def train_ddpm(config: Config, net: UNet, loss_fn, data, run_dir, key, name: str):
    """Train one DDPM on ``data`` (rows are examples) with the shared budget; resumable."""
    key_init, key_train, key_data = jax.random.split(key, 3)
    params = init_params(key_init, net, jnp.zeros((1, *data.shape[1:])), jnp.zeros(1))
    optimizer = _optimizer(config)
    state = train.init_train_state(params, optimizer)
    get_batch = make_batch_fn(key_data, data, config.batch_size)
    started = time.perf_counter()
    result = train.fit(
        train.make_step(loss_fn, optimizer),
        state,
        key_train,
        get_batch,
        config.num_train_steps,
        run_dir=run_dir,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=name,
    )
    return result, time.perf_counter() - started


def draw_samples(sample_fn, key, num: int, batch_size: int) -> np.ndarray:
    """Call the jitted ``sample_fn(key) -> (batch_size, ...)`` until ``num`` samples exist."""
    out = []
    for i in range(-(-num // batch_size)):
        out.append(np.asarray(sample_fn(jax.random.fold_in(key, i))))
    return np.concatenate(out)[:num]


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train the three stages, sample, score and write the run folder; return the metrics."""
    validate_config(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()
    key_latent, key_pixel, key_sample = jax.random.split(jax.random.key(config.seed + 1), 3)
    train_images, test_images = mnist_vqvae.load_images(config.dataset, config.seed)
    train_dev = jnp.asarray(train_images)

    # ---- 1. the frozen autoencoder ------------------------------------------------------
    ae = mnist_vqvae.train_vqvae(vqvae_config(config), run_dir / "vqvae", train_images)
    encode_fn, decode_fn = vqvae_latent_fns(ae.model, ae.state.params)
    to_float = jax.jit(lambda x: x.astype(jnp.float32) / 255.0)
    encode_all = jax.jit(
        lambda x: ld.encode_in_batches(
            lambda xb: encode_fn(xb.astype(jnp.float32) / 255.0), x, batch_size=500
        )
    )
    latents = encode_all(train_dev)  # the encoder is frozen and deterministic: encode once
    scaling = ld.fit_latent_scaling(latents[: config.num_scaling_images])

    # ---- 2. latent DDPM ------------------------------------------------------------------
    schedule = diffusion.linear_schedule(
        config.num_diffusion_steps, config.beta_start, config.beta_end
    )
    latent_net = _unet(config.latent_channels, config.latent_attention, config)

    def latent_loss(params, key, z):
        model_fn = functools.partial(latent_net.apply, params)
        return ld.latent_diffusion_loss(model_fn, schedule, lambda v: v, scaling, key, z)

    latent_result, latent_seconds = train_ddpm(
        config, latent_net, latent_loss, latents, run_dir / "latent_ddpm", key_latent, "latent"
    )

    # ---- 3. pixel DDPM at the same budget ------------------------------------------------
    pixel_net = _unet(config.pixel_channels, config.pixel_attention, config)
    pixel_result, pixel_seconds = None, 0.0
    if config.train_pixel_baseline:

        def pixel_loss(params, key, images):
            x = images.astype(jnp.float32) / 127.5 - 1.0
            return diffusion.ddpm_loss(functools.partial(pixel_net.apply, params), schedule, key, x)

        pixel_result, pixel_seconds = train_ddpm(
            config, pixel_net, pixel_loss, train_dev, run_dir / "pixel_ddpm", key_pixel, "pixel"
        )

    # ---- sampling and scores -------------------------------------------------------------
    b = min(config.sample_batch_size, config.num_fid_samples)
    ddim = functools.partial(diffusion.ddim_sample, num_steps=config.sample_steps)
    latent_shape = (b, *latents.shape[1:])

    @jax.jit
    def sample_latent(key):
        model_fn = functools.partial(latent_net.apply, latent_result.state.params)
        x = ld.latent_diffusion_sample(
            key, model_fn, schedule, decode_fn, scaling, latent_shape, sampler=ddim
        )
        return jnp.clip(x, 0.0, 1.0)

    classifier = mnist_net.load_mnist_classifier()
    features = jax.jit(lambda x: mnist_net.mnist_features(x, params=classifier))
    test_features = features(to_float(jnp.asarray(test_images)))
    n = config.num_fid_samples

    def score(images: np.ndarray) -> float:
        return float(frechet_distance_from_features(features(jnp.asarray(images)), test_features))

    samples = {"latent DDPM": draw_samples(sample_latent, key_sample, n, b)}
    if pixel_result is not None:

        @jax.jit
        def sample_pixel(key):
            model_fn = functools.partial(pixel_net.apply, pixel_result.state.params)
            x = diffusion.ddim_sample(
                key, model_fn, schedule, (b, 28, 28, 1), num_steps=config.sample_steps, clip_x0=1.0
            )
            return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

        samples["pixel DDPM"] = draw_samples(sample_pixel, jax.random.fold_in(key_sample, 1), n, b)

    reference = np.asarray(to_float(train_dev[:n]))
    recon = jax.jit(lambda x: jnp.clip(ae.model.reconstruct(ae.state.params, x), 0.0, 1.0))
    reconstructions = np.concatenate(
        [np.asarray(recon(jnp.asarray(reference[i : i + b]))) for i in range(0, len(reference), b)]
    )
    results: dict[str, Any] = {
        "fid_lenet/latent_ddpm": score(samples["latent DDPM"]),
        "fid_lenet/vqvae_reconstructions": score(reconstructions),
        "fid_lenet/train_images_floor": score(reference),
        "num_fid_samples": n,
        "num_fid_reference": int(test_features.shape[0]),
        "latent_shape": list(latents.shape[1:]),
        "latent_scale": float(scaling.scale),
        "ae_final_recon_mse": ae.history[-1].get("recon_mse") if ae.history else None,
        "ae_train_seconds": ae.train_seconds,
        "latent_ddpm_train_seconds": latent_seconds,
        "latent_ddpm_num_params": int(
            sum(x.size for x in jax.tree.leaves(latent_result.state.params))
        ),
        "num_train_steps_each": config.num_train_steps,
        "batch_size_each": config.batch_size,
        "device": jax.devices()[0].device_kind,
    }
    if pixel_result is not None:
        results["fid_lenet/pixel_ddpm"] = score(samples["pixel DDPM"])
        results["pixel_ddpm_train_seconds"] = pixel_seconds
        results["pixel_ddpm_num_params"] = int(
            sum(x.size for x in jax.tree.leaves(pixel_result.state.params))
        )

    # ---- figures -------------------------------------------------------------------------
    k = config.num_grid
    rows = {"training digits": reference[:k]}
    for label, images in samples.items():
        rows[label] = images[:k]
        rows[label + " "] = images[k : 2 * k]  # a second row of the same model
    mnist_vqvae.image_grid(rows, run_dir / "samples.png", title="DDIM samples")
    histories = {"latent": latent_result.history}
    if pixel_result is not None:
        histories["pixel"] = pixel_result.history
    merged = [
        {"step": r["step"], f"{name} loss": r["loss"]}
        for name, history in histories.items()
        for r in history
        if "loss" in r
    ]
    viz.save_figure(
        viz.plot_history(merged, [f"{name} loss" for name in histories]), run_dir / "loss.png"
    )
    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
