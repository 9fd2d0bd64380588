"""Issue 3: bootstrap refuses servers it cannot install on, with one line naming the fix, and changes nothing."""

import pytest

BOOTSTRAP = "python3 /srv/tljh-src/bootstrap/bootstrap.py --admin alice"
ENV = "TLJH_BOOTSTRAP_PIP_SPEC=/srv/tljh-src"


@pytest.fixture(scope="module")
def fresh(os_name):
    from machine import Machine

    with Machine.boot(os_name) as m:
        m.copy_checkout()
        yield m


def refused(machine, command, user="root"):
    result = machine.run(command, user=user, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert machine.run("test -e /opt/tljh", check=False).returncode != 0, "bootstrap changed the server"
    assert machine.run("test -e /etc/sudoers.d/jupyterhub-admins", check=False).returncode != 0
    return lines[0]


def test_refuses_non_root(fresh):
    fresh.run("useradd --create-home mallory")
    line = refused(fresh, f"env {ENV} {BOOTSTRAP}", user="mallory")
    assert line == "bootstrap: error: must run as root. Run: curl -L <url>/bootstrap.py | sudo python3 - --admin <name>"


def test_refuses_without_systemd(fresh):
    # What a container without systemd as PID 1 looks like to the check: no /run/systemd/system.
    line = refused(fresh, f"unshare --mount sh -c 'mount -t tmpfs none /run/systemd && env {ENV} {BOOTSTRAP}'")
    assert line.startswith("bootstrap: error: systemd is not running as PID 1 on this machine")


@pytest.mark.parametrize(
    "os_release, expected",
    [
        ('ID=debian\nVERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n',
         "bootstrap: error: unsupported version: Debian GNU/Linux 11 (bullseye). Supported: Debian 12 or 13"),
        ('ID=ubuntu\nVERSION_ID="20.04"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n',
         "bootstrap: error: unsupported version: Ubuntu 20.04.6 LTS. Supported: Debian 12 or 13"),
        ('ID=fedora\nVERSION_ID="41"\nPRETTY_NAME="Fedora Linux 41"\n',
         "bootstrap: error: unsupported operating system: Fedora Linux 41. Supported: Debian 12 or 13"),
    ],
)
def test_refuses_unsupported_os(fresh, os_release, expected):
    fresh.run(f"printf '{os_release}' > /root/fake-os-release")
    line = refused(
        fresh, f"unshare --mount sh -c 'mount --bind /root/fake-os-release /etc/os-release && env {ENV} {BOOTSTRAP}'"
    )
    assert line.startswith(expected), line
