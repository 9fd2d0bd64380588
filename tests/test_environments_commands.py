"""`tljh env list` and `tljh env show` as an admin reads them."""

import dataclasses

import pytest
from environments_testing import fake_build, prefix, uv_cache  # noqa: F401

from tljh.environments import commands, spec as specs_module
from tljh.system import paths


@pytest.fixture
def plain_specs(monkeypatch):
    """Specs without plugins and with a fixed hub version (no hub needed)."""
    real = specs_module.specs
    monkeypatch.setattr(commands, "specs", lambda config, pm=None: real(config, None))


def test_list_names_every_environment_and_what_to_do(prefix, plain_specs):
    config = {"environments": {"data": {"description": "Pandas for stats"}, "new": {}}}
    fake_build(paths.environment_prefix("default"), "default", "20260101T000000-aaaa", python="3.11")
    fake_build(paths.environment_prefix("data"), "data", "20260102T000000-bbbb", python="3.11")
    fake_build(paths.environment_prefix("old"), "old", "20250101T000000-cccc")
    lines = commands.list_lines(config)
    table = [l.split() for l in lines[:4]]
    assert table[0] == ["NAME", "STATE", "PYTHON", "BUILD", "DESCRIPTION"]
    assert table[1][:5] == ["default", "needs", "a", "build", "3.11"]
    assert lines[2].startswith("data ") and lines[2].endswith("Pandas for stats")
    assert table[3][:3] == ["new", "not", "built"]
    assert "old: built but not in config.yaml; remove it with: sudo tljh env remove old" in lines


def test_show_prints_a_requirements_file(prefix, plain_specs):
    fake_build(paths.environment_prefix("data"), "data", "20260102T000000-bbbb", python="3.11",
               lock="# header\nsix==1.17.0\n    # via -r requirements.in\n")
    lines = commands.show_lines({"environments": {"data": {"packages": ["six"]}}}, "data")
    assert all(l.startswith(("#", " ")) or "==" in l for l in lines)
    assert "six==1.17.0" in lines
    with pytest.raises(LookupError, match="sudo tljh env build new"):
        commands.show_lines({"environments": {"new": {}}}, "new")
