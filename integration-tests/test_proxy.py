"""Issues 15 and 19 (part 3): one proxy process without root, a route table that never reloads it, and
users' servers on unix sockets only their owner and the proxy can open.

One machine, installed with the real bootstrap from this checkout; the admin's server runs while the tests
act as the admin (through the proxy, as a browser), as bob (another user, in a terminal of his own), and as
the proxy's own account. Needs root and systemd-nspawn.
"""

import asyncio
import re

import pytest
from hubclient import HubClient
from installed import installed_machine

ADMIN_PASSWORD = "admin-password-1"
BOB_PASSWORD = "bob-password-1"
ADMIN_SOCKET = "/run/tljh/servers/jupyter-admin/server.sock"
AS_PROXY = "setpriv --reuid=tljh-proxy --regid=tljh-proxy --clear-groups"


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"admin:{ADMIN_PASSWORD}") as m:
        yield m


def run(coro):
    return asyncio.run(coro)


def proxy_pid(hub):
    return hub.run("systemctl show -p MainPID --value caddy").stdout.strip()


@pytest.fixture(scope="module")
def admin_server(hub):
    """The admin's server, running for the tests of this module; (HubClient token, base URL)."""

    async def start():
        async with HubClient(hub.url()) as admin, HubClient(hub.url()) as bob:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.create_users("bob")
            # bob's Unix account is made at his first server start
            await bob.login("bob", BOB_PASSWORD)
            await bob.start_server()
            await bob.stop_server()
            await admin.start_server()
            return admin.token

    token = run(start())
    yield token

    async def stop():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            await admin.stop_server()

    run(stop())


def status_through_proxy(hub, token, path="user/admin/api/status"):
    """HTTP status of an authenticated request through the proxy's public port (as a browser's)."""
    return hub.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: token {token}' "
        f"http://127.0.0.1/{path}", check=False
    ).stdout.strip()


def test_proxy_runs_as_its_own_user_with_one_capability(hub):
    pid = proxy_pid(hub)
    assert hub.run(f"ps -o user= -p {pid}").stdout.strip() == "tljh-proxy"
    caps = dict(re.findall(r"^(Cap\w+):\s+(\w+)$", hub.run(f"cat /proc/{pid}/status").stdout, re.M))
    # CAP_NET_BIND_SERVICE (bit 10) and nothing else, in every set
    assert {caps[k] for k in ("CapPrm", "CapEff", "CapBnd", "CapAmb")} == {"0000000000000400"}, caps
    assert hub.run("pgrep -u root -x caddy", check=False).returncode != 0, "a caddy process runs as root"
    score = hub.run("systemd-analyze security caddy.service --no-pager").stdout.strip().splitlines()[-1]
    print(score)
    assert float(re.search(r"level for caddy.service: ([\d.]+)", score).group(1)) <= 2.0, score


SECRETS = ["/opt/tljh/state/jupyterhub_cookie_secret", "/opt/tljh/config/config.yaml",
           "/opt/tljh/state/caddy/caddy.json", "/opt/tljh/state/jupyterhub.sqlite"]


def test_the_proxys_account_cannot_read_secrets_or_homes(hub, admin_server):
    hub.run("echo private > /home/jupyter-admin/notes.txt && chown jupyter-admin /home/jupyter-admin/notes.txt")
    for path in SECRETS + ["/home/jupyter-admin/notes.txt"]:
        assert hub.run(f"test -r {path}").returncode == 0, path  # (it exists: the check below can fail)
        # as the proxy's account...
        result = hub.run(f"{AS_PROXY} cat {path}", check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr, (path, result.stdout[:100])
        # ...and inside the running proxy's own view of the files (its sandbox hides them as well)
        result = hub.run(f"nsenter -t {proxy_pid(hub)} -m -- {AS_PROXY} cat {path}", check=False)
        assert result.returncode != 0, (path, result.stdout[:100])


def test_bob_cannot_connect_to_the_admins_server(hub, admin_server):
    connect = f"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{ADMIN_SOCKET}\")'"
    # the owner can (so the attempt below can succeed; it fails because of who bob is)
    assert hub.run(connect, user="jupyter-admin", check=False).returncode == 0
    result = hub.run(connect, user="jupyter-bob", check=False)
    assert result.returncode != 0 and "PermissionError" in result.stderr, result.stderr
    for what in ("/run/tljh/servers", "/run/tljh/routes"):
        assert hub.run(f"ls {what}", user="jupyter-bob", check=False).returncode != 0, what
    # and there is no TCP port to try instead: the admin's server listens on its socket only
    uid = hub.run("id -u jupyter-admin").stdout.strip()
    listeners = hub.run("ss -Hltne").stdout
    assert f"uid:{uid} " not in listeners, listeners
    assert status_through_proxy(hub, admin_server) == "200"


def test_a_user_cannot_point_their_route_at_another_users_server(hub, admin_server):
    """Bob owns his socket's directory and replaces his socket with a symlink to the admin's (which he cannot
    open, but the proxy can). Requests to bob's URL still reach bob's own server, never the admin's: the hub
    and the proxy connect through the hub's link to the socket bob's server bound."""

    async def scenario():
        async with HubClient(hub.url()) as bob:
            await bob.login("bob", BOB_PASSWORD)
            await bob.start_server()
            try:
                bob_socket = "/run/tljh/servers/jupyter-bob/server.sock"
                hub.run(f"mv {bob_socket} {bob_socket}.moved && ln -s {ADMIN_SOCKET} {bob_socket}", user="jupyter-bob")
                assert hub.run(f"stat -c %F {bob_socket}").stdout.strip() == "symbolic link"
                # bob's own server answers his own URL (through the proxy, as a browser's request)
                assert status_through_proxy(hub, bob.token, "user/bob/api/status") == "200"
                # nobody but root and the proxy may even look at the links
                assert hub.run("ls /run/tljh/server-links", user="jupyter-bob", check=False).returncode != 0
            finally:
                hub.run(f"rm -f {bob_socket}", user="jupyter-bob")
                await bob.stop_server()

    run(scenario())
    # the stop removed the hub's link to bob's socket
    assert hub.run("test -e /run/tljh/server-links/jupyter-bob/server.sock", check=False).returncode != 0
    assert status_through_proxy(hub, admin_server) == "200"


def test_route_changes_do_not_touch_the_proxy(hub, admin_server):
    """Bob's server starting and stopping changes the routes; the proxy process is not reloaded or restarted,
    and the admin's open kernel websocket stays."""
    pid = proxy_pid(hub)
    since = hub.run("date +%s").stdout.strip()

    async def scenario():
        async with HubClient(hub.url()) as admin, HubClient(hub.url()) as bob:
            await admin.login("admin", ADMIN_PASSWORD)
            kernel = await admin.open_kernel()
            assert await kernel.execute("z = 5; z") == "5"
            await bob.login("bob", BOB_PASSWORD)
            await bob.start_server()
            routes = hub.run("ls /run/tljh/routes/_user").stdout.split()
            assert routes == ["_admin", "_bob"], routes
            await bob.stop_server()
            assert await kernel.execute("z * 3") == "15"
            await kernel.close()

    run(scenario())
    assert proxy_pid(hub) == pid
    log = hub.run(f"journalctl -u caddy --since @{since} --no-pager -o cat").stdout
    assert "load" not in log and "Reload" not in log, log


def wait_for_hub(hub, seconds=600):
    """Until the hub answers its API (a start takes seconds; on a loaded test host, minutes)."""
    hub.run(f"for i in $(seq {seconds}); do curl -sf -o /dev/null http://127.0.0.1:15001/hub/api && exit 0; sleep 1;"
            " done; exit 1")


def test_users_stay_connected_while_the_hub_restarts(hub, admin_server):
    hub.run("systemctl stop jupyterhub")
    try:
        assert status_through_proxy(hub, admin_server) == "200"
    finally:
        hub.run("systemctl start jupyterhub")
        wait_for_hub(hub)


def test_routes_survive_a_proxy_restart(hub, admin_server):
    hub.run("systemctl restart caddy")
    assert status_through_proxy(hub, admin_server) == "200"


def test_reload_proxy_keeps_kernels_connected(hub, admin_server):
    async def scenario():
        async with HubClient(hub.url()) as admin:
            await admin.login("admin", ADMIN_PASSWORD)
            kernel = await admin.open_kernel()
            assert await kernel.execute("w = 2; w") == "2"
            result = await asyncio.to_thread(hub.run, "tljh-config reload proxy", check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            assert await kernel.execute("w + 40") == "42"
            await kernel.close()

    run(scenario())


def test_a_stopped_server_gets_the_hubs_error_page(hub, admin_server):
    """The server dies behind the hub's back: the proxy answers with the hub's page, 503."""
    hub.run("systemctl kill --signal=KILL jupyter-admin")
    try:
        page = hub.run("curl -s -w '\\n%{http_code}' http://127.0.0.1/user/admin/lab", check=False).stdout
        body, status = page.rsplit("\n", 1)
        assert status == "503", page[-500:]
        assert "Your server appears to be down" in body, body[-1000:]
    finally:
        async def restart():
            async with HubClient(hub.url()) as admin:
                await admin.login("admin", ADMIN_PASSWORD)
                # the hub notices the dead server at its next poll; ask for a start until it takes
                for _ in range(60):
                    model = await admin.api("GET", "hub/api/users/admin")
                    if not model.get("servers"):
                        break
                    await asyncio.sleep(1)
                await admin.start_server()

        run(restart())
    assert status_through_proxy(hub, admin_server) == "200"
