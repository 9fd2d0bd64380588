"""The hub's account policy (tljh.hub.accounts) with the OS primitives replaced by a pretend server.

The real thing (useradd, gpasswd, usermod, a real login page) is in integration-tests/test_isolation.py.
"""

import asyncio
import os
import types

import pytest
from tornado import web
from traitlets.config import Config

from tljh.hub import accounts, isolation, server_extensions
from tljh.system import paths, users


class PretendServer:
    """/etc/passwd and /etc/group of a pretend server, behind tljh.system.users' function names."""

    def __init__(self):
        self.accounts = set()
        self.groups = {"users": set(), "sudo": set(), users.USERS_GROUP: set(), users.ADMINS_GROUP: set()}
        self.locked = set()
        self.sessions_ended = []

    def install(self, monkeypatch):
        async def ensure_user(name):
            new = name not in self.accounts
            self.accounts.add(name)
            return new

        async def ensure_group_async(group):
            new = group not in self.groups
            self.groups.setdefault(group, set())
            return new

        async def ensure_user_group(name, group):
            self.groups.setdefault(group, set()).add(name)

        async def remove_user_group(name, group):
            self.groups[group].discard(name)

        async def lock_account(name):
            self.locked.add(name)

        async def unlock_account(name):
            self.locked.discard(name)

        async def end_sessions(name):
            self.sessions_ended.append(name)

        for f in (ensure_user, ensure_group_async, ensure_user_group, remove_user_group, lock_account,
                  unlock_account, end_sessions):
            monkeypatch.setattr(users, f.__name__, f)
        monkeypatch.setattr(users, "user_exists", self.accounts.__contains__)
        monkeypatch.setattr(users, "groups_of", lambda name: {g for g, m in self.groups.items() if name in m})
        return self


@pytest.fixture
def server(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "UNIX_ACCOUNTS_DB", str(tmp_path / "unix-accounts.sqlite"))
    return PretendServer().install(monkeypatch)


def run(coro):
    return asyncio.run(coro)


def test_groups_follow_the_hub_both_ways(server):
    unix = run(accounts.ensure_account("alice"))
    assert unix == "jupyter-alice"
    run(accounts.sync_groups(unix, "alice", True, {"class-a": ["alice"], "class-b": ["bob"]}))
    assert server.groups[users.ADMINS_GROUP] == {unix}
    assert server.groups["class-a"] == {unix}
    server.groups["users"].add(unix)  # a group the admin put her in by hand: not the hub's business
    # demoted, and taken off class-a: both memberships go at the next login or spawn
    added, removed = run(accounts.sync_groups(unix, "alice", False, {"class-b": ["alice"]}))
    assert (added, removed) == (["class-b"], ["class-a", users.ADMINS_GROUP])
    assert users.groups_of(unix) == {users.USERS_GROUP, "class-b", "users"}


def test_privileged_groups_are_never_joined(server):
    unix = run(accounts.ensure_account("alice"))
    run(accounts.sync_groups(unix, "alice", False, {"sudo": ["alice"], "docker": ["alice"]}))
    assert unix not in server.groups["sudo"]
    assert "docker" not in server.groups


def test_refused_name_gets_no_account(server):
    run(accounts.ensure_account("josé"))
    with pytest.raises(accounts.NameRefused):
        run(accounts.ensure_account("jos--4745b"))
    assert server.accounts == {"jupyter-jos--4745b"}


def test_closed_account_is_reopened_when_its_user_comes_back(server):
    unix = run(accounts.ensure_account("bob"))
    assert run(accounts.close("bob", "banned")) == unix
    assert server.locked == {unix}
    run(accounts.ensure_account("bob"))
    assert server.locked == set()


def test_close_without_account_does_nothing(server):
    assert run(accounts.close("nobody", "banned")) is None


class FakeHandler:
    def __init__(self, user=None):
        self.user = user
        self.stopped = []

    def find_user(self, name):
        return self.user

    async def stop_single_user(self, user, server_name):
        self.stopped.append(server_name)


def _authenticator(user_groups=None):
    c = Config()
    c.UserCreatingSpawner.user_groups = user_groups or {}
    return types.SimpleNamespace(config=c, log=__import__("logging").getLogger("test"))


def test_login_hook_refuses_with_a_page_and_runs_the_admins_hook_first(server):
    calls = []

    def admins_hook(authenticator, handler, authentication):
        calls.append(authentication["name"])
        return authentication

    hook = accounts.make_post_auth_hook(admins_hook)
    run(hook(_authenticator(), FakeHandler(), {"name": "josé", "admin": None}))
    with pytest.raises(web.HTTPError) as refused:
        run(hook(_authenticator(), FakeHandler(), {"name": "jos--4745b", "admin": None}))
    assert refused.value.status_code == 403
    assert "too similar to an existing user's name" in refused.value.log_message % refused.value.args
    assert calls == ["josé", "jos--4745b"]
    with pytest.raises(web.HTTPError):
        run(hook(_authenticator(), FakeHandler(), {"name": "foo.service", "admin": None}))


def test_login_hook_demotes_admins_taken_out_of_config_and_restarts_their_servers(server):
    unix = run(accounts.ensure_account("alice"))
    run(accounts.sync_groups(unix, "alice", True, {}))
    accounts.record_config_admins({"alice"})
    accounts.record_config_admins(set())  # config.yaml no longer lists her; the hub restarted
    spawner = types.SimpleNamespace(active=True)
    handler = FakeHandler(types.SimpleNamespace(admin=True, spawners={"": spawner, "other": types.SimpleNamespace(active=False)}))
    result = run(accounts.make_post_auth_hook()(_authenticator(), handler, {"name": "alice", "admin": None}))
    assert result["admin"] is False
    assert unix not in server.groups[users.ADMINS_GROUP]
    assert handler.stopped == [""]  # her running server had the admins group: it is stopped
    assert server.sessions_ended == [unix]


def test_login_hook_leaves_an_unchanged_user_running(server):
    unix = run(accounts.ensure_account("bob"))
    run(accounts.sync_groups(unix, "bob", False, {"class-a": ["bob"]}))
    handler = FakeHandler(types.SimpleNamespace(admin=False, spawners={"": types.SimpleNamespace(active=True)}))
    run(accounts.make_post_auth_hook()(_authenticator({"class-a": ["bob"]}), handler, {"name": "bob", "admin": None}))
    assert handler.stopped == [] and server.sessions_ended == []


def test_install_wraps_the_snippets_hook_once(server, monkeypatch):
    monkeypatch.setattr(accounts, "close_banned", lambda banned: [])
    c = Config()
    c.JupyterHub.authenticator_class = "firstuseauthenticator.FirstUseAuthenticator"
    mine = lambda a, h, auth: auth  # noqa: E731
    c.Authenticator.post_auth_hook = mine
    accounts.install(c)
    accounts.install(c)  # loading the config twice must not wrap twice
    for section in ("Authenticator", "FirstUseAuthenticator"):
        assert c[section].post_auth_hook.tljh_accounts


def test_unit_properties_admins_keep_sudo():
    admin = isolation.unit_properties(True, isolation.CLOUD_METADATA_ADDRESSES)
    user = isolation.unit_properties(False, isolation.CLOUD_METADATA_ADDRESSES)
    # sudo must work in an admin's terminal: nothing that sets no_new_privs (checked on Debian 12)
    for implies_no_new_privileges in ("NoNewPrivileges", "SystemCallFilter", "SystemCallArchitectures",
                                      "RestrictAddressFamilies", "RestrictRealtime", "LockPersonality",
                                      "ProtectKernelModules", "ProtectKernelLogs", "ProtectKernelTunables",
                                      "ProtectClock", "ProtectHostname", "RestrictSUIDSGID"):
        assert implies_no_new_privileges not in admin
    assert admin["PrivateDevices"] == "no" and "ProtectSystem" not in admin
    assert user["NoNewPrivileges"] == "yes" and user["CapabilityBoundingSet"] == ""
    for properties in (admin, user):
        assert properties["IPAddressDeny"] == "169.254.169.254 fd00:ec2::254 100.100.100.200"
        assert properties["ProtectProc"] == "invisible"
    assert "IPAddressDeny" not in isolation.unit_properties(False, [])


def test_kernels_use_ipc_in_a_short_private_runtime_directory():
    assert isolation.server_args("ipc") == ["--KernelManager.transport=ipc"]
    longest = "jupyter-" + "a" * 24 + ":" + "n" * 64  # a 32-character account and a long named server
    runtime = isolation.server_environment(longest, False)["JUPYTER_RUNTIME_DIR"]
    assert runtime.startswith("/run/tljh-kernels/")
    # the longest IPC socket a kernel makes there fits a unix socket address (107 bytes)
    assert len(f"{runtime}/kernel-{'0' * 36}-ipc-5") <= 107
    assert isolation.server_environment("jupyter-alice", False)["JUPYTER_RUNTIME_DIR"] != runtime
    # systemdspawner's own directory stays first: it keeps the server's environment file there
    directories = isolation.runtime_directories(longest)["RuntimeDirectory"].split()
    assert directories == [longest, runtime[len("/run/"):]]


def test_kernel_debugger_variable_follows_the_setting():
    assert isolation.server_environment("jupyter-alice", False)["TLJH_KERNEL_DEBUGGER"] == "off"
    assert isolation.server_environment("jupyter-alice", True)["TLJH_KERNEL_DEBUGGER"] == "on"


@pytest.mark.parametrize("variable, available_after", [("off", False), ("on", True), (None, True)])
def test_kernel_config_turns_ipykernels_debugger_flag_off_only_when_told(monkeypatch, variable, available_after):
    """The real ipykernel is exercised in integration-tests/test_isolation.py; here, stand-in modules."""
    import sys

    modules = {}
    for name in ("ipykernel.debugger", "ipykernel.ipkernel"):  # ipykernel 6 keeps a copy in ipkernel
        modules[name] = types.ModuleType(name)
        modules[name]._is_debugpy_available = True
        monkeypatch.setitem(sys.modules, name, modules[name])
    monkeypatch.setitem(sys.modules, "ipykernel.kernelbase", types.ModuleType("ipykernel.kernelbase"))
    if variable is None:
        monkeypatch.delenv("TLJH_KERNEL_DEBUGGER", raising=False)
    else:
        monkeypatch.setenv("TLJH_KERNEL_DEBUGGER", variable)
    exec(compile(isolation.KERNEL_CONFIG, "ipython_kernel_config.py", "exec"), {"c": None})
    assert [m._is_debugpy_available for m in modules.values()] == [available_after] * 2
    assert not hasattr(sys.modules["ipykernel.kernelbase"], "_is_debugpy_available")


# Stand-ins laid out like ipykernel 7 and debugpy: ipykernel.debugger is first imported by the kernel (after the
# config file), and looks for debugpy as ipykernel does.
_FAKE_PACKAGES = {
    "ipykernel/__init__.py": "",
    "ipykernel/debugger.py": (
        "try:\n    from debugpy.server import api\n    _is_debugpy_available = True\n"
        "except ImportError:\n    _is_debugpy_available = False\n"),
    "debugpy/__init__.py": "",
    "debugpy/server/__init__.py": "",
    "debugpy/server/api.py": "",
}


@pytest.fixture
def fake_ipykernel(monkeypatch, tmp_path):
    import sys

    for relative, text in _FAKE_PACKAGES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    ours = ("ipykernel", "debugpy")
    saved = {name: module for name, module in sys.modules.items() if name.partition(".")[0] in ours}
    for name in saved:
        del sys.modules[name]
    yield sys.modules
    for name in [n for n in sys.modules if n.partition(".")[0] in ours]:
        del sys.modules[name]
    sys.modules.update(saved)


def _run_kernel_config():
    exec(compile(isolation.KERNEL_CONFIG, "ipython_kernel_config.py", "exec"), {"c": None})


def test_kernel_config_keeps_debugpy_unloaded_when_the_debugger_is_off(monkeypatch, fake_ipykernel):
    """ipykernel 7 would import debugpy when it creates the kernel (~0.1 s of CPU per kernel start); with the
    debugger off the config has ipykernel.debugger find no debugpy, and the user's own `import debugpy` works."""
    import importlib

    monkeypatch.setenv("TLJH_KERNEL_DEBUGGER", "off")
    _run_kernel_config()
    assert fake_ipykernel["ipykernel.debugger"]._is_debugpy_available is False
    assert not [name for name in fake_ipykernel if name.partition(".")[0] == "debugpy"]
    assert importlib.import_module("debugpy.server.api").__name__ == "debugpy.server.api"


def test_kernel_config_puts_back_a_debugpy_loaded_before_it(monkeypatch, fake_ipykernel):
    import importlib

    monkeypatch.setenv("TLJH_KERNEL_DEBUGGER", "off")
    api = importlib.import_module("debugpy.server.api")
    _run_kernel_config()
    assert fake_ipykernel["ipykernel.debugger"]._is_debugpy_available is False
    assert fake_ipykernel["debugpy.server.api"] is api


@pytest.mark.parametrize("variable", ["on", None])
def test_kernel_config_leaves_the_debugger_alone_unless_told(monkeypatch, fake_ipykernel, variable):
    if variable is None:
        monkeypatch.delenv("TLJH_KERNEL_DEBUGGER", raising=False)
    else:
        monkeypatch.setenv("TLJH_KERNEL_DEBUGGER", variable)
    _run_kernel_config()
    assert "ipykernel.debugger" not in fake_ipykernel and "debugpy" not in fake_ipykernel


@pytest.mark.parametrize("step, path_name, module, content, marker", [
    ("install_kernel_config", "IPYTHON_KERNEL_CONFIG", isolation, "KERNEL_CONFIG", "KERNEL_CONFIG_MARKER"),
    ("install_server_config", "JUPYTER_SERVER_CONFIG", server_extensions, "SERVER_CONFIG", "SERVER_CONFIG_MARKER"),
])
def test_installer_writes_its_config_files_and_leaves_an_admins_own(monkeypatch, tmp_path, step, path_name,
                                                                     module, content, marker):
    from tljh.install import installer

    install, text, marker = getattr(installer, step), getattr(module, content), getattr(module, marker)
    path = tmp_path / "etc" / "config.py"
    monkeypatch.setattr(paths, path_name, str(path))
    ctx = types.SimpleNamespace(warnings=[])
    assert install(ctx) == f"wrote {path}"
    assert path.read_text() == text and path.stat().st_mode & 0o777 == 0o644
    assert install(ctx) == "already in place"
    path.write_text(f"{marker}: an older version\n")
    assert install(ctx) == f"wrote {path}" and not ctx.warnings
    path.write_text("c.Application.log_level = 'DEBUG'\n")
    assert install(ctx) == "NOT written: the file there is the admin's"
    assert path.read_text() == "c.Application.log_level = 'DEBUG'\n"
    assert f"{path} is not this installer's, so it was left as it is" in ctx.warnings[0]
    assert f"Merge in {module.__name__}.{content}" in ctx.warnings[0]


def _hub_database(path, names):
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users (name) VALUES (?)", [(n,) for n in names])


def test_installer_step_adopts_existing_accounts_once(server, monkeypatch, tmp_path, capsys):
    """An upgrade from before the table (or a TLJH server): every existing user keeps their account."""
    from tljh.install import installer

    db = tmp_path / "jupyterhub.sqlite"
    _hub_database(db, ["alice", "bob@uni.example", "josé", "jos--4745b"])
    monkeypatch.setattr(paths, "HUB_DATABASE", str(db))
    members = ["jupyter-alice", "jupyter-bob@uni.example", "jupyter-jos--4745b"]
    monkeypatch.setattr(users, "members_of", lambda group: members)
    server.accounts.update(members)
    assert installer.record_unix_accounts(None) == "kept 2 existing accounts, 1 left for you to assign"
    assert "sudo tljh unix-names assign NAME jupyter-jos--4745b" in capsys.readouterr().out
    assert run(accounts.unix_name("bob@uni.example")) == "jupyter-bob@uni.example"
    members.append("jupyter-carol")  # made after the table: not adopted on a rerun
    server.accounts.add("jupyter-carol")
    assert installer.record_unix_accounts(None) == "2 accounts recorded"
    with pytest.raises(accounts.NameRefused):
        run(accounts.unix_name("carol"))
    # A restore of an archive made before the table removes the table and reruns the installer: the accounts it
    # brought back (all of them, carol too: nothing made them but a hub) are adopted again.
    os.unlink(paths.UNIX_ACCOUNTS_DB)
    assert installer.record_unix_accounts(None) == "kept 3 existing accounts, 1 left for you to assign"
    assert run(accounts.unix_name("carol")) == "jupyter-carol"


def test_uninstall_purge_takes_only_the_hubs_accounts_and_groups(server):
    from tljh.install import uninstall

    run(accounts.ensure_account("alice"))
    run(accounts.unix_name("bob"))  # claimed at login, never spawned: no account
    server.accounts.add("jupyter-someone")  # not the hub's
    run(accounts.sync_groups("jupyter-alice", "alice", False, {"class-a": ["alice"]}))
    server.groups["students"] = set()
    accounts_, groups = uninstall.hub_accounts()
    assert accounts_ == ["jupyter-alice"]
    assert groups == ["class-a"]  # jupyterhub-users existed already in this pretend server


def test_unix_names_cli(server, capsys):
    from tljh.cli import unix_names

    run(accounts.ensure_account("alice"))
    server.accounts.add("jupyter-old-alice")
    assert unix_names.run("assign", "alice2", "jupyter-old-alice") == 0
    assert unix_names.run("assign", "mallory", "jupyter-alice") == 1
    assert "belongs to hub user 'alice'" in capsys.readouterr().err
    assert unix_names.run("list") == 0
    listing = capsys.readouterr().out
    assert "alice2" in listing and "jupyter-old-alice" in listing and "assigned" in listing


def test_firstuse_login_errors_render(monkeypatch):
    """FirstUseAuthenticator 1.1.1 + JupyterHub 6: an error during login gave a blank 403 (TypeError: 'sync')."""
    from firstuseauthenticator.firstuseauthenticator import CustomLoginHandler

    monkeypatch.setattr(CustomLoginHandler, "_render", CustomLoginHandler._render)  # restored after the test
    accounts.show_login_errors_with_firstuse()
    accounts.show_login_errors_with_firstuse()  # idempotent
    handler = object.__new__(CustomLoginHandler)
    handler.custom_login_error = ""
    seen = {}
    monkeypatch.setattr(
        CustomLoginHandler.__mro__[1], "_render",
        lambda self, login_error=None, username=None, **kw: seen.update(error=login_error, user=username),
    )
    handler._render(login_error="refused", username="x", sync=True, status_code=403)
    assert seen == {"error": "refused", "user": "x"}
    handler.custom_login_error = "FirstUse's own message"
    handler._render(login_error="refused", username="x", sync=True)
    assert seen["error"] == "FirstUse's own message"


@pytest.mark.parametrize("server_name, closed", [("", ["alice"]), ("extra", [])])
def test_deleting_the_user_closes_the_account_but_deleting_a_named_server_does_not(monkeypatch, server_name, closed):
    """JupyterHub deletes the default server's spawner only with its user (and swallows errors from here)."""
    from tljh.hub.spawner import UserCreatingSpawner

    calls = []

    async def close(hub_name, why):
        calls.append(hub_name)

    monkeypatch.setattr(accounts, "close", close)
    spawner = UserCreatingSpawner.__new__(UserCreatingSpawner)
    spawner.orm_spawner = types.SimpleNamespace(name=server_name, server=None)
    spawner.user = types.SimpleNamespace(name="alice")
    run(spawner.delete_forever())
    assert calls == closed


def test_sandbox_follows_admin_status_across_starts_of_one_spawner():
    """JupyterHub keeps the spawner object: a demoted admin's next server is sandboxed like everyone's, and a
    promoted user's has no no_new_privs (sudo works); the admin's own unit_extra_properties still win."""
    from traitlets.config import Config

    from tljh.hub.spawner import UserCreatingSpawner

    c = Config()
    c.UserCreatingSpawner.unit_extra_properties = {"LimitNOFILE": "4096", "ProtectSystem": "strict"}
    user = types.SimpleNamespace(name="carol", admin=True, id=1, groups=[])
    spawner = UserCreatingSpawner(config=c, user=user)
    spawner.unit_name = "jupyter-carol"
    spawner._apply_isolation()
    assert spawner.unit_extra_properties["PrivateDevices"] == "no" and spawner.disable_user_sudo is False
    assert "NoNewPrivileges" not in spawner.unit_extra_properties
    user.admin = False
    spawner._apply_isolation()
    properties = spawner.unit_extra_properties
    assert "PrivateDevices" not in properties and properties["NoNewPrivileges"] == "yes"
    assert spawner.disable_user_sudo is True
    assert properties["LimitNOFILE"] == "4096" and properties["ProtectSystem"] == "strict"
    user.admin = True
    spawner._apply_isolation()
    assert "NoNewPrivileges" not in spawner.unit_extra_properties and spawner.disable_user_sudo is False
    assert spawner.unit_extra_properties["RuntimeDirectory"].startswith("jupyter-carol tljh-kernels/")


def test_a_start_waits_until_the_previous_unit_is_unloaded(monkeypatch):
    """A new unit of the same name fails while systemd still has the stopped one loaded ('already loaded')."""
    from tljh.hub.spawner import UserCreatingSpawner
    from tljh.system import systemd

    states = [("loaded", "deactivating"), ("loaded", "inactive"), ("not-found", "inactive")]
    seen = []

    async def properties(unit, *names):
        seen.append(unit)
        load, active = states[min(len(seen), len(states)) - 1]
        return {"LoadState": load, "ActiveState": active}

    monkeypatch.setattr(systemd, "properties", properties)
    spawner = UserCreatingSpawner(user=types.SimpleNamespace(name="alice", admin=False, id=1, groups=[]))
    spawner.unit_name = "jupyter-alice"
    run(spawner._wait_previous_unit_unloaded())
    assert seen == ["jupyter-alice"] * 3
    states[:] = [("loaded", "active")]  # running: systemdspawner stops it itself
    seen.clear()
    run(spawner._wait_previous_unit_unloaded())
    assert seen == ["jupyter-alice"]


def test_tljh_users_shows_the_account_the_table_gives(server):
    """`tljh users list` names each user's account from the table (TLJH's '@' names included), not a rule."""
    from tljh.cli import users as users_cli

    assert users_cli.unix_name("bob@uni.example") is None  # no table yet
    run(accounts.ensure_account("bob@uni.example"))
    run(accounts.unix_name("carol"))  # claimed at login, no account made yet
    assert users_cli.unix_name("bob@uni.example") == "jupyter-bob@uni.example"
    assert users_cli.unix_name("carol") is None
    assert users_cli.unix_name("dave") is None


def test_a_spawner_finds_its_users_account_before_any_start(server):
    """After a hub restart, stop and poll find a server's socket link by the account name: the table's (an
    adopted or assigned account too), the rule's for a name not in it yet, and never an error."""
    from tljh.hub.spawner import UserCreatingSpawner
    from tljh.system import unix_accounts

    def spawner(name):
        return UserCreatingSpawner(user=types.SimpleNamespace(name=name, admin=False, id=1, groups=[]))

    assert spawner("alice").username_template == "jupyter-alice"  # no table yet
    table = unix_accounts.AccountTable()
    table.assign("alice", "jupyter-old-alice")
    table.close()
    assert spawner("alice").username_template == "jupyter-old-alice"
    assert spawner("josé").username_template == "jupyter-jos--4745b"
    assert spawner("lab.service").username_template.startswith("jupyter-lab.service")
