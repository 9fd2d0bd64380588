"""bootstrap.py's checks and argument handling (it is stdlib-only, so it is imported from its path)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).parent.parent / "bootstrap" / "bootstrap.py"


@pytest.fixture(scope="module")
def bootstrap():
    spec = importlib.util.spec_from_file_location("bootstrap", BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "distro, version",
    [("debian", "12"), ("debian", "13"), ("ubuntu", "22.04"), ("ubuntu", "24.04"), ("ubuntu", "26.04"), ("debian", "")],
)
def test_supported_os(bootstrap, distro, version):
    bootstrap.check_os({"ID": distro, "VERSION_ID": version})


@pytest.mark.parametrize(
    "info, message",
    [
        ({"ID": "debian", "VERSION_ID": "11", "PRETTY_NAME": "Debian GNU/Linux 11 (bullseye)"}, "unsupported version: Debian GNU/Linux 11"),
        ({"ID": "ubuntu", "VERSION_ID": "20.04"}, "unsupported version: ubuntu 20.04"),
        ({"ID": "fedora", "VERSION_ID": "40"}, "unsupported operating system: fedora 40"),
        ({}, "unsupported operating system: unknown"),
    ],
)
def test_unsupported_os(bootstrap, info, message):
    with pytest.raises(bootstrap.BootstrapError, match=message) as e:
        bootstrap.check_os(info)
    assert "Supported: Debian 12 or 13, Ubuntu 22.04 or 24.04" in str(e.value)


def test_os_release_parsing(bootstrap, tmp_path):
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n')
    assert bootstrap.read_os_release(str(f)) == {"PRETTY_NAME": "Ubuntu 24.04.1 LTS", "ID": "ubuntu", "VERSION_ID": "24.04"}


def test_split_args_keeps_installer_flags(bootstrap):
    show, version, rest = bootstrap.split_args(
        ["--admin", "alice:pw", "--show-progress-page", "--version", "2.1.0", "--plugin", "x"]
    )
    assert show is True
    assert version == "2.1.0"
    assert rest == ["--admin", "alice:pw", "--plugin", "x"]


def test_version_needs_value(bootstrap):
    with pytest.raises(bootstrap.BootstrapError, match="--version needs a value"):
        bootstrap.split_args(["--version"])


NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A directory every user can enter. pytest's tmp_path lies under a root-only directory, and so may the
    checkout (a clone in root's home): an unprivileged process reaches only what is copied here."""
    path = Path(tempfile.mkdtemp(prefix="tljh-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_refuses_non_root_before_touching_anything(shared_dir):
    """As an ordinary user, bootstrap refuses before creating anything, even where that user could write."""
    script = shared_dir / "bootstrap.py"
    shutil.copyfile(BOOTSTRAP, script)
    script.chmod(0o644)
    writable = shared_dir / "writable"
    writable.mkdir()
    if os.geteuid() == 0:
        os.chown(writable, NOBODY, NOBODY)
        # the system's python3, as `curl ... | sudo python3 -` uses (a venv's interpreter may live in root's home)
        python = shutil.which("python3", path=os.defpath) or sys.executable
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, str(script), "--admin", "a"]
    else:
        cmd = [sys.executable, str(script), "--admin", "a"]
    prefix = writable / "tljh"
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TLJH_INSTALL_PREFIX": str(prefix)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "bootstrap: error: must run as root. Run: curl -L <url>/bootstrap.py | sudo python3 - --admin <name>"
    ]
    assert not prefix.exists()


def test_python_too_old(bootstrap, monkeypatch):
    monkeypatch.setattr(bootstrap, "MIN_PYTHON", (99, 0))
    with pytest.raises(bootstrap.BootstrapError, match=r"python3 is 3\.\d+; 99\.0 or newer is required"):
        bootstrap.check_python()


def test_bootstrap_and_installer_agree_on_shared_names(bootstrap):
    """bootstrap.py cannot import tljh: the names both sides rely on are kept equal by this test."""
    from tljh import paths, user_env

    assert bootstrap.HUB_PREFIX == paths.HUB_ENV_PREFIX
    assert bootstrap.HUB_MOVED_ASIDE == user_env.moved_aside(paths.HUB_ENV_PREFIX)
    assert bootstrap.EXCLUDED == user_env.EXCLUDED
