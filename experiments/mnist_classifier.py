"""Train the small MNIST CNN whose features define fid_mnist and inception_score_mnist.

Trains :class:`dgm_jax.metrics.mnist_net.MnistClassifier` (LeNet-style, 164k
parameters) with AdamW, a cosine learning-rate decay and random ±2-pixel shifts, on
CPU (2 cores: about 2 minutes an epoch when the machine is otherwise idle). Writes the
run folder
(``config.json``, ``metrics.json``, ``training.png``, ``params.npz``) and, with
``--set export_weights=true``, also the package weights
``dgm_jax/metrics/weights/mnist_classifier.npz`` and their record
``mnist_classifier.json`` (test accuracy, date, config) — this is how the shipped
weights were made::

    python -m experiments run mnist_classifier --set export_weights=true

``dataset="synthetic"`` (the smoke config) trains on random images so the smoke
test needs no MNIST files.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgm_jax.metrics import mnist_net
from dgm_jax.train.runs import make_run_dir, save_config, save_metrics, to_jsonable

WEIGHTS_DIR = Path(mnist_net.__file__).parent / "weights"


@dataclasses.dataclass(frozen=True)
class Config:
    """Training settings; the defaults made the shipped weights."""

    seed: int = 0
    dataset: str = "mnist"  # "mnist" (dgm_jax.data.mnist) or "synthetic" (random, for smoke tests)
    num_train: int = 60_000  # training images used (first num_train)
    num_test: int = 10_000  # test images evaluated
    num_epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 2e-3  # peak Adam rate, cosine-decayed to 0
    weight_decay: float = 1e-4  # decoupled (AdamW)
    max_shift: int = 2  # random translation augmentation, pixels (0 disables)
    export_weights: bool = False  # write dgm_jax/metrics/weights/mnist_classifier.{npz,json}


SMOKE = Config(dataset="synthetic", num_train=256, num_test=128, num_epochs=1, batch_size=64)


def _load(config: Config):
    if config.dataset == "mnist":
        from dgm_jax.data.mnist import load_mnist

        train, test = load_mnist("train"), load_mnist("test")
        return (
            train.images[: config.num_train],
            train.labels[: config.num_train],
            test.images[: config.num_test],
            test.labels[: config.num_test],
        )
    if config.dataset == "synthetic":
        rng = np.random.default_rng(config.seed)
        n, m = config.num_train, config.num_test
        return (
            rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 10, (n,)).astype(np.int32),
            rng.integers(0, 256, (m, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 10, (m,)).astype(np.int32),
        )
    raise ValueError(f"dataset must be 'mnist' or 'synthetic', got {config.dataset!r}")


def _shift(key, images, max_shift):
    """Random integer translations of a batch (zero padding), ``(b, 28, 28, 1)``."""
    if max_shift == 0:
        return images
    b = images.shape[0]
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (28, 28, 1))

    return jax.vmap(crop)(padded, offsets)


def _accuracy(params, images, labels, batch_size=1000):
    logits = jax.jit(
        lambda p, x: mnist_net.mnist_logits(x, params=p, batch_size=min(batch_size, x.shape[0]))
    )(params, jnp.asarray(images))
    return float(jnp.mean(jnp.argmax(logits, axis=-1) == jnp.asarray(labels)))


def run(config: Config = Config(), workdir=None) -> dict:
    """Train, evaluate on the test split, write the run folder; return the metrics."""
    run_dir = make_run_dir("mnist_classifier", workdir)
    save_config(run_dir, config)
    x_train, y_train, x_test, y_test = _load(config)
    n = x_train.shape[0]
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size {config.batch_size} exceeds num_train {n}")
    total_steps = steps_per_epoch * config.num_epochs

    model = mnist_net.MnistClassifier()
    key = jax.random.key(config.seed)
    key, init_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, 28, 28, 1)))
    schedule = optax.cosine_decay_schedule(config.learning_rate, total_steps)
    optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)
    opt_state = optimizer.init(params)
    x_all = jnp.asarray(x_train)
    y_all = jnp.asarray(y_train)

    def loss_fn(p, xb, yb):
        logits, _ = model.apply(p, xb)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == yb)

    @jax.jit
    def step(p, s, k, xs, ys, idx):
        # One jitted step per batch, driven from Python: XLA:CPU runs convolutions inside a
        # lax.scan body ~10x slower than at top level. The data are arguments, not
        # closed-over constants (which would slow compilation).
        xb = _shift(k, xs[idx].astype(jnp.float32) / 255.0, config.max_shift)
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, xb, ys[idx])
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, acc

    def epoch(p, s, k):
        kperm, kaug = jax.random.split(k)
        perm = jax.random.permutation(kperm, n)[: steps_per_epoch * config.batch_size]
        idx = perm.reshape(steps_per_epoch, config.batch_size)
        keys = jax.random.split(kaug, steps_per_epoch)
        ls, accs = [], []
        for i in range(steps_per_epoch):
            p, s, loss, acc = step(p, s, keys[i], x_all, y_all, idx[i])
            ls.append(loss)
            accs.append(acc)
        return p, s, jnp.stack(ls), jnp.stack(accs)

    losses, epoch_log = [], []
    start = time.perf_counter()
    for e in range(config.num_epochs):
        key, ek = jax.random.split(key)
        params, opt_state, ls, accs = epoch(params, opt_state, ek)
        ls = np.asarray(ls)
        if not np.all(np.isfinite(ls)):
            raise FloatingPointError(f"non-finite training loss in epoch {e}")
        losses.append(ls)
        epoch_log.append(
            {
                "epoch": e + 1,
                "train_loss": float(ls.mean()),
                "train_accuracy": float(np.mean(accs)),
                "seconds": time.perf_counter() - start,
            }
        )
        print(json.dumps(epoch_log[-1]), flush=True)
    train_seconds = time.perf_counter() - start

    test_accuracy = _accuracy(params, x_test, y_test)
    flat = mnist_net.params_to_flat(params)
    np.savez_compressed(run_dir / "params.npz", **flat)
    num_params = int(sum(v.size for v in flat.values()))
    metrics = {
        "test_accuracy": test_accuracy,
        "final_train_loss": epoch_log[-1]["train_loss"],
        "train_seconds": train_seconds,
        "num_params": num_params,
        "device": jax.devices()[0].device_kind,
    }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    all_losses = np.concatenate(losses)
    ax.plot(np.arange(all_losses.size) / steps_per_epoch, all_losses, lw=0.5)
    ax.set(xlabel="epoch", ylabel="train cross-entropy", yscale="log")
    ax.set_title(f"MNIST classifier, test accuracy {test_accuracy:.4f}")
    fig.tight_layout()
    fig.savefig(run_dir / "training.png", dpi=100)
    plt.close(fig)

    if config.export_weights:
        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(WEIGHTS_DIR / mnist_net.WEIGHTS_FILE, **flat)
        record = {
            "test_accuracy": test_accuracy,
            "num_test": int(y_test.shape[0]),
            "date": datetime.date.today().isoformat(),
            "train_seconds": train_seconds,
            "device": jax.devices()[0].device_kind,
            "jax_version": jax.__version__,
            "num_params": num_params,
            "epochs": epoch_log,
            "config": to_jsonable(config),
            "command": "python -m experiments run mnist_classifier --set export_weights=true",
        }
        (WEIGHTS_DIR / "mnist_classifier.json").write_text(json.dumps(record, indent=2) + "\n")

    save_metrics(run_dir, metrics)
    return metrics
