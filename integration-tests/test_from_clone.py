"""Issue 16: a newcomer's first run. A fresh server with python3 (and git, installed with apt as the README
says), and the README's first command as written — `git clone` of this project, then bootstrap from the
clone, no environment variable — installs a hub that logs in and runs code."""

import asyncio
import os
import subprocess
import tempfile
import time

import pytest
from hubclient import HubClient
from machine import REPO_ROOT, Machine

CLONE = "/root/tljh"  # where the README's command clones to, run in root's home (mode 0700)
PASSWORD = "alice-first-password"


def readme_install_command():
    """The README's first command, with its placeholders filled in for this machine."""
    readme = (REPO_ROOT / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if line.startswith("    "))
    assert command.startswith("git clone <repository> tljh && cd tljh && sudo python3 bootstrap/bootstrap.py"), command
    assert "TLJH_" not in command
    return command.replace("<repository>", "/srv/tljh.git").replace("alice:PASSWORD", f"alice:{PASSWORD}")


def snapshot_repository(bare):
    """A bare git repository whose `main` is this checkout as it is on disk (tracked and untracked files that
    are not ignored), in one parentless commit: what `git clone` of the branch under test would give, without
    touching this checkout's refs or index."""
    env = dict(os.environ, GIT_INDEX_FILE=os.path.join(bare, "..", "index"), GIT_AUTHOR_NAME="test",
               GIT_AUTHOR_EMAIL="test@example.org", GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.org")

    def git(*args):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", bare], check=True)
    git("add", "-A")
    tree = git("write-tree")
    commit = git("commit-tree", tree, "-m", "snapshot of the checkout under test")
    git("push", "-q", bare, f"{commit}:refs/heads/main")


@pytest.fixture(scope="module")
def cloned(os_name):
    with tempfile.TemporaryDirectory() as tmp, Machine.boot(os_name) as m:
        snapshot_repository(os.path.join(tmp, "tljh.git"))
        m.copy_in(os.path.join(tmp, "tljh.git"), "/srv/tljh.git")
        assert m.run("command -v git", check=False).returncode != 0, "the image already has git"
        m.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git", timeout=300)
        yield m


@pytest.fixture(scope="module")
def installed(cloned):
    # Machine.run passes no TLJH_* variable; sudo would drop one anyway.
    started = time.monotonic()
    result = cloned.run(readme_install_command(), check=False, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"clone + install took {time.monotonic() - started:.1f} s")
    return cloned, result


def test_bootstrap_says_it_installs_the_clone(installed):
    _machine, result = installed
    assert (f"Installing the installer from {CLONE} (the clone this bootstrap.py runs from; "
            "TLJH_BOOTSTRAP_PIP_SPEC overrides)") in result.stdout.splitlines()


def test_installed_copy_does_not_depend_on_the_clone(installed):
    machine, _ = installed
    location = machine.run("/opt/tljh/hub/bin/python -c 'import tljh; print(tljh.__file__)'").stdout.strip()
    assert location.startswith("/opt/tljh/hub/lib/"), location
    # Building the package left nothing git would show in the admin's clone.
    assert machine.run(f"git -C {CLONE} status --porcelain").stdout == ""


def test_admin_logs_in_and_runs_code(installed):
    machine, _ = installed

    async def scenario():
        async with HubClient(machine.url()) as alice:
            await alice.login("alice", PASSWORD)
            await alice.start_server()
            kernel = await alice.open_kernel()
            value = await kernel.execute("6 * 7")
            await kernel.close()
            await alice.stop_server()
            return value

    assert asyncio.run(scenario()) == "42"
