"""Poisson flow generative models: PFGM (Xu et al. 2022) and PFGM++ (Xu et al. 2023).

Data ``y ∈ R^N`` are point charges on the plane ``z = 0`` of an augmented space
``R^{N+D}``; their electric field, the gradient of the Green's function of the
``(N+D)``-dimensional Laplacian, is

    E(x̃) = (1/n) Σ_i (x̃ − ỹ_i) / ‖x̃ − ỹ_i‖^{N+D},

of magnitude ``∝ 1/r^{N+D−1}`` for one charge. Field lines carry the charges to a
hemisphere at infinity with uniform flux, so integrating them backwards from the
hemisphere prior samples the data distribution.

* **PFGM** (D = 1; Xu, Liu, Tegmark & Jaakkola 2022, "Poisson Flow Generative Models"):
  :func:`poisson_field` and :func:`normalized_poisson_field` estimate the field from a
  data batch; :func:`pfgm_perturb` draws the training points (Alg. 1); a network
  ``field_fn(x̃) -> v`` on flattened augmented points ``(batch, N + 1)`` regresses the
  normalised field (:func:`pfgm_loss`); :func:`pfgm_sample` runs the backward ODE
  ``dx/d(log z) = z E_x / E_z`` from the prior on the plane ``z = z_max``
  (:func:`pfgm_prior_sample`).
* **PFGM++** (Xu, Liu, Tian, Tong, Tegmark & Jaakkola 2023, "PFGM++: Unlocking the
  Potential of Physics-Inspired Generative Models"): by symmetry only the radius
  ``r = ‖z‖`` of the ``D`` augmented coordinates matters. The perturbation kernel is
  ``p_r(x | y) ∝ (‖x − y‖² + r²)^{−(N+D)/2}`` (:func:`pfgmpp_perturb`), with
  ``r = σ √D`` aligning it with diffusion's noise level ``σ``; the ODE is
  ``dx/dσ = (x − E[y | x])/σ``, EDM's probability flow with the kernel's posterior
  mean. A denoiser ``D_θ(x, σ)`` is trained by :func:`pfgmpp_loss` and sampled by
  :func:`pfgmpp_sample`. As ``D → ∞`` the kernel tends to ``N(y, σ² I)``: PFGM++ becomes
  the VE diffusion / EDM (pass ``D=math.inf`` for that limit). :func:`pfgmpp_posterior_mean`
  is the exact ``E[y | x]`` for an empirical data set (the loss's minimiser).

Nothing here jit-compiles for you; everything is batch-first.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_key, check_number, check_positive
from dgm_jax.sde.sdes import edm_time_grid
from dgm_jax.sde.solvers import ButcherTableau, ODEInfo, heun, integrate
from dgm_jax.types import Array, Float, PRNGKeyArray

__all__ = [
    "DenoiseFn",
    "edm_preconditioned",
    "normalized_poisson_field",
    "pfgm_loss",
    "pfgm_perturb",
    "pfgm_prior_sample",
    "pfgm_sample",
    "pfgmpp_loss",
    "pfgmpp_perturb",
    "pfgmpp_posterior_mean",
    "pfgmpp_prior_sample",
    "pfgmpp_sample",
    "poisson_field",
]

DenoiseFn = Callable[[Array, Array], Array]


def _check_points(name: str, x: Array, dim: int | None = None) -> None:
    if jnp.ndim(x) != 2 or (dim is not None and jnp.shape(x)[1] != dim):
        want = "(num, dim)" if dim is None else f"(num, {dim})"
        raise ValueError(f"{name} must have shape {want}, got {jnp.shape(x)}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {jnp.result_type(x)}")


def _check_D(D) -> None:
    check_number("D", D)
    if not (math.inf == D or (float(D) == int(D) and D >= 1)):
        raise ValueError(f"D must be a positive integer or math.inf, got {D!r}")


def _field_parts(x: Array, charges: Array) -> tuple[Array, Array]:
    """``(log ‖E‖-scale L, weighted displacement m)`` with ``E = exp(L) m`` (stable in high d)."""
    d = x.shape[-1]
    diff = x[:, None, :] - charges[None, :, :]  # (batch, n, d)
    log_r = 0.5 * jnp.log(jnp.sum(diff**2, axis=-1))
    log_w = -d * log_r  # ‖x − y‖^{−d}
    log_total = jax.nn.logsumexp(log_w, axis=1) - math.log(charges.shape[0])
    weights = jax.nn.softmax(log_w, axis=1)
    return log_total, jnp.einsum("bn,bnd->bd", weights, diff)


def poisson_field(
    x: Float[Array, "batch d"], charges: Float[Array, "n d"]
) -> Float[Array, "batch d"]:
    """The empirical Poisson field ``E(x) = (1/n) Σ_i (x − c_i) / ‖x − c_i‖^d`` in ``d`` dims.

    ``d`` counts every coordinate (``N + D`` for augmented data). The magnitude falls
    as ``‖x − c‖^{−(d−1)}``, which under- or overflows float32 for large ``d``: use
    :func:`normalized_poisson_field` for training targets.

    Args:
        x: evaluation points ``(batch, d)``, away from the charges.
        charges: charge positions ``(n, d)`` (augmented data, ``z = 0``).

    Returns:
        The field ``(batch, d)``.

    Examples:
        >>> poisson_field(jnp.array([[2.0, 0.0]]), jnp.zeros((1, 2))).tolist()  # 1/r in 2-D
        [[0.5, 0.0]]
    """
    _check_points("x", x)
    _check_points("charges", charges, jnp.shape(x)[1])
    log_total, m = _field_parts(x, charges)
    return jnp.exp(log_total)[:, None] * m


def normalized_poisson_field(
    x: Float[Array, "batch d"], charges: Float[Array, "n d"], *, scale: float | None = None
) -> Float[Array, "batch d"]:
    """PFGM's training target: the field's direction times ``scale`` (default ``sqrt(d − 1)``).

    Xu et al. (2022) regress ``sqrt(N) E / (‖E‖ + γ)``; here the direction is computed
    exactly in the log domain (no ``γ`` needed). The backward ODE uses only the ratio
    ``E_x / E_z``, so normalising loses nothing.

    Examples:
        >>> v = normalized_poisson_field(jnp.array([[3.0, 4.0]]), jnp.zeros((1, 2)), scale=1.0)
        >>> [round(float(c), 4) for c in v[0]]
        [0.6, 0.8]
    """
    _check_points("x", x)
    _check_points("charges", charges, jnp.shape(x)[1])
    d = x.shape[1]
    scale = math.sqrt(max(d - 1, 1)) if scale is None else scale
    check_positive("scale", scale)
    _, m = _field_parts(x, charges)
    return scale * m / jnp.linalg.norm(m, axis=-1, keepdims=True)


def _uniform_directions(key: PRNGKeyArray, num: int, dim: int, dtype) -> Array:
    g = jax.random.normal(key, (num, dim), dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def pfgm_perturb(
    key: PRNGKeyArray,
    data: Float[Array, "batch N"],
    *,
    sigma: float = 0.01,
    tau: float = 0.03,
    max_exponent: float = 291.0,
) -> Float[Array, "batch N_plus_1"]:
    """PFGM's training points (Xu et al. 2022, Alg. 1): augmented data pushed outwards.

    ``x̃ = (y, 0) + ‖ε‖ (1 + τ)^m u`` with ``ε ~ N(0, σ² I_{N+1})``, ``m ~ U[0, M]`` and
    ``u`` uniform on the unit sphere of ``R^{N+1}``; the last coordinate is made
    non-negative (``z = |z|``). The paper's CIFAR-10 values are the defaults; ``M`` should
    make the largest perturbation reach the prior's ``z_max``.

    Args:
        key: PRNG key.
        data: flattened data ``(batch, N)``.
        sigma: base noise ``σ > 0``.
        tau: growth rate ``τ > 0``.
        max_exponent: ``M >= 0``.

    Returns:
        Augmented points ``(batch, N + 1)`` with ``z >= 0``.

    Examples:
        >>> x = pfgm_perturb(jax.random.key(0), jnp.zeros((4, 2)))
        >>> x.shape, bool((x[:, -1] >= 0).all())
        ((4, 3), True)
    """
    check_key("key", key)
    _check_points("data", data)
    check_positive("sigma", sigma)
    check_positive("tau", tau)
    check_positive("max_exponent", max_exponent, allow_zero=True)
    n, dim = data.shape
    key_m, key_eps, key_u = jax.random.split(key, 3)
    m = jax.random.uniform(key_m, (n,), data.dtype, maxval=max_exponent)
    eps_norm = sigma * jnp.linalg.norm(jax.random.normal(key_eps, (n, dim + 1), data.dtype), axis=1)
    radius = eps_norm * (1.0 + tau) ** m
    x = jnp.concatenate([data, jnp.zeros((n, 1), data.dtype)], axis=1)
    x = x + radius[:, None] * _uniform_directions(key_u, n, dim + 1, data.dtype)
    return x.at[:, -1].set(jnp.abs(x[:, -1]))


def pfgm_loss(
    field_fn: Callable[[Array], Array],
    key: PRNGKeyArray,
    batch: Float[Array, "batch N"],
    *,
    sigma: float = 0.01,
    tau: float = 0.03,
    max_exponent: float = 291.0,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """PFGM's loss: ``‖f_θ(x̃) − sqrt(N) E(x̃)/‖E(x̃)‖‖²`` with ``E`` estimated from the batch.

    The batch is both the charges and (perturbed by :func:`pfgm_perturb`) the evaluation
    points, as in Xu et al. (2022); larger batches give a less biased field.

    Args:
        field_fn: network on flattened augmented points ``(batch, N + 1) -> (batch, N + 1)``.
        key: PRNG key.
        batch: flattened data ``(batch, N)``.
        sigma, tau, max_exponent: see :func:`pfgm_perturb`.

    Returns:
        ``(loss, metrics)`` with ``"mean_z"``, the mean augmented coordinate.

    Examples:
        >>> loss, _ = pfgm_loss(lambda x: jnp.zeros_like(x), jax.random.key(0), jnp.zeros((8, 4)))
        >>> round(float(loss), 4)  # the target has norm sqrt(N) = 2 over N + 1 = 5 entries
        0.8
    """
    x = pfgm_perturb(key, batch, sigma=sigma, tau=tau, max_exponent=max_exponent)
    charges = jnp.concatenate([batch, jnp.zeros((batch.shape[0], 1), batch.dtype)], axis=1)
    target = jax.lax.stop_gradient(
        normalized_poisson_field(x, charges, scale=math.sqrt(batch.shape[1]))
    )
    v = field_fn(x)
    if jnp.shape(v) != x.shape:
        raise ValueError(f"field_fn must return shape {x.shape}, got {jnp.shape(v)}")
    return jnp.mean((v - target) ** 2), {"mean_z": jnp.mean(x[:, -1])}


def pfgmpp_perturb(
    key: PRNGKeyArray,
    y: Float[Array, " batch *event"],
    sigma: Float[Array, " batch"],
    D: float,
) -> Float[Array, " batch *event"]:
    """Draw ``x ~ p_r(x | y) ∝ (‖x − y‖² + r²)^{−(N+D)/2}`` with ``r = σ √D`` (PFGM++, eq. 4).

    ``‖x − y‖ = r sqrt(R1 / (1 − R1))`` with ``R1 ~ Beta(N/2, D/2)`` (drawn as
    ``sqrt(G_N / G_D)`` with Gamma variables) in a uniform direction;
    ``E‖x − y‖² = σ² N D / (D − 2)``. ``D = math.inf`` gives ``y + σ ε``, the VE kernel.

    Args:
        key: PRNG key.
        y: data ``(batch, *event)``, ``N`` = the event size.
        sigma: noise levels ``(batch,)``, ``> 0``.
        D: augmentation dimension, a positive integer or ``math.inf``.

    Returns:
        Perturbed data shaped like ``y``.

    Examples:
        >>> x = pfgmpp_perturb(jax.random.key(0), jnp.zeros((4096, 2)), jnp.ones(4096), 6)
        >>> round(float(jnp.mean(jnp.sum(x**2, axis=1))), 0)  # σ² N D / (D − 2) = 3
        3.0
    """
    check_key("key", key)
    _check_D(D)
    if jnp.ndim(y) < 2:
        raise ValueError(f"y must have shape (batch, *event), got {jnp.shape(y)}")
    if jnp.shape(sigma) != (y.shape[0],):
        raise ValueError(f"sigma must have shape ({y.shape[0]},), got {jnp.shape(sigma)}")
    n = y.shape[0]
    N = math.prod(y.shape[1:])
    flat = y.reshape(n, N)
    key_dir, key_a, key_b = jax.random.split(key, 3)
    if math.inf == D:
        noise = jax.random.normal(key_dir, flat.shape, flat.dtype)
        return (flat + sigma[:, None] * noise).reshape(y.shape)
    g_n = jax.random.gamma(key_a, N / 2.0, (n,), flat.dtype)
    g_d = jax.random.gamma(key_b, D / 2.0, (n,), flat.dtype)
    radius = sigma * math.sqrt(D) * jnp.sqrt(g_n / g_d)
    x = flat + radius[:, None] * _uniform_directions(key_dir, n, N, flat.dtype)
    return x.reshape(y.shape)


def pfgmpp_prior_sample(
    key: PRNGKeyArray, shape: tuple[int, ...], sigma_max: float, D: float
) -> Float[Array, " batch *event"]:
    """The PFGM++ prior: the kernel around the origin at ``σ_max`` (heavy-tailed for small D).

    Examples:
        >>> pfgmpp_prior_sample(jax.random.key(0), (3, 2), 80.0, 128).shape
        (3, 2)
    """
    check_positive("sigma_max", sigma_max)
    zeros = jnp.zeros(tuple(shape), jnp.float32)
    return pfgmpp_perturb(key, zeros, jnp.full((shape[0],), sigma_max, jnp.float32), D)


def pfgmpp_posterior_mean(
    x: Float[Array, "batch N"],
    sigma: Float[Array, " batch"],
    data: Float[Array, "n N"],
    D: float,
) -> Float[Array, "batch N"]:
    """``E[y | x]`` under the PFGM++ kernel for the empirical data set ``data``.

    Weights ``∝ (1 + ‖x − y_i‖² / r²)^{−(N+D)/2}`` with ``r = σ √D`` (softmax of
    ``−‖x − y_i‖² / 2σ²`` when ``D = math.inf``). It minimises :func:`pfgmpp_loss` on that
    data set, and ``(x − E[y | x]) / σ`` is the PFGM++ ODE's ``dx/dσ`` (for ``D = 1``,
    ``r = z``: PFGM's ``z E_x / E_z``).

    Examples:
        >>> data = jnp.array([[-1.0], [1.0]])
        >>> pfgmpp_posterior_mean(jnp.array([[0.0]]), jnp.ones(1), data, 4).tolist()
        [[0.0]]
    """
    _check_D(D)
    _check_points("x", x)
    _check_points("data", data, jnp.shape(x)[1])
    N = x.shape[1]
    d2 = jnp.sum((x[:, None, :] - data[None, :, :]) ** 2, axis=-1)  # (batch, n)
    if math.inf == D:
        log_w = -0.5 * d2 / sigma[:, None] ** 2
    else:
        log_w = -0.5 * (N + D) * jnp.log1p(d2 / (D * sigma[:, None] ** 2))
    return jax.nn.softmax(log_w, axis=1) @ data


def edm_preconditioned(
    raw_fn: Callable[[Array, Array], Array], sigma_data: float = 0.5
) -> DenoiseFn:
    """EDM's preconditioning (Karras et al. 2022, Table 1), used by PFGM++ as well.

    ``D(x, σ) = c_skip x + c_out F(c_in x, c_noise)`` with ``c_skip = σ_d²/(σ² + σ_d²)``,
    ``c_out = σ σ_d / sqrt(σ² + σ_d²)``, ``c_in = 1/sqrt(σ² + σ_d²)``, ``c_noise = ¼ log σ``.

    Args:
        raw_fn: the network ``F(x, c_noise)`` on a batch (``c_noise`` of shape ``(batch,)``).
        sigma_data: data standard deviation ``σ_d > 0``.

    Returns:
        ``denoise_fn(x, sigma)``.

    Examples:
        >>> d = edm_preconditioned(lambda x, c: jnp.zeros_like(x))
        >>> d(jnp.ones((1, 2)), jnp.array([0.5])).tolist()  # c_skip = 0.5
        [[0.5, 0.5]]
    """
    check_positive("sigma_data", sigma_data)

    def denoise_fn(x, sigma):
        s = sigma.reshape(sigma.shape + (1,) * (x.ndim - 1))
        total = s**2 + sigma_data**2
        out = raw_fn(x / jnp.sqrt(total), 0.25 * jnp.log(sigma))
        return sigma_data**2 / total * x + s * sigma_data / jnp.sqrt(total) * out

    return denoise_fn


def pfgmpp_loss(
    denoise_fn: DenoiseFn,
    key: PRNGKeyArray,
    batch: Float[Array, " batch *event"],
    *,
    D: float = 128,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma_data: float = 0.5,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """PFGM++'s perturbation-kernel objective in EDM's denoiser form (Xu et al. 2023, §4).

    ``ln σ ~ N(p_mean, p_std²)``, ``x ~ p_{σ√D}(· | y)`` (:func:`pfgmpp_perturb`), loss
    ``λ(σ) ‖D_θ(x, σ) − y‖²`` with EDM's ``λ = (σ² + σ_d²)/(σ σ_d)²``, averaged over the
    batch and elements. Its minimiser is ``E[y | x]`` under the kernel, which turns into
    the field by ``(x − D)/σ``. ``D = math.inf`` is EDM's loss.

    Args:
        denoise_fn: ``D_θ(x, σ)`` on a batch, e.g. from :func:`edm_preconditioned`.
        key: PRNG key.
        batch: clean data ``(batch, *event)``.
        D: augmentation dimension (positive integer or ``math.inf``).
        p_mean, p_std: log-normal noise distribution.
        sigma_data: ``σ_d`` in the weighting.

    Returns:
        ``(loss, metrics)`` with ``"denoise_mse"``, the unweighted error.

    Examples:
        >>> loss, m = pfgmpp_loss(lambda x, s: x, jax.random.key(0), jnp.zeros((8, 2)))
        >>> bool(loss > 0)
        True
    """
    check_key("key", key)
    _check_D(D)
    check_number("p_mean", p_mean)
    check_positive("p_std", p_std)
    check_positive("sigma_data", sigma_data)
    if jnp.ndim(batch) < 2:
        raise ValueError(f"batch must have shape (batch, *event), got {jnp.shape(batch)}")
    key_s, key_x = jax.random.split(key)
    n = batch.shape[0]
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(key_s, (n,), batch.dtype))
    x = pfgmpp_perturb(key_x, batch, sigma, D)
    out = denoise_fn(x, sigma)
    if jnp.shape(out) != batch.shape:
        raise ValueError(f"denoise_fn must return shape {batch.shape}, got {jnp.shape(out)}")
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    sq = jnp.mean(((out - batch) ** 2).reshape(n, -1), axis=1)
    return jnp.mean(weight * sq), {"denoise_mse": jnp.mean(sq)}


def pfgmpp_sample(
    key: PRNGKeyArray,
    denoise_fn: DenoiseFn,
    shape: tuple[int, ...],
    *,
    D: float = 128,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    num_steps: int = 18,
    rho: float = 7.0,
    solver: ButcherTableau = heun,
    x_init: Array | None = None,
) -> tuple[Float[Array, " batch *event"], ODEInfo]:
    """Sample PFGM++ by solving ``dx/dσ = (x − D(x, σ))/σ`` from the prior at ``σ_max``.

    The grid is EDM's ρ-spaced levels from ``σ_max`` to ``σ_min``; the start is the
    PFGM++ prior (:func:`pfgmpp_prior_sample`), which is what distinguishes the
    sampler from EDM's at finite ``D``.

    Args:
        key: PRNG key for the prior draw.
        denoise_fn: ``D(x, σ)``.
        shape: ``(batch, *event)``.
        D: augmentation dimension.
        sigma_min, sigma_max: noise range, ``0 < σ_min < σ_max``.
        num_steps: solver steps (NFE ``= solver.num_stages * num_steps``).
        rho: EDM's grid exponent.
        solver: fixed-step tableau (default Heun, as EDM).
        x_init: optional starting point (overrides the prior draw).

    Returns:
        ``(samples, info)``.

    Examples:
        >>> data = jnp.array([[-1.0, 0.0], [1.0, 0.0]])
        >>> d = lambda x, s: pfgmpp_posterior_mean(x, s, data, 16)
        >>> x, info = pfgmpp_sample(jax.random.key(0), d, (4, 2), D=16, sigma_max=20.0)
        >>> bool(jnp.all(jnp.abs(jnp.abs(x[:, 0]) - 1.0) < 0.05)), int(info.num_fn_evals)
        (True, 36)
    """
    check_key("key", key)
    _check_D(D)
    check_int("num_steps", num_steps, minimum=1)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    grid = edm_time_grid(sigma_min, sigma_max, num_steps, rho)
    x = pfgmpp_prior_sample(key, shape, sigma_max, D) if x_init is None else x_init

    def f(sigma, x):
        s = jnp.full((x.shape[0],), sigma, x.dtype)
        return (x - denoise_fn(x, s)) / sigma

    return integrate(solver, f, x, grid)


def pfgm_prior_sample(
    key: PRNGKeyArray, num: int, dim: int, z_max: float
) -> Float[Array, "num dim"]:
    """PFGM's prior on the plane ``z = z_max``: density ``∝ (‖x‖² + z_max²)^{−(N+1)/2}``.

    The flux of a point charge at the origin through the plane (Xu et al. 2022, App.
    B.3); ``‖x‖ = z_max sqrt(R1/(1 − R1))`` with ``R1 ~ Beta(N/2, 1/2)``. It is the PFGM++
    kernel with ``D = 1`` and ``r = z_max``.

    Examples:
        >>> pfgm_prior_sample(jax.random.key(0), 5, 2, 40.0).shape
        (5, 2)
    """
    check_int("num", num, minimum=1)
    check_int("dim", dim, minimum=1)
    check_positive("z_max", z_max)
    return pfgmpp_prior_sample(key, (num, dim), z_max, 1)


def pfgm_sample(
    key: PRNGKeyArray,
    field_fn: Callable[[Array], Array],
    num: int,
    dim: int,
    *,
    z_max: float = 40.0,
    z_min: float = 1e-3,
    num_steps: int = 100,
    solver: ButcherTableau = heun,
) -> tuple[Float[Array, "num dim"], ODEInfo]:
    """PFGM's backward ODE ``dx/ds = z v_x(x̃) / v_z(x̃)`` in ``s = log z``, from z_max to z_min.

    ``v = field_fn(x̃)`` on augmented points ``(num, dim + 1)`` (the field's last
    coordinate is ``v_z``); a field with ``v_z`` near 0 makes the ODE stiff.

    Args:
        key: PRNG key for the prior draw.
        field_fn: the (learned or empirical) field on flattened augmented points.
        num: number of samples.
        dim: data dimension ``N``.
        z_max: start of the ODE (the prior plane), ``> z_min``.
        z_min: end, ``> 0``.
        num_steps: fixed solver steps, uniform in ``log z``.
        solver: the tableau.

    Returns:
        ``(samples (num, dim), info)``.

    Examples:
        >>> charges = jnp.array([[-1.0, 0.0], [1.0, 0.0]])
        >>> fn = lambda x: normalized_poisson_field(x, charges)
        >>> x, _ = pfgm_sample(jax.random.key(0), fn, 4, 1, z_max=40.0, z_min=1e-6)
        >>> bool(jnp.all(jnp.abs(jnp.abs(x[:, 0]) - 1.0) < 0.05))
        True
    """
    check_key("key", key)
    check_positive("z_min", z_min)
    check_int("num_steps", num_steps, minimum=1)
    if not z_min < z_max:
        raise ValueError(f"need z_min < z_max, got {z_min}, {z_max}")
    x = pfgm_prior_sample(key, num, dim, z_max)
    grid = jnp.linspace(math.log(z_max), math.log(z_min), num_steps + 1)

    def f(s, x):
        z = jnp.exp(s)
        v = field_fn(jnp.concatenate([x, jnp.full((x.shape[0], 1), z, x.dtype)], axis=1))
        return z * v[:, :-1] / v[:, -1:]

    return integrate(solver, f, x, grid)
