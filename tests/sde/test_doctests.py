"""The Examples blocks of dgm_jax.sde run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "dgm_jax.sde",
    "dgm_jax.sde.likelihood",
    "dgm_jax.sde.losses",
    "dgm_jax.sde.samplers",
    "dgm_jax.sde.sdes",
    "dgm_jax.sde.solvers",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
