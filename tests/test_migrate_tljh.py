"""Migrating TLJH's conda user environment: what is read from it, what is carried over, what is reported.

Unit level (no conda, no uv, no systemd): tljh_server.make_conda_env lays the environment out; installs are
recorded by a stand-in. The whole migration on a machine made to look like a TLJH server is
integration-tests/test_migrate_tljh.py.
"""

import json
import os

import pytest
from tljh_server import add_dist, make_conda_env

from tljh.install import migrate_tljh
from tljh.system import env_contents, paths, venvs


@pytest.fixture
def server(tmp_path, monkeypatch):
    """/opt/tljh in a temporary directory, with TLJH's conda environment at user/."""
    prefix = tmp_path / "opt-tljh"
    (prefix / "state").mkdir(parents=True)
    user = str(prefix / "user")
    monkeypatch.setattr(paths, "USER_ENV_PREFIX", user)
    monkeypatch.setattr(paths, "STATE_DIR", str(prefix / "state"))
    monkeypatch.setattr(paths, "TLJH_OLD_USER_ENV", str(prefix / "user.tljh-conda"))
    monkeypatch.setattr(paths, "TLJH_MIGRATION_STATE", str(prefix / "state" / "tljh-migration.json"))
    monkeypatch.setattr(paths, "UNIT_DIR", str(tmp_path / "units"))
    monkeypatch.setattr(paths, "CONFIG_FILE", str(prefix / "config" / "config.yaml"))
    make_conda_env(user, served_at=user)
    return prefix


def test_what_is_read_from_a_conda_environment(server):
    user = paths.USER_ENV_PREFIX
    assert env_contents.is_conda(user) and env_contents.python_version(user) == "3.12"
    asked, deps = env_contents.conda_only_packages(user)
    # libzlib was asked for and later removed: a dependency now; python and conda are machinery; numpy is pip-visible.
    assert [p.name for p in asked] == ["hello-tool", "r-base"]
    assert [p.name for p in deps] == ["libzlib"]
    requirements = {d.key: d.requirement for d in env_contents.distributions(user)}
    # conda's numpy recorded a build directory that is not here: reinstalled by version from the index.
    assert requirements == {"jupyterhub": "jupyterhub==5.2.1", "numpy": "numpy==2.0.1", "pyfiglet": "pyfiglet==1.0.2",
                            "tqdm": "tqdm==4.66.4"}
    # Files no package owns: the admin's; jupyterhub's own server config is owned by its RECORD.
    assert env_contents.unowned_files(user, "etc/jupyter") == ["etc/jupyter/jupyter_server_config.py"]


def test_kernelspecs_come_over_when_their_program_does(server, tmp_path):
    new = str(tmp_path / "new")
    os.makedirs(os.path.join(new, "bin"))
    open(os.path.join(new, "bin", "python"), "w").close()
    carried, refused = env_contents.carry_kernelspecs(paths.USER_ENV_PREFIX, new, served_at=paths.USER_ENV_PREFIX)
    assert carried == ["course"] and list(refused) == ["ir"] and "bin/R" in refused["ir"]
    with open(os.path.join(new, "share", "jupyter", "kernels", "course", "kernel.json")) as f:
        assert json.load(f)["env"] == {"COURSE": "stats101"}
    assert os.path.exists(os.path.join(new, "share", "jupyter", "kernels", "course", "logo-64x64.png"))
    # A second run changes nothing.
    assert env_contents.carry_kernelspecs(paths.USER_ENV_PREFIX, new, served_at=paths.USER_ENV_PREFIX)[0] == []


def test_configuration_files_come_over_without_replacing_the_new_ones(server, tmp_path):
    new = str(tmp_path / "new")
    os.makedirs(os.path.join(new, "share", "jupyter", "lab", "settings"))
    with open(os.path.join(new, "share", "jupyter", "lab", "settings", "overrides.json"), "w") as f:
        f.write("{}")
    _, _, files = env_contents.carry_configuration(paths.USER_ENV_PREFIX, new)
    assert files == ["etc/jupyter/jupyter_server_config.py"]
    with open(os.path.join(new, "share", "jupyter", "lab", "settings", "overrides.json")) as f:
        assert f.read() == "{}"


class FakeInstall:
    """uv stand-in: installs requirements as dist-infos; refuses some pins and some names."""

    def __init__(self, refuse=(), refuse_names=()):
        self.refuse, self.refuse_names, self.calls = set(refuse), set(refuse_names), []

    def __call__(self, prefix, requirements, **kw):
        self.calls.append(list(requirements))
        for r in requirements:
            if r in self.refuse or r.split("==")[0] in self.refuse_names:
                raise RuntimeError(f"uv pip install failed\nNo solution found when resolving: {r}")
        for r in requirements:
            name, _, version = r.partition("==")
            add_dist(prefix, name, version or "9.9", installer="uv")


def new_env(path):
    os.makedirs(os.path.join(path, "lib", "python3.12", "site-packages"), exist_ok=True)
    add_dist(path, "jupyterhub", "6.1.1", installer="uv")


def test_packages_carried_at_their_old_versions_in_one_go(server, tmp_path):
    new = str(tmp_path / "new")
    new_env(new)
    install = FakeInstall()
    same, other, failed = migrate_tljh.carry_packages(paths.USER_ENV_PREFIX, new, install=install)
    # The new environment's own jupyterhub is kept; everything else arrives pinned, in one call.
    assert install.calls == [["numpy==2.0.1", "pyfiglet==1.0.2", "tqdm==4.66.4"]]
    assert same == install.calls[0] and other == [] and failed == {}


def test_a_package_that_does_not_install_costs_only_itself(server, tmp_path):
    new = str(tmp_path / "new")
    new_env(new)
    install = FakeInstall(refuse={"numpy==2.0.1"}, refuse_names={"tqdm"})
    same, other, failed = migrate_tljh.carry_packages(paths.USER_ENV_PREFIX, new, install=install)
    assert same == ["pyfiglet==1.0.2"]
    assert other == ["numpy (2.0.1 -> 9.9)"]  # its old version had no build for this Python: the newest instead
    assert list(failed) == ["tqdm"] and "No solution" in failed["tqdm"]


def test_migration_moves_aside_carries_over_and_converges(server):
    found = migrate_tljh.detect()
    assert found.conda_env and not found.old_env and not found.traefik_unit
    assert any("move the conda environment" in line for line in migrate_tljh.plan(found))
    migrate_tljh.start()
    assert migrate_tljh.move_environment_aside(found) == [f"moved {paths.USER_ENV_PREFIX} to {paths.TLJH_OLD_USER_ENV}"]
    assert not os.path.exists(paths.USER_ENV_PREFIX) and env_contents.is_conda(paths.TLJH_OLD_USER_ENV)
    state = migrate_tljh.recorded()
    assert [p["name"] for p in state["conda_only"]] == ["hello-tool", "r-base"] and state["old_python"] == "3.12"
    # Rerun before the new environment exists: nothing moves again.
    assert migrate_tljh.move_environment_aside(migrate_tljh.detect()) == []

    new_env(paths.USER_ENV_PREFIX)
    os.makedirs(os.path.join(paths.USER_ENV_PREFIX, "bin"))
    open(os.path.join(paths.USER_ENV_PREFIX, "bin", "python"), "w").close()
    carried = migrate_tljh.carry_over(install=FakeInstall())
    state = migrate_tljh.record_carried(carried)
    assert carried.kernelspecs == ["course"] and carried.files == ["etc/jupyter/jupyter_server_config.py",
                                                                   "share/jupyter/lab/settings/overrides.json"]
    lines = migrate_tljh.not_carried_lines(state)
    assert lines[0].startswith("conda-only packages not carried over: hello-tool 2.12, r-base 4.4.1")
    assert any(line.startswith("kernels not carried over: ir") for line in lines)
    assert "hello-tool" in migrate_tljh.status_line()
    text = "\n".join(migrate_tljh.report())
    assert "Python packages carried over: 3" in text and "tljh migrate --cleanup" in text
    assert os.stat(paths.TLJH_MIGRATION_STATE).st_mode & 0o777 == 0o600


def test_both_environments_present_is_refused_with_what_to_do(server):
    os.makedirs(os.path.join(paths.TLJH_OLD_USER_ENV, "conda-meta"))
    with pytest.raises(migrate_tljh.MigrationError, match="move one of them"):
        migrate_tljh.move_environment_aside(migrate_tljh.detect())
    assert env_contents.is_conda(paths.USER_ENV_PREFIX)  # nothing changed


def test_a_run_killed_after_the_move_records_it_next_time(server):
    os.rename(paths.USER_ENV_PREFIX, paths.TLJH_OLD_USER_ENV)  # as a kill right after the rename leaves it
    assert migrate_tljh.move_environment_aside(migrate_tljh.detect()) == []
    assert [p["name"] for p in migrate_tljh.recorded()["conda_only"]] == ["hello-tool", "r-base"]


def test_cleanup_only_after_the_migration_finished(server):
    migrate_tljh.move_environment_aside(migrate_tljh.detect())
    with pytest.raises(migrate_tljh.MigrationError, match="has not finished"):
        migrate_tljh.cleanup()
    assert os.path.isdir(paths.TLJH_OLD_USER_ENV)
    migrate_tljh.record_carried(migrate_tljh.Carried([], [], {}, [], {}, []))
    assert migrate_tljh.cleanup() == paths.TLJH_OLD_USER_ENV
    assert not os.path.exists(paths.TLJH_OLD_USER_ENV) and migrate_tljh.cleanup() is None
    assert migrate_tljh.status_line() is None and "removed" in migrate_tljh.report()[-1]


def test_traefik_is_stopped_and_disabled_and_its_files_kept(server, monkeypatch):
    os.makedirs(paths.UNIT_DIR)
    open(os.path.join(paths.UNIT_DIR, paths.TRAEFIK_UNIT), "w").close()
    for name in ("traefik.toml", "acme.json"):
        open(os.path.join(paths.STATE_DIR, name), "w").close()
    calls = []
    monkeypatch.setattr(migrate_tljh.systemd, "is_active", lambda unit: not calls)
    monkeypatch.setattr(migrate_tljh.systemd, "is_enabled", lambda unit: not calls)
    monkeypatch.setattr(migrate_tljh.systemd, "stop", lambda unit: calls.append(("stop", unit)))
    monkeypatch.setattr(migrate_tljh.systemd, "disable", lambda unit: calls.append(("disable", unit)))
    found = migrate_tljh.detect()
    assert found.traefik_files == ["traefik.toml", "acme.json"]
    assert migrate_tljh.hand_over_proxy(found) == ["stopped traefik.service", "disabled traefik.service"]
    assert calls == [("stop", "traefik.service"), ("disable", "traefik.service")]
    assert os.path.exists(os.path.join(paths.STATE_DIR, "acme.json"))
    assert migrate_tljh.hand_over_proxy(migrate_tljh.detect()) == []  # rerun: nothing left to do


def write_config(text):
    os.makedirs(os.path.dirname(paths.CONFIG_FILE), exist_ok=True)
    with open(paths.CONFIG_FILE, "w") as f:
        f.write(text)


def test_a_tljh_config_is_accepted_as_it_is(server):
    # TLJH's keys, traefik_api included (ignored here with a warning, not refused).
    write_config("users:\n  admin: [admin]\n  allowed: [alice, bob@uni.example]\nhttps:\n  enabled: false\n"
                 "  letsencrypt:\n    email: a@uni.example\n    domains: [hub.uni.example]\n"
                 "services:\n  cull:\n    timeout: 3600\ntraefik_api:\n  port: 8099\n")
    assert migrate_tljh.refusal(migrate_tljh.detect()) is None


@pytest.mark.parametrize("text, why", [
    ("limits:\n  memory: lots\n", "limits.memory"),
    ("users: [admin\n", "config.yaml"),
])
def test_a_config_this_hub_refuses_stops_the_take_over_before_anything_changes(server, text, why):
    write_config(text)
    refused = migrate_tljh.refusal(migrate_tljh.detect())
    assert why in refused and refused.endswith("nothing was changed") and "\n" not in refused
    assert env_contents.is_conda(paths.USER_ENV_PREFIX) and not os.path.exists(paths.TLJH_MIGRATION_STATE)


def test_both_environments_present_is_refused_before_anything_changes(server):
    os.makedirs(os.path.join(paths.TLJH_OLD_USER_ENV, "conda-meta"))
    assert "move one of them elsewhere" in migrate_tljh.refusal(migrate_tljh.detect())
