"""What a user's server is spared at start: the flags, the settings that put things back, and their order."""

import types

import pytest
from traitlets import Bool, Dict, Unicode
from traitlets.config import Application, Config

from tljh.hub import server_extensions
from tljh.hub.configurer import apply_config
from tljh.hub.spawner import UserCreatingSpawner


class ServerApp(Application):
    """Stand-ins with Jupyter Server's and JupyterLab's trait types: the flags must parse the way theirs do."""

    jpserver_extensions = Dict(default_value={}, value_trait=Bool(), config=True)


class LabApp(Application):
    extension_manager = Unicode("pypi", config=True)


class ResourceUseDisplay(Application):
    enable_prometheus_metrics = Bool(True, config=True)


def parsed(args):
    app = ServerApp()
    app.parse_command_line(args)
    lab, usage = LabApp(config=app.config), ResourceUseDisplay(config=app.config)
    return app.jpserver_extensions, lab.extension_manager, usage.enable_prometheus_metrics


OURS = ("jpserver_extensions", "extension_manager", "enable_prometheus_metrics")


def spawner(**config):
    c = Config()
    for name, value in config.items():
        setattr(c.UserCreatingSpawner, name, value)
    user = types.SimpleNamespace(name="alice", admin=False, id=1, groups=[])
    return UserCreatingSpawner(config=c, user=user, username_template="jupyter-alice",
                               servers_dir="/nonexistent/a", server_links_dir="/nonexistent/b")


def test_by_default_a_server_skips_jupyter_lsp_the_pypi_extension_manager_and_the_metrics_refresh():
    args = spawner().get_args()
    assert parsed(args[:3]) == ({"jupyter_lsp": False}, "readonly", False)


def test_the_settings_put_them_back():
    args = spawner(language_servers=True, lab_extension_manager="", resource_metrics=True).get_args()
    assert not any(name in a for a in args for name in OURS)
    assert server_extensions.server_args(True, "pypi", True) == ["--LabApp.extension_manager=pypi"]


def test_an_admins_own_server_args_win():
    args = spawner(args=["--ServerApp.jpserver_extensions=jupyter_lsp=True", "--LabApp.extension_manager=pypi",
                         "--ResourceUseDisplay.enable_prometheus_metrics", "True"]).get_args()
    # given twice, traitlets would refuse to start the server
    assert parsed([a for a in args if any(name in a for name in OURS) or a == "True"]) == (
        {"jupyter_lsp": True}, "pypi", True)
    # the spawner's other flags are still there
    assert "--KernelManager.transport=ipc" in args and any(a.startswith("--sock=") for a in args)


def test_an_admins_other_server_args_leave_the_flags_in_place():
    args = spawner(args=["--ServerApp.jpserver_extensions_x=1", "--LabApp.extension_manager_y"]).get_args()
    assert args[:3] == ["--ServerApp.jpserver_extensions=jupyter_lsp=False", "--LabApp.extension_manager=readonly",
                        "--ResourceUseDisplay.enable_prometheus_metrics=False"]


@pytest.mark.parametrize("value", [False, True])
def test_language_servers_come_from_config_yaml(value):
    c = Config()
    apply_config({"user_environment": {"language_servers": value}} if value else {}, c)
    assert c.UserCreatingSpawner.language_servers is value


@pytest.mark.parametrize("variable, frozen_at_exit", [("off", True), ("on", False), (None, False)])
def test_server_config_freezes_the_heap_at_exit_only_when_told(monkeypatch, variable, frozen_at_exit):
    import atexit
    import gc

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    if variable is None:
        monkeypatch.delenv(server_extensions.EXIT_COLLECTION_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(server_extensions.EXIT_COLLECTION_VARIABLE, variable)
    exec(compile(server_extensions.SERVER_CONFIG, "jupyter_server_config.py", "exec"), {"c": None})
    assert registered == ([gc.freeze] if frozen_at_exit else [])


def test_the_spawner_tells_each_server_whether_to_collect_at_exit(monkeypatch):
    from systemdspawner import SystemdSpawner

    monkeypatch.setattr(SystemdSpawner, "get_env", lambda self: {"JUPYTERHUB_API_TOKEN": "t"})
    env = spawner().get_env()
    assert env[server_extensions.EXIT_COLLECTION_VARIABLE] == "off" and env["JUPYTERHUB_API_TOKEN"] == "t"
    assert spawner(exit_collection=True).get_env()[server_extensions.EXIT_COLLECTION_VARIABLE] == "on"
