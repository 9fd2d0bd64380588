"""`tljh env list` and `tljh env show` as an admin reads them."""

import dataclasses
import shutil

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
    users_build = "repo-" + "ab" * 20  # a user's build from a repository (tljh.environments.user_builds)
    fake_build(paths.environment_prefix(users_build), users_build, "20260103T000000-dddd")
    lines = commands.list_lines(config)
    table = [l.split() for l in lines[:4]]
    assert table[0] == ["NAME", "STATE", "PYTHON", "BUILD", "DESCRIPTION"]
    assert table[1][:5] == ["default", "needs", "a", "build", "3.11"]
    assert lines[2].startswith("data ") and lines[2].endswith("Pandas for stats")
    assert table[3][:3] == ["new", "not", "built"]
    assert "old: built but not in config.yaml; remove it with: sudo tljh env remove old" in lines
    assert not any(l.startswith(users_build) for l in lines)
    assert any(l.startswith("1 environments users built from repositories") for l in lines), lines
    assert commands.show_lines(config, users_build)[0] == f"# environment {users_build}: a user's build"


def test_show_prints_a_requirements_file(prefix, plain_specs):
    fake_build(paths.environment_prefix("data"), "data", "20260102T000000-bbbb", python="3.11",
               lock="# header\nsix==1.17.0\n    # via -r requirements.in\n")
    lines = commands.show_lines({"environments": {"data": {"packages": ["six"]}}}, "data")
    assert all(l.startswith(("#", " ")) or "==" in l for l in lines)
    assert "six==1.17.0" in lines
    with pytest.raises(LookupError, match="sudo tljh env build new"):
        commands.show_lines({"environments": {"new": {}}}, "new")


def test_remove_takes_it_out_of_config_and_service(prefix, plain_specs):
    from tljh.environments import store

    config_file = prefix / "config" / "config.yaml"
    config_file.write_text("# mine\nenvironments:\n  data:\n    packages: [six]\n  keep:\n    packages: [idna]\n")
    fake_build(paths.environment_prefix("data"), "data", "20260102T000000-bbbb")
    said = []
    commands.remove("data", str(config_file), out=said.append)
    assert "data:" not in config_file.read_text() and "# mine" in config_file.read_text()
    assert store.current("data") is None and store.retired() == []  # nothing had it mounted: deleted
    assert said[-1] == "data: removed"
    with pytest.raises(ValueError, match="cannot be removed"):
        commands.remove("default", str(config_file))


def test_check_refuses_an_unavailable_python_and_unknown_os_packages(prefix, monkeypatch):
    from tljh.environments import checks
    from tljh.settings.errors import ConfigError
    from tljh.system import apt, pythons

    monkeypatch.setattr(pythons, "installed", lambda: {"3.11": "/usr/bin/python3.11"})
    monkeypatch.setattr(pythons, "archive_versions", lambda: ["3.11", "3.12"])
    monkeypatch.setattr(apt, "lists_present", lambda: True)
    monkeypatch.setattr(apt, "unknown", lambda names: [n for n in names if n.startswith("no-")])
    before = {"environments": {"data": {"packages": ["six"]}}}
    with pytest.raises(ConfigError, match="environments.data.python: Python 3.7 is not available here"):
        checks.check_change(before, {"environments": {"data": {"packages": ["six"], "python": "3.7"}}})
    with pytest.raises(ConfigError, match="environments.data.apt: not in this system's package archive: no-such"):
        checks.check_change(before, {"environments": {"data": {"packages": ["six"], "apt": ["no-such", "libx"]}}})
    # A description alone needs no resolve (nothing to build).
    checks.check_change(before, {"environments": {"data": {"packages": ["six"], "description": "d"}}})


def test_status_has_an_entry_per_environment_and_a_problem_for_a_failed_build(prefix, plain_specs, monkeypatch):
    import os

    from tljh.environments import builder

    monkeypatch.setattr("tljh.plugins.get_plugin_manager", lambda: None)
    fake_build(paths.environment_prefix("default"), "default", "20260101T000000-aaaa", python="3.11")
    (entry,) = commands.status_entries({})
    assert entry.text.startswith("default: needs a build (build 20260101T000000-aaaa), Python 3.11, 0 packages")
    # The fake build's interpreter is missing, as after an OS upgrade removed it.
    assert entry.problem == "environment default's Python does not run (an OS upgrade?)"
    os.makedirs(paths.ENVIRONMENT_STATE_DIR)
    with open(builder.failure_file("default"), "w") as f:
        f.write("the packages of environment default do not resolve:\nBecause ...\n")
    (entry,) = commands.status_entries({})
    assert "LAST BUILD FAILED: the packages of environment default do not resolve:" in entry.text
    assert entry.problem.startswith("the last build of environment default failed") and "tljh env build default" in entry.fix
    shutil.rmtree(paths.USER_ENV_PREFIX)
    os.remove(builder.failure_file("default"))
    (entry,) = commands.status_entries({})
    assert entry.problem == "environment default is not built" and entry.fix == "sudo tljh env build default"


def test_the_tljh_command_loads_no_network_or_hub_code_to_build_environments():
    """A no-change `tljh env build` (every installer rerun) costs what its imports cost: the parser of every
    verb is built, so no verb's options may import its implementation (the load test's pulled in aiohttp and
    the hub's accounts: 0.4 s of every `tljh` command)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import tljh.cli.tljh as cli\n"
        "cli.build_parser().parse_args(['env', 'build'])\n"
        "import tljh.environments.commands, tljh.plugins, tljh.settings.effective\n"
        "print(' '.join(m for m in ('aiohttp', 'asyncio', 'tornado', 'filelock', 'jupyterhub', 'tljh.hub')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
