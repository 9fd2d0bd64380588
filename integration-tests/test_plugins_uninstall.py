"""Issue 6: TLJH plugins load unchanged and every hook runs; uninstall and reinstall.

One fresh machine, scenario in order: install with the test plugin -> every hook observed -> a user
spawns (tljh_new_user_create) -> uninstall leaves no units, venvs or listeners but keeps homes ->
reinstall finds the kept home. (Plugins asking for conda packages: test_dropin.py.)
"""

import asyncio
import json
import threading
import time
import urllib.request

import pytest
from hubclient import HubClient
from machine import Machine

PLUGIN = "/srv/tljh-src/integration-tests/plugins/tljh-test-plugin"
PASSWORD = "carol-password-1"


@pytest.fixture(scope="module")
def machine(os_name):
    with Machine.boot(os_name) as m:
        m.copy_checkout()
        yield m


def calls(machine):
    text = machine.run("cat /var/log/tljh-test-plugin.jsonl", check=False).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_install_with_plugin_runs_every_install_hook(machine):
    result = machine.install_tljh("--admin", "carol", "--plugin", PLUGIN, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = [c["hook"] for c in calls(machine)]
    for hook in (
        "tljh_extra_user_pip_packages",
        "tljh_extra_hub_pip_packages",
        "tljh_extra_apt_packages",
        "tljh_config_post_install",
        "tljh_post_install",
        "tljh_custom_jupyterhub_config",
    ):
        assert hook in hooks, f"{hook} never called: {hooks}"
    assert hooks.index("tljh_post_install") > hooks.index("tljh_config_post_install")
    post = next(c for c in calls(machine) if c["hook"] == "tljh_config_post_install")
    assert post["arguments"]["admins"] == ["carol"]


def test_plugin_effects_are_in_place(machine):
    assert machine.run("/opt/tljh/user/bin/python -c 'import six; print(six.__version__)'").stdout.strip() == "1.16.0"
    assert machine.run("/opt/tljh/hub/bin/python -c 'import tomli_w'").returncode == 0
    assert machine.run("command -v tree").returncode == 0
    assert "every: 61" in machine.run("cat /opt/tljh/config/config.yaml").stdout
    with urllib.request.urlopen(machine.url("/hub/login"), timeout=10) as r:
        assert "tljh-test-plugin was here" in r.read().decode()


def test_new_user_hook_gets_the_unix_name(machine):
    async def scenario():
        async with HubClient(machine.url()) as carol:
            await carol.login("carol", PASSWORD)  # carol is an admin (--admin carol): she exists
            await carol.start_server()
            kernel = await carol.open_kernel()
            await kernel.execute("open('/home/jupyter-carol/kept.txt', 'w').write('still here')")
            await kernel.close()
            await carol.stop_server()

    asyncio.run(scenario())
    created = [c["arguments"] for c in calls(machine) if c["hook"] == "tljh_new_user_create"]
    assert created == [{"username": "jupyter-carol"}]


def test_uninstall_removes_everything_but_homes(machine):
    result = machine.run("tljh uninstall --yes", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for unit in ("jupyterhub.service", "caddy.service", "caddy-admin.socket"):
        assert machine.run(f"systemctl cat {unit}", check=False).returncode != 0
    for path in ("/opt/tljh", "/var/lib/tljh-proxy", "/run/tljh"):
        assert machine.run(f"ls {path}", check=False).returncode != 0, path
    assert machine.run("id tljh-proxy", check=False).returncode != 0
    for path in ("/usr/bin/tljh-config", "/usr/bin/tljh", "/etc/sudoers.d/jupyterhub-admins",
                 "/etc/profile.d/tljh-user-environment.sh", "/etc/tmpfiles.d/tljh-sessions.conf"):
        assert machine.run(f"test -e {path}", check=False).returncode != 0, path
    listeners = machine.run("ss -Hltnp").stdout
    assert ":80 " not in listeners and ":15001 " not in listeners, listeners
    assert machine.run("cat /home/jupyter-carol/kept.txt").stdout == "still here"
    backups = machine.run("ls /var/backups/").stdout.split()
    assert any(name.startswith("tljh-") for name in backups)
    assert machine.run("stat -c %a /var/backups/" + [n for n in backups if n.startswith("tljh-")][0]).stdout.strip() == "600"


def poll_progress_page(url, pages, stop):
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                pages.append(r.read().decode())
        except OSError:
            pass
        time.sleep(0.2)


def test_reinstall_with_progress_page_sees_kept_home(machine):
    pages, stop = [], threading.Event()
    poller = threading.Thread(target=poll_progress_page, args=(machine.url(), pages, stop))
    poller.start()
    try:
        result = machine.install_tljh("--admin", "carol:carol-secret-pw", "--show-progress-page", check=False)
    finally:
        stop.set()
        poller.join()
    assert result.returncode == 0, result.stdout + result.stderr
    # TLJH's installer prints this line when it stops the page; scripts wait for it (issue 17).
    assert "Progress page server stopped successfully." in result.stdout.splitlines()
    progress = [p for p in pages if "Installing JupyterHub" in p]
    assert progress, "the progress page never answered on port 80 during the install"
    assert any("Building environments" in p for p in progress)
    for page in progress:
        # Step names only: no secrets, no raw log.
        assert "carol-secret-pw" not in page and "Traceback" not in page and "uv pip" not in page

    async def scenario():
        async with HubClient(machine.url()) as carol:
            await carol.login("carol", "carol-secret-pw")
            await carol.start_server()
            kernel = await carol.open_kernel()
            text = await kernel.execute("open('/home/jupyter-carol/kept.txt').read()")
            await kernel.close()
            await carol.stop_server()
            return text

    assert asyncio.run(scenario()) == "'still here'"
