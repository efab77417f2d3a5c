"""Run folders: where an experiment writes its config, metrics, figures and checkpoints.

Layout::

    runs/<experiment>/<YYYYmmdd-HHMMSS>/
        config.json      the frozen config the run used
        metrics.json     final metrics (a flat JSON object)
        metrics.jsonl    one JSON object per logged step (written by ``fit``)
        *.png            figures
        checkpoints/     orbax checkpoints (written by ``fit``)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_config", "make_run_dir", "save_config", "save_metrics", "to_jsonable"]


def make_run_dir(experiment: str, workdir: str | os.PathLike | None = None) -> Path:
    """Create and return the run folder.

    Args:
        experiment: experiment name; the folder is ``runs/<experiment>/<timestamp>``.
        workdir: if given, used as the run folder as is (created if missing), so a
            run can be resumed by passing the same folder again.

    Returns:
        The folder, which exists on return.

    Examples:
        >>> import tempfile
        >>> d = make_run_dir("demo", workdir=tempfile.mkdtemp())
        >>> d.is_dir()
        True
    """
    if not isinstance(experiment, str) or not experiment:
        raise ValueError(f"experiment must be a non-empty string, got {experiment!r}")
    if workdir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / experiment / stamp
        suffix = 1
        while path.exists():
            path = Path("runs") / experiment / f"{stamp}-{suffix}"
            suffix += 1
    else:
        path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, arrays and NumPy scalars into plain JSON values.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` so the
    file stays valid JSON.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arr = np.asarray(value)
        return to_jsonable(arr.item()) if arr.ndim == 0 else to_jsonable(arr.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: a crash never leaves half a file


def save_config(run_dir: str | os.PathLike, config: Any) -> Path:
    """Write ``config`` (a dataclass or dict) to ``run_dir/config.json``."""
    path = Path(run_dir) / "config.json"
    _write_json(path, config)
    return path


def load_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``run_dir/config.json`` back as a dict."""
    return json.loads((Path(run_dir) / "config.json").read_text())


def save_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write ``metrics`` to ``run_dir/metrics.json``."""
    path = Path(run_dir) / "metrics.json"
    _write_json(path, metrics)
    return path
