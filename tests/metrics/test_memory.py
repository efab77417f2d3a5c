"""The blocked metrics compile for 50,000 × 50,000 comparisons with bounded memory.

Only compiled, not run (running them takes minutes on CPU): XLA's memory analysis of
the compiled program gives the temporary buffer size. The full pair matrix would need
50,000² × 4 B = 10 GB; the tiles need O(block_size²) — tens of MB.
"""

import jax
import jax.numpy as jnp
import pytest

from dgm_jax.metrics import energy_distance, kernel_inception_distance, mmd2, prdc


@pytest.mark.parametrize("fn", [mmd2, energy_distance, prdc, kernel_inception_distance])
def test_50k_by_50k_fits_in_memory(fn):
    spec = jax.ShapeDtypeStruct((50_000, 128), jnp.float32)
    compiled = jax.jit(fn).lower(spec, spec).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("backend gives no memory analysis")
    assert analysis.temp_size_in_bytes < 256e6, analysis.temp_size_in_bytes
