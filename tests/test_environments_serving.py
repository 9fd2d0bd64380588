"""What a server of an environment runs from (the interface the spawner uses)."""

import os

import pytest
from environments_testing import fake_build, prefix, uv_cache  # noqa: F401

from tljh.environments import serving, store
from tljh.system import paths


def built(name, build="20260101T000000-aaaa", kernel=True):
    path = fake_build(paths.environment_prefix(name), name, build)
    if kernel:
        os.makedirs(os.path.join(path, "share", "tljh", "kernels", name))
    return path


def test_a_server_runs_from_the_stable_path_of_its_environment(prefix):
    built("default")
    built("data")
    env = serving.server_environment("data")
    assert env.prefix == str(prefix / "envs" / "data") and env.build == "20260101T000000-aaaa"
    assert env.extra_paths == [str(prefix / "envs" / "data" / "bin")]
    assert env.python == str(prefix / "envs" / "data" / "bin" / "python")
    assert env.environment["TLJH_ENVIRONMENT"] == "data"
    default = serving.server_environment("default")
    assert default.prefix == str(prefix / "user")


def test_the_command_moves_to_the_environments_bin(prefix):
    built("data")
    env = serving.server_environment("data")
    cmd = [str(prefix / "user" / "bin" / "jupyterhub-singleuser"), "--debug"]
    assert env.command(cmd) == [str(prefix / "envs" / "data" / "bin" / "jupyterhub-singleuser"), "--debug"]
    assert env.command(["/usr/local/bin/other"]) == ["/usr/local/bin/other"]


def test_an_environment_without_a_build_is_not_ready_with_what_to_do(prefix):
    with pytest.raises(serving.EnvironmentNotReady) as e:
        serving.server_environment("data")
    assert "sudo tljh env build data" in str(e.value)


def test_a_tljh_user_environment_without_a_record_still_serves(prefix):
    os.makedirs(prefix / "user" / "bin")
    os.symlink("/usr/bin/python3", prefix / "user" / "bin" / "python")
    assert serving.server_environment("default").build == store.LEGACY_BUILD


def test_the_unit_pins_its_environment_and_the_offered_ones_and_keeps_the_rest_of_the_prefix(prefix):
    built("default")
    built("data")
    built("stats")
    props = serving.server_environment("data", offered=["default", "data"]).unit_properties
    assert props["TemporaryFileSystem"] == f"{prefix}:ro"
    binds = props["BindPaths"].split()
    # The session layers' directory too, although it does not exist yet: the spawner writes the layer after this.
    assert not os.path.exists(prefix / "sessions")
    assert binds == [f"-{prefix}/config", f"-{prefix}/hub", f"-{prefix}/sessions", f"-{prefix}/state",
                     f"{prefix}/envs/data", f"{prefix}/user"]
    assert not any("{" in v or "}" in v for v in props.values())  # systemdspawner str.formats them


def test_offered_kernels_are_on_jupyter_path_only_if_built_with_one(prefix):
    built("default")
    built("data")
    built("nokernel", kernel=False)
    env = serving.server_environment("default", offered=["default", "data", "nokernel", "missing"])
    assert env.environment["JUPYTER_PATH"] == f"{prefix}/user/share/tljh:{prefix}/envs/data/share/tljh"
    assert "JUPYTER_PATH" not in serving.server_environment("default", offered=[]).environment


def test_the_spawner_applies_an_environment_idempotently(prefix):
    """Each start applies the chosen environment over what the last start left (one spawner object per server)."""
    from types import SimpleNamespace

    from tljh.hub.spawner import UserCreatingSpawner

    built("default")
    built("data")
    spawner = SimpleNamespace(
        user_environment="data",
        environment_kernels=["default", "data"],
        extra_paths=[f"{prefix}/user/bin", "/usr/local/extra"],
        cmd=[f"{prefix}/user/bin/jupyterhub-singleuser"],
        environment={"COURSE": "stats", "JUPYTER_PATH": "stale"},
        unit_extra_properties={"MemoryHigh": "1G"},
    )
    UserCreatingSpawner._apply_environment(spawner)
    assert spawner.extra_paths == [f"{prefix}/envs/data/bin", "/usr/local/extra"]
    assert spawner.cmd == [f"{prefix}/envs/data/bin/jupyterhub-singleuser"]
    assert spawner.environment["COURSE"] == "stats" and spawner.environment["TLJH_ENVIRONMENT"] == "data"
    assert spawner.environment["JUPYTER_PATH"] == f"{prefix}/user/share/tljh:{prefix}/envs/data/share/tljh"
    assert spawner.unit_extra_properties["MemoryHigh"] == "1G"
    assert f"{prefix}/envs/data" in spawner.unit_extra_properties["BindPaths"].split()

    spawner.user_environment, spawner.environment_kernels = "default", []
    UserCreatingSpawner._apply_environment(spawner)
    assert spawner.extra_paths == [f"{prefix}/user/bin", "/usr/local/extra"]
    assert spawner.cmd == [f"{prefix}/user/bin/jupyterhub-singleuser"]
    assert "JUPYTER_PATH" not in spawner.environment and spawner.environment["TLJH_ENVIRONMENT"] == "default"
    assert f"{prefix}/envs/data" not in spawner.unit_extra_properties["BindPaths"].split()


def test_a_spawn_in_an_environment_that_is_not_built_fails_with_what_to_do(prefix):
    from types import SimpleNamespace

    from tljh.hub.spawner import UserCreatingSpawner

    spawner = SimpleNamespace(user_environment="stats", environment_kernels=[], extra_paths=[], cmd=[],
                              environment={}, unit_extra_properties={})
    with pytest.raises(serving.EnvironmentNotReady, match="sudo tljh env build stats"):
        UserCreatingSpawner._apply_environment(spawner)


def test_the_spawn_page_and_the_api_get_the_reason_and_nothing_is_created(prefix, monkeypatch):
    """JupyterHub shows an HTTPError's message on the spawn form, the REST API and the spawn-pending page; any
    other exception in the first second of a spawn becomes "Unhandled error starting server"."""
    import asyncio
    from types import SimpleNamespace

    from tornado import web

    from tljh.hub import spawner as spawner_module
    from tljh.hub.spawner import UserCreatingSpawner

    async def must_not_run(*args):
        raise AssertionError("a Unix account was touched for a server that cannot start")

    monkeypatch.setattr(spawner_module.accounts, "ensure_account", must_not_run)
    spawner = SimpleNamespace(user_environment="stats", environment_kernels=[], extra_paths=[], cmd=[],
                              environment={}, unit_extra_properties={}, user=SimpleNamespace(name="bob"))
    spawner._apply_environment = lambda: UserCreatingSpawner._apply_environment(spawner)
    spawner._configured = lambda: None
    spawner._apply_environment_or_refuse = lambda: UserCreatingSpawner._apply_environment_or_refuse(spawner)
    released = []
    spawner.start_queue = SimpleNamespace(release=released.append)
    spawner._start = lambda: UserCreatingSpawner._start(spawner)
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(UserCreatingSpawner.start(spawner))
    assert released == [spawner]  # its turn in the start line ends with the refusal
    assert e.value.status_code == 503
    assert "environment 'stats' is not built yet" in e.value.log_message
    assert e.value.jupyterhub_message == e.value.log_message
