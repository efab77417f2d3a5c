"""Shared pytest configuration.

Strict rank promotion catches silent broadcasting bugs (a (n,) array meeting a
(n, 1) array) in every test. Tests that need several devices set
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` in a subprocess; see
``tests/train/test_sharding.py``.
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fixed PRNG key; tests split it, never reuse it."""
    return jax.random.key(0)
