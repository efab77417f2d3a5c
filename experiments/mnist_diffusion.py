"""MNIST DDPM with the U-Net: sample quality against network evaluations, and bits/dim.

The run trains :class:`dgm_jax.nn.UNet` to predict the noise ε of a DDPM (Ho et al.
2020, linear β from 1e-4 to 0.02 over T = 1000 steps) on MNIST scaled to [-1, 1]
(uniformly dequantized, ``x = 2 (k + u) / 256 - 1``), with Adam, a warm-up, gradient
clipping and an exponential moving average (EMA) of the weights that is used for
evaluation. The EMA lives in the optimizer state, so checkpoints and resuming carry it.

Evaluation, with the EMA weights:

* **Sample quality against NFE.** Three samplers at each of ``step_counts`` network
  evaluations (NFE = steps; every sampler evaluates the network once per step):
  ``ddpm``, ancestral sampling on the respaced schedule (Nichol & Dhariwal 2021: the
  DDPM whose ᾱ are those of the visited steps, which is the full DDPM at NFE = T);
  ``ddim``, DDIM with η = 0 (Song, Meng & Ermon 2021); ``dpm_solver_pp``,
  DPM-Solver++(2M) (Lu et al. 2022). DDIM and DPM-Solver++ start from the same noise at
  every step count. Quality is :func:`dgm_jax.metrics.fid_mnist`, the Fréchet distance
  in the 128-d features of the shipped MNIST LeNet-style classifier — a **"Fréchet
  LeNet-style distance", not an Inception-v3 FID**, comparable only with numbers from
  the same network — between ``num_fid_samples`` samples and the 10,000 test images,
  next to the same distance for as many *training* images (the floor at that sample
  size).
* **Test-set bits/dim** through the probability-flow ODE of the VP SDE that the
  discrete schedule discretises (β(t) = T β, Song et al. 2021): the score is
  ``−ε̂(x, i(t)) / s(t)`` with ``i(t)`` the fractional training step whose ᾱ equals
  the SDE's ``m(t)²`` (so the network is queried at its own noise levels), integrated
  with RK4 (``bpd_solver``) from ``bpd_eps`` to 1, with Hutchinson's trace estimator (one Rademacher
  probe per image) and uniform dequantization: ``bpd = (−log p(x)/D + log 128)/log 2``
  for x in [-1, 1) (an upper bound on the discrete NLL, Theis et al. 2016). It is the
  likelihood of the continuous model the network defines through the ODE, on
  ``num_bpd_images`` test images (mean ± standard error).

Outputs in the run folder: ``config.json``, ``metrics.json`` (with the
``quality_vs_nfe`` table), ``metrics.jsonl``, ``quality_vs_nfe.png``,
``samples_<sampler>.png`` (rows: step counts, same starting noise), ``loss.png`` and
``checkpoints/``. Running again with the same ``--workdir`` resumes training from the
newest checkpoint.

Expected time (default config, estimated, not yet measured on a GPU): training 40,000
steps of batch 128 with the 6.5M-parameter U-Net is about 5.1M images, 6–10 minutes on
one H100 in float32 (FACTS.md measured ~14k images/s for a 5.8M twin); sampling 3
samplers × (10 + 20 + 50 + 100 + 250 + 1000) NFE × 5,000 images is about 2.1·10⁷ image
evaluations, 8–12 minutes; bits/dim on 256 images with 100 RK4 steps about a minute.
On 2 CPU cores the default config would take days: use ``--smoke`` or much smaller
settings there. Measured on 2 CPU cores: channels (16, 32, 32), one residual block,
6,000 steps of batch 64 (0.28M parameters, 6.4 epochs) trained in 43 minutes; its
samples are stroke-like, not yet digits (FID-LeNet 149–273 on 300 samples, floor 11.9),
1.18 ± 0.09 bits/dim on 64 test images (``benchmarks/results/mnist_diffusion-cpu-*.json``).

Example:
    python -m experiments run mnist_diffusion
    python -m experiments run mnist_diffusion --set num_train_steps=20000 --workdir runs/mine
    python -m experiments run mnist_diffusion --smoke
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import optax

from dgm_jax import diffusion, train, viz
from dgm_jax import sde as sdes
from dgm_jax.data import make_batch_fn
from dgm_jax.metrics import frechet_distance_from_features, mnist_net
from dgm_jax.nn import UNet, init_params

NAME = "mnist_diffusion"
SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp")
DATASETS = ("mnist", "synthetic")
BPD_SOLVERS = {"euler": sdes.euler, "heun": sdes.heun, "rk4": sdes.rk4}
IMAGE_SHAPE = (28, 28, 1)
NUM_DIMS = math.prod(IMAGE_SHAPE)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the MNIST DDPM run (the defaults are sized for one GPU; see the module)."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" (dgm_jax.data.load_mnist) or "synthetic" (random, tests)
    num_diffusion_steps: int = 1000  # T of the discrete schedule
    beta_start: float = 1e-4  # linear schedule, Ho et al. (2020)
    beta_end: float = 0.02
    channels: tuple[int, ...] = (64, 128, 128)  # U-Net widths per level (UNET_MNIST_5M)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (7,)
    norm_groups: int = 32
    dropout: float = 0.1
    batch_size: int = 128
    num_train_steps: int = 40_000
    learning_rate: float = 2e-4
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.9995  # EMA of the weights used for evaluation (0: the raw weights)
    log_every: int = 500
    checkpoint_every: int = 5000
    samplers: tuple[str, ...] = SAMPLERS
    step_counts: tuple[int, ...] = (10, 20, 50, 100, 250, 1000)  # NFE of each sampler
    clip_x0: float = 1.0  # clip the predicted x̂_0 to [-clip_x0, clip_x0] (0: no clipping)
    num_fid_samples: int = 5000  # samples per (sampler, NFE) scored against the test set
    sample_batch_size: int = 1000  # images drawn per compiled sampler call
    num_grid: int = 10  # samples per row of the sample grids
    num_bpd_images: int = 256  # test images whose bits/dim are computed
    bpd_batch_size: int = 64
    bpd_solver: str = "rk4"  # fixed-step ODE solver for bits/dim: euler, heun or rk4
    bpd_solver_steps: int = 100  # solver steps of the probability-flow ODE (NFE: 1, 2, 4 each)
    bpd_eps: float = 1e-3  # the ODE runs from t = bpd_eps to 1
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
    batch_size=8,
    num_train_steps=2,
    warmup_steps=1,
    log_every=1,
    checkpoint_every=0,  # only at the end
    samplers=("ddpm", "dpm_solver_pp"),  # compiles dominate; the slow test runs all three
    step_counts=(2,),
    num_fid_samples=16,
    sample_batch_size=16,
    num_grid=4,
    num_bpd_images=2,
    bpd_batch_size=2,
    bpd_solver="euler",
    bpd_solver_steps=2,
    progress=False,
)


def validate_config(config: Config) -> None:
    """Raise ``ValueError`` naming the first bad field of ``config``."""
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {config.dataset!r}")
    for name in (
        "num_diffusion_steps",
        "num_res_blocks",
        "norm_groups",
        "batch_size",
        "num_train_steps",
        "num_fid_samples",
        "sample_batch_size",
        "num_grid",
        "num_bpd_images",
        "bpd_batch_size",
        "bpd_solver_steps",
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
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {config.dropout}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {config.ema_decay}")
    for name in ("learning_rate", "grad_clip"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    if config.clip_x0 < 0:
        raise ValueError(f"clip_x0 must be >= 0 (0 disables clipping), got {config.clip_x0}")
    unknown = [s for s in config.samplers if s not in SAMPLERS]
    if unknown or not config.samplers:
        raise ValueError(f"samplers must be a non-empty subset of {list(SAMPLERS)}, got {unknown}")
    if not config.step_counts or any(
        not 1 <= n <= config.num_diffusion_steps for n in config.step_counts
    ):
        raise ValueError(
            f"step_counts must lie in [1, num_diffusion_steps={config.num_diffusion_steps}], "
            f"got {config.step_counts}"
        )
    if config.num_fid_samples < 2:
        raise ValueError(f"num_fid_samples must be >= 2, got {config.num_fid_samples}")
    if config.bpd_solver not in BPD_SOLVERS:
        raise ValueError(
            f"bpd_solver must be one of {list(BPD_SOLVERS)}, got {config.bpd_solver!r}"
        )
    if not 0.0 < config.bpd_eps < 1.0:
        raise ValueError(f"bpd_eps must lie in (0, 1), got {config.bpd_eps}")


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------


def load_data(config: Config) -> dict[str, np.ndarray]:
    """Training and test images (uint8 ``(n, 28, 28, 1)``) and labels (int32 ``(n,)``).

    ``dataset="synthetic"`` gives random images and labels (256 train, 64 test) so that
    smoke tests need no MNIST files and no network.
    """
    if config.dataset == "mnist":
        from dgm_jax.data import load_mnist

        train_split, test_split = load_mnist("train"), load_mnist("test")
        return {
            "train_images": train_split.images,
            "train_labels": train_split.labels,
            "test_images": test_split.images,
            "test_labels": test_split.labels,
        }
    rng = np.random.default_rng(config.seed)
    return {
        "train_images": rng.integers(0, 256, (256, *IMAGE_SHAPE), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 256).astype(np.int32),
        "test_images": rng.integers(0, 256, (64, *IMAGE_SHAPE), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 64).astype(np.int32),
    }


def dequantize_to_unit_box(key: jax.Array, images: jax.Array) -> jax.Array:
    """uint8 images -> ``2 (k + u) / 256 - 1`` in [-1, 1), ``u ~ U[0, 1)`` per pixel."""
    u = jax.random.uniform(key, images.shape, jnp.float32)
    return (images.astype(jnp.float32) + u) / 128.0 - 1.0


def to_unit_interval(x: jax.Array) -> jax.Array:
    """Model space [-1, 1] -> pixel intensities in [0, 1] (clipped), for metrics and figures."""
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------
# Network, initialisation, EMA
# ----------------------------------------------------------------------------------------


def build_unet(config: Any, num_classes: int | None = None) -> UNet:
    """The U-Net of a config (fields channels, num_res_blocks, attention_resolutions, ...)."""
    return UNet(
        channels=tuple(config.channels),
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=tuple(config.attention_resolutions),
        num_classes=num_classes,
        dropout=config.dropout,
        norm_groups=config.norm_groups,
    )


class EmaState(NamedTuple):
    """State of :func:`param_ema`."""

    count: jax.Array  # int32: updates seen
    ema: Any  # the moving average of the parameters after each update


def param_ema(decay: float) -> optax.GradientTransformation:
    """An optax transformation that keeps an EMA of the parameters and passes updates on.

    Put it last in an ``optax.chain``: it sees the final updates and the current
    parameters, so ``ema ← d · ema + (1 − d) · (params + updates)`` with the warm-up
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates. Keeping the EMA in the
    optimizer state makes ``fit`` checkpoint and resume it with everything else.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> opt = optax.chain(optax.sgd(1.0), param_ema(0.5))
        >>> state = opt.init({"w": jnp.zeros(())})
        >>> _, state = opt.update({"w": jnp.ones(())}, state, {"w": jnp.zeros(())})
        >>> round(float(state[-1].ema["w"]), 6)  # d = min(0.5, 1/10): 0.1 * 0 + 0.9 * (-1)
        -0.9
    """

    def init_fn(params):
        # A copy: the EMA must not alias the parameters (make_step donates the state).
        return EmaState(jnp.zeros((), jnp.int32), jax.tree.map(lambda p: jnp.array(p), params))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("param_ema needs the parameters: call update(updates, state, params)")
        n = state.count.astype(jnp.float32)
        d = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new)
        return updates, EmaState(state.count + 1, ema)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """Clip → Adam with linear warm-up → EMA of the weights (EMA state last in the chain)."""
    warmup = min(config.warmup_steps, max(config.num_train_steps - 1, 0))
    lr = config.learning_rate
    if warmup:
        lr = optax.linear_schedule(0.0, config.learning_rate, warmup)
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip), optax.adam(lr), param_ema(config.ema_decay)
    )


def ema_params(state: train.TrainState) -> Any:
    """The EMA weights kept by :func:`make_optimizer`'s last transformation."""
    return state.opt_state[-1].ema


# ----------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------


def respaced_schedule(
    schedule: diffusion.DiscreteSchedule, steps: jax.Array
) -> diffusion.DiscreteSchedule:
    """The DDPM on a sub-sequence of steps (Nichol & Dhariwal 2021, §4): ``ᾱ'_i = ᾱ_{s_i}``.

    Args:
        schedule: the training schedule.
        steps: increasing training steps ``s_0 < … < s_{N-1}``, shape ``(N,)`` (may be
            traced: no value checks here).

    Returns:
        A schedule of ``N`` steps with ``β'_i = 1 − ᾱ_{s_i} / ᾱ_{s_{i-1}}`` (``ᾱ_{s_{-1}} = 1``),
        whose ``alpha_bars`` equal ``schedule.alpha_bars[steps]`` exactly.

    Examples:
        >>> s = diffusion.linear_schedule(1000)
        >>> respaced_schedule(s, jnp.array([0, 499, 999])).num_steps
        3
    """
    ab = schedule.alpha_bars[steps]
    alphas = ab / jnp.concatenate([jnp.ones(1, ab.dtype), ab[:-1]])
    return diffusion.DiscreteSchedule(1.0 - alphas, alphas, ab)


def sampler_nfe(sampler: str, num_steps: int) -> int:
    """Network evaluations of one draw: one per step for every sampler here."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
    return num_steps


def sample(
    sampler: str,
    key: jax.Array,
    model_fn: diffusion.ddpm.ModelFn,
    schedule: diffusion.DiscreteSchedule,
    shape: tuple[int, ...],
    num_steps: int,
    *,
    clip_x0: float | None = None,
) -> jax.Array:
    """Draw ``shape`` samples with ``sampler`` in ``num_steps`` network evaluations.

    Args:
        sampler: ``"ddpm"`` (ancestral on the respaced schedule), ``"ddim"`` (η = 0) or
            ``"dpm_solver_pp"`` (2M).
        key: PRNG key; ``ddim`` and ``dpm_solver_pp`` draw the same ``x_T`` from it.
        model_fn: ε-network ``(x_t, t) -> ε̂`` on a batch, ``t`` the training step.
        schedule: the training schedule.
        shape: ``(batch, 28, 28, 1)``.
        num_steps: network evaluations, in ``[1, T]``.
        clip_x0: optional clipping of x̂_0.

    Returns:
        Samples in model space, shape ``shape``.

    Examples:
        >>> s = diffusion.linear_schedule(100)
        >>> eps_fn = lambda x, t: jnp.zeros_like(x)  # a trained ε-network goes here
        >>> sample("dpm_solver_pp", jax.random.key(0), eps_fn, s, (2, 28, 28, 1), 10).shape
        (2, 28, 28, 1)
    """
    if sampler == "ddpm":
        steps = diffusion.ddim_timesteps(schedule.num_steps, num_steps)[::-1]  # increasing
        respaced = respaced_schedule(schedule, steps)

        def respaced_fn(x, index):  # respaced step i -> training step s_i
            return model_fn(x, steps[index.astype(jnp.int32)].astype(jnp.float32))

        return diffusion.ancestral_sample(key, respaced_fn, respaced, shape, clip_x0=clip_x0)
    if sampler == "ddim":
        return diffusion.ddim_sample(
            key, model_fn, schedule, shape, num_steps=num_steps, eta=0.0, clip_x0=clip_x0
        )
    if sampler == "dpm_solver_pp":
        return diffusion.dpm_solver_pp_sample(
            key, model_fn, schedule, shape, num_steps=num_steps, clip_x0=clip_x0
        )
    raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")


@functools.partial(jax.jit, static_argnames=("net", "sampler", "num_steps", "batch", "clip_x0"))
def _draw(params, key, betas, *, net, sampler, num_steps, batch, clip_x0):
    # Module-level jit keyed on static settings: a resumed run in the same process (and
    # the tests) reuse the compiled samplers.
    schedule = _schedule_from_betas(betas)

    def model_fn(x, t):
        return net.apply(params, x, t)

    return sample(
        sampler, key, model_fn, schedule, (batch, *IMAGE_SHAPE), num_steps, clip_x0=clip_x0
    )


def _schedule_from_betas(betas: jax.Array) -> diffusion.DiscreteSchedule:
    alphas = 1.0 - betas
    return diffusion.DiscreteSchedule(betas, alphas, jnp.cumprod(alphas))


def draw_samples(params, key, schedule, net, sampler, num_steps, num, batch_size, clip_x0):
    """``num`` samples in model space, drawn in compiled chunks of ``batch_size``."""
    chunks = -(-num // batch_size)
    out = [
        _draw(
            params,
            jax.random.fold_in(key, i),
            schedule.betas,
            net=net,
            sampler=sampler,
            num_steps=num_steps,
            batch=min(batch_size, num),
            clip_x0=clip_x0 or None,
        )
        for i in range(chunks)
    ]
    return jnp.concatenate(out)[:num]


# ----------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _classify(params, images, batch_size):
    n = images.shape[0]
    b = min(batch_size, n)
    nb = -(-n // b)
    padded = jnp.pad(images, ((0, nb * b - n), (0, 0), (0, 0), (0, 0)))

    def apply(x):
        return mnist_net.MnistClassifier().apply(params, x)

    logits, feats = jax.lax.map(apply, padded.reshape(nb, b, *IMAGE_SHAPE))
    return logits.reshape(nb * b, -1)[:n], feats.reshape(nb * b, -1)[:n]


def classify(images: jax.Array, classifier_params: Any) -> tuple[jax.Array, jax.Array]:
    """Logits ``(n, 10)`` and 128-d features ``(n, 128)`` of images in [0, 1] (or uint8)."""
    images = jnp.asarray(images)
    if jnp.issubdtype(images.dtype, jnp.integer):
        images = images.astype(jnp.float32) / 255.0
    return _classify(classifier_params, images, 500)


_frechet = jax.jit(frechet_distance_from_features)


def fid_from_features(features: jax.Array, reference: jax.Array) -> float:
    """The Fréchet LeNet-style distance (``fid_mnist``'s formula) from precomputed features."""
    return float(_frechet(features, reference))


def vp_betas(config: Any) -> tuple[float, float]:
    """``(β_min, β_max)`` of the VP SDE the linear schedule discretises: ``T β_start, T β_end``."""
    t = config.num_diffusion_steps
    beta_min, beta_max = t * config.beta_start, t * config.beta_end
    if beta_max <= beta_min:  # a constant schedule: keep vp_sde's beta_min < beta_max
        beta_max = beta_min * (1.0 + 1e-6)
    return float(beta_min), float(beta_max)


def score_from_eps(net, params, vp: sdes.SDE, schedule: diffusion.DiscreteSchedule):
    """``score_fn(x, t) = −ε̂(x, i(t)) / s(t)`` with ``i(t)`` the noise-matched fractional step.

    ``i(t)`` interpolates the training step linearly in ``−log ᾱ`` so that
    ``ᾱ_{i(t)} = m(t)²``; it is clamped to ``[0, T − 1]``.

    Args:
        net: anything with ``net.apply(params, x, steps) -> ε̂`` (e.g. a :class:`UNet`).
        params: its parameters.
        vp: the VP SDE of the schedule (:func:`vp_betas`).
        schedule: the training schedule.

    Returns:
        ``score_fn(x, t)`` on a batch: ``x`` of shape ``(batch, *event)``, ``t`` ``(batch,)``.

    Examples:
        >>> class Zero:
        ...     def apply(self, params, x, t):
        ...         return jnp.zeros_like(x)
        >>> score_fn = score_from_eps(Zero(), None, sdes.vp_sde(), diffusion.linear_schedule(1000))
        >>> score_fn(jnp.ones((2, 3)), jnp.full(2, 0.5)).shape
        (2, 3)
    """
    neg_log_ab = -jnp.log(schedule.alpha_bars)  # increasing in the step
    steps = jnp.arange(schedule.num_steps, dtype=jnp.float32)

    def score_fn(x, t):
        m, s = vp.marginal_fn(t)
        index = jnp.interp(-2.0 * jnp.log(m), neg_log_ab, steps)
        eps = net.apply(params, x, index)
        return -eps / s.reshape((-1,) + (1,) * (x.ndim - 1))

    return score_fn


@functools.partial(
    jax.jit, static_argnames=("net", "beta_min", "beta_max", "eps", "solver", "solver_steps")
)
def _log_likelihood(params, key, x, betas, *, net, beta_min, beta_max, eps, solver, solver_steps):
    vp = sdes.vp_sde(beta_min, beta_max, eps=eps)
    score_fn = score_from_eps(net, params, vp, _schedule_from_betas(betas))
    ll, info = sdes.ode_log_likelihood(
        key, vp, score_fn, x, trace="hutchinson", num_probes=1, solver=BPD_SOLVERS[solver],
        num_steps=solver_steps,
    )  # fmt: skip
    return ll, info.ode.num_fn_evals


def bits_per_dim_on_images(params, key, images, schedule, net, config) -> dict[str, float]:
    """Bits/dim of uint8 ``images`` under the probability-flow ODE (Hutchinson, dequantized).

    Returns the mean, its standard error over images, and the ODE's function evaluations.
    """
    beta_min, beta_max = vp_betas(config)
    sdes.vp_sde(beta_min, beta_max, eps=config.bpd_eps)  # validates the settings eagerly
    settings = {
        "beta_min": beta_min,
        "beta_max": beta_max,
        "eps": float(config.bpd_eps),
        "solver": config.bpd_solver,
        "solver_steps": config.bpd_solver_steps,
    }
    offset = sdes.uniform_dequantization_offset(256, -1.0, 1.0)  # log 128 per dimension
    n, b = images.shape[0], config.bpd_batch_size
    bpd, nfe = [], 0
    for i in range(-(-n // b)):
        chunk = jnp.asarray(images[i * b : (i + 1) * b])
        key_deq, key_probe = jax.random.split(jax.random.fold_in(key, i))
        x = dequantize_to_unit_box(key_deq, chunk)
        ll, nfe = _log_likelihood(params, key_probe, x, schedule.betas, net=net, **settings)
        bpd.append(np.asarray(sdes.bits_per_dim(ll, NUM_DIMS, dequantization_offset=offset)))
    bpd = np.concatenate(bpd)
    return {
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_se": float(bpd.std(ddof=1) / np.sqrt(bpd.size)) if bpd.size > 1 else 0.0,
        "ode_nfe": int(nfe),
        "num_images": int(bpd.size),
    }


# ----------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------


def image_grid(images: np.ndarray, num_cols: int) -> np.ndarray:
    """Tile ``(n, 28, 28, 1)`` images in [0, 1] into one ``(rows·30, cols·30)`` array."""
    images = np.asarray(images)[..., 0]
    n = images.shape[0]
    rows = -(-n // num_cols)
    grid = np.ones((rows * 30, num_cols * 30), np.float32)
    for k in range(n):
        r, c = divmod(k, num_cols)
        grid[r * 30 + 1 : r * 30 + 29, c * 30 + 1 : c * 30 + 29] = images[k]
    return grid


def plot_image_rows(rows: dict[str, np.ndarray], title: str) -> plt.Figure:
    """One row of images per entry: label -> ``(k, 28, 28, 1)`` images in [0, 1]."""
    num_cols = max(v.shape[0] for v in rows.values())
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(max(4.5, 0.6 * num_cols + 1.2), 0.7 * len(rows) + 0.6), squeeze=False
    )
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(image_grid(images, num_cols), cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _plot_quality(table, floor, num_samples):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in dict.fromkeys(row["sampler"] for row in table):
        rows = sorted((r for r in table if r["sampler"] == name), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r["fid_lenet"] for r in rows], "o-", ms=4, label=name)
    ax.axhline(floor, color="k", ls=":", label="training images vs test (floor)")
    ax.set_xscale("log")
    if all(r["fid_lenet"] > 0 for r in table) and floor > 0:
        ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel(f"Fréchet LeNet-style distance to test set ({num_samples} samples)")
    ax.set_title("MNIST DDPM: sample quality vs NFE (not an Inception FID)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------
# Run
# ----------------------------------------------------------------------------------------


def train_model(config: Any, run_dir, data, net, loss_fn, params, key, desc):
    """Fit ``loss_fn`` with :func:`make_optimizer`; returns the ``FitResult``.

    ``loss_fn(params, key, batch)``, where a batch is ``(x in [-1, 1), labels)``.
    """
    key_train, key_batches, key_deq = jax.random.split(key, 3)
    optimizer = make_optimizer(config)
    images = jnp.asarray(data["train_images"])
    labels = jnp.asarray(data["train_labels"])
    if config.batch_size > images.shape[0]:
        raise ValueError(
            f"batch_size must be <= the {images.shape[0]} training images, got {config.batch_size}"
        )

    raw_batch = make_batch_fn(key_batches, (images, labels), config.batch_size)

    @jax.jit
    def dequantized(x, y, step):
        return dequantize_to_unit_box(jax.random.fold_in(key_deq, step), x), y

    return train.fit(
        train.make_step(loss_fn, optimizer),
        train.init_train_state(params, optimizer),
        key_train,
        lambda step: dequantized(*raw_batch(step), jnp.asarray(step, jnp.int32)),
        config.num_train_steps,
        run_dir=run_dir,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=desc,
    )


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train, sample with each sampler and step count, score, and write the run folder."""
    validate_config(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()

    data = load_data(config)
    key = jax.random.key(config.seed)
    key_init, key_train, key_sample, key_bpd, key_floor = jax.random.split(key, 5)
    schedule = diffusion.linear_schedule(
        config.num_diffusion_steps, config.beta_start, config.beta_end
    )
    net = build_unet(config)
    example = (jnp.zeros((1, *IMAGE_SHAPE)), jnp.zeros(1))
    params = init_params(key_init, net, *example)
    num_params = int(sum(p.size for p in jax.tree.leaves(params)))

    def loss_fn(params, key, batch):
        x, _ = batch
        key_loss, key_dropout = jax.random.split(key)

        def model_fn(x_t, t):
            return net.apply(params, x_t, t, train=True, rngs={"dropout": key_dropout})

        return diffusion.ddpm_loss(model_fn, schedule, key_loss, x)

    result = train_model(config, run_dir, data, net, loss_fn, params, key_train, NAME)
    # Host round trip: restored (committed) and freshly trained (uncommitted) arrays would
    # otherwise compile the samplers separately, so a resumed run could not reuse them.
    params = jax.tree.map(jnp.asarray, jax.device_get(ema_params(result.state)))
    train_seconds = time.perf_counter() - started

    # ---- sample quality against NFE --------------------------------------------------
    classifier = mnist_net.load_mnist_classifier()
    _, test_features = classify(data["test_images"], classifier)
    n = config.num_fid_samples
    if n > data["train_images"].shape[0]:
        raise ValueError(
            f"num_fid_samples must be <= the {data['train_images'].shape[0]} training images "
            f"(the floor uses as many), got {n}"
        )
    floor_idx = jax.random.choice(key_floor, data["train_images"].shape[0], (n,), replace=False)
    _, floor_features = classify(data["train_images"][np.asarray(floor_idx)], classifier)
    fid_floor = fid_from_features(floor_features, test_features)

    table, grids = [], {}
    for sampler in config.samplers:
        grids[sampler] = {}
        for steps in config.step_counts:
            tic = time.perf_counter()
            x = draw_samples(
                params, key_sample, schedule, net, sampler, steps, n,
                config.sample_batch_size, config.clip_x0,
            )  # fmt: skip
            images = to_unit_interval(jax.block_until_ready(x))
            seconds = time.perf_counter() - tic
            _, feats = classify(images, classifier)
            row = {
                "sampler": sampler,
                "steps": steps,
                "nfe": sampler_nfe(sampler, steps),
                "fid_lenet": fid_from_features(feats, test_features),
                "seconds": seconds,  # includes compilation for the first chunk size
                "finite": bool(jnp.all(jnp.isfinite(x))),
            }
            table.append(row)
            grids[sampler][f"NFE {row['nfe']}"] = np.asarray(images[: config.num_grid])

    # ---- test-set bits/dim ----------------------------------------------------------
    bpd_images = data["test_images"][: config.num_bpd_images]
    bpd = bits_per_dim_on_images(params, key_bpd, bpd_images, schedule, net, config)

    results: dict[str, Any] = {
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "num_params": num_params,
        "train_seconds": train_seconds,
        "device": jax.devices()[0].device_kind,
        "num_fid_samples": n,
        "fid_lenet_floor": fid_floor,
        "metric_note": "fid_lenet is fid_mnist's Fréchet LeNet-style distance, not Inception FID",
        "test/bits_per_dim": bpd["bits_per_dim"],
        "test/bits_per_dim_se": bpd["bits_per_dim_se"],
        "test/bits_per_dim_num_images": bpd["num_images"],
        "test/bits_per_dim_ode_nfe": bpd["ode_nfe"],
        "quality_vs_nfe": table,
    }
    for row in table:
        results[f"{row['sampler']}/{row['nfe']}/fid_lenet"] = row["fid_lenet"]

    # ---- figures ----------------------------------------------------------------------
    viz.save_figure(_plot_quality(table, fid_floor, n), run_dir / "quality_vs_nfe.png")
    for sampler, rows in grids.items():
        title = f"{sampler}: samples by NFE (same starting noise)"
        viz.save_figure(plot_image_rows(rows, title), run_dir / f"samples_{sampler}.png")
    if result.history:
        viz.save_figure(viz.plot_history(result.history, ["loss"]), run_dir / "loss.png")

    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results
