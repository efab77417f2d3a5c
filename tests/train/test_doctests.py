"""The Examples blocks of dgm_jax.train run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = [
    "dgm_jax.train",
    "dgm_jax.train.checkpoint",
    "dgm_jax.train.logging",
    "dgm_jax.train.loop",
    "dgm_jax.train.runs",
    "dgm_jax.train.sharding",
    "dgm_jax.train.state",
    "dgm_jax.train.step",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
