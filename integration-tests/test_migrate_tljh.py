"""Issue 20: the install command run on a server that runs The Littlest JupyterHub 2 takes it over in place.

One machine for the module (the tests read it in order; the last two rerun the installer): tljh2/make_server.py
makes a fresh machine look like a TLJH 2 server from the outside (see its docstring for what stands in for
what), then the install command runs as a TLJH admin would run it again, with a plugin that imports every name
of TLJH that published plugins import (tests/test_plugin_import_surface.py lists them).
"""

import asyncio
import json

import pytest
from hubclient import HubClient
from installed import MANAGED_FILES
from machine import Machine

PASSWORDS = {"admin": "admin-old-password", "alice": "alice-old-password", "bob@uni.example": "bob-old-password"}
PLUGIN = "/srv/tljh-src/integration-tests/plugins/tljh-import-surface-plugin"
PLUGIN_RECORD = "/var/log/tljh-import-surface-plugin.jsonl"
OLD_ENV = "/opt/tljh/user.tljh-conda"
CONVERGED = MANAGED_FILES + " /opt/tljh/state/tljh-migration.json /opt/tljh/user/share/jupyter/kernels/course/kernel.json"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def tljh_server(os_name):
    with Machine.boot(os_name) as m:
        m.copy_checkout()
        made = m.run("python3 /srv/tljh-src/integration-tests/tljh2/make_server.py", check=False, timeout=1200)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "'alice', 'bob@uni.example'" in made.stdout and "jupyterhub 5." in made.stdout, made.stdout
        # Before: TLJH's traefik holds port 80 and answers 404 for the hub's pages.
        assert m.run("systemctl is-active traefik.service").stdout.strip() == "active"
        m.before = m.run("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/hub/api", check=False).stdout
        m.result = m.install_tljh("--plugin", PLUGIN, check=False)
        yield m


def test_install_says_what_it_takes_over_and_succeeds(tljh_server):
    m, result = tljh_server, tljh_server.result
    assert m.before == "404"
    assert result.returncode == 0, result.stdout + result.stderr + m.diagnostics()
    out = result.stdout
    assert "This server runs The Littlest JupyterHub (TLJH). Taking it over in place:" in out
    assert "stopped traefik.service; disabled traefik.service; moved /opt/tljh/user to /opt/tljh/user.tljh-conda" in out
    # The program TLJH's conda environment had is named, with how to get it back.
    assert "conda-only packages not carried over: hello-tool 2.12" in result.stderr
    assert "tljh_extra_user_conda_packages" in result.stderr


def test_traefik_is_stopped_and_disabled_with_its_files_kept(tljh_server):
    m = tljh_server
    assert m.run("systemctl is-enabled traefik.service", check=False).stdout.strip() == "disabled"
    assert m.run("systemctl is-active traefik.service", check=False).stdout.strip() == "inactive"
    for name in ("traefik.toml", "rules/dynamic.toml", "acme.json", "traefik-api.secret"):
        m.run(f"test -f /opt/tljh/state/{name}")
    # Port 80 is this hub's now: its proxy answers with this JupyterHub's version.
    version = m.run("/opt/tljh/hub/bin/python -c 'import jupyterhub; print(jupyterhub.__version__)'").stdout.strip()
    headers = m.run("curl -s -D - -o /dev/null http://127.0.0.1/hub/api").stdout
    assert f"x-jupyterhub-version: {version}" in headers.lower()
    # TLJH's own distribution in the hub environment was replaced, its modules with it.
    m.run("test -z \"$(ls /opt/tljh/hub/lib/python3*/site-packages/tljh/traefik.py 2>/dev/null)\"")
    # The Let's Encrypt settings are TLJH's keys, read as they are (and traefik_api is ignored, not refused).
    shown = m.run("tljh-config show").stdout
    assert "hub-admin@uni.example" in shown and "hub.uni.example" in shown


async def logs_in_and_reads_old_file(m, name):
    async with HubClient(m.url()) as client:
        await client.login(name, PASSWORDS[name])
        await client.start_server(timeout=120)
        out = await client.run_code(
            "import getpass, pathlib; print(getpass.getuser(), pathlib.Path('notes-from-tljh.txt').read_text().strip())")
        await client.stop_server()
        return out.strip()


def test_alice_logs_in_with_her_old_password_to_her_old_account_and_files(tljh_server):
    out = run(logs_in_and_reads_old_file(tljh_server, "alice"))
    assert out == "jupyter-alice alice's notes, written under TLJH"


# TLJH named bob's account jupyter-bob@uni.example; the installer's step 'Recording users' Unix accounts' adopts
# it as it is (tljh.system.unix_accounts), where this project's old name rule hashed names with '@'.
def test_bob_whose_name_is_an_email_keeps_his_account_and_files(tljh_server):
    out = run(logs_in_and_reads_old_file(tljh_server, "bob@uni.example"))
    assert out == "jupyter-bob@uni.example bob@uni.example's notes, written under TLJH"
    # No second, empty account was made for him.
    assert tljh_server.run("getent passwd | grep -c '^jupyter-bob'").stdout.strip() == "1"


def test_pip_packages_kernelspec_and_configuration_came_over(tljh_server):
    m = tljh_server
    m.run("/opt/tljh/user/bin/python -c 'import cowsay, pyfiglet; assert pyfiglet.__version__ == \"1.0.2\"'")
    kernels = json.loads(m.run("/opt/tljh/user/bin/jupyter kernelspec list --json").stdout)["kernelspecs"]
    assert kernels["course"]["spec"]["env"] == {"COURSE": "stats101"}
    assert kernels["course"]["spec"]["argv"][0] == "/opt/tljh/user/bin/python"
    m.run("grep -q shutdown_no_activity_timeout /opt/tljh/user/etc/jupyter/jupyter_server_config.py")
    # The new environment is a venv of this system's Python, and nobody but root writes it.
    m.run("test -f /opt/tljh/user/pyvenv.cfg && test ! -e /opt/tljh/user/conda-meta")


def test_the_program_is_listed_and_the_old_environment_kept(tljh_server):
    m = tljh_server
    status = m.run("tljh status", check=False).stdout
    assert "from TLJH: conda-only packages not carried over: hello-tool 2.12" in status
    report = m.run("tljh migrate").stdout
    assert "hello-tool" in report and f"{OLD_ENV}/bin" in report and "tljh migrate --cleanup" in report
    assert m.run(f"{OLD_ENV}/bin/hello").stdout.strip() == "Hello, world!"
    m.run(f"test -d {OLD_ENV}/conda-meta && test ! -e /opt/tljh/user/bin/hello")
    # --cleanup asks first; without a terminal it refuses and removes nothing.
    refused = m.run("tljh migrate --cleanup < /dev/null", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    m.run(f"test -d {OLD_ENV}")


def test_plugin_importing_tljhs_names_loads_and_runs_its_hooks(tljh_server):
    m = tljh_server

    def events():
        text = m.run(f"cat {PLUGIN_RECORD}", check=False).stdout
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    post = [e for e in events() if e["event"] == "tljh_post_install"]
    assert post and post[-1]["unit_active"] and post[-1]["config_file"] and post[-1]["base_url"] == "/"
    assert "import_surface_plugin" in post[-1]["plugins"]
    config = [e for e in events() if e["event"] == "tljh_custom_jupyterhub_config"]
    assert config and config[-1] == {"event": "tljh_custom_jupyterhub_config", "spawner": "UserCreatingSpawner",
                                     "account": "jupyter-alice"}
    m.run("systemctl is-enabled tljh-surface-plugin.service && getent group surface-plugin")

    async def new_user():
        async with HubClient(m.url()) as admin:
            await admin.login("admin", PASSWORDS["admin"])
            await admin.create_users("carol")
        async with HubClient(m.url()) as carol:
            await carol.login("carol", "carol-password-1")
            await carol.start_server(timeout=120)
            await carol.stop_server()

    run(new_user())
    assert {"event": "tljh_new_user_create", "username": "jupyter-carol"} in events()
    assert "surface-plugin" in m.run("id -nG jupyter-carol").stdout.split()


def test_rerun_changes_nothing(tljh_server):
    m = tljh_server
    before = m.run(f"sha256sum {CONVERGED}; /opt/tljh/user/bin/python -m pip list --format freeze").stdout
    result = m.install_tljh("--plugin", PLUGIN, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "taken over from TLJH earlier; its environment is kept at /opt/tljh/user.tljh-conda" in result.stdout
    assert "carried over earlier" in result.stdout and "Taking it over in place" not in result.stdout
    assert m.run(f"sha256sum {CONVERGED}; /opt/tljh/user/bin/python -m pip list --format freeze").stdout == before
    assert m.run("systemctl is-enabled traefik.service", check=False).stdout.strip() == "disabled"


def test_a_foreign_server_on_port_80_fails_the_install_naming_it(tljh_server):
    """Not only traefik: any server holding the proxy's port is named, and the install does not claim success."""
    m = tljh_server
    m.run("systemctl stop caddy.service")
    m.run("systemd-run --unit=other-web -p KillMode=process /usr/bin/python3 -m http.server 80 --directory /tmp")
    try:
        m.run("for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1/ && exit 0; sleep 0.1; done; exit 1")
        result = m.install_tljh("--plugin", PLUGIN, check=False)
        assert result.returncode == 1, result.stdout
        assert "port 80 is held by /usr/bin/python3 -m http.server 80 --directory /tmp" in result.stderr
        assert "unit other-web.service" in result.stderr and "systemctl disable --now other-web.service" in result.stderr
        assert "JupyterHub is running" not in result.stdout
    finally:
        m.run("systemctl stop other-web.service", check=False)
    result = m.install_tljh("--plugin", PLUGIN, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
