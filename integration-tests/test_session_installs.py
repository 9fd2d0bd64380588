"""Issue 13: what a user installs with pip in a server lasts for that server's session, on an installed machine.

Two users (alice, bob) and an admin on one machine. The tests share it and leave it as they found it (servers
stopped, shared environment unchanged), except the last, which kills a server and reboots the machine.
"""

import asyncio
import os
import re
import subprocess
import sys

import pytest
from hubclient import HubClient, HubError
from installed import installed_machine

ADMIN, PASSWORD = "admin", "admin-password"
USERS = {"alice": "alice-password", "bob": "bob-password"}
SESSIONS = "/opt/tljh/sessions"
PIP_TIMEOUT = 300
# Not a timing check: how long to wait for a spawn before calling it failed, on a host at load 30-50.
SPAWN_TIMEOUT = 300
# Everything users install in these tests, served to the machine's pip and uv from a local directory (no
# index): installs do not depend on the network at test time, and nothing else can be installed.
WHEELS = ["cowsay==6.1", "emoji==2.14.1", "pyfiglet==1.0.2", "pyjokes==0.8.3", "requests==2.31.0",
          "jupyter-server==2.14.0"]
WHEEL_CACHE = os.environ.get("TLJH_TEST_WHEEL_CACHE", "/var/tmp/tljh-test-wheels/session-installs")
GUEST_WHEELS = "/srv/wheels"


def local_index(m):
    """Download WHEELS once on the host (cached), copy them in, point the machine's pip and uv only at them."""
    os.makedirs(WHEEL_CACHE, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.11", "-d", WHEEL_CACHE, *WHEELS], check=True)
    m.copy_in(WHEEL_CACHE, GUEST_WHEELS)
    m.run(f"chmod -R a+rX {GUEST_WHEELS} && mkdir -p /etc/uv"
          f" && printf '[global]\\nno-index = true\\nfind-links = {GUEST_WHEELS}\\n' > /etc/pip.conf"
          f" && printf 'no-index = true\\nfind-links = [\"{GUEST_WHEELS}\"]\\n' > /etc/uv/uv.toml")


@pytest.fixture(scope="module")
def hub(os_name):
    with installed_machine(os_name, "--admin", f"{ADMIN}:{PASSWORD}") as m:
        local_index(m)

        async def add_users():
            async with HubClient(m.url()) as admin:
                await admin.login(ADMIN, PASSWORD)
                await admin.create_users(*USERS)

        asyncio.run(add_users())
        yield m


def layer(name):
    return f"{SESSIONS}/jupyter-{name}"


def listing(m, path, user="root"):
    """Every path under ``path`` with its size (a file list to compare before and after)."""
    return m.run(f"find {path} -printf '%p %s\\n' 2>/dev/null | sort", user=user, check=False).stdout.splitlines()


async def session(m, name, password=None):
    person = HubClient(m.url())
    await person.__aenter__()
    await person.login(name, password or USERS.get(name) or PASSWORD)
    person.machine = m
    return person


async def cells(person, *codes, start=True):
    """Start the server (if asked), run each cell in one new kernel, return their outputs."""
    if start:
        await person.start_server(SPAWN_TIMEOUT)
    kernel = await person.open_kernel()
    try:
        return [await kernel.execute(code, timeout=PIP_TIMEOUT) for code in codes]
    finally:
        await kernel.close()


def run(coro):
    return asyncio.run(coro)


async def stop_server(person):
    """Stop the person's server and wait until systemd has unloaded its unit. In test machines systemd cannot
    kill a unit's cgroup ("Failed to kill control group ... Input/output error", cgroup v1 in nspawn) and a
    stopped transient unit can stay loaded until the next job on it; a start of it before then fails ("already
    loaded") and systemdspawner waits out its start_timeout. A `systemctl stop` of the inactive unit is such a
    job. (A failed unit stays loaded until systemdspawner resets it at the next start.)"""
    await person.stop_server()
    await asyncio.to_thread(person.machine.run, unload_script(f"jupyter-{person.username}"))


def unload_script(unit):
    return ("for i in $(seq 300); do"
            f" case $(systemctl show -p LoadState,ActiveState --value {unit} | tr '\\n' ' ') in"
            f" not-found*|*failed*) exit 0;; *inactive*) systemctl stop {unit};; esac; sleep 0.2; done; exit 0")


async def stop(person):
    """Stop the person's server if it runs, and log out."""
    try:
        await stop_server(person)
    except HubError:
        pass  # it was not running
    await person.__aexit__(None, None, None)


IMPORT = "try:\n    import {0}; print('{0}', {0}.__file__)\nexcept ImportError as e:\n    print('ImportError', e)\n"


def test_pip_install_lasts_one_session_and_only_for_its_user(hub):
    shared_before = listing(hub, "/opt/tljh/user")

    async def scenario():
        alice, bob = await session(hub, "alice"), await session(hub, "bob")
        try:
            await cells(alice, "print(1+1)")
            home_before = listing(hub, "/home/jupyter-alice")
            out = await cells(alice, "%pip install cowsay", IMPORT.format("cowsay"), start=False)
            home_after = listing(hub, "/home/jupyter-alice")
            assert "Successfully installed cowsay" in out[0], out[0]
            assert out[1].startswith(f"cowsay {layer('alice')}/lib/python3"), out[1]
            (other,) = await cells(bob, IMPORT.format("cowsay"))
            assert other.startswith("ImportError"), other
            denied = hub.run(f"ls {layer('alice')}", user="jupyter-bob", check=False)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
            await stop_server(alice)
            assert hub.run(f"test -e {layer('alice')}", check=False).returncode == 1
            (again,) = await cells(alice, IMPORT.format("cowsay"))
            assert again.startswith("ImportError"), again
            return home_before, home_after
        finally:
            await stop(alice)
            await stop(bob)

    home_before, home_after = run(scenario())
    assert listing(hub, "/opt/tljh/user") == shared_before
    # A kernel's connection file (named by kernel id) comes and goes in Jupyter's runtime directory; the
    # install itself adds nothing to the home.
    runtime = re.compile(r"^/home/jupyter-alice/\.local/share/jupyter/runtime/kernel-")
    assert [p for p in home_after if not runtime.match(p)] == [p for p in home_before if not runtime.match(p)]
    assert hub.run("ls -d /home/jupyter-alice/.cache /home/jupyter-alice/.local/lib", check=False).returncode != 0


def test_an_older_version_in_the_session_shadows_the_shared_one(hub):
    shared = hub.run("/opt/tljh/user/bin/python -c 'import requests; print(requests.__version__)'").stdout.strip()
    assert shared != "2.31.0"

    async def scenario():
        alice, bob = await session(hub, "alice"), await session(hub, "bob")
        try:
            (out,) = await cells(alice, "%pip install requests==2.31.0")
            assert "Successfully installed requests-2.31.0" in out, out
            (mine,) = await cells(alice, "import requests; print(requests.__version__)", start=False)  # a new kernel
            (theirs,) = await cells(bob, "import requests; print(requests.__version__)")
            return mine.strip(), theirs.strip()
        finally:
            await stop(alice)
            await stop(bob)

    assert run(scenario()) == ("2.31.0", shared)


def test_refused_and_failed_installs_leave_the_session_as_it_was(hub):
    async def scenario():
        alice = await session(hub, "alice")
        try:
            await cells(alice, "print(1)")
            before = listing(hub, layer("alice"))
            server, missing = await cells(alice, "%pip install jupyter-server==2.14.0",
                                          "%pip install no-such-package-for-tljh-tests", start=False)
            after = listing(hub, layer("alice"))
            (allowed,) = await cells(alice, "%pip install --allow-server-change --dry-run --no-deps jupyter-server==2.14.0",
                                     start=False)
            return before, after, server, missing, allowed
        finally:
            await stop(alice)

    before, after, server, missing, allowed = run(scenario())
    assert "(constraint) jupyter-server==" in server and "--allow-server-change" in server, server
    assert "No matching distribution found for no-such-package-for-tljh-tests" in missing, missing
    assert "--allow-server-change" not in missing
    assert after == before
    assert "Would install jupyter_server-2.14.0" in allowed or "Would install jupyter-server-2.14.0" in allowed, allowed


def test_uv_installs_into_the_session_too(hub):
    async def scenario():
        alice = await session(hub, "alice")
        try:
            return await cells(alice, "%uv pip install emoji", IMPORT.format("emoji"))
        finally:
            await stop(alice)

    installed, imported = run(scenario())
    assert "+ emoji==" in re.sub(r"\x1b\[[0-9;]*m", "", installed), installed
    assert imported.startswith(f"emoji {layer('alice')}/"), imported


def test_terminals_pip_and_the_admins_sudo_pip(hub):
    async def scenario():
        alice, admin, bob = await session(hub, "alice"), await session(hub, ADMIN, PASSWORD), await session(hub, "bob")
        try:
            await alice.start_server(SPAWN_TIMEOUT)
            term = await alice.open_terminal()
            which = await term.run("command -v pip python")
            user = await term.run("pip install --user pyfiglet")
            await term.close()
            await admin.start_server(SPAWN_TIMEOUT)
            term = await admin.open_terminal()
            sudo = await term.run("sudo -E pip install pyjokes")
            await term.close()
            (bobs,) = await cells(bob, IMPORT.format("pyjokes"))
            return which, user, sudo, bobs
        finally:
            for person in (alice, admin, bob):
                await stop(person)

    try:
        which, user, sudo, bobs = run(scenario())
        # Only the paths: on a busy machine the typed line can be echoed twice (by the tty before bash starts,
        # then by bash's prompt), and the second echo ends up in the output.
        found = [line for line in which.split() if line.startswith("/")]
        assert found == [f"{layer('alice')}/bin/pip", f"{layer('alice')}/bin/python"], which
        assert "Successfully installed pyfiglet" in user, user
        assert "Successfully installed pyjokes" in sudo, sudo
        assert bobs.startswith("pyjokes /opt/tljh/user/lib/python3"), bobs
    finally:
        hub.run("/opt/tljh/user/bin/pip uninstall -y -q pyjokes", check=False)


def test_off_means_pip_as_before(hub):
    hub.run("tljh-config set user_environment.session_installs false && tljh-config reload")
    try:
        async def scenario():
            alice = await session(hub, "alice")
            try:
                return await cells(alice, "%pip install cowsay", "import os; print(os.environ['PATH'])")
            finally:
                await stop(alice)

        pip, path = run(scenario())
        assert "Permission denied" in pip, pip
        assert SESSIONS not in path
        assert hub.run(f"ls -A {SESSIONS}").stdout.strip() == ""
    finally:
        hub.run("tljh-config unset user_environment.session_installs && tljh-config reload")


PROFILES = """
profiles:
  - display_name: Session packages
    description: What you pip-install lasts until your server stops.
    default: true
  - display_name: Plain pip
    description: The shared environment as it is.
    spawner_override: {session_installs: false}
"""


def test_a_profile_turns_session_installs_off_while_another_keeps_them(hub):
    """Issue 13: ``spawner_override.session_installs: false`` gives that profile's servers pip as before (the
    shared environment is read-only for users, no session layer), while a server started at the same time
    from another profile keeps its session packages."""
    config = hub.run("cat /opt/tljh/config/config.yaml").stdout
    hub.run("cat >> /opt/tljh/config/config.yaml && tljh-config reload hub", input=PROFILES)
    try:
        async def scenario():
            alice, bob = await session(hub, "alice"), await session(hub, "bob")
            try:
                await alice.start_server(SPAWN_TIMEOUT, user_options={"profile": "plain-pip"})
                await bob.start_server(SPAWN_TIMEOUT, user_options={"profile": "session-packages"})
                plain = await cells(alice, "%pip install cowsay", "import os; print(os.environ['PATH'])",
                                    start=False)
                kept = await cells(bob, "%pip install cowsay", IMPORT.format("cowsay"), start=False)
                return plain, kept, hub.run(f"ls -A {SESSIONS}").stdout.split()
            finally:
                await stop(alice)
                await stop(bob)

        (pip, path), (bobs_pip, bobs_import), layers = run(scenario())
        assert "Permission denied" in pip, pip
        assert SESSIONS not in path, path
        assert "Successfully installed cowsay" in bobs_pip, bobs_pip
        assert bobs_import.startswith(f"cowsay {layer('bob')}/lib/python3"), bobs_import
        assert layers == ["jupyter-bob"], layers  # while both ran: a layer for bob's server only
    finally:
        hub.run("cat > /opt/tljh/config/config.yaml && tljh-config reload hub", input=config)
    assert hub.run(f"ls -A {SESSIONS}").stdout.strip() == ""
    assert hub.run("/opt/tljh/user/bin/python -c 'import cowsay'", check=False).returncode != 0


def test_a_killed_server_and_a_reboot_leave_nothing(hub):
    async def install():
        alice = await session(hub, "alice")
        try:
            (out,) = await cells(alice, "%pip install cowsay")
            assert "Successfully installed cowsay" in out, out
        finally:
            await alice.__aexit__(None, None, None)  # the server keeps running

    run(install())
    # check=False: in test machines systemd kills the main process but cannot signal the rest of the cgroup
    # ("Failed to send signal SIGKILL to auxiliary processes: Input/output error", cgroup v1 in nspawn).
    hub.run("systemctl kill --signal=SIGKILL jupyter-alice", check=False)
    # The unit's ExecStopPost removes it at once; the hub's next poll (every 30 s) would too.
    hub.run(f"for i in $(seq 600); do test -e {layer('alice')} || exit 0; sleep 0.1; done; exit 1")

    async def forget():  # the hub learns of the kill at its next poll; tell it now
        alice = await session(hub, "alice")
        await stop(alice)

    run(forget())
    # JupyterHub does not call stop() for a server that is already gone: its poll removed the hub's link to
    # the dead server's socket too
    assert hub.run("test -e /run/tljh/server-links/jupyter-alice/server.sock", check=False).returncode != 0
    run(install())
    assert hub.run(f"test -d {layer('alice')}/lib", check=False).returncode == 0
    hub.reboot()
    assert hub.run(f"ls -A {SESSIONS}").stdout.strip() == ""
    hub.run("for i in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1/hub/login && exit 0; sleep 0.2; done; exit 1")

    async def after_reboot():
        alice = await session(hub, "alice")
        try:
            return await cells(alice, IMPORT.format("cowsay"))
        finally:
            await stop(alice)

    (again,) = run(after_reboot())
    assert again.startswith("ImportError"), again
