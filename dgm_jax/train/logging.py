"""JSON-lines metric logs: one JSON object per logged step, appended as training runs.

Every record has an integer ``"step"``. Values go through ``runs.to_jsonable``, so
arrays become numbers or lists and non-finite floats the strings ``"nan"``/``"inf"``.
Python floats round-trip through JSON exactly, so a log read back equals the records
written.

Examples:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> with JsonlWriter(path) as log:
    ...     _ = log.write({"step": 1, "loss": 0.5})
    ...     _ = log.write({"step": 2, "loss": 0.25})
    >>> [r["loss"] for r in read_jsonl(path)]
    [0.5, 0.25]
    >>> truncate_jsonl(path, max_step=1)
    [{'loss': 0.5, 'step': 1}]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dgm_jax.train.runs import to_jsonable

__all__ = ["JsonlWriter", "read_jsonl", "truncate_jsonl"]


class JsonlWriter:
    """Append records to a ``.jsonl`` file, flushing after each line.

    Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` (a dict with an int ``"step"``); return its JSON-able form."""
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        if "step" not in record:
            raise ValueError(f"record must have a 'step' entry, got keys {sorted(record)}")
        clean = to_jsonable(record)
        self._file.write(json.dumps(clean, sort_keys=True) + "\n")
        self._file.flush()
        return clean

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read all records of a ``.jsonl`` file ([] if it does not exist).

    A last line cut short by a crash is ignored; a bad line elsewhere raises ``ValueError``.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                break  # a partial last line from an interrupted write
            raise ValueError(f"{str(path)!r} line {i + 1} is not valid JSON: {err}") from err
    return records


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> list[dict[str, Any]]:
    """Keep only the records with ``step <= max_step``; rewrite the file atomically.

    Returns:
        The records kept. A missing file is left missing and gives ``[]``.
    """
    path = Path(path)
    if not path.exists():
        return []
    kept = [r for r in read_jsonl(path) if int(r["step"]) <= max_step]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)
    return kept
