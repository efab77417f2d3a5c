"""Symplectic splitting integrators for Hamiltonian dynamics, built from coefficient tables.

An integrator is a palindromic table of alternating momentum ("kick", ``b``) and
position ("drift", ``a``) coefficients ``(b1, a1, b2, a2, ..., a1, b1)``. One step of
size ``h`` applies ``p <- p + b_i h grad log pi(q)`` and ``q <- q + a_i h M^{-1} p`` in
turn. A palindromic table gives a time-reversible, volume-preserving (symplectic)
map; the number of ``a`` entries is the number of gradient evaluations per step
(the first kick reuses the gradient cached in the state).

Tables provided:

* ``velocity_verlet`` (leapfrog) ``(1/2, 1, 1/2)``: second order, one gradient.
* ``mclachlan``: McLachlan's two-stage method ``(b, 1/2, 1 - 2b, 1/2, b)`` with
  ``b = 0.1931833275037836`` (McLachlan, "On the numerical integration of ordinary
  differential equations by symmetric composition methods", SIAM J. Sci. Comput.
  16, 1995), the minimum-error two-stage choice also studied for HMC by Blanes,
  Casas & Sanz-Serna ("Numerical integrators for the Hybrid Monte Carlo method",
  SIAM J. Sci. Comput. 36, 2014): second order, two gradients, smaller error constant.
* ``yoshida``: Yoshida's fourth-order triple-jump composition of three leapfrog steps
  with weights ``w1 = 1/(2 - 2^{1/3})``, ``w0 = -2^{1/3} w1`` (Yoshida, "Construction of
  higher order symplectic integrators", Phys. Lett. A 150, 1990): three gradients.
  Its negative middle sub-step narrows the stability interval (on a harmonic
  oscillator of frequency w it needs ``h w < ~1.57`` against 2 for leapfrog), so it
  pays at small step sizes, not large ones. (BlackJAX's integrator named
  ``yoshida`` is a different, three-stage second-order table.)

Examples:
    >>> import jax.numpy as jnp
    >>> from dgm_jax.mcmc.integrators import IntegratorState, velocity_verlet
    >>> logdensity_fn = lambda q: -0.5 * jnp.sum(q**2)
    >>> one_step = velocity_verlet(logdensity_fn)
    >>> q = jnp.ones(2)
    >>> state = IntegratorState(q, jnp.zeros(2), logdensity_fn(q), -q)
    >>> state = one_step(state, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

__all__ = [
    "Integrator",
    "IntegratorState",
    "generate_integrator",
    "mclachlan",
    "velocity_verlet",
    "yoshida",
]


class IntegratorState(NamedTuple):
    """A point in phase space with the log density and its gradient cached."""

    position: Any  # pytree q
    momentum: Any  # pytree p, same structure as q
    logdensity: Any  # scalar log pi(q)
    logdensity_grad: Any  # pytree grad log pi(q)


def _identity(momentum: Any) -> Any:
    return momentum


class Integrator(NamedTuple):
    """A splitting integrator given by its coefficient table.

    Call it as ``integrator(logdensity_fn, velocity_fn)`` to get
    ``one_step(state: IntegratorState, step_size) -> IntegratorState``; ``velocity_fn``
    maps momentum to velocity ``M^{-1} p`` (identity by default). A negative
    ``step_size`` integrates backward in time.
    """

    coefficients: tuple[float, ...]  # palindromic (b1, a1, b2, a2, ..., a1, b1)
    order: int | None  # order of accuracy of the step (None if unknown)

    @property
    def num_grad_evals(self) -> int:
        """Gradient evaluations per step (number of position updates)."""
        return len(self.coefficients) // 2

    def __call__(
        self, logdensity_fn: Callable[[Any], Any], velocity_fn: Callable[[Any], Any] = _identity
    ) -> Callable[[IntegratorState, Any], IntegratorState]:
        coefficients = self.coefficients
        value_and_grad = jax.value_and_grad(logdensity_fn)

        def one_step(state: IntegratorState, step_size: Any) -> IntegratorState:
            position, momentum, logdensity, grad = state
            for i, c in enumerate(coefficients):
                if i % 2 == 0:  # kick with the current gradient
                    h = c * step_size
                    momentum = jax.tree_util.tree_map(lambda p, g, h=h: p + h * g, momentum, grad)
                else:  # drift along the velocity, then one gradient evaluation
                    h = c * step_size
                    velocity = velocity_fn(momentum)
                    position = jax.tree_util.tree_map(
                        lambda q, v, h=h: q + h * v, position, velocity
                    )
                    logdensity, grad = value_and_grad(position)
            return IntegratorState(position, momentum, logdensity, grad)

        return one_step

    def trajectory(
        self, logdensity_fn: Callable[[Any], Any], velocity_fn: Callable[[Any], Any] = _identity
    ) -> Callable[[IntegratorState, Any, Any], IntegratorState]:
        """``run(state, step_size, num_steps)``: ``num_steps`` steps with fused end kicks.

        The same map as applying ``integrator(...)`` ``num_steps`` times (up to float
        rounding), but the closing kick of each step and the opening kick of the next,
        which use the same gradient, are merged into one update (the classic leapfrog
        form of velocity Verlet). ``num_steps >= 1`` may be traced.
        """
        coefficients = self.coefficients
        value_and_grad = jax.value_and_grad(logdensity_fn)
        b1 = coefficients[0]

        def kick(momentum, grad, h):
            return jax.tree_util.tree_map(lambda p, g: p + h * g, momentum, grad)

        def inner(state: IntegratorState, step_size: Any) -> IntegratorState:
            position, momentum, logdensity, grad = state
            for i, c in enumerate(coefficients[1:-1]):
                if i % 2 == 0:  # drift, then one gradient evaluation
                    velocity = velocity_fn(momentum)
                    position = jax.tree_util.tree_map(
                        lambda q, v, h=c * step_size: q + h * v, position, velocity
                    )
                    logdensity, grad = value_and_grad(position)
                else:
                    momentum = kick(momentum, grad, c * step_size)
            return IntegratorState(position, momentum, logdensity, grad)

        def run(state: IntegratorState, step_size: Any, num_steps: Any) -> IntegratorState:
            state = state._replace(
                momentum=kick(state.momentum, state.logdensity_grad, b1 * step_size)
            )

            def body(_, s):
                s = inner(s, step_size)
                return s._replace(momentum=kick(s.momentum, s.logdensity_grad, 2 * b1 * step_size))

            state = jax.lax.fori_loop(0, num_steps - 1, body, state)
            state = inner(state, step_size)
            return state._replace(
                momentum=kick(state.momentum, state.logdensity_grad, b1 * step_size)
            )

        return run


def generate_integrator(coefficients: Sequence[float], *, order: int | None = None) -> Integrator:
    """Build an :class:`Integrator` from a palindromic coefficient table.

    Args:
        coefficients: ``(b1, a1, b2, a2, ..., a1, b1)``, odd length >= 3; even
            entries are momentum (kick) weights, odd entries position (drift)
            weights; each group must sum to 1 (consistency).
        order: the order of accuracy, for documentation and tests.

    Returns:
        The integrator.

    Raises:
        ValueError: if the table is not odd-length, palindromic and consistent.

    Examples:
        >>> leapfrog = generate_integrator([0.5, 1.0, 0.5], order=2)
        >>> leapfrog.num_grad_evals
        1
    """
    coefs = tuple(float(c) for c in coefficients)
    if len(coefs) < 3 or len(coefs) % 2 == 0:
        raise ValueError(
            f"coefficients must have odd length >= 3 (b1, a1, ..., a1, b1), got {len(coefs)}"
        )
    if any(not math.isclose(c, d, rel_tol=0, abs_tol=1e-12) for c, d in zip(coefs, coefs[::-1])):
        raise ValueError(f"coefficients must be palindromic, got {coefs}")
    sum_b, sum_a = sum(coefs[0::2]), sum(coefs[1::2])
    if not (math.isclose(sum_b, 1.0, abs_tol=1e-12) and math.isclose(sum_a, 1.0, abs_tol=1e-12)):
        raise ValueError(
            f"kick (even) and drift (odd) coefficients must each sum to 1, got {sum_b} and {sum_a}"
        )
    return Integrator(coefs, order)


velocity_verlet = generate_integrator([0.5, 1.0, 0.5], order=2)

_MCLACHLAN_B = 0.1931833275037836
mclachlan = generate_integrator(
    [_MCLACHLAN_B, 0.5, 1.0 - 2.0 * _MCLACHLAN_B, 0.5, _MCLACHLAN_B], order=2
)

_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = -(2.0 ** (1.0 / 3.0)) * _W1
yoshida = generate_integrator(
    [_W1 / 2, _W1, (_W0 + _W1) / 2, _W0, (_W0 + _W1) / 2, _W1, _W1 / 2], order=4
)
