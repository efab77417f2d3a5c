"""Conditional flow matching, minibatch-OT flow matching, rectified flow and reflow.

Time runs from noise at ``t = 0`` to data at ``t = 1`` (Lipman et al. 2023, "Flow
Matching for Generative Modeling"; Liu et al. 2023, "Flow Straight and Fast"). A path
is affine in a coupled pair ``(x0, x1)`` (``x0`` noise, ``x1`` data):

    x_t = α(t) x1 + σ(t) x0,        u_t = α'(t) x1 + σ'(t) x0,

and the conditional flow matching loss ``E ‖v_θ(x_t, t) − u_t‖²`` has the marginal
velocity ``v*(x, t) = E[u_t | x_t = x]`` as its minimiser, whose flow carries the noise
distribution to the data (Lipman et al., Thm. 2; Tong et al. 2023, "Improving and
generalizing flow-based generative models with minibatch optimal transport").

* Paths are values (:class:`AffinePath`): :func:`straight_path` (rectified flow, and
  Lipman's OT path with ``σ_min``) and :func:`vp_path` (Lipman's variance-preserving path).
* Couplings are values (:mod:`dgm_jax.flows.ot`): independent, exact minibatch OT,
  Sinkhorn.
* :func:`flow_matching_loss` fits ``loss_fn(params, key, batch)`` for
  :func:`dgm_jax.train.make_step`; the batch is data (noise drawn and coupled inside)
  or given ``(x0, x1)`` pairs (reflow). Class-conditional training drops labels to a
  null label; :func:`dgm_jax.diffusion.classifier_free_guidance` then guides the
  velocity exactly as it guides a noise prediction.
* :func:`sample_flow` integrates ``dx/dt = v(x, t)`` with dgm_jax's Runge–Kutta solvers;
  :func:`flow_trajectory` keeps every step; :func:`reflow_pairs` makes the
  ``(noise, sample)`` pairs of the next rectified flow; :func:`straightness` measures
  Liu et al.'s ``S = ∫₀¹ E‖(Z1 − Z0) − v(Z_t, t)‖² dt``.

A velocity network is ``velocity_fn(x, t) -> v`` on a batch (``x`` of shape
``(batch, *event)``, ``t`` of shape ``(batch,)``), or ``velocity_fn(x, t, labels)``
when class-conditional. Nothing here jit-compiles for you.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgm_jax._validate import check_int, check_key, check_positive, check_probability
from dgm_jax.diffusion.guidance import drop_labels
from dgm_jax.flows.ot import CouplingFn, independent_coupling
from dgm_jax.sde.solvers import (
    AdaptiveSolver,
    ButcherTableau,
    ODEInfo,
    check_tableau,
    euler,
    heun,
    integrate,
    rk_step,
)
from dgm_jax.types import Array, Float, Int, PRNGKeyArray

__all__ = [
    "AffinePath",
    "VelocityFn",
    "couple",
    "flow_matching_loss",
    "flow_trajectory",
    "gaussian_velocity",
    "path_sample",
    "reflow_pairs",
    "sample_flow",
    "straight_path",
    "straightness",
    "vp_path",
]

VelocityFn = Callable[..., Array]


class AffinePath(NamedTuple):
    """A conditional probability path ``x_t = α(t) x1 + σ(t) x0`` on ``t ∈ [0, t_max]``."""

    alpha_fn: Callable[[Array], Array]  # α(t), elementwise in t; α(0) ≈ 0
    sigma_fn: Callable[[Array], Array]  # σ(t), elementwise in t; σ(0) = 1
    t_max: float  # training times are U(0, t_max) and sampling integrates 0 → t_max


def straight_path(sigma_min: float = 0.0) -> AffinePath:
    """The straight path ``x_t = t x1 + (1 − (1 − σ_min) t) x0`` with ``u_t = x1 − (1 − σ_min) x0``.

    ``σ_min = 0`` is rectified flow (Liu et al. 2023) and independent-coupling CFM (Tong
    et al. 2023); ``σ_min > 0`` is Lipman et al.'s (2023) "OT path", ending at
    ``N(x1, σ_min² I)`` given ``x1``.

    Args:
        sigma_min: final noise level, in ``[0, 1)``.

    Examples:
        >>> path = straight_path()
        >>> float(path.alpha_fn(jnp.array(0.25))), float(path.sigma_fn(jnp.array(0.25)))
        (0.25, 0.75)
    """
    check_probability("sigma_min", sigma_min)
    if sigma_min >= 1.0:
        raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min}")
    return AffinePath(lambda t: t, lambda t: 1.0 - (1.0 - sigma_min) * t, 1.0)


def vp_path(beta_min: float = 0.1, beta_max: float = 20.0, *, eps: float = 1e-3) -> AffinePath:
    """Lipman et al.'s (2023) variance-preserving path, the VP SDE's marginals run backwards.

    ``α(t) = exp(−½ T(1 − t))`` with ``T(s) = ∫₀ˢ β = β_min s + ½ (β_max − β_min) s²`` and
    ``σ(t) = sqrt(1 − α(t)²)``; ``σ'`` blows up at ``t = 1``, so ``t_max = 1 − eps``.

    Args:
        beta_min: ``β(0) > 0``.
        beta_max: ``β(1) > beta_min``.
        eps: distance of ``t_max`` from 1, in ``(0, 1)``.

    Examples:
        >>> path = vp_path()
        >>> a, s = path.alpha_fn(jnp.array(0.5)), path.sigma_fn(jnp.array(0.5))
        >>> round(float(a**2 + s**2), 6)
        1.0
    """
    check_positive("beta_min", beta_min)
    check_positive("beta_max", beta_max)
    if beta_max <= beta_min:
        raise ValueError(f"need beta_min < beta_max, got {beta_min} and {beta_max}")
    check_positive("eps", eps)
    if eps >= 1.0:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")

    def integrated_beta(t):  # T(1 - t)
        s = 1.0 - t
        return beta_min * s + 0.5 * (beta_max - beta_min) * s**2

    def alpha_fn(t):
        return jnp.exp(-0.5 * integrated_beta(t))

    def sigma_fn(t):
        return jnp.sqrt(-jnp.expm1(-integrated_beta(t)))

    return AffinePath(alpha_fn, sigma_fn, 1.0 - eps)


def _check_path(path: AffinePath) -> None:
    if not isinstance(path, AffinePath):
        raise TypeError(
            f"path must be an AffinePath (straight_path(), vp_path()), got {type(path).__name__}"
        )


def _coefficients(path: AffinePath, t: Array) -> tuple[Array, Array, Array, Array]:
    """``α(t), σ(t), α'(t), σ'(t)`` for a vector of times (forward-mode derivatives)."""
    ones = jnp.ones_like(t)
    alpha, d_alpha = jax.jvp(path.alpha_fn, (t,), (ones,))
    sigma, d_sigma = jax.jvp(path.sigma_fn, (t,), (ones,))
    return alpha, sigma, d_alpha, d_sigma


def _per_example(values: Array, like: Array) -> Array:
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def path_sample(
    path: AffinePath,
    t: Float[Array, " batch"],
    x0: Float[Array, " batch *event"],
    x1: Float[Array, " batch *event"],
) -> tuple[Float[Array, " batch *event"], Float[Array, " batch *event"]]:
    """The point ``x_t`` on the conditional path and its velocity ``u_t``.

    Args:
        path: the path.
        t: times ``(batch,)``.
        x0: noise ``(batch, *event)``.
        x1: data ``(batch, *event)``.

    Returns:
        ``(x_t, u_t)``, each shaped like ``x0``.

    Examples:
        >>> x_t, u = path_sample(straight_path(), jnp.array([0.5]), jnp.zeros((1, 2)),
        ...                      jnp.ones((1, 2)))
        >>> x_t.tolist(), u.tolist()
        ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    _check_path(path)
    if jnp.shape(x0) != jnp.shape(x1) or jnp.ndim(x0) < 2:
        raise ValueError(
            f"x0 and x1 must share the shape (batch, *event), got {jnp.shape(x0)}, {jnp.shape(x1)}"
        )
    if jnp.shape(t) != (x0.shape[0],):
        raise ValueError(f"t must have shape ({x0.shape[0]},), got {jnp.shape(t)}")
    alpha, sigma, d_alpha, d_sigma = _coefficients(path, jnp.asarray(t, x0.dtype))
    x_t = _per_example(alpha, x0) * x1 + _per_example(sigma, x0) * x0
    u_t = _per_example(d_alpha, x0) * x1 + _per_example(d_sigma, x0) * x0
    return x_t, u_t


def gaussian_velocity(
    path: AffinePath, mean: Float[Array, " dim"], std: Float[Array, " dim"]
) -> VelocityFn:
    """The exact marginal velocity for data ``N(mean, diag(std²))`` and independent noise.

    With ``x_t = α x1 + σ x0`` jointly Gaussian, ``E[u_t | x_t = x]`` is
    ``α' μ + (α α' s² + σ σ') / (α² s² + σ²) (x − α μ)`` per coordinate. It is the
    minimiser of :func:`flow_matching_loss` with the independent coupling (the tests
    check that its gradient vanishes there), and its flow maps ``N(0, I)`` to
    ``N(α(t_max) μ, α² s² + σ²)``.

    Args:
        path: the path.
        mean: data mean ``(dim,)``.
        std: data standard deviations ``(dim,)``, ``>= 0``.

    Returns:
        ``velocity_fn(x, t)`` on batches ``(batch, dim)``, ``(batch,)``.

    Examples:
        >>> v = gaussian_velocity(straight_path(), jnp.zeros(1), jnp.ones(1))
        >>> v(jnp.array([[2.0]]), jnp.array([0.5])).tolist()  # N(0,1) to N(0,1)
        [[0.0]]
    """
    _check_path(path)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    if mean.ndim != 1 or std.shape != mean.shape:
        raise ValueError(f"mean and std must be 1-D of equal shape, got {mean.shape}, {std.shape}")

    def velocity_fn(x, t):
        alpha, sigma, d_alpha, d_sigma = (c[:, None] for c in _coefficients(path, t))
        mu, var_data = mean[None, :], (std**2)[None, :]
        var = alpha**2 * var_data + sigma**2
        gain = (alpha * d_alpha * var_data + sigma * d_sigma) / var
        return d_alpha * mu + gain * (x - alpha * mu)

    return velocity_fn


def couple(
    key: PRNGKeyArray,
    coupling_fn: CouplingFn,
    x0: Float[Array, " batch *event"],
    x1: Float[Array, " batch *event"],
    labels: Int[Array, " batch"] | None = None,
) -> tuple[Array, Array, Array | None]:
    """Re-pair a batch with ``coupling_fn``: returns ``(x0, x1[idx], labels[idx])``.

    Labels travel with their data points, so class-conditional OT flow matching keeps
    every image with its class.

    Examples:
        >>> from dgm_jax.flows.ot import exact_ot_coupling
        >>> x0 = jnp.array([[0.0], [1.0]]); x1 = jnp.array([[1.0], [0.0]])
        >>> _, x1c, y = couple(jax.random.key(0), exact_ot_coupling, x0, x1, jnp.array([7, 3]))
        >>> x1c.ravel().tolist(), y.tolist()
        ([0.0, 1.0], [3, 7])
    """
    if not callable(coupling_fn):
        raise TypeError(f"coupling_fn must be callable, got {type(coupling_fn).__name__}")
    idx = coupling_fn(key, x0, x1)
    if jnp.shape(idx) != (x0.shape[0],):
        raise ValueError(f"coupling_fn must return indices of shape ({x0.shape[0]},)")
    idx = jax.lax.stop_gradient(idx)
    return x0, x1[idx], None if labels is None else labels[idx]


def flow_matching_loss(
    velocity_fn: VelocityFn,
    path: AffinePath,
    key: PRNGKeyArray,
    batch: Array | tuple[Array, Array],
    *,
    coupling: CouplingFn | None = independent_coupling,
    labels: Int[Array, " batch"] | None = None,
    p_uncond: float = 0.0,
    null_label: int | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """Conditional flow matching loss ``E_{t, (x0, x1)} ‖v_θ(x_t, t) − u_t‖²`` (mean per element).

    ``t ~ U(0, path.t_max)``. If ``batch`` is a data array ``x1``, noise
    ``x0 ~ N(0, I)`` is drawn and re-paired by ``coupling`` (independent: I-CFM / rectified
    flow; :func:`~dgm_jax.flows.exact_ot_coupling`: OT-CFM). If ``batch`` is a pair
    ``(x0, x1)`` the pairs are used as given (reflow; ``coupling`` is then ignored).

    Args:
        velocity_fn: ``velocity_fn(x_t, t)``, or ``velocity_fn(x_t, t, labels)`` when
            ``labels`` are given.
        path: an :class:`AffinePath`.
        key: PRNG key.
        batch: data ``(batch, *event)`` or a pair ``(x0, x1)`` of such arrays.
        coupling: ``coupling_fn(key, x0, x1) -> idx`` (see :mod:`dgm_jax.flows.ot`).
        labels: integer classes ``(batch,)`` for a class-conditional velocity.
        p_uncond: probability of replacing a label by ``null_label`` (classifier-free
            guidance training).
        null_label: the "no class" label (conventionally ``num_classes``); required when
            ``p_uncond > 0``.

    Returns:
        ``(loss, metrics)``; metrics hold ``"target_sq_norm"``, the mean ``u_t²`` (the loss of
        a zero velocity), and ``"pair_sq_dist"``, the mean ``‖x1 − x0‖²`` per element of the
        coupled pairs (smaller under OT).

    Examples:
        >>> loss, m = flow_matching_loss(lambda x, t: jnp.zeros_like(x), straight_path(),
        ...                              jax.random.key(0), jnp.zeros((4096, 2)))
        >>> round(float(loss), 1)  # u = −x0 and E x0² = 1
        1.0
    """
    _check_path(path)
    check_key("key", key)
    key_t, key_noise, key_couple, key_drop = jax.random.split(key, 4)
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise ValueError("batch must be data x1 or a pair (x0, x1)")
        x0, x1 = batch
        if jnp.shape(x0) != jnp.shape(x1) or jnp.ndim(x1) < 2:
            raise ValueError(
                f"x0 and x1 must share the shape (batch, *event), got {jnp.shape(x0)}, "
                f"{jnp.shape(x1)}"
            )
    else:
        x1 = batch
        if jnp.ndim(x1) < 2:
            raise ValueError(f"batch must have shape (batch, *event), got {jnp.shape(x1)}")
    n = x1.shape[0]
    if labels is not None and (
        jnp.shape(labels) != (n,) or not jnp.issubdtype(jnp.result_type(labels), jnp.integer)
    ):
        raise ValueError(f"labels must be integers of shape ({n},), got {jnp.shape(labels)}")
    if not isinstance(batch, (tuple, list)):
        x0 = jax.random.normal(key_noise, jnp.shape(x1), jnp.result_type(x1))
        if coupling is not None:
            x0, x1, labels = couple(key_couple, coupling, x0, x1, labels)
    if labels is not None:
        check_probability("p_uncond", p_uncond)
        if p_uncond > 0:
            if null_label is None:
                raise ValueError("null_label is required when p_uncond > 0")
            labels = drop_labels(key_drop, labels, p_uncond, null_label)
    t = jax.random.uniform(key_t, (n,), x1.dtype, maxval=path.t_max)
    x_t, u_t = path_sample(path, t, x0, x1)
    v = velocity_fn(x_t, t) if labels is None else velocity_fn(x_t, t, labels)
    if jnp.shape(v) != x1.shape:
        raise ValueError(f"velocity_fn output shape {jnp.shape(v)} must equal {x1.shape}")
    loss = jnp.mean((v - u_t) ** 2)
    return loss, {
        "target_sq_norm": jnp.mean(u_t**2),
        "pair_sq_dist": jnp.mean((x1 - x0) ** 2),
    }


def _batched_velocity(velocity_fn: VelocityFn, labels: Array | None):
    def f(t, y):
        tt = jnp.full((y.shape[0],), t, y.dtype)
        return velocity_fn(y, tt) if labels is None else velocity_fn(y, tt, labels)

    return f


def _check_solver_args(solver, num_steps):
    if isinstance(solver, AdaptiveSolver):
        return
    check_tableau(solver)
    check_int("num_steps", num_steps, minimum=1)


def sample_flow(
    key: PRNGKeyArray,
    velocity_fn: VelocityFn,
    path: AffinePath,
    shape: tuple[int, ...] | None,
    *,
    solver: ButcherTableau | AdaptiveSolver = heun,
    num_steps: int = 50,
    x0: Array | None = None,
    labels: Int[Array, " batch"] | None = None,
) -> tuple[Float[Array, " batch *event"], ODEInfo]:
    """Sample by integrating ``dx/dt = v(x, t)`` from noise at 0 to ``path.t_max``.

    Args:
        key: PRNG key for ``x0 ~ N(0, I)`` (unused when ``x0`` is given).
        velocity_fn: ``velocity_fn(x, t)`` (or with ``labels``).
        path: the path the velocity was trained on (gives ``t_max``).
        shape: ``(batch, *event)``; may be None when ``x0`` is given.
        solver: a tableau (``euler``, ``heun``, ``rk4``) for ``num_steps`` fixed steps, or
            :func:`~dgm_jax.sde.adaptive_solver`.
        num_steps: fixed steps, ``>= 1``; NFE is ``solver.num_stages * num_steps``.
        x0: starting noise.
        labels: classes for a class-conditional (e.g. guided) velocity.

    Returns:
        ``(samples, info)``.

    Examples:
        >>> v = gaussian_velocity(straight_path(), jnp.array([3.0]), jnp.array([0.5]))
        >>> x, info = sample_flow(jax.random.key(0), v, straight_path(), (4096, 1))
        >>> round(float(x.mean()), 1), round(float(x.std()), 1), int(info.num_fn_evals)
        (3.0, 0.5, 100)
    """
    check_key("key", key)
    _check_path(path)
    _check_solver_args(solver, num_steps)
    if x0 is None:
        if shape is None:
            raise ValueError("give shape or x0")
        x0 = jax.random.normal(key, tuple(shape), jnp.float32)
    ts = jnp.linspace(0.0, path.t_max, 2 if isinstance(solver, AdaptiveSolver) else num_steps + 1)
    return integrate(solver, _batched_velocity(velocity_fn, labels), x0, ts)


def flow_trajectory(
    velocity_fn: VelocityFn,
    path: AffinePath,
    x0: Float[Array, " batch *event"],
    *,
    solver: ButcherTableau = euler,
    num_steps: int = 50,
    labels: Int[Array, " batch"] | None = None,
) -> Float[Array, "num_steps_plus_1 batch *event"]:
    """Every state of a fixed-step solve from ``x0`` at 0 to ``path.t_max`` (for figures).

    Examples:
        >>> xs = flow_trajectory(lambda x, t: jnp.ones_like(x), straight_path(),
        ...                      jnp.zeros((3, 2)), num_steps=4)
        >>> xs.shape, float(xs[-1, 0, 0])
        ((5, 3, 2), 1.0)
    """
    _check_path(path)
    _check_solver_args(solver, num_steps)
    f = _batched_velocity(velocity_fn, labels)
    ts = jnp.linspace(0.0, path.t_max, num_steps + 1)

    def step(y, times):
        y_next, _, _ = rk_step(solver, f, times[0], y, times[1] - times[0])
        return y_next, y_next

    _, ys = jax.lax.scan(step, x0, (ts[:-1], ts[1:]))
    return jnp.concatenate([x0[None], ys])


def straightness(
    velocity_fn: VelocityFn,
    path: AffinePath,
    x0: Float[Array, " batch *event"],
    *,
    num_steps: int = 100,
    labels: Int[Array, " batch"] | None = None,
) -> Float[Array, ""]:
    """Liu et al.'s (2023) straightness ``S = ∫₀¹ E‖(Z1 − Z0) − v(Z_t, t)‖² dt`` (0 = straight).

    The flow is integrated with ``num_steps`` Euler steps from ``x0``; ``S`` is the
    left Riemann sum over those steps of the batch mean of the squared norm (summed over
    event axes), scaled to a unit time interval. A straight flow has ``S = 0`` and needs
    a single Euler step.

    Args:
        velocity_fn: ``velocity_fn(x, t)`` (or with ``labels``).
        path: gives the time interval ``[0, t_max]``.
        x0: starting noise ``(batch, *event)``.
        num_steps: Euler steps, ``>= 1``.
        labels: classes for a class-conditional velocity.

    Returns:
        Scalar ``S``.

    Examples:
        >>> s = straightness(lambda x, t: jnp.ones_like(x), straight_path(), jnp.zeros((2, 2)))
        >>> round(float(s), 6)
        0.0
    """
    _check_path(path)
    check_int("num_steps", num_steps, minimum=1)
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must have shape (batch, *event), got {jnp.shape(x0)}")
    f = _batched_velocity(velocity_fn, labels)
    h = path.t_max / num_steps

    def step(y, t):
        v = f(t, y)
        return y + h * v, v

    ts = jnp.arange(num_steps, dtype=jnp.float32) * h
    z1, vs = jax.lax.scan(step, x0, ts)
    # Velocities are per unit time of [0, t_max]; rescale to a unit interval.
    displacement = (z1 - x0) / path.t_max
    sq = jnp.sum((displacement[None] - vs).reshape(num_steps, x0.shape[0], -1) ** 2, axis=-1)
    return jnp.mean(sq) * path.t_max


def reflow_pairs(
    key: PRNGKeyArray,
    velocity_fn: VelocityFn,
    path: AffinePath,
    shape: tuple[int, ...],
    *,
    solver: ButcherTableau | AdaptiveSolver = heun,
    num_steps: int = 100,
    labels: Int[Array, " batch"] | None = None,
) -> tuple[Float[Array, " batch *event"], Float[Array, " batch *event"]]:
    """Noise and the model's sample from it: the coupling of the next rectified flow.

    Training :func:`flow_matching_loss` on these ``(x0, x1)`` pairs (reflow, Liu et al.
    2023, Alg. 1) gives a flow with the same marginals and straighter paths. Draw the
    pairs in chunks with ``jax.lax.map`` or a Python loop for large sets.

    Args:
        key: PRNG key for the noise.
        velocity_fn: the current flow's velocity.
        path: its path.
        shape: ``(batch, *event)``.
        solver: ODE solver; an accurate one (the default Heun with 100 steps) keeps the
            pairs faithful to the flow.
        num_steps: its steps.
        labels: classes, for a class-conditional velocity.

    Returns:
        ``(x0, x1)``.

    Examples:
        >>> x0, x1 = reflow_pairs(jax.random.key(0), lambda x, t: jnp.ones_like(x),
        ...                       straight_path(), (2, 1), num_steps=4)
        >>> (x1 - x0).ravel().round(4).tolist()
        [1.0, 1.0]
    """
    check_key("key", key)
    x0 = jax.random.normal(key, tuple(shape), jnp.float32)
    x1, _ = sample_flow(
        key, velocity_fn, path, None, solver=solver, num_steps=num_steps, x0=x0, labels=labels
    )
    return x0, x1
