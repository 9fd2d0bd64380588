"""Issue 6: upgrades in place — from an older version of this project, across a system Python change,
and after the installer was killed mid-way. Each test boots its own fresh machine (root, systemd-nspawn).

The no-op upgrade (servers and websockets kept, files unchanged) is in test_install.py, where a
hub is already installed.
"""

import asyncio
import os
import random
import shlex
import subprocess
import time
import urllib.request

import pytest
from hubclient import HubClient
from installed import MANAGED_FILES
from machine import REPO_ROOT

from tljh.install.installer import STEPS

# An older version of this project, installed first and then upgraded: before the router/edge split
# into "routes only choose the upstream" (62fdc8c), so the upgrade changes the proxy's configuration too.
OLD_COMMIT = os.environ.get("TLJH_TEST_OLD_COMMIT", "0f88e73")
ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-1"
DAVE_PASSWORD = "dave-password-1"
PLUGIN = "/srv/tljh-src/integration-tests/plugins/tljh-test-plugin"
# Whatever it takes: small, pure Python, and not a dependency of anything the installer puts there.
ADMIN_PACKAGE, ADMIN_MODULE = "cowsay==6.1", "cowsay"
CONVERGED_FILES = MANAGED_FILES + " /opt/tljh/state/caddy/caddy.json"


def run(coro):
    return asyncio.run(coro)


async def admin_runs_one_plus_one(machine):
    async with HubClient(machine.url()) as admin:
        await admin.login(ADMIN, ADMIN_PASSWORD)
        await admin.check_one_plus_one()


def admin_installs_package(machine):
    """What `sudo -E pip install X` does for an admin: install into the shared user environment."""
    machine.run(f"/opt/tljh/user/bin/python -m pip install --quiet {ADMIN_PACKAGE}")
    machine.run(f"/opt/tljh/user/bin/python -c 'import {ADMIN_MODULE}'")


def copy_commit(machine, commit, guest_dir):
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", f"--prefix={os.path.basename(guest_dir)}/",
                              commit], capture_output=True)
    if archive.returncode != 0:
        pytest.fail(f"this test installs commit {commit} first and needs the repository's history "
                    f"(a full clone, not --depth 1): {archive.stderr.decode().strip()}", pytrace=False)
    machine.run(["rm", "-rf", guest_dir])
    machine.copy_tar(archive.stdout, os.path.dirname(guest_dir))


def test_upgrade_from_an_older_version_keeps_everything(machine):
    copy_commit(machine, OLD_COMMIT, "/srv/tljh-old")
    old = machine.run(["python3", "/srv/tljh-old/bootstrap/bootstrap.py", "--admin", f"{ADMIN}:{ADMIN_PASSWORD}"],
                      env={"TLJH_BOOTSTRAP_PIP_SPEC": "/srv/tljh-old"}, check=False, timeout=1200)
    assert old.returncode == 0, f"installing {OLD_COMMIT} failed:\n{old.stdout}\n{old.stderr}"

    async def use_the_old_hub():
        async with HubClient(machine.url()) as admin:
            await admin.login(ADMIN, ADMIN_PASSWORD)
            await admin.create_users("dave")
            # kept running across the upgrade (on a TCP port, as servers of the old version listen)
            await admin.start_server()
            token = admin.token
        async with HubClient(machine.url()) as dave:
            await dave.login("dave", DAVE_PASSWORD)
            await dave.start_server()
            kernel = await dave.open_kernel()
            await kernel.execute("open('/home/jupyter-dave/notes.txt', 'w').write('written before the upgrade')")
            await kernel.close()
            await dave.stop_server()
        return token

    admin_token = run(use_the_old_hub())
    admin_installs_package(machine)
    machine.run("tljh-config set limits.memory 1G && tljh-config add-item users.allowed dave && tljh-config reload hub")
    # A database made by an older JupyterHub: one schema revision behind the one installed. The hub stays
    # stopped (its own --upgrade-db would otherwise upgrade it at start): the installer must back it up and upgrade.
    machine.run("systemctl stop jupyterhub")
    machine.run("/opt/tljh/hub/bin/python - <<'EOF'\n"
                "import tempfile, alembic.command, alembic.config\n"
                "from jupyterhub import dbutil\n"
                "with tempfile.TemporaryDirectory() as tmp:\n"
                "    dbutil.write_alembic_ini(tmp + '/alembic.ini', 'sqlite:////opt/tljh/state/jupyterhub.sqlite')\n"
                "    alembic.command.downgrade(alembic.config.Config(tmp + '/alembic.ini'), '-1')\n"
                "EOF")
    kept = ("/opt/tljh/config/config.yaml /opt/tljh/state/jupyterhub_cookie_secret /opt/tljh/state/passwords.dbm* "
            "/home/jupyter-dave/notes.txt")
    before = machine.run(f"sha256sum {kept} && id jupyter-dave").stdout

    upgrade = machine.install_tljh("--admin", ADMIN, check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    print(upgrade.stdout)
    assert "Upgrading The Littlest JupyterHub in place" in upgrade.stdout
    assert "the previous database is saved at /opt/tljh/state/backups/jupyterhub.sqlite." in upgrade.stdout
    backup = upgrade.stdout.split("the previous database is saved at ", 1)[1].split()[0]
    assert machine.run(f"stat -c %a {backup}").stdout.strip() == "600"
    assert machine.run(f"sha256sum {kept} && id jupyter-dave").stdout == before
    assert machine.run("tljh-config show").stdout.count("1G") == 1
    machine.run(f"/opt/tljh/user/bin/python -c 'import {ADMIN_MODULE}'")
    hub_version = machine.run("/opt/tljh/hub/bin/python -c 'import jupyterhub; print(jupyterhub.__version__)'").stdout
    user_version = machine.run("/opt/tljh/user/bin/python -c 'import jupyterhub; print(jupyterhub.__version__)'").stdout
    assert hub_version == user_version
    # the old two-process proxy (edge and router, as root) is gone; one proxy without root serves
    assert machine.run("systemctl cat caddy-router.service", check=False).returncode != 0
    assert machine.run("test -e /etc/systemd/system/caddy-router.service", check=False).returncode != 0
    assert machine.run("ls /opt/tljh/state/caddy").stdout.split() == ["caddy.json"]
    assert machine.run("ps -o user= -C caddy").stdout.split() == ["tljh-proxy"]
    # the admin's server from before the upgrade still answers, through the new proxy
    status = machine.run(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: token {admin_token}' "
                         "http://127.0.0.1/user/admin/api/status").stdout
    assert status == "200", status

    async def use_the_new_hub():
        async with HubClient(machine.url()) as admin:
            await admin.login(ADMIN, ADMIN_PASSWORD)  # the FirstUse password set before the upgrade
            names = sorted(u["name"] for u in await admin.api("GET", "hub/api/users"))
            assert names == ["admin", "dave"]
            await admin.stop_server()
        async with HubClient(machine.url()) as dave:
            await dave.login("dave", DAVE_PASSWORD)
            await dave.start_server()
            kernel = await dave.open_kernel()
            text = await kernel.execute("open('/home/jupyter-dave/notes.txt').read()")
            cow = await kernel.execute(f"import {ADMIN_MODULE}; 1+1")
            await kernel.close()
            await dave.stop_server()
            return text, cow

    assert run(use_the_new_hub()) == ("'written before the upgrade'", "2")


def break_interpreters(machine, prefix):
    """What an OS upgrade does to a venv: the system Python its interpreter links to is gone."""
    machine.run(
        f"cd {prefix}/bin && for f in python*; do "
        "if [ -L \"$f\" ] && case \"$(readlink \"$f\")\" in /*) true;; *) false;; esac; then "
        "ln -sfn \"$(readlink \"$f\")-removed-by-os-upgrade\" \"$f\"; fi; done"
    )
    assert machine.run(f"{prefix}/bin/python -c 1", check=False).returncode != 0, f"{prefix} still runs"


def test_system_python_change_rebuilds_venvs_with_their_packages(machine):
    first = machine.install_tljh("--admin", f"{ADMIN}:{ADMIN_PASSWORD}", "--plugin", PLUGIN, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    admin_installs_package(machine)
    for prefix in ("/opt/tljh/hub", "/opt/tljh/user"):
        break_interpreters(machine, prefix)

    # The same command without --plugin: the plugin must come back because it was installed, not because it was asked.
    rerun = machine.install_tljh("--admin", ADMIN, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    print(rerun.stdout)
    assert "The hub environment does not run with this system's Python any more: rebuilding it." in rerun.stdout
    assert "default: rebuilt for this system's Python, keeping" in rerun.stdout
    assert "warning" not in rerun.stdout
    for prefix in ("/opt/tljh/hub", "/opt/tljh/user"):
        machine.run(f"{prefix}/bin/python -c 1")
        assert machine.run(f"test -e {prefix}.previous", check=False).returncode != 0
    machine.run(f"/opt/tljh/user/bin/python -c 'import {ADMIN_MODULE}, six'")  # the admin's and the plugin's
    machine.run("/opt/tljh/hub/bin/python -c 'import tljh_test_plugin'")
    with urllib.request.urlopen(machine.url("/hub/login"), timeout=10) as r:
        assert "tljh-test-plugin was here" in r.read().decode()

    run(admin_runs_one_plus_one(machine))


KILL_UNIT = "tljh-install-killed"


def install_and_kill_at(machine, line, delay=0.0):
    """Run bootstrap as a transient unit and SIGKILL its whole cgroup (uv and all) ``delay`` seconds after it
    prints ``line``: what a power cut does to the installer."""
    machine.run("rm -f /root/killed-install.log")
    env = "--setenv=TLJH_BOOTSTRAP_PIP_SPEC=/srv/tljh-src --setenv=PYTHONUNBUFFERED=1"
    machine.run(f"systemd-run --quiet --collect --unit={KILL_UNIT} {env} -p StandardOutput=file:/root/killed-install.log "
                f"-p StandardError=file:/root/killed-install.log python3 /srv/tljh-src/bootstrap/bootstrap.py "
                f"--admin {ADMIN}:{ADMIN_PASSWORD}")
    waited = machine.run(
        f"for i in $(seq 1 3000); do grep -qF {shlex.quote(line)} /root/killed-install.log && break; "
        f"systemctl is-active --quiet {KILL_UNIT} || break; sleep 0.01; done; sleep {delay}; "
        f"systemctl kill --signal=KILL {KILL_UNIT}; cat /root/killed-install.log",
        check=False,
    )
    assert line in waited.stdout, f"the install ended before printing {line!r}:\n{waited.stdout}"
    assert "JupyterHub is running: open" not in waited.stdout, f"the install finished before the kill at {line!r}"
    for _ in range(100):
        if machine.run(f"systemctl is-active --quiet {KILL_UNIT}", check=False).returncode != 0:
            break
        time.sleep(0.1)
    return waited.stdout


def test_killed_install_completes_on_rerun_and_reruns_converge(machine):
    machine.copy_checkout()
    # First while bootstrap makes the hub venv (python3 -m venv and ensurepip take a few seconds), then a few
    # seconds into the longest step of a first install: building the default environment (/opt/tljh/user).
    install_and_kill_at(machine, "Installing The Littlest JupyterHub", delay=1)
    install_and_kill_at(machine, "] Building environments", delay=2)
    # Then at a random point of what a rerun announces: bootstrap's phase and each installer step but the last
    # (after which nothing is left to interrupt).
    points = ["Installing the installer from"] + [f"] {name}" for name, _ in STEPS[:-1]]
    seed = int(os.environ.get("TLJH_TEST_SEED", time.time()))
    chosen = random.Random(seed).choice(points)
    print(f"second kill at {chosen!r} (TLJH_TEST_SEED={seed} repeats it)")
    install_and_kill_at(machine, chosen)

    completed = machine.install_tljh("--admin", f"{ADMIN}:{ADMIN_PASSWORD}", check=False)
    assert completed.returncode == 0, f"rerun after kills at {chosen!r} failed:\n{completed.stdout}\n{completed.stderr}"

    run(admin_runs_one_plus_one(machine))

    sums = []
    for _ in range(3):
        again = machine.install_tljh("--admin", f"{ADMIN}:{ADMIN_PASSWORD}", check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        sums.append(machine.run(f"sha256sum {CONVERGED_FILES}").stdout)
    assert sums[0] == sums[1] == sums[2], "\n".join(sums)
