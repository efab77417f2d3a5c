"""Command-line runner: ``python -m experiments`` or the ``dgm-jax`` console script.

Usage::

    python -m experiments list
    python -m experiments run two_moons_diffusion [--workdir DIR] [--smoke] [--set key=value ...]
    python -m experiments show two_moons_diffusion        # print the default config

Overrides are parsed with the type of the config field (``--set num_steps=500
--set lr=1e-3``); booleans accept true/false/1/0, tuples accept comma lists.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import types
import typing
from typing import Any

from experiments import EXPERIMENTS


def load(name: str) -> types.ModuleType:
    """Import the experiment module registered under ``name``."""
    if name not in EXPERIMENTS:
        raise SystemExit(
            f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))}"
        )
    return importlib.import_module(EXPERIMENTS[name])


def _parse_value(text: str, annotation: Any, current: Any) -> Any:
    if isinstance(annotation, str):
        # postponed annotations: fall back on the type of the default value
        annotation = type(current)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        annotation = args[0] if args else str
        origin = typing.get_origin(annotation)
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if origin is tuple or annotation is tuple:
        args = typing.get_args(annotation)
        elem = args[0] if args else (type(current[0]) if current else str)
        return tuple(_parse_value(t.strip(), elem, None) for t in text.split(",") if t.strip())
    if annotation in (int, float, str):
        return annotation(text)
    return json.loads(text)


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Return ``config`` with ``key=value`` overrides applied (the original is untouched)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        if key not in fields:
            raise SystemExit(f"unknown config field {key!r}; fields: {', '.join(sorted(fields))}")
        try:
            changes[key] = _parse_value(value, hints.get(key, str), getattr(config, key))
        except (ValueError, json.JSONDecodeError) as err:
            raise SystemExit(f"bad value for {key}: {err}") from err
    return dataclasses.replace(config, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dgm-jax", description="Run dgm_jax experiments.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    show = sub.add_parser("show", help="print an experiment's default config as JSON")
    show.add_argument("name")
    run = sub.add_parser("run", help="run an experiment")
    run.add_argument("name")
    run.add_argument("--workdir", default=None, help="run folder (default runs/<name>/<time>)")
    run.add_argument("--smoke", action="store_true", help="use the tiny smoke-test config")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable)",
    )
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in sorted(EXPERIMENTS):
            doc = (load(name).__doc__ or "").strip().splitlines()
            print(f"{name:32s} {doc[0] if doc else ''}")
        return 0
    module = load(args.name)
    if args.command == "show":
        print(json.dumps(dataclasses.asdict(module.Config()), indent=2))
        return 0
    config = module.SMOKE if args.smoke else module.Config()
    config = apply_overrides(config, args.overrides)
    metrics = module.run(config, workdir=args.workdir)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
