"""Metrics benchmark: FID and precision/recall/density/coverage, 10k vs 10k MNIST images.

Side by side in one process, on the same inputs:

* **features** — the shipped MNIST classifier's 128-d features of ``--num`` images
  (``jax.jit`` of :func:`dgm_jax.metrics.mnist_features`).
* **FID from features** — ours (:func:`frechet_distance_from_features`, jit, float32,
  eigh-based square root) against the usual host recipe of pytorch-fid / TF-GAN
  (``np.cov`` and ``scipy.linalg.sqrtm`` in float64, written here), with the values and
  their difference.
* **fid_mnist end to end** — features of both sets plus the distance, jit.
* **PRDC** — ours (:func:`dgm_jax.metrics.prdc`, blocked, jit) against the reference
  package ``prdc`` 0.2 (Naeem et al., NumPy + scikit-learn, full distance matrices) on the
  same features, k = 5, with the values.

Inputs are MNIST train[:num] vs test[:num] when :func:`dgm_jax.data.mnist.load_mnist`
finds an offline copy, else random uint8 images (``"data": "synthetic"`` in the results).
Compile time is measured separately (first call minus a timed call); run time is the
best of ``--repeats`` calls with ``block_until_ready``. Results go to
``benchmarks/results/metrics-<platform>-<date>.json``.

Usage::

    python benchmarks/metrics/run.py --quick      # CPU: 1 repeat
    python benchmarks/metrics/run.py              # GPU: 5 repeats
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.linalg

from dgm_jax.metrics import (
    frechet_distance_from_features,
    load_mnist_classifier,
    mnist_features,
    prdc,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"


def load_images(num: int):
    try:
        from dgm_jax.data.mnist import load_mnist

        a = load_mnist("train").images[:num]
        b = load_mnist("test").images[:num]
        if len(a) < num or len(b) < num:
            raise ValueError("not enough images")
        return a, b, "mnist"
    except Exception:  # no offline copy: synthetic images of the same shape
        rng = np.random.default_rng(0)
        shape = (num, 28, 28, 1)
        return (
            rng.integers(0, 256, shape, dtype=np.uint8),
            rng.integers(0, 256, shape, dtype=np.uint8),
            "synthetic",
        )


def timed(fn, *args, repeats: int):
    """(result, first-call seconds, best-of-repeats seconds)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return out, first, best


def host_fid(fa: np.ndarray, fb: np.ndarray) -> float:
    """The host recipe of pytorch-fid / TF-GAN: float64 np.cov and scipy.linalg.sqrtm."""
    fa, fb = fa.astype(np.float64), fb.astype(np.float64)
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    root = np.real(root)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))


def time_host(fn, *args, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU: 1 repeat")
    parser.add_argument("--num", type=int, default=10_000, help="images per set")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--k", type=int, default=5, help="nearest neighbours for PRDC")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--no-peer", action="store_true", help="skip the prdc package")
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)

    device = jax.devices()[0]
    versions = {
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }
    try:
        import prdc as prdc_peer
        import sklearn

        versions["prdc"] = "0.2"  # the package has no __version__; 0.2 is its only release
        versions["scikit-learn"] = sklearn.__version__
    except ImportError:
        prdc_peer = None
    imgs_a, imgs_b, data = load_images(args.num)
    params = load_mnist_classifier()
    rows = []

    def emit(row):
        print(json.dumps(row), flush=True)
        rows.append(row)

    feat_fn = jax.jit(lambda x: mnist_features(x, params=params))
    xa, xb = jnp.asarray(imgs_a), jnp.asarray(imgs_b)
    fa, first, best = timed(feat_fn, xa, repeats=repeats)
    fb = jax.block_until_ready(feat_fn(xb))
    emit(
        {
            "name": "features",
            "num": args.num,
            "ours_s": best,
            "compile_s": first - best,
            "images_per_s": args.num / best,
        }
    )

    fid_fn = jax.jit(frechet_distance_from_features)
    ours_fid, first, best = timed(fid_fn, fa, fb, repeats=repeats)
    host_val, host_s = time_host(host_fid, np.asarray(fa), np.asarray(fb), repeats=repeats)
    emit(
        {
            "name": "fid_from_features",
            "num": args.num,
            "dim": int(fa.shape[1]),
            "ours_s": best,
            "compile_s": first - best,
            "host_scipy_float64_s": host_s,
            "speedup_vs_host": host_s / best,
            "ours_value": float(ours_fid),
            "host_value": host_val,
            "abs_diff": abs(float(ours_fid) - host_val),
        }
    )

    e2e = jax.jit(
        lambda a, b: frechet_distance_from_features(
            mnist_features(a, params=params), mnist_features(b, params=params)
        )
    )
    val, first, best = timed(e2e, xa, xb, repeats=repeats)
    emit(
        {
            "name": "fid_mnist_end_to_end",
            "num": args.num,
            "ours_s": best,
            "compile_s": first - best,
            "value": float(val),
        }
    )

    prdc_fn = jax.jit(lambda a, b: prdc(a, b, k=args.k, block_size=args.block_size))
    ours, first, best = timed(prdc_fn, fa, fb, repeats=repeats)
    row = {
        "name": "prdc_features",
        "num": args.num,
        "dim": int(fa.shape[1]),
        "k": args.k,
        "block_size": args.block_size,
        "ours_s": best,
        "compile_s": first - best,
        "ours_value": {f: float(v) for f, v in ours._asdict().items()},
    }
    if prdc_peer is not None and not args.no_peer:
        peer, peer_s = time_host(
            prdc_peer.compute_prdc,
            np.asarray(fa),
            np.asarray(fb),
            args.k,
            repeats=1,  # minutes on CPU; one run
        )
        row["peer_prdc_s"] = peer_s
        row["speedup_vs_peer"] = peer_s / best
        row["peer_value"] = {f: float(v) for f, v in peer.items()}
        row["max_abs_diff"] = max(abs(row["ours_value"][f] - row["peer_value"][f]) for f in peer)
    emit(row)

    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else RESULTS / f"metrics-{device.platform}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "metrics",
        "device": {
            "platform": device.platform,
            "device_kind": device.device_kind,
            "num_devices": jax.device_count(),
        },
        "versions": versions,
        "date": date,
        "data": data,
        "quick": args.quick,
        "command": " ".join(sys.argv),
        "measurements": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"wrote": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
