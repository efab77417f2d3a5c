"""Discrete noise schedules for DDPM-style diffusion.

A schedule is data: the per-step variances ``betas`` and the derived
``alphas = 1 - betas`` and ``alpha_bars = cumprod(alphas)``. The forward process
is ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` for
``t = 0, ..., T-1`` (step ``t`` here is step ``t + 1`` in Ho et al. 2020).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from dgm_jax._validate import check_int, check_number, check_positive
from dgm_jax.types import Array, ArrayLike, Float

__all__ = [
    "DiscreteSchedule",
    "cosine_schedule",
    "linear_schedule",
    "schedule_from_alpha_bars",
    "schedule_from_betas",
    "sigmoid_schedule",
]


class DiscreteSchedule(NamedTuple):
    """Per-step quantities of a discrete diffusion, each of shape ``(T,)``."""

    betas: Float[Array, " T"]  # variance added at each step
    alphas: Float[Array, " T"]  # 1 - betas
    alpha_bars: Float[Array, " T"]  # cumulative product of alphas: signal fraction at step t

    @property
    def num_steps(self) -> int:
        """Number of diffusion steps T."""
        return self.betas.shape[0]


def schedule_from_betas(betas: ArrayLike) -> DiscreteSchedule:
    """Build a schedule from per-step variances in (0, 1).

    Examples:
        >>> s = schedule_from_betas(jnp.full(10, 0.1))
        >>> s.num_steps
        10
    """
    betas = jnp.asarray(betas, jnp.float32)
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not bool(jnp.all((betas > 0) & (betas < 1))):
        raise ValueError("betas must all lie in the open interval (0, 1)")
    alphas = 1.0 - betas
    return DiscreteSchedule(betas, alphas, jnp.cumprod(alphas))


def schedule_from_alpha_bars(alpha_bars: ArrayLike, *, max_beta: float = 0.999) -> DiscreteSchedule:
    """Build a schedule from a decreasing signal fraction ``alpha_bar_t``.

    Betas are recovered as ``1 - alpha_bar_t / alpha_bar_{t-1}`` (with
    ``alpha_bar_{-1} = 1``) and clipped to ``max_beta`` to avoid a singular last step,
    as in Nichol & Dhariwal (2021).
    """
    check_positive("max_beta", max_beta)
    alpha_bars = jnp.asarray(alpha_bars, jnp.float32)
    if alpha_bars.ndim != 1 or alpha_bars.shape[0] < 1:
        raise ValueError(f"alpha_bars must be a non-empty 1-D array, got shape {alpha_bars.shape}")
    previous = jnp.concatenate([jnp.ones(1, jnp.float32), alpha_bars[:-1]])
    betas = jnp.clip(1.0 - alpha_bars / previous, 1e-8, max_beta)
    return schedule_from_betas(betas)


def linear_schedule(
    num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> DiscreteSchedule:
    """Betas rising linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020).

    The defaults are the paper's for T = 1000. For much smaller T, scale both ends
    by ``1000 / T`` so that ``alpha_bar_T`` stays near zero.

    Examples:
        >>> s = linear_schedule(1000)
        >>> bool(s.alpha_bars[-1] < 1e-4)
        True
    """
    check_int("num_steps", num_steps, minimum=1)
    check_positive("beta_start", beta_start)
    check_positive("beta_end", beta_end)
    if not beta_start <= beta_end < 1:
        raise ValueError(
            f"need beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
        )
    return schedule_from_betas(jnp.linspace(beta_start, beta_end, num_steps, dtype=jnp.float32))


def cosine_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> DiscreteSchedule:
    """The cosine schedule of Nichol & Dhariwal (2021).

    ``alpha_bar(t) = f(t) / f(0)`` with ``f(t) = cos²(π/2 · (t/T + s) / (1 + s))``.

    Examples:
        >>> s = cosine_schedule(100)
        >>> bool(jnp.all(jnp.diff(s.alpha_bars) < 0))
        True
    """
    check_int("num_steps", num_steps, minimum=1)
    check_positive("s", s)
    grid = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    f = jnp.cos(0.5 * jnp.pi * (grid + s) / (1.0 + s)) ** 2
    return schedule_from_alpha_bars(f[1:] / f[0], max_beta=max_beta)


def sigmoid_schedule(
    num_steps: int,
    start: float = -3.0,
    end: float = 3.0,
    tau: float = 1.0,
    max_beta: float = 0.999,
) -> DiscreteSchedule:
    """The sigmoid schedule of Jabri et al. (2022) / Chen (2023).

    ``alpha_bar(t) ∝ (σ(end/τ) - σ((t(end - start) + start)/τ))``, normalised so
    that ``alpha_bar(0) = 1``.
    """
    check_int("num_steps", num_steps, minimum=1)
    check_number("start", start)
    check_number("end", end)
    check_positive("tau", tau)
    if not start < end:
        raise ValueError(f"need start < end, got start={start}, end={end}")

    def sig(z):
        return 1.0 / (1.0 + jnp.exp(-z))

    grid = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    v_start, v_end = sig(start / tau), sig(end / tau)
    f = (v_end - sig((grid * (end - start) + start) / tau)) / (v_end - v_start)
    return schedule_from_alpha_bars(f[1:] / f[0], max_beta=max_beta)
