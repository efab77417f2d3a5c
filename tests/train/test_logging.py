"""JSONL metric logs: exact round trip, truncation for resume, crash-tolerant reading."""

import json

import numpy as np
import pytest

from dgm_jax.train.logging import JsonlWriter, read_jsonl, truncate_jsonl


def test_round_trip_and_truncate(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []
    records = [{"step": s, "loss": np.float32(1.0 / (s + 3)), "v": np.arange(2)} for s in range(5)]
    with JsonlWriter(path) as log:
        written = [log.write(r) for r in records]
    assert read_jsonl(path) == written
    assert written[1] == {"step": 1, "loss": float(np.float32(0.25)), "v": [0, 1]}
    assert truncate_jsonl(path, 2) == written[:3]
    assert read_jsonl(path) == written[:3]
    with JsonlWriter(path) as log:  # appends
        log.write({"step": 3, "loss": float("nan")})
    assert read_jsonl(path)[-1] == {"step": 3, "loss": "nan"}


def test_partial_last_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
    assert read_jsonl(path) == [{"step": 1}]
    path.write_text('{"step": \n' + json.dumps({"step": 1}) + "\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        read_jsonl(path)


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike"):
        JsonlWriter(1)
    with JsonlWriter(tmp_path / "m.jsonl") as log:
        with pytest.raises(ValueError, match="must have a 'step' entry"):
            log.write({"loss": 1.0})
        with pytest.raises(TypeError, match="record must be a dict"):
            log.write([1])
