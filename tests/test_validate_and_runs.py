"""The boundary checks shared by every public function, and run-folder helpers."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgm_jax
from dgm_jax import _validate as v
from dgm_jax.train import runs


def test_positive_and_probability_checks():
    v.check_positive("step_size", 0.1)
    v.check_positive("step_size", 0.0, allow_zero=True)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        v.check_positive("step_size", 0.0)
    with pytest.raises(ValueError, match="step_size"):
        v.check_positive("step_size", math.inf)
    with pytest.raises(TypeError, match="step_size must be a real number"):
        v.check_positive("step_size", "0.1")
    with pytest.raises(TypeError, match="real scalar"):
        v.check_positive("step_size", jnp.ones(3))
    v.check_probability("p", 1.0)
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]"):
        v.check_probability("p", 1.5)


def test_traced_values_pass_through():
    @jax.jit
    def f(x):
        v.check_positive("x", x)
        return x * 2

    assert float(f(-1.0)) == -2.0  # unknown before run time: not checked


def test_int_shape_and_key_checks():
    v.check_int("n", 3, minimum=1)
    with pytest.raises(TypeError, match="n must be an int"):
        v.check_int("n", 3.0)
    with pytest.raises(TypeError, match="n must be an int"):
        v.check_int("n", True)
    with pytest.raises(ValueError, match="n must be >= 1"):
        v.check_int("n", 0, minimum=1)
    v.check_shape("x", np.zeros((3, 2)), (None, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 2\), got \(3, 3\)"):
        v.check_shape("x", np.zeros((3, 3)), (None, 2))
    with pytest.raises(ValueError, match="2 dimensions"):
        v.check_ndim("x", np.zeros(3), 2)
    v.check_key("key", jax.random.key(0))
    v.check_key("key", jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="PRNG key"):
        v.check_key("key", jnp.zeros(3))
    with pytest.raises(TypeError, match="floating dtype"):
        v.check_floating("x", jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="must be one of"):
        v.check_in("mode", "c", ("a", "b"))


def test_lazy_subpackages():
    assert dgm_jax.diffusion.linear_schedule is not None
    with pytest.raises(AttributeError):
        dgm_jax.does_not_exist


@dataclasses.dataclass(frozen=True)
class _Cfg:
    a: int = 1
    b: tuple[float, ...] = (0.5,)


def test_run_folder_round_trip(tmp_path):
    d = runs.make_run_dir("exp", tmp_path / "run")
    runs.save_config(d, _Cfg())
    assert runs.load_config(d) == {"a": 1, "b": [0.5]}
    runs.save_metrics(d, {"x": jnp.float32(1.5), "bad": float("nan"), "arr": np.arange(2)})
    saved = json.loads((d / "metrics.json").read_text())
    assert saved == {"x": 1.5, "bad": "nan", "arr": [0, 1]}


def test_default_run_folder_is_timestamped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runs.make_run_dir("exp")
    second = runs.make_run_dir("exp")
    assert first.parent == second.parent == tmp_path.joinpath("runs", "exp").relative_to(tmp_path)
    assert first != second
    with pytest.raises(ValueError, match="experiment"):
        runs.make_run_dir("")
