"""Helpers for the environments tests: a private install prefix, fake builds on disk, small real builds."""

import dataclasses
import json
import os

import pytest

from tljh.environments import builder as builder_module
from tljh.environments import spec as specs_module
from tljh.environments import store
from tljh.system import paths


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory):
    """One uv cache for the session's builds (packages are downloaded once), on tmp_path's filesystem."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def prefix(tmp_path, monkeypatch, uv_cache):
    """Point every environments path at tmp_path (the modules read paths.* when called)."""
    root = tmp_path / "tljh"
    values = {
        "INSTALL_PREFIX": root,
        "USER_ENV_PREFIX": root / "user",
        "HUB_ENV_PREFIX": root / "hub",
        "STATE_DIR": root / "state",
        "CONFIG_DIR": root / "config",
        "CONFIG_FILE": root / "config" / "config.yaml",
        "SESSIONS_DIR": root / "sessions",
        "ENVIRONMENTS_DIR": root / "envs",
        "BUILDER_DIR": root / "envs" / ".builder",
        "RETIRED_DIR": root / "envs" / ".retired",
        "ENVIRONMENT_STATE_DIR": root / "state" / "environments",
        "ENVIRONMENTS_LOCK": root / "state" / "environments" / "build.lock",
        "REPOSITORY_BUILDS_STATE_DIR": root / "state" / "environments" / "repository-builds",
        "BOOTSTRAP_REQUIREMENTS_FILE": root / "state" / "environments" / "default-bootstrap-requirements.txt",
        "PLUGIN_CONDA_REQUIREMENTS_FILE": root / "state" / "environments" / "default-plugin-conda-requirements.txt",
        "ENVIRONMENTS_UV_CACHE_DIR": uv_cache,
    }
    for key, value in values.items():
        monkeypatch.setattr(paths, key, str(value))
    # syncfs would wait for everything the shared test host writes; the switch's renames are what is tested.
    monkeypatch.setattr(store, "flush", lambda path: None)
    for d in ("hub", "state", "config"):
        (root / d).mkdir(parents=True)
    return root


def fake_build(path, name, build, fingerprint="fp", python=None, lock="six==1.17.0\n"):
    """A complete build as store sees it (a record and a lock; an interpreter link if python is given)."""
    os.makedirs(os.path.join(path, "bin"), exist_ok=True)
    with open(os.path.join(path, "pyvenv.cfg"), "w") as f:
        f.write("home = /usr/bin\n")
    with open(os.path.join(path, "tljh-lock.txt"), "w") as f:
        f.write(lock)
    record = {"name": name, "build": build, "fingerprint": fingerprint, "python": python}
    with open(os.path.join(path, "tljh-environment.json"), "w") as f:
        json.dump(record, f)
    return path


def small(config, name, **changes):
    """The spec of ``name`` with a two-package stand-in for the server packages (fast, still real)."""
    spec = specs_module.specs(config)[name]
    return dataclasses.replace(spec, server_packages=("pip", "six"), **changes)


@pytest.fixture
def build(prefix):
    lines = []
    # Bytecode compiled before build() returns (as in the installer): a compile still running in the background
    # would race with the next step of a test and with the removal of tmp_path.
    b = builder_module.Builder(out=lines.append, wait_for_bytecode=True)

    def run(spec, **kw):
        lines.clear()
        outcome = b.build(spec, **kw)
        outcome.lines = list(lines)
        return outcome

    return run
