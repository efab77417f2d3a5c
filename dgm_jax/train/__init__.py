"""Training: state, jit-compiled step, fit loop, checkpoints, sharding, run folders.

``make_step(loss_fn, optimizer)`` turns ``loss_fn(params, key, batch) -> (loss, metrics)``
into a jit-compiled ``step(state, key, batch) -> (state, metrics)``; ``fit`` drives any
such step with a progress bar, periodic eval, JSONL logs, NaN/Inf detection and orbax
checkpoints it resumes from. Pass ``mesh=data_mesh()`` to ``make_step`` to split each
batch over all local devices (data parallelism through ``jax.jit`` shardings).

Examples:
    Least squares ``y = X w + noise`` with Adam, resumable from ``run_dir``:

    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> from dgm_jax.train import fit, init_train_state, make_step
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((256, 3)).astype(np.float32)
    >>> y = (X @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(256)).astype(np.float32)
    >>> def loss_fn(params, key, batch):
    ...     x, t = batch
    ...     return jnp.mean((x @ params["w"] + params["b"] - t) ** 2), {}
    >>> def batch_fn(step):  # deterministic in the step, so a resumed run sees the same data
    ...     i = np.random.default_rng(step).integers(0, 256, 32)
    ...     return X[i], y[i]
    >>> opt = optax.adam(0.05)
    >>> state = init_train_state({"w": jnp.zeros(3), "b": jnp.zeros(())}, opt)
    >>> result = fit(make_step(loss_fn, opt), state, jax.random.key(0), batch_fn, 300,
    ...              log_every=100, progress=False)
    >>> [r["step"] for r in result.history]
    [100, 200, 300]
    >>> bool(jnp.allclose(result.state.params["w"], jnp.array([1.0, -2.0, 0.5]), atol=0.1))
    True
"""

from dgm_jax.train.checkpoint import latest_step, restore_checkpoint, save_checkpoint
from dgm_jax.train.loop import FitResult, NonFiniteError, fit
from dgm_jax.train.runs import load_config, make_run_dir, save_config, save_metrics
from dgm_jax.train.sharding import data_mesh, replicate, shard_batch
from dgm_jax.train.state import TrainState, init_train_state
from dgm_jax.train.step import make_step

__all__ = [
    "FitResult",
    "NonFiniteError",
    "TrainState",
    "data_mesh",
    "fit",
    "init_train_state",
    "latest_step",
    "load_config",
    "make_run_dir",
    "make_step",
    "replicate",
    "restore_checkpoint",
    "save_checkpoint",
    "save_config",
    "save_metrics",
    "shard_batch",
]
