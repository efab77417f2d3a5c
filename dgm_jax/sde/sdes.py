"""Forward SDEs as values: VP, sub-VP, VE and EDM's σ-parameterisation.

A diffusion is the Itô SDE ``dx = f(x, t) dt + g(t) dw`` on ``t ∈ [0, T]`` whose
transition kernel from the data is Gaussian,
``p_{0t}(x_t | x_0) = N(m(t) x_0, s(t)² I)`` (Song et al. 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations", §3.4 and App. B).
Every SDE here is such a *linear* SDE, so the kernel between any two times is known
and the reverse-diffusion and ancestral predictors need nothing but ``m`` and ``s``.

Conventions (the same everywhere in :mod:`dgm_jax.sde`):

* Arrays are **batch-first**: ``x`` has shape ``(batch, *event)`` and ``t`` has shape
  ``(batch,)``, as in :mod:`dgm_jax.diffusion`. A score network is
  ``score_fn(x, t) -> (batch, *event)``, approximating ``∇_x log p_t(x)``, and must
  treat the examples of a batch independently.
* ``drift_fn(x, t)`` takes that batch; ``diffusion_fn(t)`` and ``marginal_fn(t)`` act
  elementwise on a ``t`` of any shape.
* ``m(t)`` and ``s(t)`` describe the SDE started at ``t = 0``, so ``s(0) = 0`` for every
  SDE. For VE this means ``s(t)² = σ(t)² - σ_min²`` (Song et al. use ``σ(t)`` itself,
  which differs by ``σ_min² = 1e-4`` in variance).
* Sampling runs from ``T`` down to ``eps > 0`` and likelihoods are of ``p_eps``;
  ``time_grid_fn(num_steps)`` gives each SDE's preferred decreasing grid of
  ``num_steps + 1`` times from ``T`` to ``eps``.

The fields of :class:`SDE` are raw functions and do no checking (they run traced);
public functions such as :func:`marginal_sample` validate their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgm_jax._validate import check_int, check_key, check_positive, is_traced
from dgm_jax.types import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "SDE",
    "ReverseSDE",
    "ScoreFn",
    "check_times",
    "edm_sde",
    "edm_time_grid",
    "marginal_sample",
    "probability_flow",
    "reverse_sde",
    "subvp_sde",
    "uniform_time_grid",
    "ve_sde",
    "vp_sde",
]

ScoreFn = Callable[[Array, Array], Array]


class SDE(NamedTuple):
    """A forward diffusion ``dx = f(x, t) dt + g(t) dw`` with a Gaussian kernel from x_0."""

    drift_fn: Callable  # f(x (batch, *event), t (batch,)) -> (batch, *event)
    diffusion_fn: Callable  # g(t) -> same shape as t
    marginal_fn: Callable  # t -> (m(t), s(t)): p_0t(x_t | x_0) = N(m x_0, s² I), elementwise
    prior_sample_fn: Callable  # (key, shape) -> a draw of shape `shape` from the prior at T
    prior_logp_fn: Callable  # z (batch, *event) -> log prior density (batch,)
    time_grid_fn: Callable  # num_steps -> (num_steps + 1,) times decreasing from T to eps
    T: float  # final time
    eps: float  # smallest time used by samplers and likelihoods (avoids s(0) = 0)


class ReverseSDE(NamedTuple):
    """Drift and diffusion of a reverse-time SDE (or an ODE when ``g = 0``), run from T to 0."""

    drift_fn: Callable  # (x (batch, *event), t (batch,)) -> dx/dt, shape (batch, *event)
    diffusion_fn: Callable  # t -> g(t) (zero for the probability-flow ODE)


def _per_example(values: Array, like: Array) -> Array:
    """Reshape ``values`` (batch,) or () to broadcast against ``like`` (batch, *event)."""
    values = jnp.asarray(values)
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def _standard_normal_logp(z: Array, scale: float = 1.0) -> Array:
    """Sum over the event of ``log N(z; 0, scale²)`` -> shape (batch,)."""
    axes = tuple(range(1, z.ndim))
    dim = math.prod(z.shape[1:])
    return -0.5 * jnp.sum((z / scale) ** 2, axis=axes) - dim * (
        0.5 * math.log(2.0 * math.pi) + math.log(scale)
    )


def _normal_prior(scale: float):
    def sample_fn(key, shape):
        return scale * jax.random.normal(key, tuple(shape))

    def logp_fn(z):
        return _standard_normal_logp(z, scale)

    return sample_fn, logp_fn


def uniform_time_grid(T: float, eps: float, num_steps: int) -> Float[Array, " num_steps_plus_1"]:
    """``num_steps + 1`` equally spaced times from ``T`` down to ``eps``.

    Examples:
        >>> uniform_time_grid(1.0, 0.0, 4).tolist()
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    check_int("num_steps", num_steps, minimum=1)
    return jnp.linspace(T, eps, num_steps + 1, dtype=jnp.float32)


def edm_time_grid(
    sigma_min: float, sigma_max: float, num_steps: int, rho: float = 7.0
) -> Float[Array, " num_steps_plus_1"]:
    """EDM's noise levels ``(σ_max^{1/ρ} + i/N (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``, i = 0..N.

    Karras et al. (2022), eq. 5, with ``N = num_steps`` intervals ending at ``σ_min``
    (the paper appends a last step to 0, which a likelihood cannot use).

    Examples:
        >>> g = edm_time_grid(0.002, 80.0, 10)
        >>> g.shape, round(float(g[0]), 3), round(float(g[-1]), 3)
        ((11,), 80.0, 0.002)
    """
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    check_positive("rho", rho)
    check_int("num_steps", num_steps, minimum=1)
    i = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + i * (lo - hi)) ** rho


def _check_eps(eps: float, T: float) -> None:
    check_positive("eps", eps)
    if not eps < T:
        raise ValueError(f"eps must be smaller than T = {T}, got eps={eps}")


def _linear_beta_sde(beta_min: float, beta_max: float, eps: float, *, sub_vp: bool) -> SDE:
    """VP (``sub_vp=False``) or sub-VP SDE with ``β(t) = β_min + t (β_max − β_min)`` on [0, 1].

    Both share ``m(t) = exp(-½ ∫_0^t β)``; VP has ``g = sqrt(β)`` and ``s = sqrt(1 − m²)``,
    sub-VP ``g = sqrt(β (1 − m⁴))`` and ``s = 1 − m²``.
    """
    check_positive("beta_min", beta_min)
    check_positive("beta_max", beta_max)
    if not beta_min < beta_max:
        raise ValueError(f"need beta_min < beta_max, got {beta_min} and {beta_max}")
    _check_eps(eps, 1.0)

    def beta(t):
        return beta_min + t * (beta_max - beta_min)

    def log_mean_coeff(t):  # log m(t) = -½ ∫_0^t β
        return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min

    def drift_fn(x, t):
        return -0.5 * _per_example(beta(t), x) * x

    def diffusion_fn(t):
        if sub_vp:  # exp(-2 ∫β) = m⁴
            return jnp.sqrt(beta(t) * -jnp.expm1(4.0 * log_mean_coeff(t)))
        return jnp.sqrt(beta(t))

    def marginal_fn(t):
        lm = log_mean_coeff(jnp.asarray(t))
        one_minus_m2 = -jnp.expm1(2.0 * lm)
        return jnp.exp(lm), one_minus_m2 if sub_vp else jnp.sqrt(one_minus_m2)

    sample_fn, logp_fn = _normal_prior(1.0)
    return SDE(
        drift_fn,
        diffusion_fn,
        marginal_fn,
        sample_fn,
        logp_fn,
        lambda n: uniform_time_grid(1.0, eps, n),
        1.0,
        eps,
    )


def vp_sde(beta_min: float = 0.1, beta_max: float = 20.0, *, eps: float = 1e-5) -> SDE:
    """The variance-preserving SDE (Song et al. 2021, eq. 11), the limit of DDPM.

    ``dx = -½ β(t) x dt + sqrt(β(t)) dw`` with ``β(t) = β_min + t (β_max - β_min)`` on
    ``[0, 1]``; ``m(t) = exp(-½ ∫_0^t β)``, ``s(t)² = 1 - m(t)²``; prior ``N(0, I)``.

    Args:
        beta_min: ``β(0) > 0``.
        beta_max: ``β(1) > beta_min``.
        eps: smallest time used by samplers and likelihoods.

    Examples:
        >>> sde = vp_sde()
        >>> m, s = sde.marginal_fn(jnp.array([0.0, 1.0]))
        >>> [round(float(v), 4) for v in m], [round(float(v), 4) for v in s]
        ([1.0, 0.0066], [0.0, 1.0])
    """
    return _linear_beta_sde(beta_min, beta_max, eps, sub_vp=False)


def subvp_sde(beta_min: float = 0.1, beta_max: float = 20.0, *, eps: float = 1e-5) -> SDE:
    """The sub-VP SDE (Song et al. 2021, eq. 12), whose variance stays below VP's.

    ``dx = -½ β(t) x dt + sqrt(β(t) (1 - exp(-2 ∫_0^t β))) dw``; ``m(t)`` as for VP and
    ``s(t) = 1 - m(t)²``; prior ``N(0, I)``.

    Examples:
        >>> sde = subvp_sde()
        >>> m, s = sde.marginal_fn(jnp.array(0.5))
        >>> bool(s < jnp.sqrt(1 - m**2))
        True
    """
    return _linear_beta_sde(beta_min, beta_max, eps, sub_vp=True)


def ve_sde(sigma_min: float = 0.01, sigma_max: float = 50.0, *, eps: float = 1e-5) -> SDE:
    """The variance-exploding SDE (Song et al. 2021, eq. 9), the limit of NCSN.

    ``dx = sqrt(dσ²/dt) dw`` with ``σ(t) = σ_min (σ_max/σ_min)^t`` on ``[0, 1]``, so
    ``g(t) = σ(t) sqrt(2 log(σ_max/σ_min))``; ``m = 1`` and ``s(t)² = σ(t)² - σ_min²``
    (the exact kernel of the SDE started at 0); prior ``N(0, σ_max² I)``.

    Examples:
        >>> sde = ve_sde()
        >>> _, s = sde.marginal_fn(jnp.array(1.0))
        >>> round(float(s), 3)
        50.0
    """
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    _check_eps(eps, 1.0)
    log_ratio = math.log(sigma_max / sigma_min)

    def drift_fn(x, t):
        return jnp.zeros_like(x)

    def diffusion_fn(t):
        return sigma_min * jnp.exp(t * log_ratio) * math.sqrt(2.0 * log_ratio)

    def marginal_fn(t):
        t = jnp.asarray(t)
        return jnp.ones_like(t), sigma_min * jnp.sqrt(jnp.expm1(2.0 * t * log_ratio))

    sample_fn, logp_fn = _normal_prior(sigma_max)
    return SDE(
        drift_fn,
        diffusion_fn,
        marginal_fn,
        sample_fn,
        logp_fn,
        lambda n: uniform_time_grid(1.0, eps, n),
        1.0,
        eps,
    )


def edm_sde(sigma_min: float = 0.002, sigma_max: float = 80.0, *, rho: float = 7.0) -> SDE:
    """EDM's σ-parameterisation (Karras et al. 2022): time *is* the noise level.

    ``σ(t) = t`` and ``s(t) = 1`` in the paper's notation, so ``dx = sqrt(2t) dw``,
    ``m = 1`` and the kernel std is ``t``; time runs on ``[0, σ_max]`` (``T = σ_max``,
    ``eps = σ_min``) rather than ``[0, 1]``. The default grid is EDM's ρ-spaced one
    (:func:`edm_time_grid`); the probability-flow ODE is the paper's
    ``dx/dσ = -σ ∇ log p``, and Heun on that grid is EDM's deterministic sampler
    (without its final step to σ = 0). Prior ``N(0, σ_max² I)``.

    Examples:
        >>> sde = edm_sde()
        >>> sde.T, sde.eps
        (80.0, 0.002)
    """
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    check_positive("rho", rho)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max, got {sigma_min} and {sigma_max}")

    def drift_fn(x, t):
        return jnp.zeros_like(x)

    def diffusion_fn(t):
        return jnp.sqrt(2.0 * t)

    def marginal_fn(t):
        t = jnp.asarray(t)
        return jnp.ones_like(t), t

    sample_fn, logp_fn = _normal_prior(sigma_max)
    return SDE(
        drift_fn,
        diffusion_fn,
        marginal_fn,
        sample_fn,
        logp_fn,
        lambda n: edm_time_grid(sigma_min, sigma_max, n, rho),
        float(sigma_max),
        float(sigma_min),
    )


def check_sde(sde: SDE) -> None:
    """Raise ``TypeError`` unless ``sde`` is an :class:`SDE`."""
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an SDE (e.g. vp_sde()), got {type(sde).__name__}")


def check_times(name: str, t: ArrayLike, sde: SDE) -> None:
    """Raise ``ValueError`` if concrete times ``t`` fall outside ``[0, sde.T]``.

    Traced values pass unchecked (their value is unknown before run time).

    Examples:
        >>> check_times("t", jnp.array([0.0, 0.5]), vp_sde())
    """
    if is_traced(t):
        return
    values = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0.0) or np.any(values > sde.T):
        raise ValueError(
            f"{name} must lie in [0, {sde.T}] (the SDE's time interval), "
            f"got values in [{values.min()}, {values.max()}]"
        )


def check_score_fn(score_fn: ScoreFn, shape: tuple[int, ...], dtype=jnp.float32) -> None:
    """Trace ``score_fn`` abstractly on a batch and check it returns the input's shape."""
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
    x = jax.ShapeDtypeStruct(tuple(shape), dtype)
    t = jax.ShapeDtypeStruct(tuple(shape[:1]), jnp.float32)
    out = jax.eval_shape(score_fn, x, t)
    if getattr(out, "shape", None) != tuple(shape):
        raise ValueError(
            f"score_fn(x, t) must return an array shaped like x {tuple(shape)}, "
            f"got {getattr(out, 'shape', type(out).__name__)}"
        )


def check_batch_shape(name: str, shape) -> tuple[int, ...]:
    """Return ``shape`` as a tuple after checking it is ``(batch, *event)`` of positive ints."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {shape!r}") from None
    if len(shape) < 2:
        raise ValueError(f"{name} must be (batch, *event) with at least 2 entries, got {shape}")
    for size in shape:
        check_int(f"entries of {name}", size, minimum=1)
    return shape


def marginal_sample(
    key: PRNGKeyArray,
    sde: SDE,
    x0: Float[Array, " batch *event"],
    t: Float[Array, " batch"],
) -> tuple[Float[Array, " batch *event"], Float[Array, " batch *event"]]:
    """Draw ``x_t ~ p_0t(x_t | x_0) = N(m(t) x_0, s(t)² I)``; returns ``(x_t, noise)``.

    Args:
        key: PRNG key.
        sde: the forward SDE.
        x0: clean data, shape ``(batch, *event)``.
        t: one time per example in ``[0, T]``, shape ``(batch,)``.

    Returns:
        ``x_t = m x_0 + s ε`` and the standard normal ``ε`` used, both shaped like ``x0``.

    Examples:
        >>> xt, noise = marginal_sample(jax.random.key(0), vp_sde(), jnp.ones((3, 2)),
        ...                             jnp.array([0.1, 0.5, 1.0]))
        >>> xt.shape
        (3, 2)
    """
    check_key("key", key)
    check_sde(sde)
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must have shape (batch, *event), got shape {jnp.shape(x0)}")
    if jnp.shape(t) != jnp.shape(x0)[:1]:
        raise ValueError(
            f"t must have shape (batch,) = {jnp.shape(x0)[:1]} to match x0, got {jnp.shape(t)}"
        )
    check_times("t", t, sde)
    noise = jax.random.normal(key, jnp.shape(x0), jnp.result_type(x0))
    mean_coeff, std = sde.marginal_fn(t)
    return _per_example(mean_coeff, x0) * x0 + _per_example(std, x0) * noise, noise


def reverse_sde(sde: SDE, score_fn: ScoreFn) -> ReverseSDE:
    """The reverse-time SDE ``dx = [f(x, t) - g(t)² ∇ log p_t(x)] dt + g(t) dw̄`` (Anderson 1982).

    Song et al. (2021), eq. 6. Time runs backwards: with ``dt < 0`` the Euler–Maruyama
    step is ``x + drift · dt + g sqrt(|dt|) z``.

    Examples:
        >>> rev = reverse_sde(vp_sde(), lambda x, t: -x)
        >>> rev.drift_fn(jnp.ones((2, 3)), jnp.ones(2)).shape
        (2, 3)
    """
    check_sde(sde)
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")

    def drift_fn(x, t):
        g2 = _per_example(sde.diffusion_fn(t) ** 2, x)
        return sde.drift_fn(x, t) - g2 * score_fn(x, t)

    return ReverseSDE(drift_fn, sde.diffusion_fn)


def probability_flow(sde: SDE, score_fn: ScoreFn) -> ReverseSDE:
    """The probability-flow ODE ``dx/dt = f(x, t) - ½ g(t)² ∇ log p_t(x)``.

    Song et al. (2021), eq. 13: its solutions share the SDE's marginals ``p_t``. Returned
    as a :class:`ReverseSDE` whose ``diffusion_fn`` is zero.

    Examples:
        >>> ode = probability_flow(vp_sde(), lambda x, t: -x)
        >>> float(ode.diffusion_fn(jnp.array(0.5)))
        0.0
    """
    check_sde(sde)
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")

    def drift_fn(x, t):
        g2 = _per_example(sde.diffusion_fn(t) ** 2, x)
        return sde.drift_fn(x, t) - 0.5 * g2 * score_fn(x, t)

    def diffusion_fn(t):
        return jnp.zeros_like(jnp.asarray(t, jnp.float32))

    return ReverseSDE(drift_fn, diffusion_fn)
