"""Classifier-free guidance experiment: smoke run, guidance-scale identities, bad configs."""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax import diffusion
from experiments import EXPERIMENTS
from experiments import mnist_cfg as exp
from experiments import mnist_diffusion as base


def test_smoke_run_writes_the_run_folder(tmp_path):
    assert EXPERIMENTS["mnist_cfg"] == "experiments.mnist_cfg"
    exp.run(exp.SMOKE, workdir=tmp_path)
    names = ["config.json", "metrics.json", "metrics.jsonl", "guidance.png", "loss.png"]
    names += [f"samples_w{w:g}.png" for w in exp.SMOKE.guidance_scales]
    for name in names:
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / str(exp.SMOKE.num_train_steps)).is_dir()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    rows = saved["per_scale"]
    assert [r["guidance_scale"] for r in rows] == list(exp.SMOKE.guidance_scales)
    for row in rows:
        assert row["finite"]
        assert math.isfinite(row["fid_lenet"]) and row["fid_lenet"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
        # Accuracy is a multiple of 1 / num_eval_samples.
        assert row["accuracy"] * exp.SMOKE.num_eval_samples == pytest.approx(
            round(row["accuracy"] * exp.SMOKE.num_eval_samples), abs=1e-4
        )
        assert 1.0 <= row["inception_score"] <= 10.0
        assert row["nfe"] == 2 * exp.SMOKE.sample_steps  # conditional + null per step
        assert saved[f"w{row['guidance_scale']:g}/accuracy"] == pytest.approx(row["accuracy"])
    assert 0.0 <= saved["test_set_accuracy"] <= 1.0
    assert math.isfinite(saved["fid_lenet_floor"])


def test_guidance_scales_zero_and_one_are_the_unconditional_and_conditional_models():
    cfg = exp.SMOKE
    net = base.build_unet(cfg, num_classes=exp.NUM_CLASSES)
    args = (jnp.zeros((1, 28, 28, 1)), jnp.zeros(1), jnp.zeros(1, jnp.int32))
    params = base.init_params(jax.random.key(0), net, *args)
    schedule = diffusion.linear_schedule(cfg.num_diffusion_steps, cfg.beta_start, cfg.beta_end)
    labels = jnp.arange(cfg.num_eval_samples, dtype=jnp.int32) % 10
    key = jax.random.key(3)
    # No clipping of x̂_0 here: with random weights clipped samples saturate at ±1 and
    # would hide the difference the labels make.
    steps = cfg.sample_steps

    def guided(w):
        return exp.draw_guided(
            params, key, schedule, net, labels, w, sampler=cfg.sampler, num_steps=steps,
        )  # fmt: skip

    @functools.partial(jax.jit, static_argnums=2)
    def reference(params, labels, conditional):
        def model_fn(x, t):  # the network alone: no labels means the null label
            return net.apply(params, x, t, labels if conditional else None)

        shape = (labels.shape[0], 28, 28, 1)
        return base.sample(cfg.sampler, key, model_fn, schedule, shape, steps)

    unconditional = reference(params, labels, False)
    conditional = reference(params, labels, True)
    np.testing.assert_allclose(guided(0.0), unconditional, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(guided(1.0), conditional, rtol=1e-5, atol=1e-5)
    # The labels matter (even untrained, the class embedding shifts the output), so the
    # identities above are not vacuous, and w = 3 extrapolates away from both.
    assert float(jnp.max(jnp.abs(conditional - unconditional))) > 1e-4
    w3 = guided(3.0)
    assert float(jnp.max(jnp.abs(w3 - conditional))) > 1e-4
    with pytest.raises(ValueError, match="scale"):
        guided(-1.0)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"p_uncond": 0.0}, "p_uncond"),
        ({"p_uncond": 1.0}, "p_uncond"),
        ({"guidance_scales": (1.0, -2.0)}, "guidance_scales"),
        ({"guidance_scales": ()}, "guidance_scales"),
        ({"sampler": "euler"}, "sampler"),
        ({"sample_steps": 0}, "sample_steps"),
        ({"num_eval_samples": 10_000}, "num_eval_samples"),  # more than 256 synthetic images
    ],
)
def test_bad_config_is_rejected_naming_the_field(tmp_path, change, field):
    with pytest.raises(ValueError, match=field):
        exp.run(dataclasses.replace(exp.SMOKE, **change), workdir=tmp_path)
