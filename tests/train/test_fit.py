"""fit: convergence, logs, eval, resume equal to an uninterrupted run, NaN stop, bad input."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgm_jax.train import (
    NonFiniteError,
    TrainState,
    fit,
    init_train_state,
    latest_step,
    make_step,
    restore_checkpoint,
)

from ._helpers import (
    least_squares,
    linear_loss,
    linear_params,
    minibatch_fn,
    mlp_params,
    noisy_mlp_loss,
    regression_data,
)


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fit_reaches_least_squares_and_logs(key, tmp_path):
    # Adam with full batches on a convex quadratic: after 300 steps at lr 0.05 the iterate
    # sits at the least-squares solution up to Adam's own jitter around it (~lr * 1e-3 here);
    # atol 2e-3 on coefficients of size ~1 is tight enough to catch a wrong update.
    x, y = regression_data()
    w_star, b_star = least_squares(x, y)
    opt = optax.adam(0.05)
    evals = []

    def eval_fn(state, step):
        evals.append(step)
        return {"w0": state.params["w"][0]}

    result = fit(
        make_step(linear_loss, opt),
        init_train_state(linear_params(), opt),
        key,
        lambda s: (x, y),
        300,
        run_dir=tmp_path,
        eval_fn=eval_fn,
        eval_every=200,
        log_every=100,
        progress=False,
    )
    np.testing.assert_allclose(result.state.params["w"], w_star, atol=2e-3)
    np.testing.assert_allclose(result.state.params["b"], b_star, atol=2e-3)
    assert int(result.state.step) == 300
    assert [r["step"] for r in result.history] == [100, 200, 300]
    assert evals == [200, 300]
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert all(isinstance(v, float) for v in losses)
    assert "eval/w0" in result.history[1] and "eval/w0" not in result.history[0]
    assert _read_jsonl(tmp_path / "metrics.jsonl") == result.history
    assert latest_step(tmp_path / "checkpoints") == 300  # always saved at the end


_MLP_OPT = optax.adam(1e-2)
_MLP_STEP = make_step(noisy_mlp_loss, _MLP_OPT)  # one compilation shared by the runs below


def _mlp_run(key, run_dir, num_steps, batch_fn, **kwargs):
    state = init_train_state(mlp_params(), _MLP_OPT)
    return fit(_MLP_STEP, state, key, batch_fn, num_steps, run_dir=run_dir, progress=False,
               **kwargs)  # fmt: skip


def test_resume_equals_uninterrupted_run_bitwise(key, tmp_path):
    # Same compiled step, same restored bits, same data and keys (both functions of the global
    # step): on CPU XLA is deterministic, so the two runs agree bit for bit.
    x, y = regression_data()
    batch_fn = minibatch_fn(x, y, batch_size=16)
    settings = dict(log_every=2, checkpoint_every=5, max_to_keep=2)
    full = _mlp_run(key, tmp_path / "full", 20, batch_fn, **settings)

    def crashing_batch_fn(step):
        if step == 13:
            raise KeyboardInterrupt("simulated crash")
        return batch_fn(step)

    with pytest.raises(KeyboardInterrupt):
        _mlp_run(key, tmp_path / "resumed", 20, crashing_batch_fn, **settings)
    # The crash left records for steps 11-12 past the last checkpoint (10).
    assert _read_jsonl(tmp_path / "resumed" / "metrics.jsonl")[-1]["step"] == 12
    assert latest_step(tmp_path / "resumed" / "checkpoints") == 10

    resumed = _mlp_run(key, tmp_path / "resumed", 20, batch_fn, **settings)
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.history == full.history
    assert [r["step"] for r in full.history] == list(range(2, 21, 2))
    assert (tmp_path / "resumed" / "metrics.jsonl").read_text() == (
        tmp_path / "full" / "metrics.jsonl"
    ).read_text()
    # Orbax kept the newest two.
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir() if p.is_dir()) == [
        "15",
        "20",
    ]

    # Resuming a finished run does nothing and returns the logged history.
    again = _mlp_run(key, tmp_path / "resumed", 20, batch_fn, **settings)
    assert again.history == full.history
    assert int(again.state.step) == 20
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _mlp_run(key, tmp_path / "resumed", 20, batch_fn, resume=False, **settings)
    with pytest.raises(ValueError, match="past num_steps=10"):
        _mlp_run(key, tmp_path / "resumed", 10, batch_fn, **settings)


def test_nan_stops_run_and_keeps_last_good_checkpoint(key, tmp_path):
    x, y = regression_data()
    good = minibatch_fn(x, y, batch_size=16)

    def poisoned(step):  # from update 7 on (step 8), the data holds a NaN
        bx, by = good(step)
        return bx, np.where(step >= 7, np.nan, by).astype(np.float32)

    opt = optax.sgd(0.05)
    step_fn = make_step(linear_loss, opt)
    with pytest.raises(
        NonFiniteError, match=r"non-finite 'grad_norm', 'loss', 'mean_residual' at step 8"
    ) as err:
        fit(
            step_fn,
            init_train_state(linear_params(), opt),
            key,
            poisoned,
            20,
            run_dir=tmp_path,
            log_every=100,  # no log point before the NaN: the check before saving catches it
            checkpoint_every=5,
            progress=False,
        )
    assert isinstance(err.value, FloatingPointError)
    assert err.value.step == 8 and err.value.last_checkpoint == 5
    assert "last good checkpoint is step 5" in str(err.value)
    assert latest_step(tmp_path / "checkpoints") == 5
    clean = fit(step_fn, init_train_state(linear_params(), opt), key, good, 5, progress=False).state
    target = init_train_state(linear_params(), opt)
    restored = restore_checkpoint(tmp_path / "checkpoints", target)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(clean)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not (tmp_path / "metrics.jsonl").read_text().strip()  # nothing logged past it

    # Without a run dir, the NaN is caught at the next log point.
    with pytest.raises(NonFiniteError, match="at step 8"):
        fit(
            step_fn,
            init_train_state(linear_params(), opt),
            key,
            poisoned,
            20,
            log_every=3,
            finite_metrics=["loss"],
            progress=False,
        )


def test_non_finite_state_is_never_saved(key, tmp_path):
    # A custom step whose metrics look fine but whose params blow up at step 4: the check of
    # the state before each save stops the run.
    def step_fn(state, key, batch):
        params = jax.tree.map(lambda p: jnp.where(state.step >= 3, jnp.inf, p + 1.0), state.params)
        return state._replace(step=state.step + 1, params=params), {"loss": jnp.float32(1.0)}

    state = TrainState(jnp.zeros((), jnp.int32), {"p": jnp.zeros(2)}, ())
    with pytest.raises(NonFiniteError, match=r"non-finite value in state.*\['p'\] at step 4"):
        fit(step_fn, state, key, lambda s: None, 10, run_dir=tmp_path, checkpoint_every=2,
            progress=False)  # fmt: skip
    assert latest_step(tmp_path / "checkpoints") == 2


def test_progress_bar_goes_to_stderr(key, capsys):
    opt = optax.sgd(0.1)
    x, y = regression_data()
    fit(make_step(linear_loss, opt), init_train_state(linear_params(), opt), key,
        lambda s: (x, y), 4, log_every=2, desc="demo")  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "demo" in captured.err and "loss=" in captured.err and "4/4" in captured.err


def test_fit_rejects_bad_input(key, tmp_path):
    opt = optax.sgd(0.1)
    step_fn = make_step(linear_loss, opt, donate=False)
    state = init_train_state(linear_params(), opt)
    x, y = regression_data()

    def batch_fn(s):
        return x, y

    def call(**overrides):
        kwargs = dict(step_fn=step_fn, state=state, key=key, batch_fn=batch_fn, num_steps=3)
        kwargs.update(progress=False)
        kwargs.update(overrides)
        return fit(**kwargs)

    with pytest.raises(TypeError, match="step_fn must be callable"):
        call(step_fn=None)
    with pytest.raises(TypeError, match="batch_fn must be callable"):
        call(batch_fn=[(x, y)])
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        call(key=0)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        call(num_steps=-1)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        call(num_steps=2.0)
    with pytest.raises(ValueError, match="log_every must be >= 0"):
        call(log_every=-5)
    with pytest.raises(ValueError, match="eval_every=5 needs an eval_fn"):
        call(eval_every=5)
    with pytest.raises(ValueError, match="checkpoint_every=5 needs a run_dir"):
        call(checkpoint_every=5)
    with pytest.raises(TypeError, match="resume must be a bool"):
        call(resume="yes")
    with pytest.raises(TypeError, match="state must have a 'step' field"):
        call(state={"params": state.params})
    with pytest.raises(TypeError, match="finite_metrics must be a sequence of str"):
        call(finite_metrics="loss")
    with pytest.raises(ValueError, match=r"finite_metrics names \['acc'\]"):
        call(finite_metrics=["acc"])
    with pytest.raises(TypeError, match="eval_fn must return a dict"):
        call(eval_fn=lambda state, step: 1.0)
    with pytest.raises(ValueError, match="max_to_keep must be >= 1"):
        call(run_dir=tmp_path, max_to_keep=0)


def test_log_and_eval_schedules_with_legacy_key(tmp_path):
    x, y = regression_data()
    opt = optax.sgd(0.1)
    result = fit(
        make_step(linear_loss, opt),
        init_train_state(linear_params(), opt),
        jax.random.PRNGKey(0),  # legacy uint32 keys work too
        lambda s: (x, y),
        5,
        eval_fn=lambda state, step: {"step_seen": step},
        eval_every=2,
        log_every=0,  # only the final step
        progress=False,
    )
    assert [sorted(r) for r in result.history] == [
        ["eval/step_seen", "step"],
        ["eval/step_seen", "step"],
        ["eval/step_seen", "grad_norm", "loss", "mean_residual", "step"],
    ]
    assert [r["eval/step_seen"] for r in result.history] == [2, 4, 5]
    # Continuing in memory from the returned state (no run_dir) picks up at step 5.
    more = fit(make_step(linear_loss, opt), result.state, jax.random.PRNGKey(0),
               lambda s: (x, y), 7, log_every=1, progress=False)  # fmt: skip
    assert [r["step"] for r in more.history] == [6, 7]
