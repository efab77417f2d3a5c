"""Vector quantisation and the VQ-VAE against known truth.

Nearest codes equal a float64 brute-force search; straight-through gradients equal the
gradient of the identity; the EMA codebook of a well-separated mixture converges to its
cluster means within the EMA's own sampling error; dead codes move onto encoder outputs;
perplexity is K for uniform use and 1 for a single code.
"""

import doctest
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgm_jax.vae import vq
from dgm_jax.vae.vqvae import (
    VQVAETrainState,
    build_vqvae,
    init_vqvae_train_state,
    make_vqvae_step,
)

# Per-pixel networks on 4×4 "images": any Flax pair works and these compile in a blink
# (the convolutional VQEncoder/VQDecoder are exercised by the experiment smoke tests).
TINY_ENCODER = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(3)])
TINY_DECODER = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(1)])
X_SHAPE = (4, 4, 4, 1)


# ---- nearest-code lookup ----------------------------------------------------------------


@pytest.mark.parametrize("lead", [(50,), (4, 7, 7)])
def test_nearest_code_equals_brute_force(lead):
    key_c, key_z = jax.random.split(jax.random.key(0))
    codebook = jax.random.normal(key_c, (37, 5))
    z = jax.random.normal(key_z, (*lead, 5))
    idx = np.asarray(jax.jit(vq.nearest_code)(codebook, z))
    assert idx.shape == lead
    assert idx.dtype == np.int32
    dist = ((np.asarray(z, np.float64)[..., None, :] - np.asarray(codebook, np.float64)) ** 2).sum(
        -1
    )
    brute = dist.argmin(-1)
    ordered = np.sort(dist, axis=-1)
    clear = ordered[..., 1] - ordered[..., 0] > 1e-4  # float32 can only split gaps above this
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(idx[clear], brute[clear])
    # Where the two nearest codes are nearly tied, the chosen one is still (almost) nearest.
    chosen = np.take_along_axis(dist, idx[..., None], -1)[..., 0]
    np.testing.assert_allclose(chosen, ordered[..., 0], atol=1e-4)
    z_q, idx2 = vq.quantize(codebook, z)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_array_equal(z_q, np.asarray(codebook)[idx])


# ---- straight-through and the two VQ losses ----------------------------------------------


def test_straight_through_gradient_is_the_identity_into_the_encoder():
    # A linear "encoder" z = x W and a downstream loss f(z_q) = Σ c · sin(z_q): the
    # straight-through gradient in W is xᵀ (c cos(z_q)), i.e. the gradient of f at z_q
    # passed through the identity, not zero (the lookup itself has no gradient).
    kx, kw, kc, kb = jax.random.split(jax.random.key(1), 4)
    x = jax.random.normal(kx, (64, 4))
    w = jax.random.normal(kw, (4, 3))
    c = jax.random.normal(kc, (64, 3))
    codebook = jax.random.normal(kb, (16, 3))

    def loss(w):
        z = x @ w
        z_q, _ = vq.quantize(codebook, z)
        return jnp.sum(c * jnp.sin(vq.straight_through(z, z_q)))

    grad_w = jax.jit(jax.grad(loss))(w)
    z_q, _ = jax.jit(vq.quantize)(codebook, x @ w)
    expected = x.T @ (c * jnp.cos(z_q))
    np.testing.assert_allclose(grad_w, expected, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(grad_w).min()) > 0.0
    # forward value z + (z_q - z): z_q up to float32 rounding
    np.testing.assert_allclose(vq.straight_through(x @ w, z_q), z_q, rtol=0, atol=1e-6)


def test_codebook_and_commitment_losses_send_gradients_to_one_side_each():
    z = jnp.array([[0.0, 1.0], [2.0, 2.0]])
    e = jnp.array([[1.0, 1.0], [2.0, 4.0]])
    expected = (1.0 + 0.0 + 0.0 + 4.0) / 4  # mean squared difference
    assert float(vq.codebook_loss(z, e)) == pytest.approx(expected)
    assert float(vq.commitment_loss(z, e)) == pytest.approx(expected)
    gz_cb, ge_cb = jax.grad(vq.codebook_loss, argnums=(0, 1))(z, e)
    gz_cm, ge_cm = jax.grad(vq.commitment_loss, argnums=(0, 1))(z, e)
    np.testing.assert_array_equal(gz_cb, 0.0)
    np.testing.assert_array_equal(ge_cm, 0.0)
    np.testing.assert_allclose(ge_cb, 2 * (e - z) / 4)
    np.testing.assert_allclose(gz_cm, 2 * (z - e) / 4)


def test_vqvae_gradients_reach_the_encoder_through_the_quantiser():
    x = jax.random.uniform(jax.random.key(2), X_SHAPE)
    ema = build_vqvae(TINY_ENCODER, TINY_DECODER, num_codes=8, beta=0.25)
    learned = build_vqvae(TINY_ENCODER, TINY_DECODER, num_codes=8, beta=0.25, decay=None)
    params, _ = jax.jit(ema.init)(jax.random.key(3), x)  # init does not depend on decay

    @jax.jit
    def gradients(params):
        g_ema = jax.grad(ema.loss, has_aux=True)(params, jax.random.key(4), x)[0]
        g_learned = jax.grad(learned.loss, has_aux=True)(params, jax.random.key(4), x)[0]
        # The encoder's gradient should be the decoder's gradient at z_q plus β times the
        # commitment gradient, carried back through the encoder (identity pass-through).
        z = ema.encode(params, x)
        z_q, _ = ema.quantize(params, z)
        g_zq = jax.grad(lambda zq: jnp.mean((ema.decode(params, zq) - x) ** 2))(z_q)
        g_z = g_zq + 0.25 * 2 * (z - z_q) / z.size
        _, vjp = jax.vjp(lambda p: ema.encode({**params, "encoder": p}, x), params["encoder"])
        return g_ema, g_learned, vjp(g_z)[0]

    g_ema, g_learned, expected = gradients(params)
    assert float(optax.tree.norm(g_ema["encoder"])) > 0.0
    assert float(optax.tree.norm(g_ema["codebook"])) == 0.0  # EMA codebooks get no gradient
    assert float(optax.tree.norm(g_learned["codebook"])) > 0.0
    for a, b in zip(jax.tree.leaves(g_ema["encoder"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # The learned codebook changes nothing for the encoder: the codebook loss has no z-gradient.
    for a, b in zip(jax.tree.leaves(g_learned["encoder"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_vector_quantizer_module_loss_and_codebook_gradient():
    module = vq.VectorQuantizer(num_codes=6, code_dim=2, beta=0.5)
    z = jax.random.normal(jax.random.key(5), (3, 4, 2))
    params = module.init(jax.random.key(6), z)
    out = module.apply(params, z)
    codebook = params["params"]["codebook"]
    z_q, idx = vq.quantize(codebook, z)
    mse = jnp.mean((z - z_q) ** 2)
    # codebook and commitment terms have equal values: loss = (1 + β) · mse
    assert float(out.loss) == pytest.approx(1.5 * float(mse), rel=1e-6)
    np.testing.assert_array_equal(out.indices, idx)
    np.testing.assert_allclose(out.quantized, z_q, atol=1e-6)
    grads = jax.grad(lambda p: module.apply(p, z).loss)(params)["params"]["codebook"]
    counts = vq.code_counts(idx, 6)
    unused = np.asarray(counts) == 0
    np.testing.assert_array_equal(np.asarray(grads)[unused], 0.0)
    frozen = vq.VectorQuantizer(num_codes=6, code_dim=2, learn_codebook=False)
    grads = jax.grad(lambda p: frozen.apply(p, z).loss)(params)["params"]["codebook"]
    np.testing.assert_array_equal(grads, 0.0)


# ---- EMA codebook ------------------------------------------------------------------------

MEANS = jnp.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0], [0.0, -6.0]])
SD = 0.3


def _mixture(key, n):
    kc, kn = jax.random.split(key)
    comp = jax.random.randint(kc, (n,), 0, MEANS.shape[0])
    return MEANS[comp] + SD * jax.random.normal(kn, (n, 2))


def test_ema_with_zero_decay_gives_the_batch_cluster_means():
    z = _mixture(jax.random.key(7), 400)
    codebook = MEANS + 1.0
    idx = vq.nearest_code(codebook, z)
    new, state = vq.ema_update(vq.init_vq_state(codebook), z, idx, decay=0.0, epsilon=1e-9)
    for k in range(4):
        members = np.asarray(z)[np.asarray(idx) == k]
        np.testing.assert_allclose(new[k], members.mean(0), rtol=1e-5, atol=1e-5)
        assert float(state.ema_counts[k]) == members.shape[0]


def test_ema_codebook_converges_to_the_cluster_means():
    # Codes start off-centre (nearest to their own cluster). At stationarity the EMA code
    # m_k/N_k averages the batch sums with weights (1-γ)γ^j, so its error per coordinate has
    # variance ≈ σ² (1-γ) / ((1+γ) n) with n = expected batch count of the cluster.
    gamma, batch, steps = 0.95, 256, 300
    n = batch / MEANS.shape[0]
    sd_err = SD * np.sqrt((1 - gamma) / ((1 + gamma) * n))
    codebook = MEANS + jnp.array([[1.5, -1.0]])
    state = vq.init_vq_state(codebook)

    @jax.jit
    def step(carry, key):
        codebook, state = carry
        z = _mixture(key, batch)
        return vq.ema_update(state, z, vq.nearest_code(codebook, z), decay=gamma), None

    keys = jax.random.split(jax.random.key(8), steps)
    (codebook, state), _ = jax.lax.scan(step, (codebook, state), keys)
    # initial-value bias γ^300 ≈ 2e-7 and Laplace-smoothing bias ~ε K / Σ N ≈ 1e-7: negligible
    np.testing.assert_array_less(jnp.abs(codebook - MEANS), 5 * sd_err)
    # cluster sizes: EMA of multinomial counts with mean n, sd sqrt(n(1-1/K)(1-γ)/(1+γ))
    sd_n = np.sqrt(n * 0.75 * (1 - gamma) / (1 + gamma))
    np.testing.assert_array_less(jnp.abs(state.ema_counts - n), 5 * sd_n)
    np.testing.assert_array_equal(state.steps_unused, 0)


# ---- dead-code restarts ------------------------------------------------------------------


def test_dead_codes_are_restarted_onto_encoder_outputs():
    dead_after = 3
    far = jnp.array([[50.0, 50.0], [-50.0, 50.0]])  # never the nearest code
    codebook = jnp.concatenate([MEANS, far])
    state = vq.init_vq_state(codebook)
    key = jax.random.key(9)
    for i in range(dead_after):
        z = _mixture(jax.random.fold_in(key, i), 128)
        idx = vq.nearest_code(codebook, z)
        codebook, state = vq.ema_update(state, z, idx, decay=0.9)
        np.testing.assert_array_equal(state.steps_unused[4:], i + 1)
        before = codebook
        codebook, state, num = vq.restart_dead_codes(
            jax.random.fold_in(key, 100 + i), codebook, state, z, dead_after=dead_after
        )
    assert int(num) == 2
    np.testing.assert_array_equal(codebook[:4], before[:4])  # live codes untouched
    # each restarted code is exactly one of the last batch's encoder outputs
    for k in (4, 5):
        assert np.any(np.all(np.asarray(z) == np.asarray(codebook[k]), axis=1))
    np.testing.assert_array_equal(state.steps_unused[4:], 0)
    np.testing.assert_array_equal(state.ema_counts[4:], 1.0)
    np.testing.assert_array_equal(state.ema_sums[4:], codebook[4:])
    # the restarted codes now sit inside the data and are used again
    z = _mixture(jax.random.fold_in(key, 999), 4096)
    used = vq.code_counts(vq.nearest_code(codebook, z), 6)
    assert float(used[4]) > 0 and float(used[5]) > 0


def test_vqvae_step_restarts_dead_codes_and_matches_a_manual_ema_update():
    x = jax.random.uniform(jax.random.key(10), X_SHAPE)
    model = build_vqvae(TINY_ENCODER, TINY_DECODER, num_codes=8, decay=0.9, dead_after=1)
    params, vq_state = model.init(jax.random.key(11), x)
    params["codebook"] = params["codebook"].at[0].set(1e3)  # a code no vector will choose
    opt = optax.sgd(0.0)  # no gradient change: the step is the codebook update alone
    state = init_vqvae_train_state(params, vq_state, opt)
    step = make_vqvae_step(model, opt, donate=False)
    new_state, metrics = step(state, jax.random.key(12), x)
    assert isinstance(new_state, VQVAETrainState)
    assert int(new_state.step) == 1
    assert float(metrics["num_restarted"]) >= 1.0
    z = model.encode(params, x)
    idx = vq.nearest_code(params["codebook"], z)
    expected, _ = vq.ema_update(vq_state, z, idx, decay=0.9)
    live = np.asarray(new_state.vq_state.steps_unused) == 0
    live &= np.asarray(vq.code_counts(idx, 8)) > 0  # codes used, hence not restarted
    np.testing.assert_allclose(
        np.asarray(new_state.params["codebook"])[live], np.asarray(expected)[live], rtol=1e-5
    )
    assert float(new_state.params["codebook"][0, 0]) < 1e3  # the dead code moved
    for name in ("perplexity", "code_usage", "recon_mse", "commitment_loss", "grad_norm"):
        assert np.isfinite(float(metrics[name])), name


# ---- usage statistics --------------------------------------------------------------------


def test_perplexity_of_uniform_single_and_known_histograms():
    k = 64
    uniform = vq.code_counts(jnp.tile(jnp.arange(k), 3), k)
    assert float(vq.perplexity(uniform)) == pytest.approx(k, rel=1e-5)
    assert float(vq.code_usage(uniform)) == 1.0
    single = vq.code_counts(jnp.full((5, 7), 3), k)
    assert float(vq.perplexity(single)) == pytest.approx(1.0, abs=1e-6)
    assert float(vq.code_usage(single)) == pytest.approx(1 / k)
    # p = (1/2, 1/4, 1/4): entropy 1.5 log 2, perplexity 2^1.5
    assert float(vq.perplexity(jnp.array([2.0, 1.0, 1.0, 0.0]))) == pytest.approx(2**1.5, rel=1e-6)


# ---- bad input ---------------------------------------------------------------------------


def test_bad_input_is_rejected_naming_the_argument():
    codebook = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="code_dim"):
        vq.nearest_code(codebook, jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="code_dim"):
        vq.VectorQuantizer(num_codes=4, code_dim=3).init(jax.random.key(0), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="num_codes"):
        vq.nearest_code(jnp.zeros((0, 3)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_codes"):
        build_vqvae(TINY_ENCODER, TINY_DECODER, num_codes=0)
    with pytest.raises(ValueError, match="num_codes"):
        vq.VectorQuantizer(num_codes=0, code_dim=3).init(jax.random.key(0), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="beta"):
        build_vqvae(TINY_ENCODER, TINY_DECODER, num_codes=4, beta=-0.1)
    with pytest.raises(ValueError, match="beta"):
        vq.VectorQuantizer(num_codes=4, code_dim=3, beta=-1.0).init(
            jax.random.key(0), jnp.zeros((2, 3))
        )
    with pytest.raises(ValueError, match="decay"):
        build_vqvae(TINY_ENCODER, TINY_DECODER, num_codes=4, decay=1.0)
    state = vq.init_vq_state(codebook)
    with pytest.raises(ValueError, match="decay"):
        vq.ema_update(state, jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), decay=-0.5)
    with pytest.raises(ValueError, match="indices"):
        vq.ema_update(state, jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="dead_after"):
        vq.restart_dead_codes(jax.random.key(0), codebook, state, jnp.zeros((2, 3)), dead_after=0)
    with pytest.raises(TypeError, match="state"):
        vq.ema_update((1, 2, 3), jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32))
    with pytest.raises(TypeError, match="encoder"):
        build_vqvae(lambda x: x, TINY_DECODER, num_codes=4)


@pytest.mark.parametrize("name", ["dgm_jax.vae.vq", "dgm_jax.vae.vqvae", "dgm_jax.nn.vq_nets"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
