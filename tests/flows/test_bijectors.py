"""Bijectors: inverse inverts forward; log-det equals slogdet of the autodiff Jacobian.

Each bijector runs with perturbed (non-identity) parameters; the Jacobian of one
example is taken with ``jax.jacfwd`` on the flattened input (images: tiny 4×4×C).
Float32 arithmetic: log-dets agree to ~1e-4 relative; inverses to ~1e-4, because a
sigmoid scale near its lower end divides the float32 roundoff of the forward pass by up
to ~20 (the same coupling in float64 inverts to 1e-14). Seeds come from crc32 of the case
name, not ``hash``, which Python randomises per process.
"""

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgm_jax.flows import (
    ActNorm,
    AffineCoupling,
    ConvConditioner,
    FlowStep,
    InvertibleConv1x1,
    LogitTransform,
    MaskedAutoregressive,
    MLPConditioner,
    MultiScaleFlow,
    Reverse,
    Squeeze,
    checkerboard_mask,
    half_mask,
    made_masks,
    squeeze,
)


def perturb(params, key, scale=0.3):
    """Add Gaussian noise to every parameter so no layer is the identity."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy)


def _inputs(shape, key, unit_interval=False):
    if unit_interval:
        return jax.random.uniform(key, shape, minval=0.05, maxval=0.95)
    return jax.random.normal(key, shape)


def check_bijector(module, shape, key, *, unit_interval=False, fwd="forward", inv="inverse"):
    """Assert inverse(forward(x)) == x, log-dets opposite, log-det == slogdet(Jacobian)."""
    k_x, k_init, k_p = jax.random.split(key, 3)
    x = _inputs(shape, k_x, unit_interval)
    params = perturb(jax.jit(lambda k, v: module.init(k, v, method=fwd))(k_init, x), k_p)
    event = shape[1:]

    @jax.jit
    def everything(params, x):
        y, log_det = module.apply(params, x, method=fwd)
        x_back, log_det_inv = module.apply(params, y, method=inv)

        def flat_forward(v):
            return module.apply(params, v.reshape(1, *event), method=fwd)[0].reshape(-1)

        jac = jax.jacfwd(flat_forward)(x[0].reshape(-1))
        return log_det, x_back, log_det_inv, jac

    log_det, x_back, log_det_inv, jac = everything(params, x)
    assert log_det.shape == (shape[0],)
    np.testing.assert_allclose(x_back, x, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(log_det_inv, -log_det, atol=1e-4, rtol=1e-4)
    assert jac.shape[0] == jac.shape[1]
    sign, logabs = jnp.linalg.slogdet(jac)
    assert sign != 0
    np.testing.assert_allclose(log_det[0], logabs, atol=2e-4, rtol=2e-4)
    return params, x


CASES = {
    "coupling_half_tanh_p0": (AffineCoupling(MLPConditioner((16,)), "half", 0, "tanh"), (3, 4)),
    "coupling_half_sigmoid_p1": (
        AffineCoupling(MLPConditioner((16,)), "half", 1, "sigmoid"),
        (3, 4),
    ),
    "coupling_checkerboard": (
        AffineCoupling(ConvConditioner(8, 1), "checkerboard", 1, "tanh"),
        (2, 4, 4, 2),
    ),
    "coupling_channel": (
        AffineCoupling(ConvConditioner(8, 1), "channel", 0, "sigmoid"),
        (2, 4, 4, 2),
    ),
    "squeeze": (Squeeze(), (2, 4, 4, 2)),
    "reverse": (Reverse(), (2, 5)),
    "actnorm_image": (ActNorm(), (4, 4, 4, 3)),
    "actnorm_vector": (ActNorm(init_scale=0.5), (3, 2)),
    "invconv_plain": (InvertibleConv1x1(lu=False, seed=3), (2, 4, 4, 3)),
    "invconv_lu": (InvertibleConv1x1(lu=True, seed=4), (2, 4, 4, 3)),
    "invconv_vector": (InvertibleConv1x1(lu=True, seed=5), (3, 4)),
    "maf": (MaskedAutoregressive((16, 16)), (3, 4)),
    "maf_reversed": (MaskedAutoregressive((16,), reverse_order=True), (3, 3)),
    "glow_step": (FlowStep("channel", 1, 8, 1, "tanh", True, "lu", seed=1), (2, 4, 4, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_inverse_and_log_det_match_jacobian(name):
    module, shape = CASES[name]
    check_bijector(module, shape, jax.random.key(zlib.crc32(name.encode())))


def test_logit_transform_inverse_and_log_det():
    check_bijector(LogitTransform(0.05), (2, 4, 4, 1), jax.random.key(1), unit_interval=True)


def test_multiscale_flow_inverse_and_log_det():
    flow = MultiScaleFlow(
        (4, 4, 1), num_scales=2, num_steps=1, hidden_channels=4, num_blocks=0, invconv=None
    )
    check_bijector(flow, (2, 4, 4, 1), jax.random.key(2), unit_interval=True)
    assert flow.latent_shapes() == [(2, 2, 2), (2, 2, 2)]


def test_maf_jacobian_is_triangular_in_its_order():
    """dz_i/dx_j = 0 whenever x_j comes after x_i in the autoregressive order."""
    for reverse in (False, True):
        module = MaskedAutoregressive((32, 32), reverse_order=reverse)
        k_x, k_i, k_p = jax.random.split(jax.random.key(int(reverse)), 3)
        x = jax.random.normal(k_x, (1, 5))
        params = perturb(module.init(k_i, x), k_p, scale=0.5)
        jac = jax.jit(jax.jacfwd(lambda v, p, m=module: m.apply(p, v[None])[0][0]))(x[0], params)
        forbidden = np.triu(np.ones((5, 5)), 1) if not reverse else np.tril(np.ones((5, 5)), -1)
        assert np.all(np.asarray(jac)[forbidden == 1] == 0.0)
        allowed = np.tril(np.ones((5, 5)), -1) if not reverse else np.triu(np.ones((5, 5)), 1)
        assert np.all(np.abs(np.asarray(jac)[allowed == 1]) > 0)  # the mask is not too strict


def test_made_masks_give_autoregressive_connectivity():
    masks = made_masks(4, (8, 8))
    path = masks[0] @ masks[1] @ masks[2]  # number of paths input i -> output j
    for out in range(8):
        d = out % 4
        assert np.all(path[d:, out] == 0)  # output d sees only inputs < d
        assert np.all(path[:d, out] > 0)


def test_actnorm_data_dependent_init_standardises():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (512, 4, 4, 3))
    layer = ActNorm()
    y, _ = layer.apply(layer.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-4)


def test_coupling_matches_distrax_masked_coupling():
    """Our coupling equals distrax.MaskedCoupling with a ScalarAffine inner bijector."""
    distrax = pytest.importorskip("distrax")
    layer = AffineCoupling(MLPConditioner((16,)), "half", 1, "tanh")
    x = jax.random.normal(jax.random.key(3), (5, 4))
    params = perturb(layer.init(jax.random.key(4), x), jax.random.key(5))
    mask = jnp.asarray(half_mask(4, 1))
    cond = MLPConditioner((16,))

    def conditioner(v):
        out = cond.apply({"params": params["params"]["conditioner"]}, v)
        return out[..., :4], params["params"]["scale"][None] * jnp.tanh(out[..., 4:])

    bij = distrax.MaskedCoupling(
        mask=mask.astype(bool),
        conditioner=conditioner,
        bijector=lambda p: distrax.ScalarAffine(shift=p[0], log_scale=p[1]),
    )
    y_ref, ld_ref = bij.forward_and_log_det(x)
    y, ld = layer.apply(params, x)
    np.testing.assert_allclose(y, y_ref, atol=1e-6)
    np.testing.assert_allclose(ld, ld_ref, atol=1e-5)


def test_masks():
    assert checkerboard_mask(4, 4).sum() == 8
    np.testing.assert_array_equal(half_mask(4, 0) + half_mask(4, 1), np.ones(4))
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    assert squeeze(x).shape == (1, 2, 2, 4)


# ---- bad input ----------------------------------------------------------------------


def _init(module, x):
    return module.init(jax.random.key(0), x)


def test_odd_dimension_for_half_mask_raises():
    with pytest.raises(ValueError, match="x's dimension must be even"):
        _init(AffineCoupling(MLPConditioner((4,)), "half"), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="dim"):
        half_mask(3)


def test_odd_channels_for_channel_mask_raises():
    with pytest.raises(ValueError, match="channel count must be even"):
        _init(AffineCoupling(ConvConditioner(4, 0), "channel"), jnp.zeros((1, 4, 4, 3)))


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, height, width"):
        _init(AffineCoupling(ConvConditioner(4, 0), "checkerboard"), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="x must have shape"):
        _init(MaskedAutoregressive((4,)), jnp.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="x's height and width must be even"):
        squeeze(jnp.zeros((1, 3, 4, 1)))
    with pytest.raises(ValueError, match="mask"):
        _init(AffineCoupling(MLPConditioner((4,)), "diagonal"), jnp.zeros((2, 4)))


def test_conditioner_with_wrong_output_raises():
    class Bad(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)

    with pytest.raises(ValueError, match="conditioner must map"):
        _init(AffineCoupling(Bad(), "half"), jnp.zeros((2, 4)))


def test_non_positive_actnorm_scale_raises():
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="init_scale"):
            _init(ActNorm(init_scale=bad), jnp.zeros((2, 2)))


def test_bad_logit_alpha_raises():
    with pytest.raises(ValueError, match="alpha"):
        _init(LogitTransform(0.5), jnp.full((1, 2), 0.5))
