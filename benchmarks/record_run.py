"""Record an experiment run's config and final metrics in ``benchmarks/results/``.

Quality goals of the issues (NLL, bits/dim, FID-LeNet against NFE, ...) are measured by
the experiments; this script copies a finished run's ``config.json`` and ``metrics.json``
into one results file with the device, the package versions, the date and the command,
so that a number in a README or a closing note can be traced to the run that made it.

Example:
    python -m experiments run flows_2d --workdir runs/flows_2d
    python benchmarks/record_run.py flows_2d runs/flows_2d --note "default config"
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import pathlib
import platform
import sys

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def device_info() -> dict:
    """Platform and kind of the first JAX device (``cpu`` on a CPU-only machine)."""
    import jax

    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "host": platform.machine(),
    }


def versions() -> dict:
    """Installed versions of the packages that decide the numbers."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_record(experiment: str, run_dir: pathlib.Path, note: str) -> dict:
    """The results record of one finished run folder.

    Raises:
        FileNotFoundError: the folder has no ``metrics.json`` (the run did not finish).
    """
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} not found: did the run finish?")
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    return {
        "benchmark": f"experiment:{experiment}",
        "device": device_info(),
        "versions": versions(),
        "date": datetime.date.today().isoformat(),
        "command": f"python -m experiments run {experiment} --workdir {run_dir}",
        "note": note,
        "config": config,
        "metrics": json.loads(metrics_path.read_text()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="registered experiment name")
    parser.add_argument("run_dir", type=pathlib.Path, help="the run folder")
    parser.add_argument("--note", default="", help="what the run was (budget, overrides)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="results file")
    args = parser.parse_args(argv)
    record = build_record(args.experiment, args.run_dir, args.note)
    out = args.out or RESULTS / (
        f"{args.experiment}-{record['device']['platform']}-{record['date']}.json"
    )
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"wrote": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
