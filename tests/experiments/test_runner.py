"""The command-line runner: listing, showing configs, parsing overrides."""

import dataclasses
import json

import pytest

from experiments import EXPERIMENTS
from experiments.__main__ import apply_overrides, load, main


@dataclasses.dataclass(frozen=True)
class _Cfg:
    steps: int = 10
    lr: float = 1e-3
    name: str = "a"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    maybe: int | None = None


def test_every_registered_experiment_has_the_contract():
    for name in EXPERIMENTS:
        module = load(name)
        assert dataclasses.is_dataclass(module.Config)
        assert isinstance(module.SMOKE, module.Config)
        assert callable(module.run)
        assert (module.__doc__ or "").strip(), f"{name} needs a module docstring"


def test_overrides_are_parsed_with_field_types():
    cfg = apply_overrides(
        _Cfg(),
        ["steps=5", "lr=0.5", "name=b", "flag=true", "sizes=3,4,5", "maybe=none"],
    )
    assert cfg == _Cfg(steps=5, lr=0.5, name="b", flag=True, sizes=(3, 4, 5), maybe=None)
    assert apply_overrides(_Cfg(), ["maybe=7"]).maybe == 7


@pytest.mark.parametrize(
    "override, message",
    [("nope=1", "unknown config field"), ("steps", "key=value"), ("steps=x", "bad value")],
)
def test_bad_overrides_exit_with_a_message(override, message):
    with pytest.raises(SystemExit, match=message):
        apply_overrides(_Cfg(), [override])


def test_list_and_show(capsys):
    assert main(["list"]) == 0
    assert "two_moons_diffusion" in capsys.readouterr().out
    assert main(["show", "two_moons_diffusion"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["num_diffusion_steps"] == 1000


def test_unknown_experiment():
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["run", "does_not_exist"])
