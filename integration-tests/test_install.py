"""Issue 3: one command installs a working hub on a fresh server.

One machine is booted (with a 900 MB memory cap, TLJH's "runs on 1 GB" promise) and installed with the
real bootstrap, from this checkout, as a user would. The tests then act as people: the admin logs in,
starts a server, runs code in a kernel over the websocket through Caddy. Needs root and systemd-nspawn.
"""

import asyncio
import time

import pytest
from hubclient import HubClient
from installed import MANAGED_FILES, installed_machine

ADMIN_PASSWORD = "admin-password-1"
BOB_PASSWORD = "bob-password-1"


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"admin:{ADMIN_PASSWORD}", memory_max="900M") as m:
        print(f"install took {m.install_seconds:.1f} s")
        yield m


def run(coro):
    return asyncio.run(coro)


def test_login_page_answers(hub):
    import urllib.request

    with urllib.request.urlopen(hub.url("/hub/login"), timeout=10) as r:
        assert r.status == 200
        assert b"<form" in r.read()


def test_installer_log_is_root_only(hub):
    log = hub.run("stat -c '%a %U' /opt/tljh/installer.log").stdout.split()
    assert log == ["600", "root"]
    for path in ("/opt/tljh/config", "/opt/tljh/state"):
        assert hub.run(f"stat -c '%a %U' {path}").stdout.split() == ["700", "root"]


def test_status_reports_everything_up(hub):
    result = hub.run("tljh status", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("jupyterhub.service: active", "caddy.service: active", "caddy-admin.socket: active",
                 "hub: JupyterHub 6.1", "https: disabled; serving http on port 80"):
        assert line in result.stdout
    hub.run("systemctl stop caddy")
    try:
        down = hub.run("tljh status", check=False)
        assert down.returncode == 1
        assert "caddy.service: NOT RUNNING (inactive)" in down.stdout
        assert "  caddy.service is inactive -> sudo systemctl restart caddy" in down.stdout
    finally:
        hub.run("systemctl start caddy")


def test_admin_runs_code_through_caddy(hub):
    async def scenario():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            seconds = await admin.start_server()
            assert await admin.lab_page() == 200
            kernel = await admin.open_kernel()
            assert await kernel.execute("1+1") == "2"
            await kernel.close()
            await admin.stop_server()
            return seconds

    print(f"admin's server ready in {run(scenario()):.2f} s")


def test_a_server_starts_without_jupyter_lsp_and_gets_it_back_when_asked(hub):
    """Issue 18's lean start: JupyterLab, the Classic interface, terminals and the extensions the environment
    enables (jupyter-resource-usage) work; jupyter-lsp is not loaded and JupyterLab's extension manager is the
    read-only one, until user_environment.language_servers turns jupyter-lsp back on."""

    async def visit(admin):
        statuses = {}
        for path in ("tree", "api/metrics/v1", "lsp/status"):
            async with admin.session.get(admin.url(f"user/admin/{path}"), headers=admin._auth()) as r:
                await r.read()
                statuses[path] = r.status
        async with admin.session.get(admin.url("user/admin/lab"), headers=admin._auth()) as r:
            statuses["lab"] = r.status
            page = await r.text()
        return statuses, page

    async def scenario():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.start_server()
            lean, page = await visit(admin)
            terminal = await admin.run_in_terminal("echo $((6 * 7))")
            await admin.stop_server()
            hub.run("tljh-config set user_environment.language_servers true && tljh-config reload")
            try:
                await admin.start_server()
                full, _ = await visit(admin)
                await admin.stop_server()
            finally:
                hub.run("tljh-config unset user_environment.language_servers && tljh-config reload")
            return lean, page, terminal, full

    lean, page, terminal, full = run(scenario())
    assert lean == {"tree": 200, "api/metrics/v1": 200, "lsp/status": 404, "lab": 200}
    assert '"name": "read-only"' in page or '"name":"read-only"' in page
    assert "42" in terminal
    assert full == {**lean, "lsp/status": 200}


# Run as a user with the default environment's Jupyter Server: how many atexit handlers reading the server's
# config files adds (the installer's file registers one, gc.freeze, when the variable says "off").
ATEXIT_HANDLERS_ADDED = (
    "import atexit; from jupyter_server.serverapp import ServerApp; n = atexit._ncallbacks(); "
    "ServerApp().load_config_file(); print(atexit._ncallbacks() - n)"
)


def test_a_stopping_server_skips_the_final_garbage_collection_and_still_stops_cleanly(hub):
    """Issue 18: the installer's Jupyter server config freezes a stopping server's heap (about half a second of
    CPU less per stop), only in servers whose spawner says so; the admin's server still runs code and stops
    with a clean exit."""
    from tljh.hub import server_extensions

    assert hub.run("cat /etc/jupyter/jupyter_server_config.py").stdout == server_extensions.SERVER_CONFIG
    added = {value: hub.run(["/opt/tljh/user/bin/python", "-c", ATEXIT_HANDLERS_ADDED], user="jupyter-admin",
                            env={"TLJH_SERVER_EXIT_COLLECTION": value}).stdout.split()[-1]
             for value in ("off", "on")}
    assert int(added["off"]) - int(added["on"]) == 1, added

    async def scenario():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.start_server()
            kernel = await admin.open_kernel()
            told = await kernel.execute("__import__('os').environ.get('TLJH_SERVER_EXIT_COLLECTION')")
            two = await kernel.execute("1+1")
            await kernel.close()
            await admin.stop_server()
            return told, two

    since = hub.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    assert run(scenario()) == ("'off'", "2")
    journal = hub.run(f"journalctl -u jupyter-admin --since '{since}' -o cat --no-pager").stdout
    assert "received signal 15, stopping" in journal and "Deactivated successfully" in journal, journal[-2000:]
    assert "Traceback" not in journal and "Failed with result" not in journal, journal[-2000:]


def test_wrong_password_is_refused(hub):
    async def scenario():
        async with HubClient(hub.url()) as someone:
            with pytest.raises(Exception, match="login as admin failed: 403"):
                await someone.login("admin", "not-the-password")

    run(scenario())


def test_second_spawn_keeps_first_users_kernel(hub):
    """Starting bob's server adds a route: admin's open websocket must survive it, and admin's requests
    must not fail while it happens."""

    async def hammer(client, stop, failures, count):
        while not stop.is_set():
            try:
                async with client.session.get(client.url("user/admin/api/status"), headers=client._auth()) as r:
                    await r.read()
                    if r.status != 200:
                        failures.append(r.status)
            except Exception as e:  # a dropped connection is exactly what must not happen
                failures.append(repr(e))
            count[0] += 1

    async def scenario():
        async with HubClient(hub.url()) as admin, HubClient(hub.url()) as bob:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.start_server()
            kernel = await admin.open_kernel()
            assert await kernel.execute("x = 20; x + 1") == "21"

            stop, failures, count = asyncio.Event(), [], [0]
            load = asyncio.ensure_future(hammer(admin, stop, failures, count))
            await admin.create_users("bob")
            await bob.login("bob", BOB_PASSWORD)
            await bob.start_server()
            bob_kernel = await bob.open_kernel()
            assert await bob_kernel.execute("2*3") == "6"
            await bob.stop_server()
            stop.set()
            await load

            assert failures == [], f"{len(failures)} of {count[0]} requests failed while bob spawned: {failures[:5]}"
            assert count[0] > 20
            # Same websocket, same kernel state.
            assert await kernel.execute("x * 2") == "40"
            await kernel.close()
            await admin.stop_server()

    run(scenario())


def test_unix_accounts_and_groups(hub):
    admin_groups = hub.run("id -nG jupyter-admin").stdout.split()
    assert "jupyterhub-users" in admin_groups and "jupyterhub-admins" in admin_groups
    bob_groups = hub.run("id -nG jupyter-bob").stdout.split()
    assert "jupyterhub-users" in bob_groups and "jupyterhub-admins" not in bob_groups
    assert hub.run("stat -c %a /home/jupyter-bob").stdout.strip() == "700"
    assert hub.run("sudo -n true", user="jupyter-admin", check=False).returncode == 0
    assert hub.run("sudo -n true", user="jupyter-bob", check=False).returncode != 0


def test_admin_installs_for_everyone_with_sudo_pip(hub):
    # As in TLJH's docs: an admin in a terminal of their server runs `sudo -E pip install X`.
    path = "PATH=/opt/tljh/user/bin:/usr/local/bin:/usr/bin:/bin"
    result = hub.run(f"env {path} sudo -E pip install --quiet six==1.16.0", user="jupyter-admin", check=False)
    assert result.returncode == 0, result.stderr
    assert hub.run("/opt/tljh/user/bin/python -c 'import six; print(six.__version__)'", user="jupyter-bob").stdout.strip() == "1.16.0"


@pytest.mark.parametrize(
    "what, command",
    [
        ("read the config", "cat /opt/tljh/config/config.yaml"),
        ("list the config dir", "ls /opt/tljh/config"),
        ("list the state", "ls /opt/tljh/state"),
        ("read the installer log", "cat /opt/tljh/installer.log"),
        ("reach the proxy's admin socket", "curl -sf --max-time 3 --unix-socket /run/tljh/proxy-admin.sock http://localhost/config/"),
        ("list the route table", "ls /run/tljh/routes"),
        ("read the proxy's certificates", "ls /var/lib/tljh-proxy"),
        ("write the user environment", "touch /opt/tljh/user/lib/evil"),
        ("write the hub environment", "touch /opt/tljh/hub/evil"),
        ("read another user's home", "ls /home/jupyter-admin"),
        ("use sudo", "sudo -n true"),
    ],
)
def test_non_admin_cannot(hub, what, command):
    result = hub.run(command, user="jupyter-bob", check=False)
    assert result.returncode != 0, f"a non-admin user could {what}: {result.stdout[:200]}"


def test_noop_upgrade_keeps_servers_and_websockets(hub):
    """Issue 6: rerunning bootstrap with nothing to change leaves running servers, their open kernel
    websockets and every managed file alone. How quick it is: benchmarks/install.py (a timed assertion here
    failed on busy hosts)."""

    async def scenario():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.start_server()
            kernel = await admin.open_kernel()
            assert await kernel.execute("y = 7; y") == "7"
            before = hub.run(f"sha256sum {MANAGED_FILES}").stdout
            timings = []
            for _ in range(3):
                started = time.monotonic()
                result = await kernel.stay_open_while(
                    asyncio.to_thread(hub.install_tljh, "--admin", f"admin:{ADMIN_PASSWORD}", check=False))
                timings.append(time.monotonic() - started)
                assert result.returncode == 0, result.stdout + result.stderr
                assert hub.run(f"sha256sum {MANAGED_FILES}").stdout == before
            print("no-op upgrade seconds:", [round(t, 1) for t in timings])
            assert await kernel.execute("y * 6") == "42"
            await kernel.close()
            await admin.stop_server()
            return timings

    run(scenario())


def test_units_start_at_boot_and_restart_on_failure(hub):
    for unit in ("jupyterhub.service", "caddy.service", "caddy-admin.socket"):
        assert hub.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
    for unit in ("jupyterhub", "caddy"):
        assert hub.run(f"systemctl show -p Restart --value {unit}").stdout.strip() in ("always", "on-failure")


def test_hub_and_proxy_come_back_after_reboot(hub):
    hub.reboot()

    async def scenario():
        deadline = time.monotonic() + 60
        while True:
            try:
                async with HubClient(hub.url()) as admin:
                    await admin.login("admin", ADMIN_PASSWORD)
                    await admin.check_one_plus_one()
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)

    run(scenario())
