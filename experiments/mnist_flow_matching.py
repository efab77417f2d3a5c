"""MNIST flow matching and PFGM++ with the U-Net: Fréchet LeNet distance against NFE.

Two generators share the U-Net of :mod:`dgm_jax.nn` (time input: ``t ∈ [0, 1]`` for the
velocity, EDM's ``c_noise = ¼ log σ`` for the PFGM++ denoiser):

* ``fm``: conditional flow matching on the straight path (rectified flow) with the
  coupling named by ``coupling`` (``independent`` or ``ot``: exact minibatch OT),
  sampled with Euler and Heun;
* ``pfgmpp``: PFGM++ with augmentation dimension ``pfgm_D`` (Xu et al. 2023; D = 128 is
  their best CIFAR-10 setting), EDM preconditioning, sampled with Heun from the
  heavy-tailed prior.

Quality is :func:`dgm_jax.metrics.fid_mnist` ("Fréchet LeNet-style distance", not an
Inception FID) between ``num_fid_samples`` samples and the test set, at several NFE.
Images are scaled to [-1, 1]. The default config is GPU-sized (U-Net 64/128/128, 100k
steps of batch 128 per model, ~hours on one H100, untested here); ``SMOKE`` trains two
steps on random images with a tiny U-Net and no network access.

Example:
    python -m experiments run mnist_flow_matching --set num_train_steps=20000
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import optax

from dgm_jax import flows, metrics, train, viz
from dgm_jax import sde as sdes
from dgm_jax.nn import UNet

NAME = "mnist_flow_matching"
COUPLINGS = {"independent": flows.independent_coupling, "ot": flows.exact_ot_coupling}
SOLVERS = {"euler": sdes.euler, "heun": sdes.heun}
METHODS = ("fm", "pfgmpp")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings; the defaults are sized for one GPU."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" or "synthetic" (random images, for smoke tests)
    methods: tuple[str, ...] = METHODS
    channels: tuple[int, ...] = (64, 128, 128)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (7,)
    coupling: str = "ot"
    pfgm_D: int = 128
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    batch_size: int = 128
    num_train_steps: int = 100_000
    learning_rate: float = 2e-4
    fm_steps: tuple[int, ...] = (5, 10, 20, 50, 100)  # Euler / Heun steps
    fm_solvers: tuple[str, ...] = ("euler", "heun")
    pfgm_steps: tuple[int, ...] = (5, 10, 18, 35)  # Heun steps (NFE = 2 x steps)
    num_fid_samples: int = 10_000
    sample_batch: int = 1000
    log_every: int = 500
    checkpoint_every: int = 10_000
    progress: bool = True


SMOKE = Config(
    dataset="synthetic",
    channels=(8, 16),
    num_res_blocks=1,
    attention_resolutions=(),
    batch_size=8,
    num_train_steps=2,
    fm_steps=(2,),
    fm_solvers=("euler",),
    pfgm_steps=(2,),
    num_fid_samples=16,
    sample_batch=16,
    log_every=1,
    checkpoint_every=0,
    progress=False,
)


def _validate(config: Config) -> None:
    if config.dataset not in ("mnist", "synthetic"):
        raise ValueError(f"dataset must be 'mnist' or 'synthetic', got {config.dataset!r}")
    if config.coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {list(COUPLINGS)}, got {config.coupling!r}")
    bad = [m for m in config.methods if m not in METHODS]
    if bad or not config.methods:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {bad}")
    bad = [s for s in config.fm_solvers if s not in SOLVERS]
    if bad:
        raise ValueError(f"fm_solvers must be a subset of {list(SOLVERS)}, got {bad}")
    for name in ("batch_size", "num_train_steps", "num_fid_samples", "sample_batch", "pfgm_D"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.num_fid_samples % config.sample_batch:
        raise ValueError("num_fid_samples must be a multiple of sample_batch")


def load_images(config: Config):
    """``(train, test)`` float images in [0, 1], shape ``(n, 28, 28, 1)``."""
    if config.dataset == "synthetic":
        rng = np.random.default_rng(config.seed)
        return (rng.random((256, 28, 28, 1), np.float32), rng.random((64, 28, 28, 1), np.float32))
    from dgm_jax.data.mnist import load_mnist, to_float

    return to_float(load_mnist("train").images), to_float(load_mnist("test").images)


def _fit(loss_fn, params, images, key, run_dir, config, desc):
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.learning_rate))
    images = jnp.asarray(images) * 2.0 - 1.0
    n = images.shape[0]

    def batch_fn(step):
        idx = np.random.default_rng((config.seed, step)).integers(0, n, config.batch_size)
        return images[idx]

    result = train.fit(
        train.make_step(loss_fn, optimizer),
        train.init_train_state(jax.tree.map(jnp.array, params), optimizer),  # step donates
        key,
        batch_fn,
        config.num_train_steps,
        run_dir=run_dir,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=desc,
    )
    return result.state.params, result.history


def _samples(draw, key, config):
    """``num_fid_samples`` images in [0, 1] drawn in chunks of ``sample_batch``."""
    chunks = [
        draw(jax.random.fold_in(key, i))
        for i in range(config.num_fid_samples // config.sample_batch)
    ]
    return jnp.clip((jnp.concatenate(chunks) + 1.0) / 2.0, 0.0, 1.0)


def run(config: Config = Config(), workdir: str | None = None) -> dict[str, Any]:
    """Train the chosen generators, measure FID-LeNet against NFE, write the run folder."""
    _validate(config)
    run_dir = train.make_run_dir(NAME, workdir)
    train.save_config(run_dir, config)
    started = time.perf_counter()
    train_images, test_images = load_images(config)
    reference = jnp.asarray(test_images[: config.num_fid_samples])
    key = jax.random.key(config.seed)
    net = UNet(
        channels=config.channels,
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=config.attention_resolutions,
        norm_groups=min(8, config.channels[0]),
    )
    shape = (config.sample_batch, 28, 28, 1)
    x_init = jnp.zeros((1, 28, 28, 1))
    params0 = net.init(jax.random.key(config.seed + 1), x_init, jnp.zeros(1))
    results: dict[str, Any] = {"num_params": int(sum(p.size for p in jax.tree.leaves(params0)))}
    table, grids = [], {}

    if "fm" in config.methods:
        path = flows.straight_path()
        coupling = COUPLINGS[config.coupling]

        def fm_loss(params, key, batch):
            v = lambda x, t: net.apply(params, x, t * 1000.0)  # noqa: E731
            return flows.flow_matching_loss(v, path, key, batch, coupling=coupling)

        fm_params, hist = _fit(
            fm_loss, params0, train_images, jax.random.fold_in(key, 1), run_dir / "fm", config, "fm"
        )
        results["fm/final_loss"] = hist[-1]["loss"] if hist else None
        for solver in config.fm_solvers:
            for steps in config.fm_steps:
                draw = _fm_draw(net, fm_params, path, shape, SOLVERS[solver], steps)
                x = _samples(draw, jax.random.fold_in(key, 2), config)
                nfe = SOLVERS[solver].num_stages * steps
                table.append(_row("fm", solver, steps, nfe, x, reference))
                grids[f"fm {solver} NFE {nfe}"] = np.asarray(x[:64])

    if "pfgmpp" in config.methods:
        D = config.pfgm_D

        def denoiser(params):
            return flows.edm_preconditioned(lambda x, c: net.apply(params, x, c))

        def pfgm_loss(params, key, batch):
            return flows.pfgmpp_loss(denoiser(params), key, batch, D=D)

        pf_params, hist = _fit(
            pfgm_loss,
            params0,
            train_images,
            jax.random.fold_in(key, 3),
            run_dir / "pfgmpp",
            config,
            "pfgmpp",
        )
        results["pfgmpp/final_loss"] = hist[-1]["loss"] if hist else None
        for steps in config.pfgm_steps:

            def draw(k, steps=steps):
                return flows.pfgmpp_sample(
                    k,
                    denoiser(pf_params),
                    shape,
                    D=D,
                    sigma_min=config.sigma_min,
                    sigma_max=config.sigma_max,
                    num_steps=steps,
                )[0]

            x = _samples(jax.jit(draw), jax.random.fold_in(key, 4), config)
            table.append(_row("pfgmpp", "heun", steps, 2 * steps, x, reference))
            grids[f"pfgmpp D={D} NFE {2 * steps}"] = np.asarray(x[:64])

    results["fid_vs_nfe"] = table
    for row in table:
        results[f"{row['method']}/{row['solver']}/{row['nfe']}/fid_lenet"] = row["fid_lenet"]
    viz.save_figure(_plot_fid(table), run_dir / "fid_vs_nfe.png")
    viz.save_figure(_plot_grids(grids), run_dir / "samples.png")
    results["total_seconds"] = time.perf_counter() - started
    train.save_metrics(run_dir, results)
    return results


def _fm_draw(net, params, path, shape, solver, steps):
    def draw(key):
        v = lambda x, t: net.apply(params, x, t * 1000.0)  # noqa: E731
        return flows.sample_flow(key, v, path, shape, solver=solver, num_steps=steps)[0]

    return jax.jit(draw)


def _row(method, solver, steps, nfe, x, reference):
    fid = float(metrics.fid_mnist(x, reference))
    return {"method": method, "solver": solver, "steps": steps, "nfe": nfe, "fid_lenet": fid}


def _plot_fid(table):
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for key in dict.fromkeys((r["method"], r["solver"]) for r in table):
        rows = sorted(
            (r for r in table if (r["method"], r["solver"]) == key), key=lambda r: r["nfe"]
        )
        ax.plot([r["nfe"] for r in rows], [r["fid_lenet"] for r in rows], "o-", label=" ".join(key))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("Fréchet LeNet distance to the test set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_grids(grids):
    fig, axes = plt.subplots(1, len(grids), figsize=(3.0 * len(grids), 3.2), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items()):
        k = int(np.sqrt(len(images)))
        tiles = images[: k * k, :, :, 0].reshape(k, k, 28, 28).transpose(0, 2, 1, 3)
        ax.imshow(tiles.reshape(28 * k, 28 * k), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig
