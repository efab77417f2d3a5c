"""Convergence diagnostics for MCMC: rank-normalized split R-hat, bulk/tail ESS, MCSE.

Follows Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC",
Bayesian Analysis 16(2). The effective sample size uses the multi-chain
autocorrelation estimate of Gelman et al. (BDA3, §11.5) truncated with Geyer's (1992)
initial monotone sequence, with autocovariances computed by FFT.

Every function takes draws of shape ``(num_chains, num_draws)`` or
``(num_chains, num_draws, *event)`` and works per component, returning an array of
shape ``event`` (a scalar for 2-D input). They are written in ``jax.numpy`` and can be
jit-compiled by the caller (nothing here is jitted for you); the arrays are small
compared to sampling. The public functions validate their input in Python and then call
an internal jit-compiled computation (compiled once per input shape), because these are
post-processing steps that are otherwise dominated by dispatch overhead.

Examples:
    >>> import jax
    >>> from dgm_jax.mcmc import diagnostics
    >>> draws = jax.random.normal(jax.random.key(0), (4, 1000))
    >>> float(diagnostics.split_rhat(draws)) < 1.01
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from dgm_jax.types import Array, ArrayLike

__all__ = [
    "autocorrelation",
    "ess",
    "ess_bulk",
    "ess_tail",
    "format_summary",
    "mcse_mean",
    "mcse_quantile",
    "rank_normalize",
    "split_chains",
    "split_rhat",
    "summary",
]

_MIN_DRAWS = 4  # split chains need at least two draws per half


def _as_draws(name: str, draws: ArrayLike, *, min_draws: int = _MIN_DRAWS) -> Array:
    """Validate ``draws`` (chains, draws, *event) and return it as a float array."""
    if not hasattr(draws, "shape"):
        draws = np.asarray(draws)
    shape = tuple(np.shape(draws))
    if len(shape) < 2:
        raise ValueError(
            f"{name} must have shape (num_chains, num_draws, *event), got shape {shape}; "
            "add a leading chain axis for a single chain (x[None])"
        )
    if shape[0] < 1:
        raise ValueError(f"{name} must hold at least one chain, got shape {shape}")
    if shape[1] < min_draws:
        raise ValueError(
            f"{name} must hold at least {min_draws} draws per chain, got shape {shape}"
        )
    x = jnp.asarray(draws)
    real = jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
    if not real and x.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a real array, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _per_component(fn: Callable[[Array], Array], x: Array) -> Array:
    """Apply ``fn`` ((chains, draws) -> scalar) to every component of x[..., *event]."""
    num_chains, num_draws, *event = x.shape
    flat = x.reshape(num_chains, num_draws, -1)
    out = jax.vmap(fn, in_axes=2)(flat)
    return out.reshape(tuple(event))


def split_chains(draws: ArrayLike) -> Array:
    """Split each chain in two halves, doubling the chains (odd middle draw dropped).

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``.

    Returns:
        Array of shape ``(2 * num_chains, num_draws // 2, *event)``.
    """
    x = _as_draws("draws", draws)
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _average_ranks(values: Array) -> Array:
    """Ranks 1..n of a flat array, ties get the average of the ranks they span."""
    sorted_values = jnp.sort(values)
    lower = jnp.searchsorted(sorted_values, values, side="left")
    upper = jnp.searchsorted(sorted_values, values, side="right")
    return (lower + 1 + upper).astype(values.dtype) / 2


def _rank_normalize_2d(x: Array) -> Array:
    # z = Φ⁻¹((r − 3/8) / (S + 1/4)), Blom's offset, eq. (14) of Vehtari et al. (2021).
    size = x.size
    ranks = _average_ranks(x.reshape(-1)).reshape(x.shape)
    return ndtri((ranks - 0.375) / (size + 0.25))


def rank_normalize(draws: ArrayLike) -> Array:
    """Replace draws by normal scores of their ranks pooled over all chains.

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``.

    Returns:
        Array of the same shape; per component, the pooled draws map to
        ``Φ⁻¹((rank − 3/8) / (S + 1/4))`` with ``S = num_chains * num_draws``.
    """
    x = _as_draws("draws", draws, min_draws=1)
    num_chains, num_draws = x.shape[:2]
    flat = x.reshape(num_chains, num_draws, -1)
    out = jax.vmap(_rank_normalize_2d, in_axes=2, out_axes=2)(flat)
    return out.reshape(x.shape)


def _rhat_2d(x: Array) -> Array:
    """Classic potential scale reduction of (chains, draws), already split."""
    num_draws = x.shape[1]
    chain_means = x.mean(axis=1)
    within = x.var(axis=1, ddof=1).mean()
    between_over_n = chain_means.var(ddof=1) if x.shape[0] > 1 else jnp.zeros((), x.dtype)
    var_plus = (num_draws - 1) / num_draws * within + between_over_n
    return jnp.sqrt(var_plus / within)


def _split_2d(x: Array) -> Array:
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _fold_2d(x: Array) -> Array:
    return jnp.abs(x - jnp.median(x))


def split_rhat(draws: ArrayLike) -> Array:
    """Rank-normalized split R-hat: the larger of bulk and folded (tail) R-hat.

    Vehtari et al. (2021), §4.2: chains are split in halves, the pooled draws are
    rank-normalized, and the classic R-hat is computed on those normal scores (bulk)
    and on the normal scores of ``|draw − median|`` (folded, sensitive to differences
    in scale). Values above 1.01 signal that the chains have not mixed.

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``, ``num_draws >= 4``.

    Returns:
        R-hat per component, shape ``event``. NaN where a component is constant.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(1), (4, 500))
        >>> bad = x + jnp.arange(4.0)[:, None]  # chains centred at 0, 1, 2, 3
        >>> bool(split_rhat(bad) > 1.1)
        True
    """
    return _split_rhat_jit(_as_draws("draws", draws))


def _split_rhat_2d(c: Array) -> Array:
    s = _split_2d(c)
    bulk = _rhat_2d(_rank_normalize_2d(s))
    tail = _rhat_2d(_rank_normalize_2d(_fold_2d(s)))
    return jnp.maximum(bulk, tail)


_split_rhat_jit = jax.jit(lambda x: _per_component(_split_rhat_2d, x))


def _autocovariance(x: Array) -> Array:
    """Biased autocovariance (divided by n) of each row of (chains, n), via FFT."""
    n = x.shape[-1]
    centred = x - x.mean(axis=-1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()  # zero padding avoids circular wrap-around
    spectrum = jnp.fft.rfft(centred, n=size, axis=-1)
    acov = jnp.fft.irfft(spectrum * jnp.conj(spectrum), n=size, axis=-1)[..., :n]
    return acov / n


def autocorrelation(draws: ArrayLike) -> Array:
    """Autocorrelation of each chain by FFT.

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``.

    Returns:
        Array of the same shape, lag along axis 1 (lag 0 is 1).
    """
    x = _as_draws("draws", draws, min_draws=2)
    acov = _autocovariance(jnp.moveaxis(x, 1, -1))
    return jnp.moveaxis(acov / acov[..., :1], -1, 1)


def _ess_2d(x: Array) -> Array:
    """Multi-chain ESS of (chains, draws) with Geyer's initial monotone sequence.

    ρ̂_t = 1 − (W − mean_m γ̂_{m,t}) / var⁺ (BDA3 eq. 11.7), where γ̂ is the biased
    within-chain autocovariance, W the mean within-chain variance and var⁺ the
    pooled variance estimate used by R-hat. Pair sums P_k = ρ̂_{2k} + ρ̂_{2k+1} are
    kept while positive and forced to be non-increasing; τ̂ = −1 + 2 Σ_k P_k and
    ESS = M N / τ̂, with τ̂ floored at 1 / log10(M N) as in Stan.
    """
    num_chains, num_draws = x.shape
    acov = _autocovariance(x)  # (M, N)
    within = acov[:, 0].mean() * num_draws / (num_draws - 1)
    between_over_n = x.mean(axis=1).var(ddof=1) if num_chains > 1 else jnp.zeros((), x.dtype)
    var_plus = within * (num_draws - 1) / num_draws + between_over_n
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho = rho.at[0].set(1.0)
    num_pairs = num_draws // 2
    pairs = rho[: 2 * num_pairs].reshape(num_pairs, 2).sum(axis=1)
    keep = jnp.cumprod(pairs > 0).astype(bool)  # initial positive sequence
    pairs = jnp.where(keep, pairs, 0.0)
    pairs = jax.lax.cummin(jnp.where(keep, pairs, jnp.inf), axis=0)  # initial monotone
    pairs = jnp.where(keep, pairs, 0.0)
    tau = -1.0 + 2.0 * pairs.sum()
    total = num_chains * num_draws
    tau = jnp.maximum(tau, 1.0 / math.log10(total))
    out = total / tau
    return jnp.where(jnp.isfinite(var_plus) & (var_plus > 0), out, jnp.nan)


def ess(draws: ArrayLike) -> Array:
    """Effective sample size of the mean, on split chains of the raw draws.

    For an AR(1) chain with coefficient ρ this estimates ``N (1 − ρ) / (1 + ρ)``.

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``, ``num_draws >= 4``.

    Returns:
        ESS per component, shape ``event``.

    Examples:
        >>> import jax
        >>> x = jax.random.normal(jax.random.key(0), (4, 1000))  # independent draws
        >>> 3000 < float(ess(x)) < 5000
        True
    """
    return _ess_jit(_as_draws("draws", draws))


_ess_jit = jax.jit(lambda x: _per_component(lambda c: _ess_2d(_split_2d(c)), x))


def ess_bulk(draws: ArrayLike) -> Array:
    """Bulk ESS: ESS of the rank-normalized split chains (Vehtari et al. 2021, §4.3).

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``, ``num_draws >= 4``.

    Returns:
        Bulk ESS per component, shape ``event``.
    """
    return _ess_bulk_jit(_as_draws("draws", draws))


_ess_bulk_jit = jax.jit(
    lambda x: _per_component(lambda c: _ess_2d(_rank_normalize_2d(_split_2d(c))), x)
)


def _quantile_ess_2d(x: Array, prob: float) -> Array:
    indicator = (x <= jnp.quantile(x, prob)).astype(x.dtype)
    return _ess_2d(_split_2d(indicator))


def ess_tail(draws: ArrayLike) -> Array:
    """Tail ESS: the smaller ESS of the 5% and 95% quantile indicators (§4.3).

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``, ``num_draws >= 4``.

    Returns:
        Tail ESS per component, shape ``event``.
    """
    return _ess_tail_jit(_as_draws("draws", draws))


def _ess_tail_2d(c: Array) -> Array:
    return jnp.minimum(_quantile_ess_2d(c, 0.05), _quantile_ess_2d(c, 0.95))


_ess_tail_jit = jax.jit(lambda x: _per_component(_ess_tail_2d, x))


def mcse_mean(draws: ArrayLike) -> Array:
    """Monte Carlo standard error of the posterior mean: ``sd / sqrt(ess)``.

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``, ``num_draws >= 4``.

    Returns:
        MCSE per component, shape ``event``.
    """
    return _mcse_mean_jit(_as_draws("draws", draws))


_mcse_mean_jit = jax.jit(
    lambda x: _per_component(lambda c: c.std(ddof=1) / jnp.sqrt(_ess_2d(_split_2d(c))), x)
)


def mcse_quantile(draws: ArrayLike, prob: float) -> Array:
    """Monte Carlo standard error of the ``prob`` quantile (Vehtari et al. 2021, §4.4).

    The ESS of the indicator ``draw <= q̂`` gives the standard error of the
    probability, ``sqrt(p (1 − p) / ess)``; mapping ``p ± that`` back through the
    empirical quantile function and halving the width gives the MCSE (a normal
    approximation to the paper's Beta interval).

    Args:
        draws: array of shape ``(num_chains, num_draws, *event)``, ``num_draws >= 4``.
        prob: quantile level in (0, 1).

    Returns:
        MCSE per component, shape ``event``.
    """
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be a number in (0, 1), got {prob!r}")
    return _mcse_quantile_jit(_as_draws("draws", draws), float(prob))


def _mcse_quantile_2d(c: Array, prob: float) -> Array:
    e = _quantile_ess_2d(c, prob)
    se_p = jnp.sqrt(prob * (1.0 - prob) / e)
    lo = jnp.quantile(c, jnp.clip(prob - se_p, 0.0, 1.0))
    hi = jnp.quantile(c, jnp.clip(prob + se_p, 0.0, 1.0))
    return (hi - lo) / 2


@functools.partial(jax.jit, static_argnums=1)
def _mcse_quantile_jit(x: Array, prob: float) -> Array:
    return _per_component(lambda c: _mcse_quantile_2d(c, prob), x)


@jax.jit
def _summary_stats_jit(flat: Array) -> dict[str, Array]:
    return {
        "mean": flat.mean(axis=(0, 1)),
        "sd": flat.reshape(-1, flat.shape[-1]).std(axis=0, ddof=1),
        "q5": jnp.quantile(flat, 0.05, axis=(0, 1)),
        "q95": jnp.quantile(flat, 0.95, axis=(0, 1)),
        "mcse_mean": _mcse_mean_jit(flat),
        "ess_bulk": _ess_bulk_jit(flat),
        "ess_tail": _ess_tail_jit(flat),
        "rhat": _split_rhat_jit(flat),
    }


def _leaf_names(tree: Any) -> list[tuple[str, Array]]:
    if isinstance(tree, (jax.Array, np.ndarray)):
        return [("x", tree)]
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [(jax.tree_util.keystr(path).strip("[]'.\"") or "x", leaf) for path, leaf in leaves]


def summary(samples: Any, infos: Any = None) -> dict[str, Any]:
    """Posterior summary per scalar component, plus sampler statistics from ``infos``.

    Args:
        samples: an array ``(num_chains, num_draws, *event)`` or a pytree of such arrays
            (for example ``SampleResult.samples`` from ``dgm_jax.mcmc.driver.sample``).
        infos: optional Info pytree with leaves ``(num_chains, num_draws)``; the fields
            ``acceptance_rate``, ``is_divergent`` and ``num_integration_steps`` are used
            when present.

    Returns:
        ``{"variables": {name: {"mean", "sd", "q5", "q95", "mcse_mean", "ess_bulk",
        "ess_tail", "rhat"}}, "sampler": {...}, "max_rhat": float, "min_ess_bulk":
        float, "min_ess_tail": float}`` with plain Python floats; component names look
        like ``x[0]``.

    Examples:
        >>> import jax
        >>> s = summary(jax.random.normal(jax.random.key(0), (2, 100, 2)))
        >>> sorted(s["variables"])
        ['x[0]', 'x[1]']
    """
    variables: dict[str, dict[str, float]] = {}
    for name, leaf in _leaf_names(samples):
        x = _as_draws(f"samples leaf {name!r}", leaf)
        num_chains, num_draws, *event = x.shape
        flat = x.reshape(num_chains, num_draws, -1)
        stats = _summary_stats_jit(flat)
        stats_np = {k: np.asarray(v).reshape(-1) for k, v in stats.items()}
        for i, index in enumerate(np.ndindex(*event) if event else [()]):
            label = name + ("[" + ",".join(map(str, index)) + "]" if index else "")
            variables[label] = {k: float(v[i]) for k, v in stats_np.items()}
    sampler: dict[str, float] = {}
    if infos is not None:
        fields = infos._asdict() if hasattr(infos, "_asdict") else dict(infos)
        if "acceptance_rate" in fields:
            sampler["acceptance_rate"] = float(jnp.mean(fields["acceptance_rate"]))
        if "is_divergent" in fields:
            div = jnp.asarray(fields["is_divergent"])
            sampler["num_divergent"] = int(div.sum())
            sampler["divergent_fraction"] = float(div.mean())
        if "num_integration_steps" in fields:
            sampler["mean_integration_steps"] = float(jnp.mean(fields["num_integration_steps"]))
    rhats = [v["rhat"] for v in variables.values()]
    bulk = [v["ess_bulk"] for v in variables.values()]
    tail = [v["ess_tail"] for v in variables.values()]
    return {
        "variables": variables,
        "sampler": sampler,
        "max_rhat": float(np.nanmax(rhats)) if rhats else float("nan"),
        "min_ess_bulk": float(np.nanmin(bulk)) if bulk else float("nan"),
        "min_ess_tail": float(np.nanmin(tail)) if tail else float("nan"),
    }


def format_summary(summary_dict: Mapping[str, Any], *, max_rows: int = 20) -> str:
    """Render ``summary(...)`` as a fixed-width text table.

    Args:
        summary_dict: the dict returned by :func:`summary`.
        max_rows: show at most this many variables (the rest are counted).

    Returns:
        A multi-line string: one row per variable (mean, sd, mcse, ess_bulk, ess_tail,
        rhat), then acceptance rate and divergences when known.
    """
    if not isinstance(summary_dict, Mapping) or "variables" not in summary_dict:
        raise TypeError("summary_dict must be the dict returned by summary(samples, infos)")
    check_rows = isinstance(max_rows, int) and not isinstance(max_rows, bool) and max_rows >= 1
    if not check_rows:
        raise ValueError(f"max_rows must be an int >= 1, got {max_rows!r}")
    variables = summary_dict["variables"]
    width = max([len(n) for n in variables] + [8])
    cols = ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "rhat")
    header = f"{'':{width}s} " + " ".join(f"{c:>10s}" for c in cols)
    lines = [header]
    for i, (name, stats) in enumerate(variables.items()):
        if i == max_rows:
            lines.append(f"... {len(variables) - max_rows} more")
            break
        cells = []
        for c in cols:
            v = stats[c]
            if c in ("ess_bulk", "ess_tail"):
                cells.append(f"{v:10.0f}")
            elif c == "rhat":
                cells.append(f"{v:10.3f}")
            else:
                cells.append(f"{v:10.3g}")
        lines.append(f"{name:{width}s} " + " ".join(cells))
    sampler = summary_dict.get("sampler", {})
    if "acceptance_rate" in sampler:
        lines.append(f"acceptance rate: {sampler['acceptance_rate']:.3f}")
    if "num_divergent" in sampler:
        lines.append(
            f"divergences: {sampler['num_divergent']} ({100 * sampler['divergent_fraction']:.2f}%)"
        )
    return "\n".join(lines)
